"""Per-provider locks that serialise token refreshes across threads, tasks and processes.

:class:`StorageLock` is the interface. Each call to
:meth:`AbstractTokenStorage.create_lock` returns a new, unacquired handle;
a handle is held by at most one owner at a time and is identified, while
held, by :attr:`StorageLock.owner` (``host:pid:random``). A backend shared by
a fleet (e.g. Redis) implements it as a lease keyed by that owner and
releases only a lease it still owns.

Locks are **not reentrant**: acquiring a provider's lock while already holding
it (through another handle, in the same thread or task) waits until the
timeout and then fails. Acquire the lock once around the whole critical
section (load, refresh, save) and do not call code that locks it again.

Implementations here:

* :class:`FileLock`: ``fcntl.flock`` on ``<dir>/.locks/<encoded name>.lock``
  (mode ``0600``). Every acquisition opens its own file descriptor, so two
  threads of one process exclude each other as two processes do. The kernel
  drops the lock when its holder dies. Lock files are never deleted (deleting
  one while a process waits on it would let two holders in).
* :class:`LocalLock`: a process-local ``threading.Lock`` per provider, for
  storages that live in one process (memory, and the default for custom
  backends).

Both poll a non-blocking attempt with a short exponential backoff; the async
variants sleep with ``asyncio.sleep`` between attempts, so they never block
the event loop and a cancelled waiter holds nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from kstlib.auth.errors import TokenStorageError
from kstlib.auth.token._atomic import FILE_MODE, ensure_private_directory

__all__ = ["DEFAULT_LOCK_TIMEOUT", "FileLock", "LocalLock", "LocalLockTable", "StorageLock"]

#: Seconds a lock acquisition waits by default.
DEFAULT_LOCK_TIMEOUT = 30.0

_FIRST_PAUSE = 0.001
_MAX_PAUSE = 0.025
_LOCK_FILE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def new_owner_id() -> str:
    """A unique owner identity: ``host:pid:random``."""
    return f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(6)}"


class StorageLock(ABC):
    """An exclusive lock on one provider's token, shared by every user of the storage.

    Args:
        provider_name: The provider whose token the lock protects.
    """

    def __init__(self, provider_name: str) -> None:
        self.provider_name = provider_name

    @property
    @abstractmethod
    def owner(self) -> str | None:
        """The owner identity while this handle holds the lock, else None."""

    @property
    def held(self) -> bool:
        """True while this handle holds the lock."""
        return self.owner is not None

    @abstractmethod
    def acquire(self, timeout: float = DEFAULT_LOCK_TIMEOUT) -> str:
        """Block until the lock is held (or ``timeout`` seconds pass); return the owner id.

        Raises:
            TokenStorageError: On timeout (naming the provider and the lock), or
                if this handle already holds the lock.
        """

    @abstractmethod
    def release(self) -> None:
        """Release the lock held by this handle.

        Raises:
            TokenStorageError: If this handle does not hold the lock.
        """

    @abstractmethod
    async def aacquire(self, timeout: float = DEFAULT_LOCK_TIMEOUT) -> str:
        """Like :meth:`acquire`, without blocking the event loop; cancellation-safe."""

    @abstractmethod
    async def arelease(self) -> None:
        """Like :meth:`release`, without blocking the event loop."""

    @abstractmethod
    def describe(self) -> str:
        """Where the lock lives, for messages (no secret)."""


class PollingLock(StorageLock):
    """A :class:`StorageLock` built on a non-blocking attempt, polled with backoff.

    Subclasses implement :meth:`_try_acquire`, :meth:`_release_held` and
    :meth:`_abandon`.
    """

    def __init__(self, provider_name: str) -> None:
        super().__init__(provider_name)
        self._owner: str | None = None

    @property
    def owner(self) -> str | None:
        """The owner identity while this handle holds the lock, else None."""
        return self._owner

    def acquire(self, timeout: float = DEFAULT_LOCK_TIMEOUT) -> str:
        """Block until the lock is held (or ``timeout`` seconds pass); return the owner id."""
        self._check_not_held()
        try:
            for pause in self._attempts(timeout):
                time.sleep(pause)
        except BaseException:
            self._abandon()
            raise
        return self._mark_held()

    async def aacquire(self, timeout: float = DEFAULT_LOCK_TIMEOUT) -> str:
        """Like :meth:`acquire`, sleeping with ``asyncio.sleep`` between attempts."""
        import asyncio

        self._check_not_held()
        try:
            for pause in self._attempts(timeout):
                await asyncio.sleep(pause)
        except BaseException:
            self._abandon()
            raise
        return self._mark_held()

    def release(self) -> None:
        """Release the lock held by this handle."""
        if self._owner is None:
            raise TokenStorageError(
                f"Cannot release the lock of provider '{self.provider_name}' "
                f"({self.describe()}): this handle does not hold it.",
                provider=self.provider_name,
            )
        self._owner = None
        self._release_held()

    async def arelease(self) -> None:
        """Release the lock held by this handle (never blocks)."""
        self.release()

    def _attempts(self, timeout: float) -> Iterator[float]:
        """Try to take the lock; yield how long to pause before each new try.

        Returns once the lock is taken; raises TokenStorageError at the deadline.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        pause = _FIRST_PAUSE
        while not self._try_acquire():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error(timeout)
            yield min(pause * random.uniform(0.5, 1.5), remaining)  # noqa: S311 (jitter)
            pause = min(pause * 2, _MAX_PAUSE)

    def _mark_held(self) -> str:
        self._owner = new_owner_id()
        self._on_acquired(self._owner)
        return self._owner

    def _check_not_held(self) -> None:
        if self._owner is not None:
            raise TokenStorageError(
                f"This handle already holds the lock of provider '{self.provider_name}'; "
                "locks are not reentrant.",
                provider=self.provider_name,
            )

    def _timeout_error(self, timeout: float) -> TokenStorageError:
        holder = self._current_holder()
        held_by = f", held by {holder}" if holder else ""
        return TokenStorageError(
            f"Timed out after {timeout:g} s waiting for the token lock of provider "
            f"'{self.provider_name}' ({self.describe()}{held_by}). Another process or task "
            "is probably refreshing or saving this provider's token; retry, or stop it if it "
            "is stuck.",
            path=self._lock_path(),
            provider=self.provider_name,
        )

    def _on_acquired(self, owner: str) -> None:
        """Hook run right after the lock is taken (e.g. to record the owner)."""

    def _current_holder(self) -> str | None:
        """The current holder's identity when it can be known, for the timeout message."""
        return None

    def _lock_path(self) -> str | None:
        return None

    @abstractmethod
    def _try_acquire(self) -> bool:
        """Take the lock if it is free, without waiting; True when taken."""

    @abstractmethod
    def _release_held(self) -> None:
        """Release the lock this handle took."""

    @abstractmethod
    def _abandon(self) -> None:
        """Drop any resource of an acquisition that failed or was cancelled."""


class FileLock(PollingLock):
    """A cross-process lock: ``flock`` on a per-provider lock file.

    Args:
        path: The lock file (``<dir>/.locks/<encoded name>.lock``); its
            directory is created ``0700`` when needed.
        provider_name: The provider whose token the lock protects.
    """

    def __init__(self, path: Path, provider_name: str) -> None:
        super().__init__(provider_name)
        self.path = path
        self._fd: int | None = None

    def describe(self) -> str:
        """The lock file path."""
        return f"lock file {self.path}"

    def _lock_path(self) -> str:
        return str(self.path)

    def _try_acquire(self) -> bool:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise self._os_error("lock", exc) from exc
        if not self._still_linked(fd):  # lock file replaced since we opened it: start over
            self._abandon()
            return False
        return True

    def _open(self) -> int:
        if self._fd is None:
            try:
                ensure_private_directory(self.path.parent, purpose="lock directory")
                self._fd = os.open(self.path, _LOCK_FILE_FLAGS, FILE_MODE)
                if os.fstat(self._fd).st_mode & 0o777 != FILE_MODE:
                    os.fchmod(self._fd, FILE_MODE)
            except OSError as exc:
                self._abandon()
                raise self._os_error("open", exc) from exc
        return self._fd

    def _still_linked(self, fd: int) -> bool:
        try:
            on_disk = os.lstat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)

    def _on_acquired(self, owner: str) -> None:
        if self._fd is None:
            return
        record = json.dumps({"owner": owner, "since": time.time()}).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, record, 0)
        except OSError:
            pass  # the owner record is informational only

    def _current_holder(self) -> str | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                record = json.loads(os.read(fd, 4096) or b"null")
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return None
        owner = record.get("owner") if isinstance(record, dict) else None
        return owner if isinstance(owner, str) else None

    def _release_held(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def _abandon(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _os_error(self, action: str, exc: OSError) -> TokenStorageError:
        return TokenStorageError(
            f"Cannot {action} the token lock of provider '{self.provider_name}' "
            f"({self.path}): {exc.strerror or exc}.",
            path=str(self.path),
            provider=self.provider_name,
        )


class LocalLockTable:
    """One ``threading.Lock`` per provider name, created on first use (thread-safe)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, provider_name: str) -> threading.Lock:
        """The lock of ``provider_name``."""
        with self._guard:
            return self._locks.setdefault(provider_name, threading.Lock())


class LocalLock(PollingLock):
    """A process-local lock: excludes threads and tasks of this process only.

    Args:
        lock: The provider's shared ``threading.Lock`` (from a :class:`LocalLockTable`).
        provider_name: The provider whose token the lock protects.
    """

    def __init__(self, lock: threading.Lock, provider_name: str) -> None:
        super().__init__(provider_name)
        self._lock = lock

    def describe(self) -> str:
        """Says that the lock is process-local."""
        return "process-local lock"

    def _try_acquire(self) -> bool:
        return self._lock.acquire(blocking=False)

    def _release_held(self) -> None:
        self._lock.release()

    def _abandon(self) -> None:
        """Nothing to drop: a failed attempt holds nothing."""
