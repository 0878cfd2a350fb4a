"""The one way kstlib runs ``sops``: binary lookup, deadline, and a redacted stderr excerpt.

Used by configuration file decryption (:mod:`kstlib.config`), ``sops://`` secret
references (:mod:`kstlib.secrets`) and :class:`~kstlib.auth.token.SOPSTokenStorage`.
The binary is ``auth.storage.sops.sops_binary`` of the configuration (which only a
trusted layer may set, see :mod:`kstlib.config`), ``sops`` on ``PATH`` by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kstlib._redaction import redact_text

if TYPE_CHECKING:  # imported when sops runs: reading a token need not load them (#16 item 4)
    import subprocess

__all__ = [
    "DEFAULT_SOPS_BINARY",
    "DEFAULT_SOPS_TIMEOUT",
    "SopsRunError",
    "configured_sops_binary",
    "run_sops",
    "stderr_excerpt",
]

DEFAULT_SOPS_BINARY = "sops"
#: Seconds a ``sops`` run may take before it is killed.
DEFAULT_SOPS_TIMEOUT = 60.0
#: Longest excerpt of sops' stderr quoted in an error.
STDERR_EXCERPT_LENGTH = 400
#: Where the configuration names the binary.
SOPS_BINARY_KEY = ("auth", "storage", "sops", "sops_binary")


class SopsRunError(Exception):
    """``sops`` could not be run (missing, failed to start, timed out); the message is safe.

    ``kind`` is ``"missing"``, ``"timeout"`` or ``"oserror"``.
    """

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def configured_sops_binary(config: Mapping[str, Any] | None) -> str:
    """``auth.storage.sops.sops_binary`` of a (merged) configuration, else ``sops``."""
    node: Any = config
    for key in SOPS_BINARY_KEY:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node.strip() if isinstance(node, str) and node.strip() else DEFAULT_SOPS_BINARY


def run_sops(
    args: Sequence[str],
    *,
    binary: str = DEFAULT_SOPS_BINARY,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    timeout: float = DEFAULT_SOPS_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``<binary> <args>`` (no shell), stdin from ``stdin`` (else /dev/null), output captured.

    A non-zero exit is returned, not raised: the caller knows what it means.

    Raises:
        SopsRunError: the binary is not found, cannot be started, or outlives ``timeout``.
    """
    import shutil
    import subprocess

    found = shutil.which(binary)
    if found is None:
        raise SopsRunError(
            f"sops binary '{binary}' not found; install sops (https://github.com/getsops/sops) "
            "or set auth.storage.sops.sops_binary in kstlib.conf.yml to its path",
            kind="missing",
        )
    try:
        return subprocess.run(  # noqa: S603 - fixed argument list, no shell
            [found, *args],
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SopsRunError(
            f"sops did not finish within {timeout:g} s (it may be waiting for a key service "
            "or a PIN); it was stopped",
            kind="timeout",
        ) from None
    except OSError as exc:
        raise SopsRunError(
            f"cannot run sops binary '{found}' ({exc.strerror or type(exc).__name__})",
            kind="oserror",
        ) from None


def stderr_excerpt(stderr: bytes) -> str:
    """sops' stderr on one line, redacted and cut to :data:`STDERR_EXCERPT_LENGTH`."""
    text = redact_text(" ".join(stderr.decode("utf-8", "replace").split()))
    if len(text) > STDERR_EXCERPT_LENGTH:
        text = text[:STDERR_EXCERPT_LENGTH] + "..."
    return text or "(no error output)"
