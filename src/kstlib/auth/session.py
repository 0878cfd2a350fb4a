"""Token injection and refresh for httpx: ``ProviderAuth`` and ``AuthSession``.

:class:`ProviderAuth` is an ``httpx.Auth``: give it to any ``httpx.Client``
or ``httpx.AsyncClient`` you own. Its logic lives in ONE generator,
:meth:`ProviderAuth._flow`, which yields either a request to send or an
instruction (``get a token`` / ``refresh``); two small drivers carry the
instructions out with sync or async I/O. The async driver never blocks the
event loop: storage reads and the refresh run in worker threads, behind an
asyncio lock and the storage's async cross-process lock.

:class:`AuthSession` is a thin owner of one lazily created sync client and
one async client that use the same ``ProviderAuth``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import types
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import httpx

from kstlib.auth.errors import TokenExpiredError, TokenRefreshError
from kstlib.auth.models import Token, TokenType
from kstlib.auth.redaction import get_logger

if TYPE_CHECKING:
    from kstlib.auth.providers.base import AbstractAuthProvider

__all__ = ["AuthSession", "ProviderAuth"]

_log = get_logger("kstlib.auth.session")

#: Seconds a still-valid token is used as is after a failed proactive refresh, before the
#: next attempt (an outage costs one refresh attempt per pause, not one per request).
REFRESH_RETRY_PAUSE = 5.0


@dataclass(frozen=True)
class _NeedToken:
    """Instruction: give the flow a usable token (refreshing proactively if stale)."""


@dataclass(frozen=True)
class _NeedRefresh:
    """Instruction: the server rejected ``seen``; give the flow a refreshed token."""

    seen: Token


_Instruction = httpx.Request | _NeedToken | _NeedRefresh


@dataclass(frozen=True)
class _Cached:
    """A token with its ready-made header and the monotonic time it turns stale."""

    token: Token
    header: str
    stale_at: float


def _header_for(token: Token) -> str:
    scheme = token.token_type.value if isinstance(token.token_type, TokenType) else token.token_type
    return f"{scheme} {token.access_token}"


def _replayable(request: httpx.Request) -> bool:
    try:
        request.content  # noqa: B018 - raises when the body is a stream
    except httpx.RequestNotRead:
        return False
    return True


class ProviderAuth(httpx.Auth):
    """``httpx.Auth`` that injects the provider's token and refreshes it single-flight.

    Example:
        >>> client = httpx.Client(auth=ProviderAuth(provider))  # doctest: +SKIP
    """

    def __init__(
        self,
        provider: AbstractAuthProvider,
        *,
        auto_refresh: bool = True,
        retry_on_401: bool = True,
        refresh_skew: float | None = None,
    ) -> None:
        self.provider = provider
        self.auto_refresh = auto_refresh
        self.retry_on_401 = retry_on_401
        self.refresh_skew = provider.config.refresh_skew if refresh_skew is None else refresh_skew
        self._cached: _Cached | None = None

    def __repr__(self) -> str:
        return f"ProviderAuth(provider={self.provider.name!r})"

    # -- the one flow ----------------------------------------------------------------------

    def _flow(self, request: httpx.Request) -> Generator[_Instruction, Any, None]:
        cached: _Cached = yield _NeedToken()
        self._authorize(request, cached)
        response: httpx.Response = yield request
        if self.provider.wants_replay(request, response) and _replayable(request):
            # e.g. a DPoP nonce challenge: the provider took the nonce, sign and send again once
            self._authorize(request, cached)
            response = yield request
        if response.status_code != 401 or not self.retry_on_401 or not _replayable(request):
            return
        if not cached.token.is_refreshable:
            return
        _log.debug("401 from %s; refreshing the token once and replaying", request.url.host)
        cached = yield _NeedRefresh(cached.token)
        self._authorize(request, cached)
        yield request

    def _authorize(self, request: httpx.Request, cached: _Cached) -> None:
        request.headers["Authorization"] = cached.header
        self.provider.authorize_request(request, cached.token)

    # -- token bookkeeping (no I/O) --------------------------------------------------------

    def _fresh_cached(self) -> _Cached | None:
        cached = self._cached
        if cached is not None and time.monotonic() < cached.stale_at:
            return cached
        return None

    def _remember(self, token: Token, *, stale_at: float | None = None) -> _Cached:
        if stale_at is None:
            expires_in = token.expires_in
            if expires_in is None:
                fresh = not token.needs_refresh(self.refresh_skew)
                stale_at = time.monotonic() + 60.0 if fresh else 0.0
            else:
                stale_at = time.monotonic() + expires_in - self.refresh_skew
        cached = _Cached(token, _header_for(token), stale_at)
        self._cached = cached
        return cached

    def _check_usable(self, token: Token | None) -> Token:
        """Raise when there is no token, or an expired one that cannot be refreshed."""
        name = self.provider.name
        if token is None:
            raise TokenExpiredError(f"Not logged in to '{name}'; run `kstlib auth login {name}`")
        if token.is_expired and not (self.auto_refresh and token.is_refreshable):
            raise TokenExpiredError(
                f"The token of '{name}' has expired and cannot be refreshed; "
                f"run `kstlib auth login {name}`"
            )
        return token

    def _needs_refresh(self, token: Token) -> bool:
        return self.auto_refresh and token.is_refreshable and token.needs_refresh(self.refresh_skew)

    def _after_failed_refresh(self, token: Token, error: TokenRefreshError) -> _Cached:
        """Keep serving a still-valid token; try the refresh again after a short pause.

        Without the pause every request of an outage would try (and wait for) a refresh.
        """
        if token.is_expired:
            raise error
        _log.warning(
            "Proactive refresh of '%s' failed; using the current token", self.provider.name
        )
        pause = min(REFRESH_RETRY_PAUSE, max(float(token.expires_in or 0), 0.0))
        return self._remember(token, stale_at=time.monotonic() + pause)

    # -- sync driver -----------------------------------------------------------------------

    def _token_sync(self) -> _Cached:
        cached = self._fresh_cached()
        if cached is not None:
            return cached
        storage = self.provider.token_storage
        token = self._check_usable(storage.load(self.provider.name))
        if self._needs_refresh(token):
            try:
                token = self.provider.refresh_if_stale(token)
            except TokenRefreshError as error:
                return self._after_failed_refresh(token, error)
        return self._remember(token)

    def _refresh_sync(self, seen: Token) -> _Cached:
        return self._remember(self.provider.refresh_if_stale(seen, force=True))

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._flow(request)
        instruction = next(flow)
        while True:
            if isinstance(instruction, httpx.Request):
                reply: Any = yield instruction
            elif isinstance(instruction, _NeedToken):
                reply = self._token_sync()
            else:
                reply = self._refresh_sync(instruction.seen)
            try:
                instruction = flow.send(reply)
            except StopIteration:
                return

    # -- async driver ----------------------------------------------------------------------

    async def _token_async(self) -> _Cached:
        cached = self._fresh_cached()
        if cached is not None:
            return cached
        storage = self.provider.token_storage
        token = self._check_usable(await storage.aload(self.provider.name))
        if self._needs_refresh(token):
            try:
                token = await self.provider.arefresh_if_stale(token)
            except TokenRefreshError as error:
                return self._after_failed_refresh(token, error)
        return self._remember(token)

    async def _refresh_async(self, seen: Token) -> _Cached:
        return self._remember(await self.provider.arefresh_if_stale(seen, force=True))

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        instruction = next(flow)
        while True:
            if isinstance(instruction, httpx.Request):
                reply: Any = yield instruction
            elif isinstance(instruction, _NeedToken):
                reply = await self._token_async()
            else:
                reply = await self._refresh_async(instruction.seen)
            try:
                instruction = flow.send(reply)
            except StopIteration:
                return


class AuthSession:
    """HTTP session with automatic token injection and refresh (sync and async).

    Example (sync):
        >>> from kstlib.auth import AuthSession, get_provider
        >>> provider = get_provider("corporate")  # doctest: +SKIP
        >>> with AuthSession(provider) as session:  # doctest: +SKIP
        ...     response = session.get("https://api.example.com/users/me")

    Example (async; the async methods are ``aget``, ``apost``...):
        >>> async with AuthSession(provider) as session:  # doctest: +SKIP
        ...     response = await session.aget("https://api.example.com/users/me")
    """

    def __init__(
        self,
        provider: AbstractAuthProvider,
        *,
        timeout: float = 30.0,
        auto_refresh: bool = True,
        retry_on_401: bool = True,
        ssl_verify: bool | None = None,
        ssl_ca_bundle: str | None = None,
    ) -> None:
        self.provider = provider
        self.timeout = timeout
        self.auto_refresh = auto_refresh
        self.retry_on_401 = retry_on_401
        self.auth = ProviderAuth(provider, auto_refresh=auto_refresh, retry_on_401=retry_on_401)
        self._verify = self._resolve_verify(provider, ssl_verify, ssl_ca_bundle)
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _resolve_verify(
        provider: AbstractAuthProvider, ssl_verify: bool | None, ssl_ca_bundle: str | None
    ) -> bool | str:
        verify = provider.config.ssl_verify if ssl_verify is None else ssl_verify
        bundle = provider.config.ssl_ca_bundle if ssl_ca_bundle is None else ssl_ca_bundle
        if verify and bundle:
            return bundle
        return verify

    def __repr__(self) -> str:
        return f"AuthSession(provider={self.provider.name!r})"

    # -- clients ---------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        """The sync client (created on first use; its connection pool is reused)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(
                        auth=self.auth, timeout=self.timeout, verify=self._verify
                    )
                client = self._client
        return client

    @property
    def async_client(self) -> httpx.AsyncClient:
        """The async client of the running event loop (recreated if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient_loop is not loop:
            self._aclient = httpx.AsyncClient(
                auth=self.auth, timeout=self.timeout, verify=self._verify
            )
            self._aclient_loop = loop
        return self._aclient

    # -- sync ------------------------------------------------------------------------------

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated request."""
        return self.client.request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated GET request."""
        return self.client.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated POST request."""
        return self.client.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated PUT request."""
        return self.client.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated PATCH request."""
        return self.client.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated DELETE request."""
        return self.client.request("DELETE", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated HEAD request."""
        return self.client.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated OPTIONS request."""
        return self.client.request("OPTIONS", url, **kwargs)

    # -- async -----------------------------------------------------------------------------

    async def arequest(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated async request."""
        return await self.async_client.request(method, url, **kwargs)

    async def aget(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated async GET request."""
        return await self.async_client.request("GET", url, **kwargs)

    async def apost(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated async POST request."""
        return await self.async_client.request("POST", url, **kwargs)

    async def aput(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated async PUT request."""
        return await self.async_client.request("PUT", url, **kwargs)

    async def apatch(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated async PATCH request."""
        return await self.async_client.request("PATCH", url, **kwargs)

    async def adelete(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated async DELETE request."""
        return await self.async_client.request("DELETE", url, **kwargs)

    async def ahead(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated async HEAD request."""
        return await self.async_client.request("HEAD", url, **kwargs)

    async def aoptions(self, url: str, **kwargs: Any) -> httpx.Response:
        """Make an authenticated async OPTIONS request."""
        return await self.async_client.request("OPTIONS", url, **kwargs)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync client."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    async def aclose(self) -> None:
        """Close both clients.

        An async client created under an event loop that has since closed
        cannot be closed any more: it is dropped (its sockets died with it).
        """
        client, loop = self._aclient, self._aclient_loop
        self._aclient = None
        self._aclient_loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()
        self.close()

    def __enter__(self) -> Self:
        """Enter sync context manager."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: types.TracebackType | None,
    ) -> None:
        """Exit sync context manager."""
        self.close()

    async def __aenter__(self) -> Self:
        """Enter async context manager."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: types.TracebackType | None,
    ) -> None:
        """Exit async context manager."""
        await self.aclose()
