"""A validated snapshot of what ``kstlib auth token``'s fast path needs from the configuration.

Reading ``kstlib.conf.yml`` (YAML parsing, the trust rules, the typed settings) costs
several times Python's own start-up, and a credential helper runs hundreds of times a
day. Once the full loader has resolved a provider to a token file (file storage only)
without any error or warning, the fast path records ``provider argument -> (provider
name, token file, refresh skew)`` here, with the key of everything that decision came
from. The next call that finds the same key reads the token file directly (through the
same checked reader and document parser as :class:`~kstlib.auth.token.FileTokenStorage`);
any difference sends it back to the full loader.

The snapshot is input too, so it is trusted only when all of this holds:

* it is the regular file ``$XDG_CACHE_HOME/kstlib/cli-token-snapshot.json`` (``~/.cache``
  when unset), opened without following a symbolic link, owned by the current user, mode
  ``0600``, at most :data:`MAX_SNAPSHOT_SIZE` bytes, in a directory (not a symbolic link)
  owned by the user and writable by nobody else;
* its key equals the current one: the user id, the working directory, the environment
  variables that choose the configuration (:data:`KEY_ENVIRONMENT`), and for every file
  the search considers (missing ones included) and every module of kstlib that takes part
  in the decision: (path, size, mtime_ns, ctime_ns, inode, device, mode, owner).

It is never written when a ``./kstlib.conf.yml`` is in the search (the trust of the
working directory's file depends on more than its own metadata), when a source file
changed less than :data:`RACY_WINDOW_NS` ago (a change within the file system's
timestamp granularity could otherwise go unseen), when a source is a SOPS file, or for any
storage but ``file``. It
holds no secret: names, a path and a number. Standard library only, and reading it loads
neither :mod:`json` (see :mod:`kstlib._fastjson`) nor :mod:`typing`.
"""

from __future__ import annotations

import math
import os
import stat
import time

from kstlib import _fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

__all__ = [
    "KEY_ENVIRONMENT",
    "MAX_SNAPSHOT_SIZE",
    "RACY_WINDOW_NS",
    "SNAPSHOT_NAME",
    "SnapshotEntry",
    "lookup",
    "record",
    "snapshot_path",
]

SNAPSHOT_VERSION = 1
SNAPSHOT_NAME = "cli-token-snapshot.json"
#: Most bytes of a snapshot file read.
MAX_SNAPSHOT_SIZE = 65536
#: Environment variables that choose which configuration files are read, or where.
KEY_ENVIRONMENT = ("KSTLIB_CONFIG", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "HOME", "XDG_CACHE_HOME")
#: A snapshot is not written while a source file is younger than this (nanoseconds).
RACY_WINDOW_NS = 2_000_000_000
#: The modules (relative to the ``kstlib`` package) whose code takes part in the decision.
_CODE_FILES = (
    "config.py",
    "auth/config.py",
    "auth/_config/builder.py",
    "auth/_config/loading.py",
    "auth/_config/provider.py",
    "auth/_config/settings.py",
    "auth/_config/values.py",
    "auth/_tokendata.py",  # DEFAULT_REFRESH_SKEW, the skew recorded when none is configured
    "auth/token/factory.py",
    "auth/token/file.py",
    "auth/token/_settings.py",
    "auth/token/_naming.py",
    "cli/_fast.py",
    "cli/_snapshot.py",
)
_SOPS_SUFFIXES = (".sops.yml", ".sops.yaml")
_DEFAULT = "default"  # the entry of ``kstlib auth token`` without a provider


class SnapshotEntry(tuple[str, str, float]):
    """What the full loader decided for one provider argument: ``(name, token_path, skew)``
    (a tuple, like a named tuple, without :mod:`typing`'s or :mod:`collections`' import)."""

    __slots__ = ()

    def __new__(cls, name: str, token_path: str, skew: float) -> SnapshotEntry:
        return tuple.__new__(cls, (name, token_path, skew))

    @property
    def name(self) -> str:
        """The provider's name."""
        return self[0]

    @property
    def token_path(self) -> str:
        """The absolute path of its token file."""
        return self[1]

    @property
    def skew(self) -> float:
        """Its refresh skew (seconds)."""
        return self[2]

    def as_dict(self) -> dict[str, Any]:
        """The entry as the snapshot file holds it."""
        return {"name": self.name, "token_path": self.token_path, "skew": self.skew}

    def __repr__(self) -> str:
        name, token_path, skew = self
        return f"SnapshotEntry(name={name!r}, token_path={token_path!r}, skew={skew!r})"


def snapshot_path(environ: Mapping[str, str] | None = None) -> str:
    """``$XDG_CACHE_HOME/kstlib/cli-token-snapshot.json`` (``~/.cache`` when not absolute)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kstlib", SNAPSHOT_NAME)


def _stamp(path: str) -> list[int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_ino,
        info.st_dev,
        info.st_mode,
        info.st_uid,
    ]


def _code_paths() -> list[str]:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [os.path.join(package, *name.split("/")) for name in _CODE_FILES]


def current_key(sources: Iterable[str]) -> dict[str, Any]:
    """The key of the current process for these source files (see the module doc)."""
    return _key(sources)


def _key(sources: Iterable[str]) -> dict[str, Any]:
    """The key of the current process for these source files."""
    return {
        "uid": os.geteuid(),
        "cwd": os.getcwd(),
        "env": [os.environ.get(name) for name in KEY_ENVIRONMENT],
        "sources": [[path, _stamp(path)] for path in sources],
        "code": [[path, _stamp(path)] for path in _code_paths()],
    }


def _entry_key(provider: str | None) -> str:
    return _DEFAULT if provider is None else f"={provider}"


def _private_directory(directory: str) -> bool:
    """True when ``directory`` is a real directory of the current user, writable by nobody else."""
    try:
        info = os.lstat(directory)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _read_snapshot(path: str) -> dict[str, Any] | None:
    """The parsed snapshot file when it passes every check of the module doc, else None."""
    if not _private_directory(os.path.dirname(path)):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) != 0o600
            or info.st_size > MAX_SNAPSHOT_SIZE
        ):
            return None
        data = os.read(fd, MAX_SNAPSHOT_SIZE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_SNAPSHOT_SIZE:
        return None
    try:
        document = _fastjson.loads(data)
    except ValueError:
        return None
    if (
        not isinstance(document, dict)
        or document.get("version") != SNAPSHOT_VERSION
        or not isinstance(document.get("key"), dict)
        or not isinstance(document.get("entries"), dict)
    ):
        return None
    return document


def _valid_entry(raw: Any) -> SnapshotEntry | None:
    if not isinstance(raw, dict):
        return None
    name, token_path, skew = raw.get("name"), raw.get("token_path"), raw.get("skew")
    if not isinstance(name, str) or not name or not isinstance(token_path, str):
        return None
    if not os.path.isabs(token_path) or "\x00" in token_path:
        return None
    if isinstance(skew, bool) or not isinstance(skew, int | float):
        return None
    if not math.isfinite(skew) or not 0 <= skew <= 86400:
        return None
    return SnapshotEntry(name, token_path, float(skew))


def lookup(provider: str | None) -> SnapshotEntry | None:
    """The recorded decision for ``provider`` when the snapshot is trusted and its key is
    the current one; None otherwise (the caller then runs the full loader)."""
    document = _read_snapshot(snapshot_path())
    if document is None:
        return None
    key = document["key"]
    sources = key.get("sources")
    if not isinstance(sources, list) or not all(
        isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) for item in sources
    ):
        return None
    if key != _key(item[0] for item in sources):
        return None
    return _valid_entry(document["entries"].get(_entry_key(provider)))


def _racy(stamps: Iterable[list[int] | None]) -> bool:
    now = time.time_ns()
    return any(s is not None and now - max(s[1], s[2]) < RACY_WINDOW_NS for s in stamps)


def record(
    provider: str | None,
    entry: SnapshotEntry,
    sources: Iterable[str],
    *,
    cwd_file: str | None,
    expected_key: Mapping[str, Any] | None = None,
) -> bool:
    """Add ``entry`` for ``provider`` to the snapshot (written atomically, mode 0600).

    ``sources`` are every file the configuration search considered (missing ones
    included), ``cwd_file`` the working directory's file when the search includes it,
    ``expected_key`` the :func:`current_key` taken before the load that decided ``entry``
    (nothing is written when it differs now: a file changed while it was read).
    Returns False, writing nothing, when the rules of the module doc forbid it or any
    file operation fails (the snapshot is only an accelerator).
    """
    sources = list(sources)
    if cwd_file is not None and os.path.lexists(cwd_file):
        return False
    if any(path.endswith(_SOPS_SUFFIXES) for path in sources):
        return False  # decrypted by sops with keys the key does not cover
    key = _key(sources)
    if expected_key is not None and key != expected_key:
        return False
    if _racy(stamp for _, stamp in key["sources"]) or _racy(s for _, s in key["code"]):
        return False
    path = snapshot_path()
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return False
    if not _private_directory(directory):
        return False
    existing = _read_snapshot(path)
    entries: dict[str, Any] = {}
    if existing is not None and existing["key"] == key:
        entries = dict(existing["entries"])
    entries[_entry_key(provider)] = entry.as_dict()
    import json

    document = {"version": SNAPSHOT_VERSION, "key": key, "entries": entries}
    data = json.dumps(document, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_SNAPSHOT_SIZE:  # too many entries: start again with this one
        document["entries"] = {_entry_key(provider): entry.as_dict()}
        data = json.dumps(document, separators=(",", ":")).encode("utf-8")
        if len(data) > MAX_SNAPSHOT_SIZE:
            return False
    temporary = os.path.join(directory, f".{SNAPSHOT_NAME}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temporary, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError:
        try:  # noqa: SIM105 - contextlib is not imported on the fast path
            os.unlink(temporary)
        except OSError:
            pass
        return False
    return True
