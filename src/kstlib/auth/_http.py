"""HTTP plumbing for calls to the identity provider.

* :func:`build_http_client` makes the ``httpx.Client`` a provider uses:
  configured headers, TLS settings, timeouts, and the trace hooks.
* :func:`request_json` performs one call with a response size limit, bounded
  retries with backoff for idempotent requests (connect errors, 5xx, 429 with
  ``Retry-After``), and turns every transport or parsing failure into an
  :class:`HTTPFailure` with a one-line reason. Callers map it onto the typed
  error of their step (discovery, token exchange, refresh...).
* :class:`HTTPTraceLogger` logs requests and responses at the TRACE level
  (5) through the single redaction path of :mod:`kstlib.auth.redaction`.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from kstlib import __version__
from kstlib.auth.redaction import (
    TRACE,
    get_logger,
    redact_body,
    redact_headers,
    redact_url,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "HTTPFailure",
    "HTTPTraceLogger",
    "JSONResponse",
    "RetryPolicy",
    "build_http_client",
    "request_json",
]

#: Largest IdP response (discovery, JWKS, token) accepted; anything bigger is hostile or broken.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
_USER_AGENT = f"kstlib-auth/{__version__}"


class HTTPFailure(Exception):
    """A call to the identity provider failed before a usable answer was read.

    ``reason`` is one line for humans; ``status_code`` is set when the server
    answered; ``retryable`` tells whether trying again later may succeed.
    """

    def __init__(
        self,
        reason: str,
        *,
        status_code: int | None = None,
        retryable: bool = False,
        error_code: str | None = None,
        error_description: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
        self.retryable = retryable
        self.error_code = error_code
        self.error_description = error_description


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries for idempotent requests."""

    max_retries: int = 2
    backoff: float = 0.2
    max_backoff: float = 5.0
    #: Longest ``Retry-After`` honoured; a longer one fails at once.
    max_retry_after: float = 10.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return float(min(self.max_backoff, self.backoff * (2**attempt)))


NO_RETRY = RetryPolicy(max_retries=0)


@dataclass
class JSONResponse:
    """A parsed IdP answer: status, headers and the decoded JSON body (any JSON value)."""

    status_code: int
    headers: httpx.Headers
    data: Any

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


class HTTPTraceLogger:
    """Logs IdP traffic at TRACE level with every secret redacted.

    Cheap when TRACE is off: the hooks return at once.
    """

    def __init__(
        self,
        logger_name: str = "kstlib.auth._http",
        *,
        pretty: bool = True,
        max_body_length: int = 10000,
        extra_sensitive_keys: Iterable[str] = (),
    ) -> None:
        self.logger = get_logger(logger_name)
        self.pretty = pretty
        self.max_body_length = max_body_length
        self.extra_sensitive_keys = tuple(extra_sensitive_keys)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(TRACE)

    def _body(self, body: bytes, content_type: str) -> str:
        if not body:
            return ""
        text = redact_body(body, content_type, self.extra_sensitive_keys)
        if self.pretty and "json" in content_type.lower():
            with contextlib.suppress(ValueError):
                text = json.dumps(json.loads(text), indent=2, sort_keys=True)
        if len(text) > self.max_body_length:
            text = text[: self.max_body_length] + " ...[truncated]"
        return text

    def on_request(self, request: httpx.Request) -> None:
        if not self.enabled:
            return
        try:
            content = request.content
        except httpx.RequestNotRead:
            content = b""
        self.logger.log(
            TRACE,
            "--> %s %s headers=%s body=%s",
            request.method,
            redact_url(str(request.url), self.extra_sensitive_keys),
            redact_headers(request.headers.multi_items()),
            self._body(content, request.headers.get("content-type", "")),
        )

    def on_response(self, response: httpx.Response, body: bytes | None = None) -> None:
        if not self.enabled:
            return
        self.logger.log(
            TRACE,
            "<-- %s %s %s headers=%s body=%s",
            response.status_code,
            response.request.method,
            redact_url(str(response.request.url), self.extra_sensitive_keys),
            redact_headers(response.headers.multi_items()),
            self._body(body or b"", response.headers.get("content-type", "")),
        )


def build_http_client(
    *,
    headers: Mapping[str, str] | None = None,
    ssl_verify: bool = True,
    ssl_ca_bundle: str | None = None,
    timeout: float = 30.0,
    tracer: HTTPTraceLogger | None = None,
) -> httpx.Client:
    """Build the ``httpx.Client`` used for identity-provider calls.

    ``ssl_ca_bundle`` wins over ``ssl_verify=True``; ``ssl_verify=False``
    disables verification (a warning is logged once per client).
    """
    verify: bool | str = ssl_ca_bundle if (ssl_verify and ssl_ca_bundle) else ssl_verify
    if verify is False:
        get_logger("kstlib.auth._http").warning(
            "TLS certificate verification is disabled for identity-provider calls"
        )
    all_headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
    all_headers.update(headers or {})
    hooks: dict[str, list[Callable[..., Any]]] = {}
    if tracer is not None:
        hooks["request"] = [tracer.on_request]
    return httpx.Client(
        headers=all_headers,
        verify=verify,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=False,
        event_hooks=hooks,
    )


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPFailure(
            f"response from {response.request.url.host} is too large "
            f"({declared} bytes, limit {max_bytes})",
            status_code=response.status_code,
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPFailure(
                f"response from {response.request.url.host} is too large (over {max_bytes} bytes)",
                status_code=response.status_code,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _describe_non_json(body: bytes, content_type: str) -> str:
    if not body.strip():
        return "an empty body"
    head = body.lstrip()[:15].lower()
    if "html" in content_type.lower() or head.startswith((b"<!doctype", b"<html")):
        return "an HTML page"
    return "a body that is not JSON"


def _decode_json(body: bytes, response: httpx.Response) -> Any:
    content_type = response.headers.get("content-type", "")
    try:
        return _strict_json(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise HTTPFailure(
            f"{response.request.url.host} answered HTTP {response.status_code} with "
            f"{_describe_non_json(body, content_type)} where JSON was expected",
            status_code=response.status_code,
            retryable=response.status_code >= 500,
        ) from None


def _transport_reason(exc: httpx.TransportError, url: str) -> str:
    host = httpx.URL(url).host
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out talking to {host}"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {host}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{host} closed the connection mid-response"
    return f"network error talking to {host} ({type(exc).__name__})"


def request_json(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
    retry: RetryPolicy = NO_RETRY,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    tracer: HTTPTraceLogger | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JSONResponse:
    """Send one request and decode its JSON answer.

    Retries (per ``retry``) on connect errors, timeouts, 5xx and 429; use a
    retry policy only for idempotent requests. Raises :class:`HTTPFailure`
    for transport failures, oversized or non-JSON bodies, and redirects
    (never followed: a redirect to another host is not trusted).
    """
    attempt = 0
    while True:
        try:
            response, body = _send_and_read(
                client, method, url, data=data, headers=headers, auth=auth, max_bytes=max_bytes
            )
        except httpx.TransportError as exc:  # connect, timeout, or reset mid-response
            if attempt < retry.max_retries:
                sleep(retry.delay(attempt, None))
                attempt += 1
                continue
            raise HTTPFailure(_transport_reason(exc, url), retryable=True) from None
        if tracer is not None:
            tracer.on_response(response, body)
        status = response.status_code
        if (status >= 500 or status == 429) and attempt < retry.max_retries:
            retry_after = _retry_after_seconds(response.headers.get("retry-after"))
            if retry_after is None or retry_after <= retry.max_retry_after:
                sleep(retry.delay(attempt, retry_after))
                attempt += 1
                continue
        if 300 <= status < 400:
            location = response.headers.get("location", "")
            raise HTTPFailure(
                f"{response.request.url.host} answered with a redirect "
                f"(HTTP {status} to {redact_url(location)!s}); redirects are not followed",
                status_code=status,
            )
        if status >= 500 or status == 429:
            data_or_none = _try_json(body)
            raise HTTPFailure(
                f"{response.request.url.host} answered HTTP {status}",
                status_code=status,
                retryable=True,
                **oauth_error_fields(data_or_none),
            )
        parsed = _decode_json(body, response)
        return JSONResponse(
            status_code=status,
            headers=response.headers,
            data=parsed,
        )


def _send_and_read(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    data: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
    auth: httpx.Auth | tuple[str, str] | None,
    max_bytes: int,
) -> tuple[httpx.Response, bytes]:
    request = client.build_request(method, url, data=data, headers=headers)
    response = client.send(request, auth=auth, stream=True)
    try:
        return response, _read_limited(response, max_bytes)
    finally:
        response.close()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _strict_json(body: bytes) -> Any:
    """``json.loads`` refusing NaN/Infinity, which are not JSON (RFC 8259)."""
    return json.loads(body, parse_constant=_refuse_constant)


def _try_json(body: bytes) -> Any:
    try:
        return _strict_json(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def oauth_error_fields(data: Any) -> dict[str, str | None]:
    """``error``/``error_description`` of an RFC 6749 5.2 error body, if it is one."""
    if not isinstance(data, dict):
        return {"error_code": None, "error_description": None}
    code = data.get("error")
    desc = data.get("error_description")
    return {
        "error_code": code[:100] if isinstance(code, str) else None,
        "error_description": desc[:300] if isinstance(desc, str) else None,
    }


def max_age_seconds(headers: httpx.Headers) -> float | None:
    """``Cache-Control: max-age`` of a response (None when absent or no-store)."""
    value = headers.get("cache-control", "")
    directives = [d.strip().lower() for d in value.split(",") if d.strip()]
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    for directive in directives:
        if directive.startswith("max-age="):
            number = directive.split("=", 1)[1].strip('"')
            if number.isdigit():
                return float(number)
    return None
