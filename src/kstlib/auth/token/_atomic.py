"""Private directories and crash-safe, owner-only files (POSIX).

The guarantees the file-backed storages build on:

* A token directory is ``0700`` and owned by the current user (see
  :func:`ensure_private_directory` for what happens to an existing one).
* A file is written to a temporary sibling created ``0600`` with ``O_EXCL``
  (never readable by others, whatever the umask), flushed with ``fsync``,
  renamed over the target with ``os.replace`` and the directory is fsynced.
  Readers see the old file or the new one, never a mix, and a failed write
  leaves the old file untouched and removes its temporary file.
* Temporary files are named ``.<target>.<16 hex>.tmp`` and their writer holds
  an exclusive ``flock`` on them for their whole life. A process killed
  mid-write leaves one behind; :func:`remove_abandoned_temp_files` deletes
  those whose lock is free (their writer is gone), never one still in use, so
  no age heuristic is needed.
* Symlinks and other non-regular files are refused: reads open with
  ``O_NOFOLLOW`` and check ``fstat``; writes refuse to replace them.
* Every read checks again what construction checked: the directory (opened
  first, the file then opened relative to it, so nothing can be swapped
  between the check and the read) and the file are owned by the current user,
  and the directory is ``0700``. A directory replaced under a long-running
  process by another user's is refused.
* At construction, every ancestor of the directory must be owned by the
  current user or root and not writable by others (unless sticky, like
  ``/tmp``): otherwise another user could rename the directory and put theirs
  in its place.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from kstlib.auth.errors import TokenStorageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pathlib, re and typing are not loaded to read a token (the CLI's fast path)
    from pathlib import Path
    from typing import Any

__all__ = [
    "DIRECTORY_MODE",
    "FILE_MODE",
    "MAX_FILE_SIZE",
    "check_ancestors",
    "ensure_private_directory",
    "fsync_directory",
    "read_private_file",
    "remove_abandoned_temp_files",
    "remove_file",
    "write_private_file",
]

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
#: A token file larger than this is treated as corrupt rather than read into memory.
MAX_FILE_SIZE = 1024 * 1024


class _Logger:
    """``get_logger("kstlib.auth.token")``, fetched at the first message: reading a token
    (the command line's fast path) logs nothing and does not load :mod:`logging`."""

    def __getattr__(self, name: str) -> Any:
        from kstlib._redaction import get_logger

        return getattr(get_logger("kstlib.auth.token"), name)


_logger = _Logger()

_TEMP_SUFFIX_RE = r"\.[0-9a-f]{16}\.tmp"
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# -- directories -----------------------------------------------------------------------------


def ensure_private_directory(directory: Path, *, purpose: str = "token directory") -> None:
    """Create ``directory`` (and missing parents) ``0700``, or make an existing one ``0700``.

    Policy for an existing directory: if the current user owns it, its mode is
    set to exactly ``0700`` (a warning is logged when group/other bits are
    removed); if someone else owns it, it is refused, since that user could
    read or replace the tokens.

    Raises:
        TokenStorageError: If it cannot be created, is not a directory or is not ours.
    """
    try:
        _make_missing_directories(directory)
        info = os.stat(directory)
    except OSError as exc:
        raise TokenStorageError(
            f"Cannot create the {purpose} {directory}: {_describe(exc)}. "
            "Check the permissions of its parent, or configure another directory.",
            path=str(directory),
        ) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise TokenStorageError(
            f"The {purpose} {directory} exists but is not a directory. "
            "Move it away or configure another directory.",
            path=str(directory),
        )
    if info.st_uid != os.geteuid():
        raise TokenStorageError(
            f"The {purpose} {directory} is owned by uid {info.st_uid}, not by the current user "
            f"(uid {os.geteuid()}); refusing to keep tokens there. Configure a directory you own.",
            path=str(directory),
        )
    _tighten_mode(directory, stat.S_IMODE(info.st_mode), purpose)


def check_ancestors(directory: Path, *, purpose: str = "token directory") -> None:
    """Refuse ``directory`` when another user could replace it through one of its ancestors.

    Each existing ancestor (symbolic links resolved) must be owned by the current user or
    root, and must not be writable by group or others unless its sticky bit is set.

    Raises:
        TokenStorageError: naming the ancestor and what is wrong with it.
    """
    from pathlib import Path

    me = os.geteuid()
    for ancestor in Path(os.path.realpath(directory)).parents:
        try:
            info = os.stat(ancestor)
        except OSError:
            continue
        problem = None
        if info.st_uid not in (0, me):
            problem = f"is owned by uid {info.st_uid}"
        elif info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            problem = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):04o})"
        if problem is not None:
            raise TokenStorageError(
                f"The {purpose} {directory} is not private: its parent {ancestor} {problem}, so "
                "another user could replace the directory. Configure a directory whose parents "
                "only you (or root) can change.",
                path=str(directory),
            )


def _make_missing_directories(directory: Path) -> None:
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, DIRECTORY_MODE)
        except FileExistsError:  # created concurrently: checked by the caller
            continue
        os.chmod(path, DIRECTORY_MODE)  # the umask may have removed owner bits


def _tighten_mode(directory: Path, mode: int, purpose: str) -> None:
    if mode == DIRECTORY_MODE:
        return
    try:
        os.chmod(directory, DIRECTORY_MODE)
    except OSError as exc:
        raise TokenStorageError(
            f"The {purpose} {directory} has mode {mode:04o} and cannot be changed to 0700: "
            f"{_describe(exc)}.",
            path=str(directory),
        ) from exc
    if mode & 0o077:
        _logger.warning(
            "%s %s was accessible to other users (mode %04o); changed to 0700",
            purpose.capitalize(),
            directory,
            mode,
        )


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (best effort: failures are logged)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        _logger.warning("Cannot open %s to fsync it: %s", directory, _describe(exc))
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            _logger.warning("fsync of directory %s failed: %s", directory, _describe(exc))
    finally:
        os.close(fd)


# -- reading ---------------------------------------------------------------------------------


def read_private_file(path: Path | str, *, provider: str | None = None) -> bytes | None:
    """Return the content of the regular file ``path``, or None if it does not exist.

    The parent directory is opened first and checked (owned by the current user, mode
    ``0700``: a looser mode on a directory of ours is tightened, as at construction), then
    the file is opened relative to it and must be a regular file owned by the current user.

    Raises:
        TokenStorageError: If the directory or the file is not ours, the file is a symlink
            or not a regular file, cannot be read, or is larger than :data:`MAX_FILE_SIZE`.
    """
    directory, name = os.path.split(os.fspath(path))
    directory = directory or "."
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _read_error(path, exc, provider) from exc
    try:
        _check_open_directory(dir_fd, directory, provider)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _not_regular_error(path, "a symbolic link", provider, "read") from exc
            raise _read_error(path, exc, provider) from exc
    finally:
        os.close(dir_fd)
    try:
        return _read_regular(fd, path, provider)
    finally:
        os.close(fd)


def _check_open_directory(dir_fd: int, directory: str, provider: str | None) -> None:
    """The checks of :func:`ensure_private_directory`, on an open directory."""
    info = os.fstat(dir_fd)
    if info.st_uid != os.geteuid():
        raise TokenStorageError(
            f"The token directory {directory} is now owned by uid {info.st_uid}, not by the "
            f"current user (uid {os.geteuid()}): it was replaced; refusing to read tokens "
            "from it. Check who changed it, then configure a directory you own.",
            path=str(directory),
            provider=provider,
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode != DIRECTORY_MODE:
        try:
            os.fchmod(dir_fd, DIRECTORY_MODE)
        except OSError as exc:
            raise TokenStorageError(
                f"The token directory {directory} has mode {mode:04o} and cannot be changed "
                f"to 0700: {_describe(exc)}.",
                path=str(directory),
                provider=provider,
            ) from exc
        if mode & 0o077:
            _logger.warning(
                "Token directory %s was accessible to other users (mode %04o); changed to 0700",
                directory,
                mode,
            )


def _read_error(path: Path | str, exc: OSError, provider: str | None) -> TokenStorageError:
    return TokenStorageError(
        f"Cannot read token file {path}: {_describe(exc)}. "
        "Check its permissions, or delete it and log in again.",
        path=str(path),
        provider=provider,
    )


def _read_regular(fd: int, path: Path | str, provider: str | None) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular_error(path, _file_kind(info.st_mode), provider, "read")
    if info.st_uid != os.geteuid():
        raise TokenStorageError(
            f"Token file {path} is owned by uid {info.st_uid}, not by the current user; "
            "refusing to read it. Delete it and log in again.",
            path=str(path),
            provider=provider,
        )
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_FILE_SIZE:
                raise TokenStorageError(
                    f"Token file {path} is larger than {MAX_FILE_SIZE} bytes and cannot be a "
                    "token; delete it and log in again.",
                    path=str(path),
                    provider=provider,
                )
    except OSError as exc:
        raise TokenStorageError(
            f"Cannot read token file {path}: {_describe(exc)}.", path=str(path), provider=provider
        ) from exc
    return b"".join(chunks)


# -- writing ---------------------------------------------------------------------------------


def write_private_file(path: Path, data: bytes, *, provider: str | None = None) -> None:
    """Atomically replace ``path`` with ``data``, mode ``0600`` from the first byte.

    Raises:
        TokenStorageError: If ``path`` is a symlink or not a regular file, or
            the write fails; the previous file is then left as it was.
    """
    _refuse_non_regular_target(path, provider)
    remove_abandoned_temp_files(path.parent, target_name=path.name)
    try:
        temp_path, fd = _create_locked_temp(path)
    except OSError as exc:
        raise _write_error(path, exc, provider) from exc
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.replace(temp_path, path)
    except BaseException as exc:
        _discard(temp_path)
        if isinstance(exc, OSError):
            raise _write_error(path, exc, provider) from exc
        raise
    finally:
        os.close(fd)
    fsync_directory(path.parent)


def _refuse_non_regular_target(path: Path, provider: str | None) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _write_error(path, exc, provider) from exc
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular_error(path, _file_kind(info.st_mode), provider, "replace")


def _create_locked_temp(path: Path) -> tuple[Path, int]:
    """Create and ``flock`` a fresh temp file next to ``path``; return its path and fd."""
    import secrets  # imported when writing: reading a token (the fast path) needs none

    while True:
        temp_path = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temp_path, _CREATE_FLAGS, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.fchmod(fd, FILE_MODE)  # exactly 0600 even if the umask removed owner bits
            if _is_same_file(fd, temp_path):
                return temp_path, fd
        except BaseException:
            os.close(fd)
            _discard(temp_path)
            raise
        # A cleaner took the lock between our create and flock and removed the file.
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _discard(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _logger.warning("Cannot remove temporary file %s: %s", path, _describe(exc))


def remove_file(path: Path, *, provider: str | None = None) -> bool:
    """Unlink ``path`` (a symlink itself, never its target); False if it did not exist.

    Raises:
        TokenStorageError: If it exists but cannot be removed.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise TokenStorageError(
            f"Cannot delete token file {path}: {_describe(exc)}.",
            path=str(path),
            provider=provider,
        ) from exc
    fsync_directory(path.parent)
    return True


# -- abandoned temp files --------------------------------------------------------------------


def remove_abandoned_temp_files(directory: Path, *, target_name: str | None = None) -> int:
    """Delete temp files left by crashed writers; return how many were removed.

    Only temp files of ``target_name`` are considered when it is given, all of
    the directory's otherwise. A temp file whose writer still runs is kept.
    """
    import re

    name_pattern = ".+" if target_name is None else re.escape(target_name)
    pattern = re.compile(r"\." + name_pattern + _TEMP_SUFFIX_RE)
    try:
        names = [entry.name for entry in os.scandir(directory)]
    except OSError:
        return 0
    removed = sum(
        _remove_if_abandoned(directory / name) for name in names if pattern.fullmatch(name)
    )
    if removed:
        _logger.info("Removed %d abandoned temporary file(s) from %s", removed, directory)
    return removed


def _remove_if_abandoned(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # already renamed or removed, or not a file we created
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # Locked by us now: its writer is gone. It may have been renamed into place
        # between our open and our lock, in which case the name is gone or reused.
        if not _is_same_file(fd, path):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False  # BlockingIOError: a live writer holds it
    finally:
        os.close(fd)


# -- helpers ---------------------------------------------------------------------------------


def _is_same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.lstat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _not_regular_error(
    path: Path | str, kind: str, provider: str | None, action: str
) -> TokenStorageError:
    return TokenStorageError(
        f"Refusing to {action} token file {path}: it is {kind}, not a regular file. "
        "Token files are never followed through links; remove it if you did not create it.",
        path=str(path),
        provider=provider,
    )


def _write_error(path: Path, exc: OSError, provider: str | None) -> TokenStorageError:
    return TokenStorageError(
        f"Cannot write token file {path}: {_describe(exc)}. "
        "The previous token file, if any, is unchanged.",
        path=str(path),
        provider=provider,
        details={"errno": exc.errno},
    )


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc)
