"""FileTokenStorage: permissions, atomic writes, corrupt files, symlinks, failures."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kstlib.auth.errors import TokenStorageError
from kstlib.auth.models import Token
from kstlib.auth.token import FileTokenStorage, _atomic, default_token_directory

PROVIDER = "corp.example"


def make_token(n: int = 1) -> Token:
    return Token(
        access_token=f"access-secret-{n}",
        refresh_token=f"refresh-secret-{n}",
        id_token=f"id-secret-{n}",
        expires_at=datetime(2031, 1, 1, tzinfo=UTC),
        issued_at=datetime(2030, 12, 31, tzinfo=UTC),
        scope=["openid", "profile"],
        metadata={"n": n, "nested": {"k": "é"}},
    )


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def umask_zero() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def tokens_dir(tmp_path: Path) -> Path:
    return tmp_path / "tokens"


@pytest.fixture
def storage(tokens_dir: Path) -> FileTokenStorage:
    return FileTokenStorage(tokens_dir)


# -- basics ----------------------------------------------------------------------------------


def test_round_trip_and_lifecycle(storage: FileTokenStorage) -> None:
    assert storage.load(PROVIDER) is None
    assert not storage.exists(PROVIDER)
    assert storage.delete(PROVIDER) is False
    storage.save(PROVIDER, make_token(1))
    assert storage.exists(PROVIDER)
    assert storage.load(PROVIDER) == make_token(1)
    storage.save(PROVIDER, make_token(2))
    assert storage.load(PROVIDER) == make_token(2)
    assert storage.delete(PROVIDER) is True
    assert storage.load(PROVIDER) is None
    assert not storage.token_path(PROVIDER).exists()


def test_file_content_shape(storage: FileTokenStorage) -> None:
    storage.save(PROVIDER, make_token())
    path = storage.token_path(PROVIDER)
    assert path.name == "corp%2Eexample.json"
    document = json.loads(path.read_text("utf-8"))
    assert document == {"version": 1, "provider": PROVIDER, "token": make_token().to_dict()}


def test_another_instance_sees_saved_tokens(storage: FileTokenStorage, tokens_dir: Path) -> None:
    storage.save(PROVIDER, make_token())
    assert FileTokenStorage(str(tokens_dir)).load(PROVIDER) == make_token()


def test_describe_names_backend_and_directory(storage: FileTokenStorage, tokens_dir: Path) -> None:
    storage.save(PROVIDER, make_token())
    assert storage.backend_name == "file"
    assert storage.describe() == f"file:{tokens_dir}"
    assert "secret" not in repr(storage)


def test_tilde_is_expanded(tmp_path: Path) -> None:
    storage = FileTokenStorage("~/my-tokens")
    assert storage.directory == tmp_path / "home" / "my-tokens"


# -- default directory -----------------------------------------------------------------------


def test_default_directory_follows_xdg_config_home_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_token_directory() == tmp_path / "xdg" / "kstlib" / "auth" / "tokens"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "other-home"))
    assert default_token_directory() == tmp_path / "other-home" / ".config/kstlib/auth/tokens"


def test_default_directory_is_created_private(tmp_path: Path, umask_zero: None) -> None:
    storage = FileTokenStorage()
    expected = tmp_path / "home" / ".config" / "kstlib" / "auth" / "tokens"
    assert storage.directory == expected
    assert mode_of(expected) == 0o700
    assert mode_of(expected.parent) == 0o700  # parents we create are private too
    storage.save(PROVIDER, make_token())
    assert mode_of(storage.token_path(PROVIDER)) == 0o600


# -- permissions -----------------------------------------------------------------------------


def test_modes_with_umask_zero(tokens_dir: Path, umask_zero: None) -> None:
    storage = FileTokenStorage(tokens_dir)
    assert mode_of(tokens_dir) == 0o700
    storage.save(PROVIDER, make_token())
    assert mode_of(storage.token_path(PROVIDER)) == 0o600
    storage.save(PROVIDER, make_token(2))  # a replacement is 0600 too
    assert mode_of(storage.token_path(PROVIDER)) == 0o600
    with storage.lock(PROVIDER):
        assert mode_of(tokens_dir / ".locks") == 0o700
        assert mode_of(tokens_dir / ".locks" / "corp%2Eexample.lock") == 0o600


def test_modes_with_umask_removing_owner_bits(tokens_dir: Path) -> None:
    previous = os.umask(0o277)
    try:
        storage = FileTokenStorage(tokens_dir)
        storage.save(PROVIDER, make_token())
    finally:
        os.umask(previous)
    assert mode_of(tokens_dir) == 0o700
    assert mode_of(storage.token_path(PROVIDER)) == 0o600


def test_token_file_is_0600_from_its_first_byte(
    storage: FileTokenStorage, monkeypatch: pytest.MonkeyPatch, umask_zero: None
) -> None:
    opened: list[tuple[str, int, int]] = []
    modes_at_write: list[int] = []
    real_open, real_write = os.open, os.write

    def spy_open(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, **kwargs)

    def spy_write(fd: int, data: Any) -> int:
        modes_at_write.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "write", spy_write)
    storage.save(PROVIDER, make_token())
    creations = [(p, f, m) for p, f, m in opened if f & os.O_CREAT and p.endswith(".tmp")]
    assert len(creations) == 1
    _, flags, mode = creations[0]
    assert flags & os.O_EXCL and flags & os.O_NOFOLLOW
    assert mode == 0o600
    assert modes_at_write and set(modes_at_write) == {0o600}


def test_existing_open_directory_is_tightened_with_a_warning(
    tokens_dir: Path, caplog: pytest.LogCaptureFixture, umask_zero: None
) -> None:
    tokens_dir.mkdir()
    tokens_dir.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="kstlib.auth.token"):
        FileTokenStorage(tokens_dir)
    assert mode_of(tokens_dir) == 0o700
    assert "changed to 0700" in caplog.text


def test_directory_owned_by_someone_else_is_refused(
    tokens_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens_dir.mkdir(mode=0o700)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(tokens_dir).st_uid + 4242)
    with pytest.raises(TokenStorageError, match="owned by uid") as info:
        FileTokenStorage(tokens_dir)
    assert info.value.path == str(tokens_dir)


def test_directory_path_that_is_a_file_is_refused(tokens_dir: Path) -> None:
    tokens_dir.write_text("not a directory")
    with pytest.raises(TokenStorageError, match="not a directory"):
        FileTokenStorage(tokens_dir)


# -- corrupt and unreadable files ------------------------------------------------------------

CORRUPT_CONTENTS = {
    "not json": b"{not json",
    "binary": b"\xff\xfe\x00garbage",
    "array": b"[1, 2]",
    "no version": json.dumps({"provider": PROVIDER, "token": {"access_token": "x"}}).encode(),
    "bool version": json.dumps(
        {"version": True, "provider": PROVIDER, "token": {"access_token": "x"}}
    ).encode(),
    "other provider": json.dumps(
        {"version": 1, "provider": "other", "token": {"access_token": "x"}}
    ).encode(),
    "no token": json.dumps({"version": 1, "provider": PROVIDER}).encode(),
    "token without access_token": json.dumps(
        {"version": 1, "provider": PROVIDER, "token": {"refresh_token": "r"}}
    ).encode(),
    "bad expiry": json.dumps(
        {"version": 1, "provider": PROVIDER, "token": {"access_token": "x", "expires_at": "soon"}}
    ).encode(),
    "empty": b"",
}


@pytest.mark.parametrize("content", CORRUPT_CONTENTS.values(), ids=CORRUPT_CONTENTS.keys())
def test_corrupt_file_error_names_path_and_remedy(
    storage: FileTokenStorage, content: bytes
) -> None:
    path = storage.token_path(PROVIDER)
    path.write_bytes(content)
    with pytest.raises(TokenStorageError) as info:
        storage.load(PROVIDER)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    assert info.value.provider == PROVIDER
    assert "kstlib auth login corp.example" in str(info.value)
    assert path.read_bytes() == content  # never deleted or rewritten by load


def test_corrupt_file_is_replaced_by_an_explicit_save(storage: FileTokenStorage) -> None:
    path = storage.token_path(PROVIDER)
    path.write_bytes(b"garbage")
    storage.save(PROVIDER, make_token())
    assert storage.load(PROVIDER) == make_token()


def test_newer_format_version_asks_for_an_upgrade(storage: FileTokenStorage) -> None:
    document = {"version": 2, "provider": PROVIDER, "token": {"access_token": "x"}}
    storage.token_path(PROVIDER).write_text(json.dumps(document))
    with pytest.raises(TokenStorageError, match="newer kstlib"):
        storage.load(PROVIDER)


def test_oversized_file_is_refused(storage: FileTokenStorage) -> None:
    path = storage.token_path(PROVIDER)
    path.write_bytes(b" " * (_atomic.MAX_FILE_SIZE + 1))
    with pytest.raises(TokenStorageError, match="larger than") as info:
        storage.load(PROVIDER)
    assert info.value.path == str(path)


def test_unopenable_file_error_names_path(
    storage: FileTokenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.save(PROVIDER, make_token())
    path = storage.token_path(PROVIDER)
    real_open = os.open

    def deny(target: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # the file is opened relative to its directory (dir_fd), by name
        if str(target) == str(path) or (str(target) == path.name and "dir_fd" in kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(target))
        return real_open(target, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(TokenStorageError, match="Permission denied") as info:
        storage.load(PROVIDER)
    assert str(path) in str(info.value)


def test_read_error_names_path(storage: FileTokenStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    storage.save(PROVIDER, make_token())

    def failing_read(fd: int, size: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "read", failing_read)
    with pytest.raises(TokenStorageError, match="Input/output error") as info:
        storage.load(PROVIDER)
    assert info.value.path == str(storage.token_path(PROVIDER))


# -- symlinks and special files --------------------------------------------------------------


def test_symlinked_token_file_is_refused_for_load(
    storage: FileTokenStorage, tmp_path: Path
) -> None:
    elsewhere = FileTokenStorage(tmp_path / "elsewhere")
    elsewhere.save(PROVIDER, make_token())
    storage.token_path(PROVIDER).symlink_to(elsewhere.token_path(PROVIDER))
    with pytest.raises(TokenStorageError, match="symbolic link"):
        storage.load(PROVIDER)
    assert storage.exists(PROVIDER)  # something is there; load says what


def test_symlinked_token_file_is_refused_for_save(
    storage: FileTokenStorage, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = storage.token_path(PROVIDER)
    link.symlink_to(victim)
    with pytest.raises(TokenStorageError, match="symbolic link") as info:
        storage.save(PROVIDER, make_token())
    assert info.value.path == str(link)
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert victim.read_text() == "precious"
    assert temp_files(storage.directory) == []


def test_dangling_symlink_is_refused_for_save(storage: FileTokenStorage, tmp_path: Path) -> None:
    target = tmp_path / "would-be-created.json"
    storage.token_path(PROVIDER).symlink_to(target)
    with pytest.raises(TokenStorageError, match="symbolic link"):
        storage.save(PROVIDER, make_token())
    assert not target.exists()


def test_delete_removes_a_symlink_not_its_target(storage: FileTokenStorage, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    storage.token_path(PROVIDER).symlink_to(victim)
    assert storage.delete(PROVIDER) is True
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_non_regular_token_path_is_refused(storage: FileTokenStorage, kind: str) -> None:
    path = storage.token_path(PROVIDER)
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # must not block the load
    with pytest.raises(TokenStorageError, match="not a regular file"):
        storage.load(PROVIDER)
    with pytest.raises(TokenStorageError, match="not a regular file"):
        storage.save(PROVIDER, make_token())


# -- failed writes ---------------------------------------------------------------------------


def _fail_with(errno_value: int) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno_value, os.strerror(errno_value))

    return fail


@pytest.mark.parametrize("function", ["write", "fsync", "replace"])
def test_failed_write_keeps_previous_token_and_no_temp_file(
    storage: FileTokenStorage, monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    storage.save(PROVIDER, make_token(1))
    monkeypatch.setattr(os, function, _fail_with(errno.ENOSPC))
    with pytest.raises(TokenStorageError, match="No space left on device") as info:
        storage.save(PROVIDER, make_token(2))
    monkeypatch.undo()
    assert info.value.path == str(storage.token_path(PROVIDER))
    assert "unchanged" in str(info.value)
    assert storage.load(PROVIDER) == make_token(1)
    assert temp_files(storage.directory) == []


def test_failed_temp_creation_is_reported(
    storage: FileTokenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def read_only_fs(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_fs)
    with pytest.raises(TokenStorageError, match="Read-only file system"):
        storage.save(PROVIDER, make_token())


def test_interrupted_write_removes_temp_and_propagates(
    storage: FileTokenStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.save(PROVIDER, make_token(1))

    def interrupted(*args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        storage.save(PROVIDER, make_token(2))
    monkeypatch.undo()
    assert storage.load(PROVIDER) == make_token(1)
    assert temp_files(storage.directory) == []


def test_unserialisable_metadata_keeps_previous_token(storage: FileTokenStorage) -> None:
    storage.save(PROVIDER, make_token(1))
    bad = make_token(2)
    bad.metadata["when"] = object()
    with pytest.raises(TokenStorageError, match="not JSON"):
        storage.save(PROVIDER, bad)
    assert storage.load(PROVIDER) == make_token(1)


_FILE_SIZE_LIMIT_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from kstlib.auth.errors import TokenStorageError
    from kstlib.auth.models import Token
    from kstlib.auth.token import FileTokenStorage

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    storage = FileTokenStorage(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    try:
        storage.save("corp.example", Token(access_token="new", metadata={"pad": "x" * 65536}))
    except TokenStorageError as exc:
        print("refused:", exc)
    else:
        print("saved")
    """
)


def test_real_write_failure_file_size_limit(storage: FileTokenStorage) -> None:
    """A real kernel error (EFBIG under RLIMIT_FSIZE) works as root too."""
    storage.save(PROVIDER, make_token(1))
    result = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMIT_CHILD, str(storage.directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.startswith("refused:"), result.stdout + result.stderr
    assert "too large" in result.stdout.lower()
    assert storage.load(PROVIDER) == make_token(1)
    assert temp_files(storage.directory) == []


def _make_read_only(directory: Path) -> Callable[[], None]:
    """Make ``directory`` really read-only; return the undo.

    Root ignores permission bits, so as root the directory is a tmpfs
    remounted read-only (a real EROFS from the kernel); otherwise chmod 0500.
    """
    if os.geteuid() != 0:
        directory.chmod(0o500)
        return lambda: directory.chmod(0o700)
    subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
    return lambda: subprocess.run(["mount", "-o", "remount,rw", str(directory)], check=True)


def test_real_write_failure_read_only_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ro-tokens"
    directory.mkdir(mode=0o700)
    mounted = os.geteuid() == 0
    if mounted:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(directory)], check=True
        )
    try:
        storage = FileTokenStorage(directory)
        storage.save(PROVIDER, make_token(1))
        undo = _make_read_only(directory)
        try:
            with pytest.raises(TokenStorageError, match="Permission denied|Read-only file system"):
                storage.save(PROVIDER, make_token(2))
        finally:
            undo()
        assert storage.load(PROVIDER) == make_token(1)
        assert temp_files(storage.directory) == []
    finally:
        if mounted:
            subprocess.run(["umount", str(directory)], check=True)


# -- abandoned temp files --------------------------------------------------------------------


def _abandoned_temp(
    storage: FileTokenStorage, provider: str, suffix: str = "0123456789abcdef"
) -> Path:
    path = storage.directory / f".{storage.token_path(provider).name}.{suffix}.tmp"
    path.write_text("partial")
    return path


def test_init_removes_abandoned_temp_files(storage: FileTokenStorage) -> None:
    first = _abandoned_temp(storage, PROVIDER)
    second = _abandoned_temp(storage, "other", "fedcba9876543210")
    unrelated = [storage.directory / ".notes.tmp", storage.directory / "backup.json.tmp"]
    for path in unrelated:
        path.write_text("keep me")
    FileTokenStorage(storage.directory)
    assert not first.exists() and not second.exists()
    assert all(path.exists() for path in unrelated)


def test_temp_file_of_a_live_writer_is_kept(storage: FileTokenStorage) -> None:
    in_use = _abandoned_temp(storage, PROVIDER)
    fd = os.open(in_use, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        FileTokenStorage(storage.directory)
        storage.save(PROVIDER, make_token())
        assert in_use.exists()
    finally:
        os.close(fd)
    FileTokenStorage(storage.directory)
    assert not in_use.exists()


def test_save_removes_its_own_abandoned_temp_files(storage: FileTokenStorage) -> None:
    mine = _abandoned_temp(storage, PROVIDER)
    theirs = _abandoned_temp(storage, "other")
    storage.save(PROVIDER, make_token())
    assert not mine.exists()
    assert theirs.exists()  # left for that provider's next save or the next init


def test_load_ignores_temp_files(storage: FileTokenStorage) -> None:
    _abandoned_temp(storage, PROVIDER)
    assert storage.load(PROVIDER) is None
    assert not storage.exists(PROVIDER)


def test_relative_directory_is_made_absolute(tmp_path: Path) -> None:
    storage = FileTokenStorage("relative-tokens")  # the autouse fixture chdirs to tmp_path
    assert storage.directory == tmp_path / "relative-tokens"
    assert storage.directory.is_absolute()
