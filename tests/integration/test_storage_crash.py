"""Kill a process with SIGKILL while it saves tokens: the token file must stay valid.

After every kill the token file loads as a complete token (one of the saved
versions, never a mix), is mode 0600, and at most one temp file (the one the
killed writer was filling) is left; constructing a storage removes it.
"""

from __future__ import annotations

import os
import random
import signal
import stat
import time
from pathlib import Path

import pytest

from kstlib.auth.models import Token
from kstlib.auth.token import FileTokenStorage, SOPSTokenStorage
from kstlib.auth.token._directory import DirectoryTokenStorage
from tests import forked
from tests.sops_support import AgeIdentity
from tests.storage_saver import save_forever

PROVIDER = "crash.test"
PAD_UNIT = 20_000


def token_for(seq: int) -> Token:
    return Token(
        access_token=f"access-{seq}", metadata={"seq": seq, "pad": "x" * (seq % 5) * PAD_UNIT}
    )


def check_consistent(token: Token | None) -> int:
    """The token is one complete saved version; return its sequence number."""
    assert token is not None
    seq = token.metadata["seq"]
    assert token.access_token == f"access-{seq}"
    assert token.metadata["pad"] == "x" * (seq % 5) * PAD_UNIT
    return int(seq)


def temp_files(directory: Path) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


def run_and_kill(kind: str, directory: Path, start: int, recipient: str, delay: float) -> None:
    """A writer process (tests/storage_saver.py; forked with kstlib imported: tests/forked.py)
    saving in a loop, SIGKILLed after ``delay`` seconds, it and the ``sops`` it may be running."""
    args = (kind, str(directory), start, recipient, PROVIDER, PAD_UNIT)
    child = forked.start(save_forever, *args, new_session=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        child.close()
    assert child.returncode == -signal.SIGKILL


def crash_loop(
    kind: str, storage: DirectoryTokenStorage, kills: int, max_delay: float, recipient: str = ""
) -> int:
    """Run ``kills`` save-and-kill rounds; return how many left a temp file behind."""
    rng = random.Random(1234)
    storage.save(PROVIDER, token_for(0))
    last_seq, leftovers = 0, 0
    for _ in range(kills):
        run_and_kill(kind, storage.directory, last_seq, recipient, rng.uniform(0, max_delay))
        path = storage.token_path(PROVIDER)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        left = temp_files(storage.directory)
        assert len(left) <= 1, left  # only the killed writer's own temp file
        leftovers += len(left)
        seq = check_consistent(storage.load(PROVIDER))
        assert seq >= last_seq  # what a completed save wrote is never lost
        last_seq = seq
        type(storage)(storage.directory, **_options(kind, recipient))  # init cleans up
        assert temp_files(storage.directory) == []
    assert last_seq > 0, "no save ever completed: the kills came too early"
    return leftovers


def _options(kind: str, recipient: str) -> dict[str, list[str]]:
    return {"age_recipients": [recipient]} if kind == "sops" else {}


@pytest.mark.slow
def test_file_storage_survives_sigkill(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path / "tokens")
    crash_loop("file", storage, kills=50, max_delay=0.05)


@pytest.mark.slow
def test_sops_storage_survives_sigkill(tmp_path: Path, age_identity: AgeIdentity) -> None:
    storage = SOPSTokenStorage(tmp_path / "tokens", age_recipients=[age_identity.recipient])
    crash_loop("sops", storage, kills=8, max_delay=0.4, recipient=age_identity.recipient)
    assert b"access-" not in storage.token_path(PROVIDER).read_bytes()
