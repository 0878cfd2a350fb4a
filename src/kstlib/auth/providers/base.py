"""``AbstractAuthProvider``: the provider contract and the one token pipeline.

The provider decides which token a caller uses now; everyone asks it
(:meth:`~AbstractAuthProvider.acquire` / :meth:`~AbstractAuthProvider.aacquire`):
``ProviderAuth``/``AuthSession``, ``get_token``, the CLI. A renewal is
coordinated here once for every caller:

    load -> fresh? done -> lock (thread lock / asyncio lock, then the
    storage's cross-process lock) -> reload -> re-check -> renew ->
    validate -> save -> release

so however many threads, tasks and processes share one storage, a stale
token causes exactly one request at the identity provider, and a rotating
refresh token is never spent twice. Staleness is one decision,
:meth:`Token.refresh_due_in <kstlib.auth.models.Token.refresh_due_in>` (the
skew clamped to half the token's lifetime), also used by the CLI's fast path.
After a failure the provider keeps a still-valid token for a short pause; after
``invalid_grant`` it marks the refresh token dead (in the stored token, so other
processes see it) and never sends it again; a token that a resource server
rejects (401) is renewed at most once per growing pause.
"""

from __future__ import annotations

import logging
import threading
import time
import types
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self

from kstlib._durations import span as _span
from kstlib.auth.errors import (
    TokenError,
    TokenExpiredError,
    TokenRefreshError,
    TokenStorageError,
)
from kstlib.auth.redaction import fingerprint, get_logger

if TYPE_CHECKING:
    import asyncio

    import httpx

    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.models import AuthFlow, PreflightReport, Token
    from kstlib.auth.token import AbstractTokenStorage

__all__ = ["AbstractAuthProvider", "AcquiredToken"]

_log = get_logger("kstlib.auth.providers")

#: Longest wait for another thread/process to finish its refresh.
REFRESH_LOCK_TIMEOUT = 60.0
#: Seconds a still-valid token is used as is after a failed proactive refresh, before the
#: next attempt (an outage costs one refresh attempt per pause, not one per request).
REFRESH_RETRY_PAUSE = 5.0
#: A token obtained less than this many seconds ago is not renewed because a resource
#: server rejected it (401): a new token would be rejected the same way.
REJECTION_GRACE = 10.0
#: After a renewal caused by a 401, further 401s renew again only after this pause,
#: doubled for each such renewal in a row (up to :data:`REJECTION_BACKOFF_MAX`).
REJECTION_BACKOFF = 10.0
REJECTION_BACKOFF_MAX = 300.0
#: Metadata key of a stored token whose refresh token the server refused (``invalid_grant``):
#: the refresh token's fingerprint, so the mark dies with that refresh token.
REFRESH_REJECTED_KEY = "kstlib_refresh_token_rejected"


@dataclass(frozen=True)
class AcquiredToken:
    """What :meth:`AbstractAuthProvider.acquire` answers: the token to use now, and until when.

    ``stale_at`` is a :func:`time.monotonic` time: until then the caller may keep
    using ``token`` without asking again (a session caches its header until then).
    """

    token: Token
    stale_at: float

    def __repr__(self) -> str:
        return (
            f"AcquiredToken(token={self.token!r}, stale_in={self.stale_at - time.monotonic():.1f})"
        )


@dataclass(frozen=True)
class _RefreshFailure:
    """The last failed renewal: for which refresh token (a fingerprint), why, and when."""

    refresh_token: str
    error: TokenRefreshError
    at: float

    def shared_with(self, token: Token | None, arrived_at: float) -> bool:
        """Whether a caller that asked at ``arrived_at`` gets this failure instead of a retry.

        A retryable failure (outage) goes to the callers that were already queued
        behind it, so an outage never becomes a storm, while a caller arriving later
        tries again (the first call after the IdP returns works). A non-retryable one
        stands until the stored refresh token changes.
        """
        if fingerprint(token.refresh_token if token else None) != self.refresh_token:
            return False
        if token is None or not token.refresh_token:
            # a grant that needs no user (client credentials, token exchange): nothing is
            # spent; the failure stands for the pause, then a caller tries again
            return self.at >= arrived_at or time.monotonic() < self.at + REFRESH_RETRY_PAUSE
        return not self.error.retryable or self.at >= arrived_at

    def pauses(self, token: Token, now: float) -> bool:
        """Whether a still-valid ``token`` is kept as is (no new attempt) at ``now``."""
        return (
            (self.error.retryable or not token.refresh_token)
            and fingerprint(token.refresh_token) == self.refresh_token
            and now < self.at + REFRESH_RETRY_PAUSE
        )


def _copy(error: TokenRefreshError) -> TokenRefreshError:
    return TokenRefreshError(
        error.message,
        reason=error.reason,
        retryable=error.retryable,
        error_code=error.error_code,
        status_code=error.status_code,
    )


def marked_refused(token: Token) -> bool:
    """Whether the stored ``token`` carries the mark of a refused refresh token."""
    label = token.metadata.get(REFRESH_REJECTED_KEY)
    return bool(token.refresh_token) and label == fingerprint(token.refresh_token)


def _lifetime(token: Token) -> str:
    """``expires in 12 min``, ``expired 3 min ago`` or ``expiry unknown``."""
    left = token.expires_in
    if left is None:
        return "expiry unknown"
    return f"expires in {_span(left)}" if left >= 0 else f"expired {_span(left)} ago"


def _seconds_left(token: Token) -> float:
    """Seconds until ``token`` expires (0 when expired; an hour after issue when unknown)."""
    if token.expires_at is None:
        return max(token.refresh_due_in(0.0), 0.0)
    return max((token.expires_at - datetime.now(UTC)).total_seconds(), 0.0)


class AbstractAuthProvider(ABC):
    """Base class for OAuth2/OIDC authentication providers.

    Subclasses implement the flow-specific methods; which token to use, and
    when and how often to renew it, is decided here for every caller.

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
        #: The last token this process renewed, and the monotonic time the renewal ended.
        self._last_refreshed: tuple[Token, float] | None = None
        #: Fingerprints of refresh tokens refused with invalid_grant (also when the mark
        #: could not be saved in the storage).
        self._rejected_refresh_tokens: set[str] = set()
        #: Monotonic time of the last renewal caused by a 401, and how many in a row.
        self._rejection_at: float | None = None
        self._rejection_streak = 0

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

    # -- renewal (what a grant overrides) --------------------------------------------------

    def can_obtain(self) -> bool:
        """Whether this provider gets a first token itself, with nothing stored and no user.

        The default (a user logs in) says no: :meth:`acquire` then raises
        :class:`TokenExpiredError`. A client-credentials or token-exchange provider says
        yes, and its :meth:`_renew` is called with ``None`` under the same locks as a
        renewal (one request for every concurrent caller).
        """
        return False

    def can_renew(self, token: Token) -> bool:
        """Whether this provider can get a new token to replace ``token`` without the user.

        The default: ``token`` has a refresh token that the server has not refused
        (``invalid_grant``). Providers with another way to renew (client credentials,
        token exchange) override this and :meth:`_renew`.
        """
        return bool(token.refresh_token) and not self.refresh_token_rejected(token)

    def refresh_token_rejected(self, token: Token) -> bool:
        """Whether the server refused the refresh token of ``token`` (``invalid_grant``)."""
        if not token.refresh_token:
            return False
        return marked_refused(token) or (
            fingerprint(token.refresh_token) in self._rejected_refresh_tokens
        )

    def _renew(self, token: Token | None) -> Token:
        """Get, validate and store a new token replacing ``token``; the caller holds the locks.

        ``token`` is None only for a provider that :meth:`can_obtain` a first token. The
        default is the refresh grant (:meth:`_refresh_and_store`).
        """
        if token is None:
            raise self._not_logged_in()
        return self._refresh_and_store(token)

    def _refresh_and_store(self, token: Token) -> Token:
        """Refresh ``token`` and store the result; the caller holds the refresh guard.

        The default delegates to :meth:`refresh` (for custom providers);
        OAuth2Provider overrides it with the real grant.
        """
        return self.refresh(token)

    # -- token access ----------------------------------------------------------------------

    @property
    def is_authenticated(self) -> bool:
        """True when a non-expired token is stored."""
        token = self.token_storage.load(self.name)
        return token is not None and not token.is_expired

    def get_token(self, *, auto_refresh: bool = True) -> Token | None:
        """Return the token to use, renewed first when it is stale (see :meth:`acquire`).

        Returns None when nothing is stored, or when the token has expired and cannot
        be renewed. A failed renewal raises :class:`TokenRefreshError`, unless the
        current token is still valid (only inside the refresh skew): then it is returned.
        """
        if not auto_refresh:
            return self.token_storage.load(self.name)
        try:
            return self.acquire().token
        except TokenExpiredError:
            return None

    def save_token(self, token: Token) -> None:
        """Save a token to storage."""
        self.token_storage.save(self.name, token)

    def clear_token(self) -> None:
        """Remove the token from storage."""
        self.token_storage.delete(self.name)

    # -- the pipeline: decisions (no I/O) --------------------------------------------------

    def _skew(self, skew: float | None) -> float:
        return self.config.refresh_skew if skew is None else skew

    def _not_logged_in(self) -> TokenExpiredError:
        name = self.name
        if self.can_obtain():  # a service flow: there is no login
            return TokenExpiredError(
                f"No token is stored for '{name}' yet; 'kstlib auth token {name}' "
                "(or provider.get_token()) gets one"
            )
        return TokenExpiredError(f"Not logged in to '{name}'; run 'kstlib auth login {name}'")

    def _cannot_renew(self, token: Token) -> TokenError:
        """The error for a token that has expired (or must be renewed) and cannot be."""
        name = self.name
        if self.refresh_token_rejected(token):
            return TokenRefreshError(
                f"The token of '{name}' has expired and its refresh token was refused by the "
                f"server (invalid_grant); run 'kstlib auth login {name}'",
                reason="refresh token refused",
                retryable=False,
                error_code="invalid_grant",
            )
        return TokenExpiredError(
            f"The token of '{name}' has expired and cannot be refreshed; "
            f"run 'kstlib auth login {name}'"
        )

    @staticmethod
    def _until_expiry(token: Token, now: float) -> AcquiredToken:
        return AcquiredToken(token, now + _seconds_left(token))

    @staticmethod
    def _fresh(token: Token, skew: float, now: float) -> AcquiredToken:
        return AcquiredToken(token, now + max(token.refresh_due_in(skew), 0.0))

    def _plan(
        self, token: Token | None, skew: float, now: float, *, renew: bool = True
    ) -> AcquiredToken | None:
        """Without a lock: the token to use as is, or None when it must be renewed.

        Each decision is logged at INFO (``kstlib -v``), with its reason.
        """
        name = self.name
        if token is None:
            if renew and self.can_obtain():
                _log.info("No token is stored for '%s': obtaining one", name)
                return None
            _log.info("No token is stored for '%s'", name)
            raise self._not_logged_in()
        due = token.refresh_due_in(skew)
        if due > 0:
            if _log.isEnabledFor(logging.INFO):  # the hot path: no formatting unless shown
                _log.info(
                    "Token of '%s' is fresh (%s; refresh due in %s): not refreshing",
                    name,
                    _lifetime(token),
                    _span(due),
                )
            return AcquiredToken(token, now + due)
        if not renew or not self.can_renew(token):
            why = "auto_refresh is off" if not renew else self._why_not_renewable(token)
            if token.is_expired:
                _log.info("Token of '%s' %s and cannot be renewed: %s", name, _lifetime(token), why)
                raise self._cannot_renew(token)
            _log.info(
                "Token of '%s' is due for refresh (%s) but cannot be renewed: %s; "
                "using it until it expires",
                name,
                _lifetime(token),
                why,
            )
            return self._until_expiry(token, now)
        failure = self._last_failure
        if failure is not None and not token.is_expired and failure.pauses(token, now):
            end = min(failure.at + REFRESH_RETRY_PAUSE, now + _seconds_left(token))
            _log.info(
                "Token of '%s' is due for refresh, but the last attempt failed %s ago: "
                "using it (%s) for %s more",
                name,
                _span(now - failure.at),
                _lifetime(token),
                _span(end - now),
            )
            return AcquiredToken(token, end)
        _log.info(
            "Token of '%s' is due for refresh (%s, refresh skew %s): refreshing",
            name,
            _lifetime(token),
            _span(token.effective_skew(skew)),
        )
        return None

    def _why_not_renewable(self, token: Token) -> str:
        """Why :meth:`can_renew` says no, in words (for the log)."""
        if self.refresh_token_rejected(token):
            return "its refresh token was refused by the server (invalid_grant)"
        if not token.refresh_token:
            return "no refresh token"
        return "this provider has no way to renew it"

    def _may_renew_rejected(self, token: Token, now: float) -> bool:
        """Whether a token a resource server rejected (401) may be renewed now."""
        age = (datetime.now(UTC) - token.issued_at).total_seconds()
        if age < REJECTION_GRACE:
            return False  # just obtained: a new one would be refused the same way
        if self._rejection_at is None:
            return True
        doublings = min(max(self._rejection_streak - 1, 0), 16)
        pause = min(REJECTION_BACKOFF * float(2**doublings), REJECTION_BACKOFF_MAX)
        return now - self._rejection_at >= pause

    def _note_rejection_renewal(self, now: float) -> None:
        last = self._rejection_at
        recent = last is not None and now - last < 2 * REJECTION_BACKOFF_MAX
        self._rejection_streak = self._rejection_streak + 1 if recent else 1
        self._rejection_at = now

    def _decide(
        self,
        current: Token | None,
        seen: Token | None,
        *,
        force: bool,
        rejected: bool,
        skew: float,
        arrived_at: float,
    ) -> AcquiredToken | None:
        """Under the locks: the token to use, or None when ``current`` must be renewed now."""
        now = time.monotonic()
        if current is None:
            if not self.can_obtain():
                raise self._not_logged_in()
            failure = self._last_failure
            if failure is not None and failure.shared_with(None, arrived_at):
                raise _copy(failure.error)  # the fetch this caller queued behind failed
            return None
        if seen is not None and current.access_token != seen.access_token:
            # someone else renewed (or logged in) while this caller waited for the lock
            _log.info("Token of '%s' was renewed meanwhile by another caller: using it", self.name)
            return self._fresh(current, skew, now)
        if force:
            _log.info("Token of '%s': renewal asked for (%s)", self.name, _lifetime(current))
        elif rejected:
            _log.info("Token of '%s' was refused by a resource server (401)", self.name)
        if not force and not rejected:
            planned = self._plan(current, skew, now)
            if planned is not None:
                return planned
        failure = self._last_failure
        if failure is not None and failure.shared_with(current, arrived_at):
            # the renewal this caller queued behind has just failed: share its outcome
            raise _copy(failure.error)
        if not self.can_renew(current):
            if force or rejected or current.is_expired:
                why = self._why_not_renewable(current)
                _log.info("Token of '%s' cannot be renewed: %s", self.name, why)
            if current.is_expired:
                raise self._cannot_renew(current)
            if force:
                raise self._no_renewal(current)
            return self._until_expiry(current, now)  # a 401 on it: the caller keeps the 401
        if rejected and not self._may_renew_rejected(current, now):
            _log.info("Not renewing the token of '%s' after a 401: backing off", self.name)
            return self._fresh(current, skew, now)
        return None

    def _no_renewal(self, token: Token) -> TokenRefreshError:
        name = self.name
        if self.refresh_token_rejected(token):
            why = "its refresh token was refused by the server (invalid_grant)"
        else:
            why = "it has no refresh token"
        return TokenRefreshError(
            f"The token of '{name}' cannot be refreshed: {why}; run 'kstlib auth login {name}'",
            reason="cannot renew",
            retryable=False,
        )

    def _refreshed_meanwhile(
        self, seen: Token | None, skew: float, arrived_at: float
    ) -> AcquiredToken | None:
        """The token this process renewed while the caller waited, if still fresh.

        Checked right after the in-process lock, before the storage's lock and a
        reload: a burst of callers queued behind one renewal costs no storage I/O.
        Only a renewal that ended after the caller asked counts (an older one may
        since have been replaced in the storage).
        """
        last = self._last_refreshed
        if last is None or seen is None:
            return None
        recent, ended_at = last
        if (
            ended_at >= arrived_at
            and recent.access_token != seen.access_token
            and not recent.is_stale(skew)
        ):
            _log.info("Token of '%s' was just renewed in this process: using it", self.name)
            return self._fresh(recent, skew, time.monotonic())
        return None

    def _after_failure(
        self, token: Token | None, error: TokenRefreshError, *, proactive: bool
    ) -> AcquiredToken:
        """Keep serving a still-valid token after a failed proactive renewal, else raise."""
        if not proactive or token is None or token.is_expired:
            raise error
        now = time.monotonic()
        if not self.can_renew(token):
            _log.warning(
                "The refresh token of '%s' was refused (invalid_grant); using the current "
                "token until it expires, then run 'kstlib auth login %s'",
                self.name,
                self.name,
            )
            return self._until_expiry(token, now)
        _log.warning("Proactive refresh of '%s' failed; using the current token", self.name)
        return AcquiredToken(token, now + min(REFRESH_RETRY_PAUSE, _seconds_left(token)))

    # -- the pipeline: renewal -------------------------------------------------------------

    def _renew_recording(
        self, token: Token | None, skew: float, *, rejected: bool = False
    ) -> AcquiredToken:
        """:meth:`_renew`, remembering a failure for the callers queued behind."""
        now = time.monotonic()
        if rejected:
            self._note_rejection_renewal(now)
        try:
            renewed = self._renew(token)
        except TokenRefreshError as error:
            _log.info("Renewing the token of '%s' failed: %s", self.name, error)
            spent = token.refresh_token if token is not None else None
            if error.error_code == "invalid_grant" and token is not None and spent:
                self._mark_refresh_rejected(token)
            self._last_failure = _RefreshFailure(fingerprint(spent), error, time.monotonic())
            raise
        self._last_failure = None
        self._last_refreshed = (renewed, time.monotonic())
        _log.info("Renewed the token of '%s' (new token %s)", self.name, _lifetime(renewed))
        return self._fresh(renewed, skew, time.monotonic())

    def _mark_refresh_rejected(self, token: Token) -> None:
        """Remember (here and in the storage) that the refresh token of ``token`` is dead."""
        label = fingerprint(token.refresh_token)
        self._rejected_refresh_tokens.add(label)
        stored = self.token_storage.load(self.name)
        if stored is None or stored.refresh_token != token.refresh_token:
            return
        marked = replace(stored, metadata={**stored.metadata, REFRESH_REJECTED_KEY: label})
        try:
            self.save_token(marked)
        except TokenStorageError as exc:
            _log.warning("Could not mark the refused refresh token of '%s': %s", self.name, exc)

    # -- the pipeline: entry points --------------------------------------------------------

    def acquire(
        self,
        seen: Token | None = None,
        *,
        force: bool = False,
        rejected: bool = False,
        skew: float | None = None,
        auto_refresh: bool = True,
    ) -> AcquiredToken:
        """The token to use now (renewed single-flight when stale), and until when.

        Args:
            seen: The token the caller holds. With ``force`` or ``rejected``, when
                the stored token is already another one (renewed meanwhile), that
                one is returned and nothing is sent.
            force: Renew now, whatever the token's age (``kstlib auth token --refresh``).
            rejected: ``seen`` was refused by a resource server (401): renew it, unless
                it was obtained in the last :data:`REJECTION_GRACE` seconds or a
                renewal for a 401 happened within the (growing) backoff; then ``seen``
                itself comes back (the caller should not replay).
            skew: Seconds before expiry at which a token is stale (default: the
                provider's ``refresh_skew``); clamped to half the token's lifetime.
            auto_refresh: False: never renew, only load and check.

        Raises:
            TokenExpiredError: nothing is stored, or the token has expired and cannot
                be renewed (run ``kstlib auth login``).
            TokenRefreshError: the renewal failed and the token cannot be used
                (``retryable`` says whether trying later may help).
        """
        skew_s = self._skew(skew)
        arrived_at = time.monotonic()
        proactive = not (force or rejected)
        if proactive:
            seen = self.token_storage.load(self.name)
            planned = self._plan(seen, skew_s, arrived_at, renew=auto_refresh)
            if planned is not None:
                return planned
        try:
            with self.refresh_guard():
                recent = self._refreshed_meanwhile(seen, skew_s, arrived_at)
                if recent is not None:
                    return recent
                current = self.token_storage.load(self.name)
                decided = self._decide(
                    current,
                    seen,
                    force=force,
                    rejected=rejected,
                    skew=skew_s,
                    arrived_at=arrived_at,
                )
                if decided is not None:
                    return decided
                return self._renew_recording(current, skew_s, rejected=rejected)
        except TokenRefreshError as error:
            return self._after_failure(seen, error, proactive=proactive)

    async def aacquire(
        self,
        seen: Token | None = None,
        *,
        force: bool = False,
        rejected: bool = False,
        skew: float | None = None,
        auto_refresh: bool = True,
    ) -> AcquiredToken:
        """:meth:`acquire` for asyncio callers; never blocks the event loop.

        Tasks queue on an asyncio lock, then on the storage's async cross-process
        lock; the renewal's HTTP call and storage I/O run in a worker thread.
        """
        import asyncio  # loaded by the running loop already; not at import (#16 item 4)

        skew_s = self._skew(skew)
        arrived_at = time.monotonic()
        proactive = not (force or rejected)
        if proactive:
            seen = await self.token_storage.aload(self.name)
            planned = self._plan(seen, skew_s, arrived_at, renew=auto_refresh)
            if planned is not None:
                return planned
        try:
            async with self._async_lock():
                recent = self._refreshed_meanwhile(seen, skew_s, arrived_at)
                if recent is not None:
                    return recent
                async with self.token_storage.alock(self.name, timeout=REFRESH_LOCK_TIMEOUT):
                    current = await self.token_storage.aload(self.name)
                    decided = self._decide(
                        current,
                        seen,
                        force=force,
                        rejected=rejected,
                        skew=skew_s,
                        arrived_at=arrived_at,
                    )
                    if decided is not None:
                        return decided
                    return await asyncio.to_thread(
                        self._renew_holding_lock, current, skew_s, rejected
                    )
        except TokenRefreshError as error:
            return self._after_failure(seen, error, proactive=proactive)

    def refresh_if_stale(self, seen: Token | None = None, *, force: bool = False) -> Token:
        """Single-flight refresh for sync callers: ``acquire(seen, force=force).token``."""
        return self.acquire(seen, force=force).token

    async def arefresh_if_stale(self, seen: Token | None = None, *, force: bool = False) -> Token:
        """Single-flight refresh for asyncio callers: ``aacquire(seen, force=force).token``."""
        return (await self.aacquire(seen, force=force)).token

    # -- locks -----------------------------------------------------------------------------

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

    def _async_lock(self) -> asyncio.Lock:
        import asyncio  # loaded by the running loop already; not at import (#16 item 4)

        loop = asyncio.get_running_loop()
        with self._async_locks_guard:
            lock = self._async_locks.get(loop)
            if lock is None:
                lock = asyncio.Lock()
                self._async_locks[loop] = lock
            return lock

    def _renew_holding_lock(
        self, token: Token | None, skew: float, rejected: bool
    ) -> AcquiredToken:
        """Run in a worker thread for an asyncio caller that holds the storage lock.

        Marks this thread as a holder so that :meth:`refresh` does not try to
        take the locks again (taking the thread lock here could deadlock with
        a sync thread waiting for the storage lock the async caller holds).
        """
        self._guard_state.depth = 1
        try:
            return self._renew_recording(token, skew, rejected=rejected)
        finally:
            self._guard_state.depth = 0

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
