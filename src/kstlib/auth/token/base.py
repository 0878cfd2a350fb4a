"""The token storage interface: :class:`AbstractTokenStorage`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, ClassVar

from kstlib.auth.token._naming import check_provider_name
from kstlib.auth.token.lock import DEFAULT_LOCK_TIMEOUT, LocalLock, LocalLockTable, StorageLock

if TYPE_CHECKING:
    from kstlib.auth.models import Token
    from kstlib.auth.token._settings import StorageSetting

__all__ = ["AbstractTokenStorage"]

_LOCAL_LOCKS_ATTRIBUTE = "_kstlib_local_locks"


class AbstractTokenStorage(ABC):
    """Abstract base class for token storage backends.

    Implementations persist and retrieve one token per provider name, with
    optional encryption (e.g. SOPS). Besides the four abstract methods, every
    storage offers a per-provider lock (:meth:`lock`, :meth:`alock`) that the
    session layer holds around load-refresh-save, and async helpers
    (:meth:`aload`, :meth:`asave`, :meth:`adelete`) that run the sync methods
    in a worker thread unless a backend overrides them.

    Custom backends only have to implement ``save``, ``load``, ``delete`` and
    ``exists``; they then get a process-local lock. A backend shared between
    processes must override :meth:`create_lock`.

    A backend registered under a name (:func:`~kstlib.auth.token.register_token_storage`,
    or the ``kstlib.auth.storage`` entry point group) declares what it accepts under
    ``auth.storage.<name>`` in ``storage_settings``: the keyword arguments of its
    constructor, validated and defaulted by the configuration loader.
    """

    #: Short backend identifier ("memory", "file", "sops", ...).
    backend_name: ClassVar[str] = "custom"
    #: The settings of ``auth.storage.<backend>`` (constructor keywords); None: undeclared,
    #: the section is passed to the constructor as written.
    storage_settings: ClassVar[tuple[StorageSetting, ...] | None] = None

    @abstractmethod
    def save(self, provider_name: str, token: Token) -> None:
        """Persist a token for a provider, replacing any previous one.

        Raises:
            TokenStorageError: If save fails.
        """

    @abstractmethod
    def load(self, provider_name: str) -> Token | None:
        """Load a token for a provider; None when there is none.

        Raises:
            TokenStorageError: If load fails (not for missing tokens).
        """

    @abstractmethod
    def delete(self, provider_name: str) -> bool:
        """Delete a provider's token; True if one was deleted."""

    @abstractmethod
    def exists(self, provider_name: str) -> bool:
        """True if a token is stored for the provider."""

    def describe(self) -> str:
        """A human-readable description of where tokens live (no secret)."""
        return self.backend_name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    # -- locking ---------------------------------------------------------------------------

    def create_lock(self, provider_name: str) -> StorageLock:
        """Return a new, unacquired lock handle for ``provider_name``.

        The default is process-local; backends shared between processes override it.
        """
        check_provider_name(provider_name)
        table: LocalLockTable = self.__dict__.setdefault(_LOCAL_LOCKS_ATTRIBUTE, LocalLockTable())
        return LocalLock(table.get(provider_name), provider_name)

    @contextmanager
    def lock(
        self, provider_name: str, *, timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> Iterator[StorageLock]:
        """Hold the provider's lock for the ``with`` block (not reentrant).

        Raises:
            TokenStorageError: If the lock is not acquired within ``timeout`` seconds.
        """
        handle = self.create_lock(provider_name)
        handle.acquire(timeout)
        try:
            yield handle
        finally:
            handle.release()

    @asynccontextmanager
    async def alock(
        self, provider_name: str, *, timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> AsyncIterator[StorageLock]:
        """Hold the provider's lock for the ``async with`` block, never blocking the loop.

        Raises:
            TokenStorageError: If the lock is not acquired within ``timeout`` seconds.
        """
        handle = self.create_lock(provider_name)
        await handle.aacquire(timeout)
        try:
            yield handle
        finally:
            await handle.arelease()

    # -- async helpers ---------------------------------------------------------------------

    async def aload(self, provider_name: str) -> Token | None:
        """Async :meth:`load` (runs in a worker thread by default)."""
        import asyncio

        return await asyncio.to_thread(self.load, provider_name)

    async def asave(self, provider_name: str, token: Token) -> None:
        """Async :meth:`save` (runs in a worker thread by default)."""
        import asyncio

        await asyncio.to_thread(self.save, provider_name, token)

    async def adelete(self, provider_name: str) -> bool:
        """Async :meth:`delete` (runs in a worker thread by default)."""
        import asyncio

        return await asyncio.to_thread(self.delete, provider_name)

    # -- sensitive access ------------------------------------------------------------------

    @contextmanager
    def sensitive_token(self, provider_name: str) -> Iterator[Token | None]:
        """Load the token and yield it; drop this reference to it on exit.

        Python strings are immutable, so the token bytes cannot be scrubbed
        from memory; this only keeps the exposure window short.

        Example:
            >>> with storage.sensitive_token("corporate") as token:  # doctest: +SKIP
            ...     if token:
            ...         use(token.access_token)
        """
        token = self.load(provider_name)
        try:
            yield token
        finally:
            del token
