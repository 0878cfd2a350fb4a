"""``AbstractAuthProvider``: the provider contract and single-flight refresh.

A refresh is coordinated here once for every caller (``get_token``, the
sync and async paths of :class:`~kstlib.auth.session.ProviderAuth`, the CLI):

    check -> lock (thread lock / asyncio lock, then the storage's
    cross-process lock) -> reload from storage -> re-check -> refresh ->
    validate -> save -> release

so however many threads, tasks and processes share one storage, a stale
token causes exactly one refresh request at the identity provider, and a
rotating refresh token is never spent twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from kstlib.auth.errors import TokenRefreshError
from kstlib.auth.redaction import fingerprint, get_logger

if TYPE_CHECKING:
    import httpx

    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.models import AuthFlow, PreflightReport, Token
    from kstlib.auth.token import AbstractTokenStorage

__all__ = ["AbstractAuthProvider"]

_log = get_logger("kstlib.auth.providers")

#: Longest wait for another thread/process to finish its refresh.
REFRESH_LOCK_TIMEOUT = 60.0


@dataclass(frozen=True)
class _RefreshFailure:
    """The last failed refresh: for which refresh token (a fingerprint), why, and when."""

    refresh_token: str
    error: TokenRefreshError
    at: float

    def applies_to(self, token: Token, arrived_at: float) -> bool:
        """Whether a caller that asked at ``arrived_at`` gets this failure instead of a retry.

        A retryable failure (outage) goes to the callers that were already queued
        behind it, so an outage never becomes a storm, while a caller arriving later
        tries again (the first call after the IdP returns works). A non-retryable one
        (``invalid_grant``) stands until the stored refresh token changes.
        """
        if fingerprint(token.refresh_token) != self.refresh_token:
            return False
        return not self.error.retryable or self.at >= arrived_at


class AbstractAuthProvider(ABC):
    """Base class for OAuth2/OIDC authentication providers.

    Subclasses implement the flow-specific methods; token retrieval and
    refresh coordination are shared.

    Attributes:
        name: Provider identifier (matches the config key).
        config: Provider configuration.
        token_storage: Storage backend for tokens.
    """

    def __init__(
        self, name: str, config: AuthProviderConfig, token_storage: AbstractTokenStorage
    ) -> None:
        self.name = name
        self.config = config
        self.token_storage = token_storage
        self._refresh_lock = threading.Lock()
        self._guard_state = threading.local()
        self._async_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self._async_locks_guard = threading.Lock()
        self._last_failure: _RefreshFailure | None = None
        self._last_refreshed: Token | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, storage={self.token_storage.describe()})"

    # -- abstract flow ---------------------------------------------------------------------

    @property
    @abstractmethod
    def flow(self) -> AuthFlow:
        """The OAuth2 flow used by this provider."""

    @abstractmethod
    def get_authorization_url(self, state: str | None = None) -> tuple[str, str]:
        """Return ``(url, state)`` for the user to visit."""

    @abstractmethod
    def exchange_code(self, code: str, state: str, *, code_verifier: str | None = None) -> Token:
        """Exchange an authorization code for tokens (validated, then stored)."""

    @abstractmethod
    def refresh(self, token: Token | None = None) -> Token:
        """Refresh a token (the stored one when ``token`` is None) and store the result."""

    @abstractmethod
    def revoke(self, token: Token | None = None) -> bool:
        """Revoke a token at the server; False when the server has no revocation endpoint."""

    @abstractmethod
    def preflight(self) -> PreflightReport:
        """Run preflight validation checks."""

    # -- per-request hooks (used by ProviderAuth) -----------------------------------------

    def authorize_request(self, request: httpx.Request, token: Token) -> None:  # noqa: B027
        """Add per-request proof to an API request whose ``Authorization`` is already set.

        The default adds nothing; a sender-constrained token (DPoP, RFC 9449) signs a
        proof for each request here.
        """

    def wants_replay(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Whether ``response`` asks for ``request`` to be sent once more with fresh proof.

        The default says no; a DPoP provider records the server's ``DPoP-Nonce`` and
        answers True to a ``use_dpop_nonce`` challenge (RFC 9449 section 9).
        """
        return False

    # -- token access ----------------------------------------------------------------------

    @property
    def is_authenticated(self) -> bool:
        """True when a non-expired token is stored."""
        token = self.token_storage.load(self.name)
        return token is not None and not token.is_expired

    def get_token(self, *, auto_refresh: bool = True) -> Token | None:
        """Return the stored token, refreshing it first when it is (nearly) expired.

        Returns None when nothing is stored. A refresh failure raises
        :class:`TokenRefreshError`, unless the current token is still valid
        (only inside the refresh skew), in which case it is returned.
        """
        token = self.token_storage.load(self.name)
        if token is None or not auto_refresh or not self._is_stale(token):
            return token
        if not token.is_refreshable:
            return None if token.is_expired else token
        try:
            return self.refresh_if_stale(token)
        except TokenRefreshError:
            if token.is_expired:
                raise
            _log.warning("Proactive refresh for '%s' failed; using the current token", self.name)
            return token

    def save_token(self, token: Token) -> None:
        """Save a token to storage."""
        self.token_storage.save(self.name, token)

    def clear_token(self) -> None:
        """Remove the token from storage."""
        self.token_storage.delete(self.name)

    # -- refresh coordination --------------------------------------------------------------

    def _is_stale(self, token: Token) -> bool:
        return token.needs_refresh(self.config.refresh_skew)

    @contextmanager
    def refresh_guard(self) -> Iterator[None]:
        """Hold the thread lock and the storage's cross-process lock (re-entrant per thread)."""
        depth = getattr(self._guard_state, "depth", 0)
        if depth:  # this thread already holds both locks (or runs for a holder)
            self._guard_state.depth = depth + 1
            try:
                yield
            finally:
                self._guard_state.depth = depth
            return
        with self._refresh_lock, self.token_storage.lock(self.name, timeout=REFRESH_LOCK_TIMEOUT):
            self._guard_state.depth = 1
            try:
                yield
            finally:
                self._guard_state.depth = 0

    def _checked(self, token: Token | None) -> Token:
        if token is None:
            raise TokenRefreshError(
                f"No token stored for '{self.name}'; run `kstlib auth login {self.name}`",
                reason="no token",
                retryable=False,
            )
        return token

    def _refreshed_meanwhile(self, seen: Token | None) -> Token | None:
        """The token this process refreshed while the caller waited, if still fresh.

        Checked right after the in-process lock, before the storage's lock and a
        reload: a burst of callers queued behind one refresh costs no storage I/O.
        """
        recent = self._last_refreshed
        if (
            recent is not None
            and seen is not None
            and recent.access_token != seen.access_token
            and recent.issued_at >= seen.issued_at  # newer than what the caller rejected
            and not self._is_stale(recent)
        ):
            return recent
        return None

    def _decide(
        self, current: Token | None, seen: Token | None, force: bool, arrived_at: float
    ) -> Token | None:
        """Under the lock: ``current`` when no refresh is needed (any more), else None."""
        if current is None:
            return None
        if seen is not None and current.access_token != seen.access_token:
            return current  # someone else refreshed while we waited for the lock
        if not force and not self._is_stale(current):
            return current
        failure = self._last_failure
        if failure is not None and failure.applies_to(current, arrived_at):
            # The refresh this caller queued behind has just failed: share its outcome.
            error = failure.error
            raise TokenRefreshError(
                error.message,
                reason=error.reason,
                retryable=error.retryable,
                error_code=error.error_code,
                status_code=error.status_code,
            )
        return None

    def _refresh_recording(self, token: Token) -> Token:
        """:meth:`_refresh_and_store`, remembering a failure for the callers queued behind."""
        try:
            refreshed = self._refresh_and_store(token)
        except TokenRefreshError as error:
            self._last_failure = _RefreshFailure(
                fingerprint(token.refresh_token), error, time.monotonic()
            )
            raise
        self._last_failure = None
        self._last_refreshed = refreshed
        return refreshed

    def refresh_if_stale(self, seen: Token | None = None, *, force: bool = False) -> Token:
        """Single-flight refresh for sync callers.

        ``seen`` is the token the caller found stale (or rejected with a 401,
        with ``force=True``). If another thread or process replaced it while
        this one waited for the lock, the replacement is returned and no
        request is sent.
        """
        arrived_at = time.monotonic()
        with self.refresh_guard():
            recent = self._refreshed_meanwhile(seen)
            if recent is not None:
                return recent
            current = self.token_storage.load(self.name)
            fresh = self._decide(current, seen, force, arrived_at)
            if fresh is not None or current is None:
                return self._checked(fresh)
            return self._refresh_recording(current)

    def _async_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._async_locks_guard:
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = asyncio.Lock()
                self._async_locks[loop] = lock
            return lock

    async def arefresh_if_stale(self, seen: Token | None = None, *, force: bool = False) -> Token:
        """Single-flight refresh for asyncio callers; never blocks the event loop.

        Tasks queue on an asyncio lock, then on the storage's async
        cross-process lock; the refresh's HTTP call and storage I/O run in a
        worker thread.
        """
        arrived_at = time.monotonic()
        async with self._async_lock():
            recent = self._refreshed_meanwhile(seen)
            if recent is not None:
                return recent
            return await self._arefresh_locked(seen, force, arrived_at)

    async def _arefresh_locked(self, seen: Token | None, force: bool, arrived_at: float) -> Token:
        async with self.token_storage.alock(self.name, timeout=REFRESH_LOCK_TIMEOUT):
            current = await self.token_storage.aload(self.name)
            fresh = self._decide(current, seen, force, arrived_at)
            if fresh is not None or current is None:
                return self._checked(fresh)
            return await asyncio.to_thread(self._refresh_holding_lock, current)

    def _refresh_holding_lock(self, token: Token) -> Token:
        """Run in a worker thread for an asyncio caller that holds the storage lock.

        Marks this thread as a holder so that :meth:`refresh` does not try to
        take the locks again (taking the thread lock here could deadlock with
        a sync thread waiting for the storage lock the async caller holds).
        """
        self._guard_state.depth = 1
        try:
            return self._refresh_recording(token)
        finally:
            self._guard_state.depth = 0

    def _refresh_and_store(self, token: Token) -> Token:
        """Refresh ``token`` and store the result; the caller holds the refresh guard.

        The default delegates to :meth:`refresh` (for custom providers);
        OAuth2Provider overrides it with the real grant.
        """
        return self.refresh(token)

    # -- context manager -------------------------------------------------------------------

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release resources (HTTP clients). The base class holds none."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: types.TracebackType | None,
    ) -> None:
        self.close()
