"""HTTP plumbing for calls to the identity provider.

* :func:`build_http_client` makes the ``httpx.Client`` a provider uses:
  configured headers, TLS settings, timeouts, and the trace hooks.
* :func:`request` is the one bounded reader of every IdP answer (discovery, JWKS,
  token, userinfo, introspection, revocation, preflight, device): a total deadline
  per attempt (headers and body, whatever the server's pace), a byte budget counted
  on the wire and after decompression (``Accept-Encoding: identity``; at most one
  gzip/deflate layer, inflated incrementally), no redirects, bounded retries with
  backoff for idempotent requests (connect errors, 5xx, 429 with ``Retry-After``).
* :func:`request_json` adds strict JSON decoding. Both turn every transport or
  parsing failure into an :class:`HTTPFailure` with a one-line reason; callers map
  it onto the typed error of their step (discovery, token exchange, refresh...).
* :class:`HTTPTraceLogger` logs requests and responses at the TRACE level
  (5) through the single redaction path of :mod:`kstlib.auth.redaction`.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import ssl
import threading
import time
import zlib
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
    "RawResponse",
    "RetryPolicy",
    "build_http_client",
    "request",
    "request_budget",
    "request_json",
]

#: Largest IdP response (discovery, JWKS, token) accepted; anything bigger is hostile or broken.
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
_USER_AGENT = f"kstlib-auth/{__version__}"
#: Total seconds one IdP request may take when the client sets no timeout at all.
DEFAULT_REQUEST_BUDGET = 30.0
#: The one ``Content-Encoding`` layer accepted besides identity -> zlib ``wbits``.
_ENCODINGS: dict[str, int] = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


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


@dataclass(frozen=True)
class RawResponse:
    """An IdP answer read through the bounded reader: the (closed) response and its body."""

    response: httpx.Response
    body: bytes

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self.response.headers

    def json_or_none(self) -> Any:
        """The body as strict JSON, None when it is not JSON."""
        return _try_json(self.body)


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


def tls_verify(ssl_verify: bool, ssl_ca_bundle: str | None) -> bool | ssl.SSLContext:
    """httpx's ``verify=`` for these settings: ``False`` disables verification; otherwise the
    process's shared SSL context for the CA source (:func:`shared_ssl_context`): the
    ``ssl_ca_bundle`` when set, else the one httpx would use itself."""
    if not ssl_verify:
        return False
    return shared_ssl_context(ssl_ca_bundle)


# Verifying SSL contexts by CA source: loading a CA bundle costs 25-40 ms of CPU (OpenSSL 3
# parses every certificate), which httpx pays for every client it builds (each provider, each
# AuthSession, sync and async). One context per source and process instead, rebuilt when the
# source changes on disk.
_SSL_CONTEXTS: dict[tuple[object, ...], ssl.SSLContext] = {}
_SSL_CONTEXTS_MAX = 16
_SSL_CONTEXTS_LOCK = threading.Lock()


def shared_ssl_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """The verifying SSL context for ``ca_bundle`` (a PEM file), shared by every client of
    this process.

    Without ``ca_bundle`` the source is httpx's own choice for ``verify=True``:
    ``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else certifi's bundle. The context is built as
    httpx and :func:`ssl.create_default_context` build it (``SSLKEYLOGFILE`` included), and
    again whenever the source's file or directory changes (inode, size or modification time),
    so a rotated CA bundle reaches every client built afterwards.
    """
    if ca_bundle:
        kind, path = "file", ca_bundle
    elif os.environ.get("SSL_CERT_FILE"):
        kind, path = "file", os.environ["SSL_CERT_FILE"]
    elif os.environ.get("SSL_CERT_DIR"):
        kind, path = "dir", os.environ["SSL_CERT_DIR"]
    else:
        import certifi  # httpx's own dependency and default bundle

        kind, path = "file", certifi.where()
    try:
        found = os.stat(path)
        stamp: tuple[int, ...] = (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)
    except OSError:
        stamp = ()  # building the context raises the error a user should see
    key = (kind, path, stamp, os.environ.get("SSLKEYLOGFILE"))
    context = _SSL_CONTEXTS.get(key)
    if context is None:
        with _SSL_CONTEXTS_LOCK:
            context = _SSL_CONTEXTS.get(key)
            if context is None:
                if kind == "dir":
                    context = ssl.create_default_context(capath=path)
                else:
                    context = ssl.create_default_context(cafile=path)
                if len(_SSL_CONTEXTS) >= _SSL_CONTEXTS_MAX:
                    _SSL_CONTEXTS.clear()
                _SSL_CONTEXTS[key] = context
    return context


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
    verify = tls_verify(ssl_verify, ssl_ca_bundle)
    if verify is False:
        get_logger("kstlib.auth._http").warning(
            "TLS certificate verification is disabled for identity-provider calls"
        )
    all_headers = {
        "User-Agent": _USER_AGENT,
        "Accept": "application/json",
        "Accept-Encoding": "identity",
    }
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


class _BudgetExceeded(Exception):
    """The body passed the byte budget (on the wire or once decompressed)."""


def _too_large(response: httpx.Response, detail: str) -> HTTPFailure:
    return HTTPFailure(
        f"response from {response.request.url.host} is too large ({detail})",
        status_code=response.status_code,
    )


def _decoder(response: httpx.Response) -> Any:
    """A zlib decompressor for the one ``Content-Encoding`` layer allowed, None for identity.

    Stacked encodings (``gzip, gzip``) and encodings other than gzip/deflate are refused:
    every layer multiplies what a few bytes on the wire cost in memory and CPU.
    """
    header = ",".join(response.headers.get_list("content-encoding"))
    layers = [part.strip().lower() for part in header.split(",") if part.strip()]
    layers = [layer for layer in layers if layer != "identity"]
    if not layers:
        return None
    if len(layers) > 1 or layers[0] not in _ENCODINGS:
        raise HTTPFailure(
            f"{response.request.url.host} answered with Content-Encoding "
            f"{header.strip()[:60]!r}; only identity or one gzip/deflate layer is accepted",
            status_code=response.status_code,
        )
    return zlib.decompressobj(_ENCODINGS[layers[0]])


def _read_limited(
    response: httpx.Response, max_bytes: int, cancelled: threading.Event | None = None
) -> bytes:
    """The body of ``response``, at most ``max_bytes`` on the wire and after decompression.

    Raw bytes are read (httpx decodes nothing) and at most one gzip/deflate layer is
    inflated here, incrementally, never past the budget: a small compressed body cannot
    expand into gigabytes. ``cancelled`` stops the read between chunks (deadline passed).
    """
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(response, f"{declared} bytes, limit {max_bytes}")
    decoder = _decoder(response)
    chunks: list[bytes] = []
    wire = size = 0
    for raw in response.iter_raw():
        if cancelled is not None and cancelled.is_set():
            break
        wire += len(raw)
        if wire > max_bytes:
            raise _too_large(response, f"over {max_bytes} bytes")
        chunk = raw if decoder is None else _inflate(decoder, raw, max_bytes - size, response)
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(response, f"over {max_bytes} bytes")
        chunks.append(chunk)
    if decoder is not None and not decoder.eof and wire:
        raise HTTPFailure(
            f"{response.request.url.host} sent a truncated compressed body",
            status_code=response.status_code,
            retryable=True,
        )
    return b"".join(chunks)


def _inflate(decoder: Any, chunk: bytes, room: int, response: httpx.Response) -> bytes:
    """Decompress ``chunk``, producing at most ``room + 1`` bytes (one more means too large)."""
    if decoder.eof:
        if chunk:
            raise HTTPFailure(
                f"{response.request.url.host} sent data after the end of its compressed body",
                status_code=response.status_code,
            )
        return b""
    try:
        out = decoder.decompress(chunk, room + 1)
    except zlib.error:
        raise HTTPFailure(
            f"{response.request.url.host} sent a corrupt compressed body",
            status_code=response.status_code,
        ) from None
    if len(out) > room or decoder.unconsumed_tail:
        raise _too_large(response, f"over {room} bytes once decompressed")
    if decoder.eof and decoder.unused_data:
        raise HTTPFailure(
            f"{response.request.url.host} sent data after the end of its compressed body",
            status_code=response.status_code,
        )
    return bytes(out)


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


#: ``-v``: every call to an identity provider (method, URL redacted, status, size, time).
_log = get_logger("kstlib.auth._http")


def request_budget(client: httpx.Client) -> float:
    """Seconds one request to the IdP may take in total: the client's read timeout."""
    timeout = client.timeout
    for value in (timeout.read, timeout.pool, timeout.connect):
        if value is not None:
            return float(value)
    return DEFAULT_REQUEST_BUDGET


def request(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    data: Mapping[str, str | list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
    retry: RetryPolicy = NO_RETRY,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    tracer: HTTPTraceLogger | None = None,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float | None = None,
    prepare: Callable[[httpx.Request], None] | None = None,
) -> RawResponse:
    """Send one request and read its answer through the bounded reader; no JSON decoding.

    Every attempt has a total deadline of ``timeout`` seconds (default: the client's read
    timeout) from sending to the last byte of the body, whatever the server's pace; the
    body is limited to ``max_bytes`` on the wire and after decompression (identity is
    asked for; one gzip/deflate layer is tolerated). Retries (per ``retry``) on connect
    errors, timeouts, 5xx and 429; use a retry policy only for idempotent requests.
    Redirects are never followed. ``prepare`` may add to each built request (a DPoP
    proof). Raises :class:`HTTPFailure` with a one-line reason.
    """
    budget = request_budget(client) if timeout is None else float(timeout)
    sent_headers = {"Accept-Encoding": "identity", **(headers or {})}
    attempt = 0
    while True:
        started = time.monotonic()
        try:
            response, body = _send_and_read(
                client,
                method,
                url,
                data=data,
                headers=sent_headers,
                auth=auth,
                max_bytes=max_bytes,
                budget=budget,
                prepare=prepare,
            )
        except httpx.TransportError as exc:  # connect, timeout, or reset mid-response
            _log.info("%s %s failed: %s", method, redact_url(url), _transport_reason(exc, url))
            if attempt < retry.max_retries:
                sleep(retry.delay(attempt, None))
                attempt += 1
                continue
            raise HTTPFailure(_transport_reason(exc, url), retryable=True) from None
        except _DeadlinePassed:
            _log.info("%s %s: no complete answer within %g s", method, redact_url(url), budget)
            if attempt < retry.max_retries:
                sleep(retry.delay(attempt, None))
                attempt += 1
                continue
            raise HTTPFailure(
                f"timed out talking to {httpx.URL(url).host} "
                f"(no complete answer within {budget:g} s)",
                retryable=True,
            ) from None
        if tracer is not None:
            tracer.on_response(response, body)
        status = response.status_code
        if _log.isEnabledFor(logging.INFO):
            elapsed_ms = (time.monotonic() - started) * 1000
            _log.info(
                "%s %s -> HTTP %d (%d bytes, %.0f ms)",
                method,
                redact_url(url),
                status,
                len(body),
                elapsed_ms,
            )
        if (status >= 500 or status == 429) and attempt < retry.max_retries:
            retry_after = _retry_after_seconds(response.headers.get("retry-after"))
            if retry_after is None or retry_after <= retry.max_retry_after:
                sleep(retry.delay(attempt, retry_after))
                attempt += 1
                continue
        return RawResponse(response, body)


def request_json(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    data: Mapping[str, str | list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: httpx.Auth | tuple[str, str] | None = None,
    retry: RetryPolicy = NO_RETRY,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    tracer: HTTPTraceLogger | None = None,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float | None = None,
    prepare: Callable[[httpx.Request], None] | None = None,
) -> JSONResponse:
    """Send one request through :func:`request` and decode its JSON answer.

    Raises :class:`HTTPFailure` for transport failures, a passed deadline, oversized or
    non-JSON bodies, refused encodings, redirects (never followed: a redirect to another
    host is not trusted), and 5xx/429 left after the retries.
    """
    raw = request(
        client,
        method,
        url,
        data=data,
        headers=headers,
        auth=auth,
        retry=retry,
        max_bytes=max_bytes,
        tracer=tracer,
        sleep=sleep,
        timeout=timeout,
        prepare=prepare,
    )
    response, body = raw.response, raw.body
    status = response.status_code
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
    return JSONResponse(status_code=status, headers=response.headers, data=parsed)


class _DeadlinePassed(Exception):
    """The attempt did not complete within its total deadline."""


def _send_and_read(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    data: Mapping[str, str | list[str]] | None,
    headers: Mapping[str, str] | None,
    auth: httpx.Auth | tuple[str, str] | None,
    max_bytes: int,
    budget: float,
    prepare: Callable[[httpx.Request], None] | None = None,
) -> tuple[httpx.Response, bytes]:
    """Send and read in a worker thread; give up when ``budget`` seconds have passed.

    httpx's timeouts bound each socket operation, not the whole exchange: a server
    dripping a byte just under the read timeout could hold the caller (and the locks it
    holds) forever. The worker is a daemon thread told to stop at the next chunk; the
    caller never waits past the deadline.
    """
    request = client.build_request(method, url, data=data, headers=headers)
    if prepare is not None:
        prepare(request)
    done = threading.Event()
    cancelled = threading.Event()
    outcome: list[Any] = []

    def work() -> None:
        try:
            response = client.send(request, auth=auth, stream=True, follow_redirects=False)
            try:
                outcome.append((response, _read_limited(response, max_bytes, cancelled)))
            finally:
                response.close()
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=work, name="kstlib-idp-request", daemon=True)
    worker.start()
    if not done.wait(budget):
        cancelled.set()
        raise _DeadlinePassed
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    response, body = result
    return response, body


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
