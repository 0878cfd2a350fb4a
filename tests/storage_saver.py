"""The writer of tests/integration/test_storage_crash.py: saves tokens until it is killed.

Run as a worker forked with kstlib already imported (tests/forked.py): ``save_forever``.
"""

from __future__ import annotations

from kstlib.auth.models import Token
from kstlib.auth.token import get_token_storage


def save_forever(
    kind: str, directory: str, start: int, recipient: str, provider: str, pad_unit: int
) -> None:
    """Print ``ready`` once the storage exists, then save ever newer tokens, forever."""
    options = {"age_recipients": [recipient]} if kind == "sops" else {}
    storage = get_token_storage(kind, directory=directory, **options)
    print("ready", flush=True)
    seq = start
    while True:
        seq += 1
        pad = "x" * (seq % 5) * pad_unit
        token = Token(access_token=f"access-{seq}", metadata={"seq": seq, "pad": pad})
        storage.save(provider, token)
