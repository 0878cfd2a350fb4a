"""The loopback redirect receiver of a native-app login (RFC 8252, section 7.3).

:class:`CallbackServer` listens on a loopback address only (127.0.0.1, or
[::1] for an IPv6 redirect URI; ``localhost`` binds **both** 127.0.0.1 and
[::1] on the same port, so that no other local process can take the address
a browser resolving ``localhost`` to ``::1`` would reach, RFC 8252 8.3),
receives the one redirect that ends an authorization request, and hands its
parameters to the caller as a :class:`CallbackResult`.

What it accepts, and what it does with everything else:

* only ``GET`` on the **exact** configured path (``/evil/callback`` is not
  ``/callback``): any other path gets 404 and the wait goes on;
* only a ``Host`` header naming a loopback host on the bound port (a page
  re-bound by DNS to 127.0.0.1 cannot talk to it): otherwise 400;
* a request target of at most :data:`MAX_TARGET_LENGTH` characters (else 414),
  in ASCII, whose query decodes as UTF-8 with every parameter at most once
  (else 400, the wait goes on);
* when an expected state is known (constructor, :meth:`CallbackServer.expect_state`
  or ``wait_for_callback(expected_state=...)``), a redirect whose ``state`` is
  missing or different is **rejected with an error page and the wait goes
  on**: a stray or hostile request can neither complete the login with its
  own code nor abort the real one. This applies to error redirects too;
* single use: the first accepted redirect (a code, or an error from the
  authorization server) completes the wait; every later request gets an
  "already completed" page (409) and never changes the result.

Pages are tiny, self-contained HTML documents; every value shown is passed
through :func:`html.escape`, the code and state are never shown, and they are
never logged (only the method, path and status of a request are, at DEBUG).

Each server owns all its state (no class-level shared state), so several
servers may run in one process. Requests are served by daemon threads, at
most :data:`MAX_CONNECTIONS` at once; further connections wait in the
listen queue, in arrival order, for a free slot. Each request must arrive
whole within ``request_timeout`` seconds (:data:`REQUEST_TIMEOUT`, a total
deadline, not a per-read one) and within :data:`MAX_REQUEST_BYTES`: a local
process dripping bytes into many connections holds a slot for at most that
long, so it cannot stall a login.

With ``deferred_reply=True`` (what :meth:`OAuth2Provider.login
<kstlib.auth.providers.oauth2.OAuth2Provider.login>` uses) the browser's
page waits for :meth:`CallbackServer.report_outcome`: "Login complete" only
once the code was exchanged and the tokens stored, an error page otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import html
import io
import ipaddress
import math
import re
import socket
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from kstlib.auth._net import is_loopback_host
from kstlib.auth.errors import AuthorizationError, CallbackServerError
from kstlib.auth.redaction import get_logger

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_REQUEST_BYTES",
    "MAX_TARGET_LENGTH",
    "REQUEST_TIMEOUT",
    "CallbackResult",
    "CallbackServer",
    "open_in_browser",
    "parse_callback_params",
    "parse_pasted_redirect",
    "result_from_params",
]

_log = get_logger("kstlib.auth.callback")

#: Seconds :meth:`CallbackServer.wait_for_callback` waits by default.
DEFAULT_TIMEOUT = 120.0
#: Longest request target (path + query) accepted; longer ones get 414.
MAX_TARGET_LENGTH = 8192
#: Most query parameters accepted in one redirect.
MAX_PARAMS = 64
#: Most requests served at the same time; further connections wait in the listen queue.
MAX_CONNECTIONS = 16
#: Connections the kernel may queue while every slot is busy.
LISTEN_BACKLOG = 64
#: Seconds a client has, in total, to send its whole request (and read the reply).
REQUEST_TIMEOUT = 10.0
#: Most bytes read from one connection (request line and headers; a GET has no body).
MAX_REQUEST_BYTES = 64 * 1024
#: Seconds a deferred reply waits for :meth:`CallbackServer.report_outcome`.
OUTCOME_TIMEOUT = 120.0
#: Seconds :meth:`CallbackServer.stop` waits for the page of the accepted redirect to be sent.
_REPLY_FLUSH_TIMEOUT = 2.0
#: How often (seconds) ``wait_for_callback`` calls its ``on_tick`` callback.
TICK_INTERVAL = 0.2
#: Longest error/error_description kept for display.
_MAX_SHOWN = 300


def _printable(text: str | None, limit: int = _MAX_SHOWN) -> str | None:
    """``text`` without control characters (no terminal escapes), cut to ``limit``."""
    if text is None:
        return None
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return cleaned[:limit]


@dataclass(frozen=True, repr=False)
class CallbackResult:
    """The parameters of the redirect that completed a login.

    ``code`` is set on success; ``error`` (and maybe ``error_description``)
    when the authorization server refused. ``raw_params`` holds every query
    parameter (``iss`` included, for RFC 9207). ``repr()`` never shows the
    code, the state, nor any parameter value.
    """

    code: str | None
    state: str | None
    error: str | None = None
    error_description: str | None = None
    raw_params: Mapping[str, str] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when the redirect carries a code and no error."""
        return bool(self.code) and self.error is None

    @property
    def error_summary(self) -> str | None:
        """``error: description`` on one printable line, None without an error."""
        if self.error is None:
            return None
        error = _printable(self.error) or "error"
        description = _printable(self.error_description)
        return f"{error}: {description}" if description else error

    def raise_for_error(self) -> str:
        """Return the authorization code; raise when the redirect carries an error (or no code).

        Raises:
            AuthorizationError: ``error_code`` is the server's ``error``, when there is one.
        """
        if self.error is not None:
            raise AuthorizationError(
                f"The authorization server refused the login: {self.error_summary}",
                reason="authorization denied",
                error_code=_printable(self.error),
                error_description=_printable(self.error_description),
            )
        if not self.code:
            raise AuthorizationError(
                "The redirect carries no authorization code", reason="missing code"
            )
        return self.code

    def __repr__(self) -> str:
        return (
            f"CallbackResult(code={'<present>' if self.code else None}, "
            f"state={'<present>' if self.state else None}, error={self.error!r}, "
            f"error_description={self.error_description!r}, "
            f"raw_params=<keys: {', '.join(sorted(self.raw_params))}>)"
        )


def parse_callback_params(query: str) -> dict[str, str]:
    """Decode a redirect's query string (``code=...&state=...``) into one value per parameter.

    The bytes of percent-escapes must be UTF-8.

    Raises:
        CallbackServerError: ``reason="malformed query"`` when the text is not
            ASCII, not UTF-8 once decoded, has too many parameters, or repeats
            one (RFC 6749 3.1: parameters MUST NOT be included more than once).
    """
    if not query.isascii():
        raise _malformed("the query holds characters outside ASCII")
    try:
        pairs = parse_qsl(
            query,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PARAMS,
        )
    except UnicodeDecodeError:
        raise _malformed("the query is not UTF-8") from None
    except ValueError:
        raise _malformed(f"the query has more than {MAX_PARAMS} parameters") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise _malformed(f"the parameter {_printable(key, 40)!r} appears more than once")
        params[key] = value
    return params


def _malformed(problem: str) -> CallbackServerError:
    return CallbackServerError(f"Malformed redirect: {problem}", reason="malformed query")


def result_from_params(params: Mapping[str, str]) -> CallbackResult:
    """Build a :class:`CallbackResult` from decoded redirect parameters (blank = absent)."""
    return CallbackResult(
        code=params.get("code") or None,
        state=params.get("state") or None,
        error=params.get("error") or None,
        error_description=params.get("error_description") or None,
        raw_params=dict(params),
    )


def parse_pasted_redirect(text: str) -> CallbackResult:
    """What a user pasted after a login: the full redirect URL, its query, or the bare code.

    A bare code is percent-decoded (``+`` kept as is, since a code is not
    form-encoded); a URL or query is decoded like a real redirect.

    Raises:
        CallbackServerError: ``reason="malformed query"`` (see :func:`parse_callback_params`).
    """
    stripped = text.strip()
    if "://" in stripped:
        try:
            query = urlsplit(stripped).query
        except ValueError:
            raise _malformed("the URL cannot be parsed") from None
        return result_from_params(parse_callback_params(query))
    if stripped.startswith("?") or re.search(r"(^|&)(code|error)=", stripped):
        return result_from_params(parse_callback_params(stripped.removeprefix("?")))
    if not stripped.isascii():
        raise _malformed("the code holds characters outside ASCII")
    try:
        code = unquote(stripped, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise _malformed("the code's percent-escapes are not UTF-8") from None
    return CallbackResult(code=code or None, state=None, raw_params={"code": code})


# --------------------------------------------------------------------------- the browser

#: Text-mode browsers :mod:`webbrowser` may pick (www-browser is Debian's alternative for one).
#: They would take over the terminal the login runs in, so they are never started.
_CONSOLE_BROWSERS = frozenset({"w3m", "lynx", "links", "elinks", "links2", "www-browser", "browsh"})


def _is_console_browser(controller: object) -> bool:
    import os
    import shlex
    import webbrowser

    if isinstance(controller, webbrowser.Elinks):  # a UnixBrowser, not a GenericBrowser
        return True
    if not isinstance(controller, webbrowser.BaseBrowser):
        return False
    name = controller.name or ""
    try:
        command = shlex.split(name)[0] if name else ""
    except ValueError:
        command = name
    return os.path.basename(command) in _CONSOLE_BROWSERS


def open_in_browser(url: str) -> bool:
    """Open ``url`` in the user's graphical browser; False when none could be opened.

    A text-mode browser (w3m, lynx, links...), which :mod:`webbrowser` falls back to on
    a machine without a display, is never started: the caller prints the URL instead.
    """
    import webbrowser

    with contextlib.suppress(webbrowser.Error):
        webbrowser.get()  # registers the platform's browsers on first use
    names = list(getattr(webbrowser, "_tryorder", None) or ())
    controllers = [webbrowser.get(name) for name in names]
    if not any(_is_console_browser(c) for c in controllers):
        try:
            return bool(webbrowser.open(url))
        except webbrowser.Error:
            return False
    _log.debug("Skipping console browsers; the login URL is shown instead if no other opens")
    for controller in controllers:
        if not _is_console_browser(controller) and controller.open(url):
            return True
    return False


# --------------------------------------------------------------------------- addresses


def _bind_addresses(host: str) -> list[tuple[str, socket.AddressFamily]]:
    """The addresses to bind for ``host``: loopback only; ``localhost`` -> 127.0.0.1 and ::1.

    A browser may resolve ``localhost`` to ``::1`` first: binding only 127.0.0.1 would let
    another local process listening on ``[::1]`` at the same port receive the redirect
    (RFC 8252 8.3), so both are bound (``::1`` only where the host has IPv6).
    """
    bare = host.strip("[]")
    if bare.lower() == "localhost":
        addresses = [("127.0.0.1", socket.AF_INET)]
        if socket.has_ipv6:
            addresses.append(("::1", socket.AF_INET6))
        return addresses
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise CallbackServerError(
            f"The callback server only listens on a loopback address (127.0.0.1, ::1 or "
            f"localhost), not {host!r} (RFC 8252 7.3); use 'kstlib auth login --manual' "
            "for a redirect to another host",
            reason="non-loopback host",
        )
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return [(str(address), family)]


#: errno values meaning "this host has no such address" (no IPv6 loopback configured).
_NO_ADDRESS = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


def _split_host_header(value: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of a Host header; None when it cannot be parsed."""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            return None
    else:
        host, _, port_text = value.partition(":")
        port_text = port_text or None
    if port_text is None:
        return host, None
    return (host, int(port_text)) if port_text.isdigit() and len(port_text) <= 5 else None


def _candidate_ports(port: int, port_range: tuple[int, int] | None) -> list[int]:
    """Ports to try in order: ``port`` first (0 = any free port), then the range."""
    ports = [port] if port or port_range is None else []
    if port_range is not None:
        first, last = port_range
        ports += [p for p in range(first, last + 1) if p != port]
    return ports


def _check_port_range(port_range: tuple[int, int] | None) -> tuple[int, int] | None:
    if port_range is None:
        return None
    first, last = (int(p) for p in port_range)
    if not 1 <= first <= last <= 65535:
        raise CallbackServerError(
            f"Invalid callback port range {first}-{last}: need 1 <= first <= last <= 65535",
            reason="invalid port range",
        )
    return first, last


# --------------------------------------------------------------------------- pages


@dataclass(frozen=True)
class _Reply:
    """What the handler sends back: a status and a one-paragraph page."""

    status: int
    title: str
    message: str


_SUCCESS = _Reply(200, "Login complete", "You can close this tab and return to the terminal.")
_ALREADY_DONE = _Reply(
    409,
    "Login already completed",
    "This login was already completed; this request was ignored. You can close this tab.",
)
_NOT_FOUND = _Reply(404, "Not found", "There is nothing here.")
#: Returned by ``_handle`` for an accepted redirect whose page waits for the login's outcome.
_ACCEPTED = _Reply(202, "Accepted", "")
_NO_OUTCOME = _Reply(
    200,
    "Redirect received",
    "The login is being completed: return to the terminal to see whether it succeeded.",
)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;color:#222}}
</style></head><body><h1>{title}</h1><p>{message}</p><p><small>kstlib</small></p>
</body></html>
"""

_SECURITY_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Connection": "close",
}


def _render(reply: _Reply) -> bytes:
    """The HTML page of ``reply``, every value escaped."""
    page = _PAGE.format(title=html.escape(reply.title), message=html.escape(reply.message))
    return page.encode("utf-8")


def _rejected(problem: str) -> _Reply:
    return _Reply(
        400,
        "Request rejected",
        f"This request was not accepted ({problem}). The login is still waiting for "
        "the authorization server's redirect.",
    )


def _error_page(result: CallbackResult) -> _Reply:
    return _Reply(
        400,
        "Login failed",
        f"The authorization server refused the login ({result.error_summary}). "
        "Return to the terminal for details.",
    )


def _failure_page(problem: str) -> _Reply:
    return _Reply(
        500,
        "Login failed",
        f"The redirect arrived, but the login could not be completed ({problem}). "
        "Return to the terminal for details.",
    )


# --------------------------------------------------------------------------- HTTP plumbing


class _RequestTooLarge(Exception):
    """A connection sent more than :data:`MAX_REQUEST_BYTES`."""


class _DeadlineReader(io.RawIOBase):
    """Reads a socket under one total deadline and a byte budget (not a per-read timeout).

    Each read waits at most the time left until ``deadline``; once it has passed, or once
    ``budget`` bytes were read, the read raises and the connection is dropped.
    """

    def __init__(self, sock: socket.socket, deadline: float, budget: int) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._left = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline passed")
        if self._left <= 0:
            raise _RequestTooLarge
        self._sock.settimeout(left)
        view = memoryview(buffer)[: self._left]
        count = self._sock.recv_into(view)
        self._left -= count
        return count


class _LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one loopback address; its owner caps the connections."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = LISTEN_BACKLOG

    def __init__(
        self,
        address: tuple[str, int],
        family: socket.AddressFamily,
        owner: CallbackServer,
    ) -> None:
        self.address_family = family  # read by TCPServer.__init__: per instance, not per class
        self.owner = owner
        self._stopping = False
        super().__init__(address, _CallbackHandler)

    def server_bind(self) -> None:
        """Bind; an IPv6 socket accepts IPv6 only (never IPv4-mapped addresses)."""
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a daemon thread once a slot is free (the connection waits until then)."""
        slots = self.owner._slots
        while not slots.acquire(timeout=0.05):
            if self._stopping:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then give its slot back."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._slots.release()

    def shutdown(self) -> None:
        """Stop serving, also when the serving thread waits for a slot."""
        self._stopping = True
        super().shutdown()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log the error's type only (never a traceback that could hold request data)."""
        error = sys.exc_info()[0]
        _log.debug("Callback server: request failed (%s)", error.__name__ if error else "?")


class _CallbackHandler(BaseHTTPRequestHandler):
    """Hands every GET to its server's :class:`CallbackServer`; never logs the request line."""

    server: _LoopbackHTTPServer
    server_version = "kstlib-callback"
    sys_version = ""

    def setup(self) -> None:
        """Read through a :class:`_DeadlineReader`: one deadline for the whole request."""
        owner = self.server.owner
        deadline = time.monotonic() + owner._request_timeout
        self.connection = self.request
        self.connection.settimeout(owner._request_timeout)
        raw = _DeadlineReader(self.connection, deadline, MAX_REQUEST_BYTES)
        self.rfile = io.BufferedReader(raw)
        self.wfile = self.connection.makefile("wb", buffering=0)

    def do_GET(self) -> None:
        owner = self.server.owner
        reply = owner._handle(self.path, self.headers.get("Host"))
        accepted = reply is _ACCEPTED
        if accepted:
            reply = owner._await_outcome()
        try:
            self._send(reply)
        finally:
            if accepted:
                owner._replied.set()

    def _send(self, reply: _Reply) -> None:
        body = _render(reply)
        self.send_response(reply.status)
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = urlsplit(self.path).path if self.path.isascii() else "<non-ascii>"
        _log.debug("Callback server: %s %s -> %s", self.command, path[:100], code)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the base class would write raw request lines (with the code) to stderr."""


# --------------------------------------------------------------------------- the server


class CallbackServer:
    """A one-shot loopback HTTP server that receives the authorization redirect.

    Args:
        host: ``127.0.0.1`` (default), another 127.0.0.0/8 address, ``::1``
            (or ``[::1]``) for IPv6, or ``localhost`` (binds 127.0.0.1 and keeps
            ``localhost`` in :attr:`redirect_uri`). Anything else is refused.
        port: The port to listen on; 0 picks any free port.
        path: The exact path of the redirect URI.
        port_range: ``(first, last)``: ports tried in order when ``port`` is
            busy (or instead of it when ``port`` is 0).
        expected_state: The ``state`` of the authorization request; redirects
            with another state are rejected and the wait goes on.
        request_timeout: Seconds a connection has, in total, to send its request.
        deferred_reply: Hold the page of the accepted redirect until
            :meth:`report_outcome` says whether the login succeeded.

    Example:
        >>> with CallbackServer(port=0, expected_state=state) as server:  # doctest: +SKIP
        ...     url, _ = provider.get_authorization_url(state=state)
        ...     webbrowser.open(url)
        ...     result = server.wait_for_callback(timeout=120)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8400,
        *,
        path: str = "/callback",
        port_range: tuple[int, int] | None = None,
        expected_state: str | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        deferred_reply: bool = False,
    ) -> None:
        if not 0 <= int(port) <= 65535:
            raise CallbackServerError(f"Invalid callback port {port}", reason="invalid port")
        if not path.startswith("/") or "?" in path or "#" in path:
            raise CallbackServerError(
                f"The callback path must be an absolute path without query, got {path!r}",
                reason="invalid path",
            )
        if not (math.isfinite(request_timeout) and request_timeout > 0):
            raise CallbackServerError(
                f"The request timeout must be a positive number, got {request_timeout!r}",
                reason="invalid timeout",
            )
        self._host = host.strip("[]")
        self._addresses = _bind_addresses(host)
        self._requested_port = int(port)
        self._request_timeout = float(request_timeout)
        self._deferred = deferred_reply
        self._outcome: _Reply | None = None
        self._outcome_ready = threading.Event()
        self._replied = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._stopped = False
        self._port_range = _check_port_range(port_range)
        self._path = path
        self._expected_state = expected_state
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._result: CallbackResult | None = None
        self._bound_port = 0
        self._httpds: list[_LoopbackHTTPServer] = []
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_redirect_uri(
        cls,
        redirect_uri: str,
        *,
        port_range: tuple[int, int] | None = None,
        expected_state: str | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        deferred_reply: bool = False,
    ) -> CallbackServer:
        """A server for a loopback redirect URI (``http://127.0.0.1:8400/callback``)."""
        try:
            parts = urlsplit(redirect_uri)
            port = parts.port
        except ValueError:
            raise CallbackServerError(
                "The redirect URI is not a valid URL", reason="invalid redirect uri"
            ) from None
        if parts.scheme != "http" or not parts.hostname:
            raise CallbackServerError(
                "A loopback redirect URI must be http://<loopback host>:<port>/<path> "
                "(RFC 8252 7.3)",
                reason="invalid redirect uri",
            )
        return cls(
            parts.hostname,
            80 if port is None else port,
            path=parts.path or "/",
            port_range=port_range,
            expected_state=expected_state,
            request_timeout=request_timeout,
            deferred_reply=deferred_reply,
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The host name used in :attr:`redirect_uri` (as given, without brackets)."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port once started (kept after :meth:`stop`); the requested port before."""
        return self._bound_port or self._requested_port

    @property
    def path(self) -> str:
        """The exact path the redirect must use."""
        return self._path

    @property
    def redirect_uri(self) -> str:
        """The redirect URI to put in the authorization request (bound port once started)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}{self._path}"

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return bool(self._httpds)

    @property
    def result(self) -> CallbackResult | None:
        """The redirect that completed the login, None until then."""
        return self._result

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind (first free candidate port) and serve in daemon threads. Idempotent."""
        if self._httpds:
            return self
        httpds = self._bind()
        self._bound_port = int(httpds[0].server_address[1])
        self._stopped = False
        threads = [
            threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"kstlib-callback-{self._bound_port}",
                daemon=True,
            )
            for httpd in httpds
        ]
        self._httpds, self._threads = httpds, threads
        for thread in threads:
            thread.start()
        _log.debug("Callback server listening on %s", self.redirect_uri)
        return self

    def _bind(self) -> list[_LoopbackHTTPServer]:
        last_error: OSError | None = None
        for port in _candidate_ports(self._requested_port, self._port_range):
            try:
                return self._bind_all(port)
            except OSError as exc:
                last_error = exc
        tried = (
            f"ports {self._port_range[0]}-{self._port_range[1]}"
            if self._port_range
            else f"port {self._requested_port}"
        )
        reason = last_error.strerror if last_error and last_error.strerror else "unavailable"
        where = " and ".join(address for address, _ in self._addresses)
        raise CallbackServerError(
            f"Cannot listen on {where} {tried}: {reason}. Free the port, or set "
            "auth.callback_server.port_range (or port 0 for any free port)",
            reason="port in use",
            port=self._requested_port,
        )

    def _bind_all(self, port: int) -> list[_LoopbackHTTPServer]:
        """Bind every address of the host on one port (the first one picks it when 0)."""
        bound: list[_LoopbackHTTPServer] = []
        try:
            for address, family in self._addresses:
                chosen = int(bound[0].server_address[1]) if bound else port
                try:
                    bound.append(_LoopbackHTTPServer((address, chosen), family, self))
                except OSError as exc:
                    if bound and exc.errno in _NO_ADDRESS:
                        continue  # no IPv6 loopback here: nobody can listen on it either
                    raise
        except BaseException:
            for httpd in bound:
                httpd.server_close()
            raise
        return bound

    def stop(self) -> None:
        """Stop serving and close the sockets. Idempotent; the result stays readable.

        With ``deferred_reply``, the page of the accepted redirect is released first
        (a neutral page when no outcome was reported) and given a moment to be sent.
        """
        httpds, threads = self._httpds, self._threads
        self._stopped = True
        accepted = self._result is not None and self._result.error is None
        if self._deferred and accepted:
            self._set_outcome(_NO_OUTCOME)
            self._replied.wait(_REPLY_FLUSH_TIMEOUT)
        if not httpds:
            return
        self._httpds, self._threads = [], []
        for httpd in httpds:
            httpd.shutdown()
            httpd.server_close()
        for thread in threads:
            thread.join(timeout=5)
        _log.debug("Callback server stopped")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"CallbackServer({self.redirect_uri!r}, {state}, done={self._done.is_set()})"

    # -- waiting ---------------------------------------------------------------------------

    def expect_state(self, state: str) -> None:
        """Set the state redirects must carry (call it before sending the user to the IdP).

        Raises:
            CallbackServerError: A redirect with another state already completed the wait.
        """
        if not state:
            raise CallbackServerError("The expected state must not be empty", reason="empty state")
        with self._lock:
            self._expected_state = state
            result = self._result
        if result is not None and not _same(result.state, state):
            raise CallbackServerError(
                "The redirect received carries another state than this login's; "
                "start the login again",
                reason="state mismatch",
            )

    def wait_for_callback(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        expected_state: str | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> CallbackResult:
        """Wait for the redirect (starting the server if needed) and return it.

        Args:
            timeout: Seconds to wait.
            expected_state: See :meth:`expect_state`.
            on_tick: Called about every :data:`TICK_INTERVAL` seconds with the
                seconds left (for a progress display).

        Raises:
            CallbackServerError: ``reason="timeout"`` when nothing arrived in time;
                ``"state mismatch"`` (see :meth:`expect_state`).
        """
        if not (math.isfinite(timeout) and timeout > 0):
            raise CallbackServerError(
                f"The callback timeout must be a positive number, got {timeout!r}",
                reason="invalid timeout",
            )
        if expected_state is not None:
            self.expect_state(expected_state)
        self.start()
        deadline = time.monotonic() + timeout
        while not self._done.is_set():
            if self._stopped:
                raise CallbackServerError(
                    "The callback server was stopped before the login redirect arrived",
                    reason="stopped",
                    port=self.port,
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise CallbackServerError(
                    f"No login redirect arrived at {self.redirect_uri} within {timeout:g} s",
                    reason="timeout",
                    port=self.port,
                )
            if on_tick is not None:
                on_tick(left)
            self._done.wait(min(TICK_INTERVAL, left))
        result = self._result
        if result is None:  # unreachable: the event is set only after the result
            raise CallbackServerError("The callback completed without a result", reason="internal")
        return result

    # -- request handling (called from handler threads) ------------------------------------

    def _host_allowed(self, header: str | None) -> bool:
        if header is None:  # HTTP/1.0 without Host: not a browser, nothing to rebind
            return True
        parsed = _split_host_header(header.strip())
        if parsed is None:
            return False
        host, port = parsed
        return is_loopback_host(host) and (port is None or port == self.port)

    def _handle(self, target: str, host_header: str | None) -> _Reply:
        """Decide the reply to one GET, completing the login when it is the redirect."""
        if len(target) > MAX_TARGET_LENGTH:
            return _Reply(414, "Request too long", "The request URI is too long.")
        if not target.isascii():
            return _rejected("the request holds characters outside ASCII")
        if not self._host_allowed(host_header):
            return _rejected("unexpected Host header")
        try:
            parts = urlsplit(target)
        except ValueError:
            return _rejected("malformed request target")
        if parts.path != self._path:
            return _NOT_FOUND
        try:
            params = parse_callback_params(parts.query)
        except CallbackServerError as exc:
            return _rejected(exc.message.removeprefix("Malformed redirect: "))
        return self._complete(result_from_params(params))

    def _complete(self, result: CallbackResult) -> _Reply:
        """Accept ``result`` as THE redirect if it is one and nothing completed yet."""
        with self._lock:
            if self._result is not None:
                return _ALREADY_DONE
            if result.code is None and result.error is None:
                return _rejected("no authorization code")
            expected = self._expected_state
            if expected is not None and not _same(result.state, expected):
                _log.warning("Callback server: rejected a redirect with a wrong or missing state")
                return _rejected("wrong or missing state")
            self._result = result
            self._done.set()
        if result.error is not None:
            self._set_outcome(_error_page(result))
            return _error_page(result)
        return _ACCEPTED if self._deferred else _SUCCESS

    # -- the outcome of a deferred reply ---------------------------------------------------

    def report_outcome(self, problem: str | None = None) -> None:
        """Say how the login ended, for the page of the accepted redirect (``deferred_reply``).

        ``None`` shows "Login complete"; otherwise an error page quoting ``problem`` (give a
        short, secret-free description such as the error's type). Only the first call counts.
        """
        self._set_outcome(_SUCCESS if problem is None else _failure_page(problem))

    def _set_outcome(self, reply: _Reply) -> None:
        with self._lock:
            if self._outcome is None:
                self._outcome = reply
        self._outcome_ready.set()

    def _await_outcome(self) -> _Reply:
        """The page of the accepted redirect, once :meth:`report_outcome` was called."""
        self._outcome_ready.wait(OUTCOME_TIMEOUT)
        return self._outcome or _NO_OUTCOME


def _same(received: str | None, expected: str) -> bool:
    """Constant-time comparison of a received state with the expected one."""
    if received is None:
        return False
    return hmac.compare_digest(received.encode("utf-8"), expected.encode("utf-8"))
