"""Token storage under real filesystem faults: disk full, read-only, symlinked files.

File and SOPS storage (the real ``sops`` binary with a real age key). Faults
come from the kernel, not from mocks: as root a small tmpfs is mounted (and
filled, or remounted read-only); otherwise ``RLIMIT_FSIZE`` in a child
process gives a real EFBIG and ``chmod 0500`` a real EACCES. Each case: a
``TokenStorageError`` naming the file and the cause, the previous token
intact, no temporary file left behind.

SIGKILL during saves is covered by tests/integration/test_storage_crash.py.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kstlib.auth.errors import TokenStorageError
from kstlib.auth.models import Token
from kstlib.auth.token import FileTokenStorage, SOPSTokenStorage
from kstlib.auth.token._directory import DirectoryTokenStorage
from tests.sops_support import AgeIdentity

PROVIDER = "faults.example"
IS_ROOT = os.geteuid() == 0
KINDS = ["file", "sops"]


def make_token(n: int, pad: int = 0) -> Token:
    return Token(
        access_token=f"access-{n}",
        refresh_token=f"refresh-{n}",
        id_token=f"id-{n}",
        expires_at=datetime(2031, 1, 1, tzinfo=UTC),
        issued_at=datetime(2030, 12, 31, tzinfo=UTC),
        scope=["openid"],
        metadata={"n": n, "pad": "x" * pad},
    )


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def make_storage(request: pytest.FixtureRequest) -> Callable[[str, Path], DirectoryTokenStorage]:
    def make(kind: str, directory: Path) -> DirectoryTokenStorage:
        if kind == "file":
            return FileTokenStorage(directory)
        identity: AgeIdentity = request.getfixturevalue("age_identity")
        return SOPSTokenStorage(directory, age_recipients=[identity.recipient])

    return make


@contextmanager
def small_tmpfs(directory: Path, size: str = "64k") -> Iterator[Path]:
    """Mount a ``size`` tmpfs (mode 0700) on ``directory``; unmount it afterwards."""
    directory.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
        check=True,
    )
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=True)


def fill_filesystem(path: Path) -> int:
    """Write to ``path`` until the filesystem is full; return the bytes written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    total = 0
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    total += os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    return total


# --------------------------------------------------------------------------- disk full


@pytest.mark.skipif(not IS_ROOT, reason="mounting a tmpfs needs root (the rlimit case runs)")
@pytest.mark.parametrize("kind", KINDS)
def test_disk_full_save_fails_and_previous_token_survives(
    tmp_path: Path, make_storage: Callable[[str, Path], DirectoryTokenStorage], kind: str
) -> None:
    with small_tmpfs(tmp_path / "full") as directory:
        storage = make_storage(kind, directory)
        storage.save(PROVIDER, make_token(1))
        before = storage.token_path(PROVIDER).read_bytes()
        assert fill_filesystem(directory / "filler") > 0
        with pytest.raises(TokenStorageError) as err:
            storage.save(PROVIDER, make_token(2, pad=8192))
        message = str(err.value)
        assert "No space left on device" in message
        assert str(storage.token_path(PROVIDER)) in message
        assert "previous token file, if any, is unchanged" in message
        assert storage.token_path(PROVIDER).read_bytes() == before
        assert storage.load(PROVIDER) == make_token(1)
        assert temp_files(directory) == []
        (directory / "filler").unlink()  # space is back: saving works again
        storage.save(PROVIDER, make_token(2, pad=8192))
        assert storage.load(PROVIDER) == make_token(2, pad=8192)


_FSIZE_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from datetime import UTC, datetime
    from kstlib.auth.errors import TokenStorageError
    from kstlib.auth.models import Token
    from kstlib.auth.token import get_token_storage

    kind, directory, recipient, provider, limit = sys.argv[1:6]
    options = {"age_recipients": [recipient]} if kind == "sops" else {}
    storage = get_token_storage(kind, directory=directory, **options)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
    token = Token(
        access_token="access-2",
        expires_at=datetime(2031, 1, 1, tzinfo=UTC),
        metadata={"pad": "x" * 4 * int(limit)},
    )
    try:
        storage.save(provider, token)
    except TokenStorageError as exc:
        print(json.dumps({"refused": str(exc)}))
    else:
        print(json.dumps({"saved": True}))
    """
)


@pytest.mark.parametrize("kind", KINDS)
def test_file_size_limit_save_fails_and_previous_token_survives(
    tmp_path: Path,
    make_storage: Callable[[str, Path], DirectoryTokenStorage],
    kind: str,
) -> None:
    """The non-root variant of "disk full": a real EFBIG from RLIMIT_FSIZE in a child."""
    directory = tmp_path / "limited"
    storage = make_storage(kind, directory)
    storage.save(PROVIDER, make_token(1))
    recipient = ""
    if isinstance(storage, SOPSTokenStorage):
        recipient = storage._age_recipients[0]
    result = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, kind, str(directory), recipient, PROVIDER, "4096"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert "refused" in outcome, result.stdout + result.stderr
    assert "File too large" in outcome["refused"]
    assert storage.load(PROVIDER) == make_token(1)
    assert temp_files(directory) == []


# --------------------------------------------------------------------------- read-only


@contextmanager
def read_only_directory(directory: Path) -> Iterator[Callable[[], None]]:
    """A token directory that can be made really read-only (remount as root, else chmod)."""
    if IS_ROOT:
        with small_tmpfs(directory, "1m"):

            def make_read_only() -> None:
                subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)

            try:
                yield make_read_only
            finally:
                subprocess.run(["mount", "-o", "remount,rw", str(directory)], check=False)
    else:
        directory.mkdir(mode=0o700)
        try:
            yield lambda: directory.chmod(0o500)
        finally:
            directory.chmod(0o700)


@pytest.mark.parametrize("kind", KINDS)
def test_read_only_directory_refuses_writes_and_keeps_serving_reads(
    tmp_path: Path, make_storage: Callable[[str, Path], DirectoryTokenStorage], kind: str
) -> None:
    with read_only_directory(tmp_path / "ro") as make_read_only:
        storage = make_storage(kind, tmp_path / "ro")
        storage.save(PROVIDER, make_token(1))
        make_read_only()
        with pytest.raises(TokenStorageError) as err:
            storage.save(PROVIDER, make_token(2))
        assert "Read-only file system" in str(err.value) or "Permission denied" in str(err.value)
        assert str(storage.token_path(PROVIDER)) in str(err.value)
        with pytest.raises(TokenStorageError, match="Cannot delete token file"):
            storage.delete(PROVIDER)
        assert storage.load(PROVIDER) == make_token(1)
        # a new process can still open the read-only storage and read the token
        again = make_storage(kind, tmp_path / "ro")
        assert again.load(PROVIDER) == make_token(1)
        assert temp_files(storage.directory) == []


# --------------------------------------------------------------------------- symlinks


@pytest.mark.parametrize("kind", KINDS)
def test_token_file_replaced_by_a_symlink_is_refused(
    tmp_path: Path, make_storage: Callable[[str, Path], DirectoryTokenStorage], kind: str
) -> None:
    """An attacker swaps the token file for a link to a valid token file of their own."""
    storage = make_storage(kind, tmp_path / "tokens")
    storage.save(PROVIDER, make_token(1))
    planted = make_storage(kind, tmp_path / "attacker")
    planted.save(PROVIDER, make_token(666))
    target = planted.token_path(PROVIDER)
    target_bytes = target.read_bytes()
    link = storage.token_path(PROVIDER)
    link.unlink()
    link.symlink_to(target)

    with pytest.raises(TokenStorageError) as err:
        storage.load(PROVIDER)
    assert "symbolic link" in str(err.value) and str(link) in str(err.value)
    with pytest.raises(TokenStorageError, match="symbolic link"):
        storage.save(PROVIDER, make_token(2))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == target_bytes  # never written through the link
    assert temp_files(storage.directory) == []
    assert storage.delete(PROVIDER) is True  # removes the link, not its target
    assert not os.path.lexists(link) and target.read_bytes() == target_bytes
    storage.save(PROVIDER, make_token(3))
    assert storage.load(PROVIDER) == make_token(3)


def test_lock_file_replaced_by_a_symlink_is_refused(tmp_path: Path) -> None:
    """The per-provider lock file is opened without following links, so no victim is touched."""
    storage = FileTokenStorage(tmp_path / "tokens")
    with storage.lock(PROVIDER):
        pass
    lock_files = list((storage.directory / ".locks").iterdir())
    assert len(lock_files) == 1
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock_files[0].unlink()
    lock_files[0].symlink_to(victim)
    with pytest.raises(TokenStorageError), storage.lock(PROVIDER, timeout=0.5):
        pass
    assert victim.read_text() == "precious"
