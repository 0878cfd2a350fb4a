"""Token injection for ``requests``: :class:`ProviderAuth` (optional extra ``kstlib[requests]``).

``kstlib.auth.requests.ProviderAuth`` is a ``requests.auth.AuthBase``: give it to a
``requests.Session`` (``session.auth = ProviderAuth(provider)``) or to one call
(``requests.get(url, auth=ProviderAuth(provider))``). It is a thin driver of the httpx
:class:`kstlib.auth.session.ProviderAuth`, so every decision is the same one, made in one
place: the destination check (https only, ``allowed_origins``), the header cache, the
single-flight renewal through :meth:`provider.acquire
<kstlib.auth.providers.base.AbstractAuthProvider.acquire>`, the provider's per-request
proof (:meth:`authorize_request`, e.g. DPoP) and replay (:meth:`wants_replay`), and the
one replay after a 401 with a renewed token (none when the provider did not renew it, or
when the body is a stream that cannot be sent twice).

How it drives it: the httpx flow is run on an ``httpx.Request`` mirror of the prepared
request (method, URL, headers, body bytes); the headers it sets are copied onto the
``requests`` request, and the response (status and headers) is handed back to the flow
from a ``response`` hook, which sends the replay on the same connection, as
``requests``' own digest authentication does.
"""

from __future__ import annotations

from collections.abc import Collection, Generator
from typing import TYPE_CHECKING, Any

import httpx

try:
    import requests
    import requests.auth
except ImportError as exc:  # pragma: no cover - the dev environment has the extra
    raise ImportError(
        "kstlib.auth.requests needs the requests package: install kstlib[requests]"
    ) from exc

from kstlib.auth.session import ProviderAuth as _HttpxProviderAuth
from kstlib.auth.session import _Cached, _NeedToken, _Rejected

if TYPE_CHECKING:
    from kstlib.auth.providers.base import AbstractAuthProvider

__all__ = ["ProviderAuth"]

_FLOW_ATTRIBUTE = "_kstlib_auth_flow"


def _stream() -> Generator[bytes, None, None]:
    yield b""  # pragma: no cover - never read: it only marks the mirror as a stream


def _mirror(request: requests.PreparedRequest) -> httpx.Request:
    """An ``httpx.Request`` with the method, URL, headers and (when in memory) body of
    ``request``; a streamed body becomes a stream, so the flow does not replay it."""
    body = request.body
    content: bytes | Generator[bytes, None, None]
    if body is None:
        content = b""
    elif isinstance(body, bytes):
        content = body
    elif isinstance(body, str):
        content = body.encode("utf-8")
    else:
        content = _stream()
    return httpx.Request(
        request.method or "GET",
        request.url or "",
        headers=dict(request.headers),
        content=content,
    )


def _copy_headers(mirror: httpx.Request, request: requests.PreparedRequest) -> None:
    """Set on ``request`` every header the flow set or changed on ``mirror``."""
    for name, value in mirror.headers.items():
        if request.headers.get(name) != value:
            request.headers[name] = value


class ProviderAuth(requests.auth.AuthBase):
    """``requests`` authentication with the provider's token, renewed single-flight.

    Same options and behaviour as the httpx :class:`kstlib.auth.ProviderAuth` (whose
    logic it runs): ``auto_refresh``, ``retry_on_401`` (one replay with a renewed
    token), ``refresh_skew``, ``allow_insecure_http``, ``allowed_origins``.

    Example:
        >>> import requests
        >>> from kstlib.auth.requests import ProviderAuth
        >>> session = requests.Session()
        >>> session.auth = ProviderAuth(provider)  # doctest: +SKIP
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
        self.core = _HttpxProviderAuth(
            provider,
            auto_refresh=auto_refresh,
            retry_on_401=retry_on_401,
            refresh_skew=refresh_skew,
            allow_insecure_http=allow_insecure_http,
            allowed_origins=allowed_origins,
        )

    @property
    def provider(self) -> AbstractAuthProvider:
        """The provider whose token is sent."""
        return self.core.provider

    def __repr__(self) -> str:
        return f"requests ProviderAuth(provider={self.provider.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProviderAuth) and other.core is self.core

    def __hash__(self) -> int:
        return id(self.core)

    def _advance(self, flow: Generator[Any, Any, None], reply: Any) -> httpx.Request | None:
        """Feed ``reply`` to the flow and answer its instructions until it wants a request
        sent (returned) or is done (None)."""
        try:
            instruction = flow.send(reply)
            while not isinstance(instruction, httpx.Request):
                cached: _Cached
                if isinstance(instruction, _NeedToken):
                    cached = self.core._token_sync()
                elif isinstance(instruction, _Rejected):
                    cached = self.core._rejected_sync(instruction.seen)
                else:  # pragma: no cover - the flow yields nothing else
                    raise TypeError(f"unexpected instruction {instruction!r}")
                instruction = flow.send(cached)
        except StopIteration:
            return None
        return instruction

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        mirror = _mirror(request)
        flow = self.core._flow(mirror)
        to_send = self._advance(flow, None)
        if to_send is None:  # pragma: no cover - the flow always sends the request once
            return request
        _copy_headers(to_send, request)
        setattr(request, _FLOW_ATTRIBUTE, (flow, mirror))
        request.register_hook("response", self._on_response)  # type: ignore[no-untyped-call]
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        """Give the flow each response; send the replays it asks for (at most two: a
        proof challenge, then a 401), each on the connection of the first."""
        state = getattr(response.request, _FLOW_ATTRIBUTE, None)
        if state is None:
            return response
        flow, mirror = state
        while True:
            answer = httpx.Response(
                response.status_code, headers=dict(response.headers), request=mirror
            )
            to_send = self._advance(flow, answer)
            if to_send is None:
                return response
            replay = response.request.copy()
            _copy_headers(to_send, replay)
            response.content  # noqa: B018 - read and release the connection before reusing it
            response.close()
            sent: requests.Response = response.connection.send(replay, **kwargs)
            sent.history = [*response.history, response]
            sent.request = replay
            response = sent
