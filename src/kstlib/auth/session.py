"""Token injection for httpx: ``ProviderAuth`` and ``AuthSession``.

:class:`ProviderAuth` is an ``httpx.Auth``: give it to any ``httpx.Client``
or ``httpx.AsyncClient`` you own. Which token to use, and when to renew it,
is the provider's decision (:meth:`~kstlib.auth.providers.base.AbstractAuthProvider.acquire`);
``ProviderAuth`` only caches the ready-made header until the provider says
the token turns stale. Its logic lives in ONE generator,
:meth:`ProviderAuth._flow`, which yields either a request to send or an
instruction (``get a token`` / ``the server rejected this one``); two small
drivers ask the provider with sync or async I/O. The async driver never
blocks the event loop.

Before any byte is sent, the request's destination is checked: plain http
to a non-loopback host is refused (RFC 6750 section 5.3), and so is an
origin outside ``allowed_origins`` when the caller set one.

:class:`AuthSession` is a thin owner of one lazily created sync client and
one async client that use the same ``ProviderAuth``.
"""

from __future__ import annotations

import ssl
import threading
import time
import types
from collections.abc import AsyncGenerator, Collection, Generator
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import httpx

from kstlib.auth._net import is_loopback_host
from kstlib.auth.errors import ConfigurationError, InsecureDestinationError
from kstlib.auth.models import Token, TokenType
from kstlib.auth.providers.base import AcquiredToken
from kstlib.auth.redaction import get_logger

if TYPE_CHECKING:
    import asyncio

    from kstlib.auth.providers.base import AbstractAuthProvider

__all__ = ["AuthSession", "ProviderAuth"]

_log = get_logger("kstlib.auth.session")

_DEFAULT_PORTS = {"http": 80, "https": 443}


# The three records below are plain slotted classes, not dataclasses: creating a dataclass
# costs about as much as importing a small module, and ``from kstlib.auth import
# AuthSession`` is on every script's start-up. They are never compared or hashed.


class _NeedToken:
    """Instruction: give the flow the token to use now."""

    __slots__ = ()


class _Rejected:
    """Instruction: the server rejected ``seen`` (401); give the flow what to replay with."""

    __slots__ = ("seen",)

    def __init__(self, seen: Token) -> None:
        self.seen = seen


_Instruction = httpx.Request | _NeedToken | _Rejected


class _Cached:
    """A token with its ready-made header and the monotonic time it turns stale."""

    __slots__ = ("header", "stale_at", "token")

    def __init__(self, token: Token, header: str, stale_at: float) -> None:
        self.token = token
        self.header = header
        self.stale_at = stale_at


def _header_for(token: Token) -> str:
    scheme = token.token_type.value if isinstance(token.token_type, TokenType) else token.token_type
    return f"{scheme} {token.access_token}"


def _replayable(request: httpx.Request) -> bool:
    try:
        request.content  # noqa: B018 - raises when the body is a stream
    except httpx.RequestNotRead:
        return False
    return True


def _origin(scheme: str, host: str, port: int | None) -> str:
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    scheme = scheme.lower()
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _parse_origin(value: str) -> str:
    """``scheme://host[:port]`` of an allowed origin, normalised; ConfigurationError if not one."""
    problem = None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        problem, parts, port = "not a valid URL", None, None
    if parts is not None:
        if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
            problem = "not an http(s) origin"
        elif parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
            problem = "an origin has no path, query, fragment or credentials"
    if problem is not None or parts is None or not parts.hostname:
        raise ConfigurationError(
            f"allowed_origins: {value!r} is {problem or 'not an origin'} "
            "(expected scheme://host[:port])",
            key="allowed_origins",
        )
    return _origin(parts.scheme, parts.hostname, port)


class ProviderAuth(httpx.Auth):
    """``httpx.Auth`` that injects the provider's token and refreshes it single-flight.

    ``refresh_skew`` overrides the provider's ``refresh_skew`` for this client: it is
    handed to the provider, whose one staleness decision (clamped to half the token's
    lifetime) uses it. ``allow_insecure_http`` permits plain http to non-loopback
    hosts (refused by default); ``allowed_origins``, when given, is the only set of
    ``scheme://host[:port]`` the token is sent to.

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
        allow_insecure_http: bool = False,
        allowed_origins: Collection[str] | None = None,
    ) -> None:
        self.provider = provider
        self.auto_refresh = auto_refresh
        self.retry_on_401 = retry_on_401
        self._skew_override = refresh_skew
        self.allow_insecure_http = allow_insecure_http
        if isinstance(allowed_origins, str):
            allowed_origins = [allowed_origins]
        self.allowed_origins: frozenset[str] | None = (
            None
            if allowed_origins is None
            else frozenset(_parse_origin(origin) for origin in allowed_origins)
        )
        self._cached: _Cached | None = None

    def __repr__(self) -> str:
        return f"ProviderAuth(provider={self.provider.name!r})"

    @property
    def refresh_skew(self) -> float:
        """The skew this client asks the provider to use (the provider's when not set)."""
        override = self._skew_override
        return self.provider.config.refresh_skew if override is None else override

    @refresh_skew.setter
    def refresh_skew(self, value: float | None) -> None:
        self._skew_override = value
        self._cached = None  # the next request asks the provider with the new skew

    # -- the destination -------------------------------------------------------------------

    def _check_destination(self, request: httpx.Request) -> None:
        """Refuse to attach the token to plain http (non-loopback) or a foreign origin."""
        url = request.url
        scheme = url.scheme
        if scheme == "https" and self.allowed_origins is None:
            return
        origin = _origin(scheme, url.host, url.port)
        if scheme != "https" and not self.allow_insecure_http and not is_loopback_host(url.host):
            raise InsecureDestinationError(
                f"Refused to send the token of '{self.provider.name}' over plain http to "
                f"{origin} (RFC 6750 5.3 requires TLS); use https, or pass "
                "allow_insecure_http=True to accept the risk",
                reason="plain http",
                origin=origin,
            )
        if self.allowed_origins is not None and origin not in self.allowed_origins:
            raise InsecureDestinationError(
                f"Refused to send the token of '{self.provider.name}' to {origin}: not in "
                "this session's allowed_origins",
                reason="origin not allowed",
                origin=origin,
            )

    # -- the one flow ----------------------------------------------------------------------

    def _flow(self, request: httpx.Request) -> Generator[_Instruction, Any, None]:
        self._check_destination(request)
        cached: _Cached = yield _NeedToken()
        response = yield from self._send(request, cached)
        if response.status_code != 401 or not self.retry_on_401 or not _replayable(request):
            return
        renewed: _Cached = yield _Rejected(cached.token)
        if renewed.token.access_token == cached.token.access_token:
            return  # the provider did not renew it (just obtained, or backing off): keep the 401
        _log.debug("401 from %s; replaying once with the renewed token", request.url.host)
        yield from self._send(request, renewed)

    def _send(
        self, request: httpx.Request, cached: _Cached
    ) -> Generator[_Instruction, Any, httpx.Response]:
        """Send ``request`` with ``cached``'s token; once more if the provider asks for it."""
        self._authorize(request, cached)
        response: httpx.Response = yield request
        if self.provider.wants_replay(request, response) and _replayable(request):
            # e.g. a DPoP nonce challenge: the provider took the nonce, sign and send again once
            self._authorize(request, cached)
            response = yield request
            self.provider.wants_replay(request, response)  # keeps a new nonce; raises on a loop
        return response

    def _authorize(self, request: httpx.Request, cached: _Cached) -> None:
        request.headers["Authorization"] = cached.header
        self.provider.authorize_request(request, cached.token)

    # -- the header cache (no I/O) ---------------------------------------------------------

    def _fresh_cached(self) -> _Cached | None:
        cached = self._cached
        if cached is not None and time.monotonic() < cached.stale_at:
            return cached
        return None

    def _remember(self, acquired: AcquiredToken) -> _Cached:
        cached = _Cached(acquired.token, _header_for(acquired.token), acquired.stale_at)
        self._cached = cached
        return cached

    # -- sync driver -----------------------------------------------------------------------

    def _token_sync(self) -> _Cached:
        cached = self._fresh_cached()
        if cached is not None:
            return cached
        acquired = self.provider.acquire(skew=self._skew_override, auto_refresh=self.auto_refresh)
        return self._remember(acquired)

    def _rejected_sync(self, seen: Token) -> _Cached:
        return self._remember(self.provider.acquire(seen, rejected=True, skew=self._skew_override))

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
                reply = self._rejected_sync(instruction.seen)
            try:
                instruction = flow.send(reply)
            except StopIteration:
                return

    # -- async driver ----------------------------------------------------------------------

    async def _token_async(self) -> _Cached:
        cached = self._fresh_cached()
        if cached is not None:
            return cached
        acquired = await self.provider.aacquire(
            skew=self._skew_override, auto_refresh=self.auto_refresh
        )
        return self._remember(acquired)

    async def _rejected_async(self, seen: Token) -> _Cached:
        return self._remember(
            await self.provider.aacquire(seen, rejected=True, skew=self._skew_override)
        )

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
                reply = await self._rejected_async(instruction.seen)
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
        allow_insecure_http: bool = False,
        allowed_origins: Collection[str] | None = None,
    ) -> None:
        self.provider = provider
        self.timeout = timeout
        self.auto_refresh = auto_refresh
        self.retry_on_401 = retry_on_401
        self.auth = ProviderAuth(
            provider,
            auto_refresh=auto_refresh,
            retry_on_401=retry_on_401,
            allow_insecure_http=allow_insecure_http,
            allowed_origins=allowed_origins,
        )
        self._verify = self._resolve_verify(provider, ssl_verify, ssl_ca_bundle)
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None
        self._aclient_guard: AsyncGenerator[None, None] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def _resolve_verify(
        provider: AbstractAuthProvider, ssl_verify: bool | None, ssl_ca_bundle: str | None
    ) -> bool | ssl.SSLContext:
        from kstlib.auth._http import tls_verify

        verify = provider.config.ssl_verify if ssl_verify is None else ssl_verify
        bundle = provider.config.ssl_ca_bundle if ssl_ca_bundle is None else ssl_ca_bundle
        return tls_verify(verify, bundle)

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
        """The async client of the running event loop (recreated if the loop changed).

        The client is closed, on its own loop, when that loop shuts down (``asyncio.run``
        ends): a session used under several ``asyncio.run`` calls leaves no socket open.
        """
        import asyncio  # loaded by the running loop already; not at import (#16 item 4)

        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient_loop is not loop:
            client = httpx.AsyncClient(auth=self.auth, timeout=self.timeout, verify=self._verify)
            self._aclient = client
            self._aclient_loop = loop
            self._aclient_guard = self._close_with_loop(client)
            _start_guard(self._aclient_guard)
        return self._aclient

    async def _close_with_loop(self, client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
        """An async generator the loop closes at shutdown (``loop.shutdown_asyncgens``).

        Started once when ``client`` is created, it waits at its ``yield``; the loop (which
        tracks every started async generator) closes it before it closes itself, and the
        ``finally`` closes ``client`` there, while its sockets still have a loop.
        """
        try:
            yield
        finally:
            if self._aclient is client:
                self._aclient = None
                self._aclient_loop = None
                self._aclient_guard = None
            await client.aclose()

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

        An async client of another event loop was closed when that loop shut down.
        """
        import asyncio  # loaded by the running loop already; not at import (#16 item 4)

        client, loop, guard = self._aclient, self._aclient_loop, self._aclient_guard
        self._aclient = None
        self._aclient_loop = None
        self._aclient_guard = None
        if client is not None and loop is asyncio.get_running_loop():
            if guard is not None:
                await guard.aclose()  # its finally closes the client
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


def _start_guard(guard: AsyncGenerator[None, None]) -> None:
    """Run ``guard`` to its first ``yield`` now, so the running loop starts tracking it."""
    step = guard.asend(None).__await__()
    try:
        step.send(None)
    except StopIteration:
        return
    raise RuntimeError("the loop guard awaited before its first yield")  # pragma: no cover
