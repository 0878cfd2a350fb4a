"""A tiny real HTTP server on 127.0.0.1 for discovery/JWKS tests (no mocks).

Routes are configured per path; every request is counted, so tests can
assert how many network calls a check made. Threaded, started once per
module by a fixture, reset between tests.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Route:
    """A canned answer: status, headers, body; ``hang_up`` closes without answering."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang_up: bool = False
    #: Answers served in order before falling back to this route (for flaky servers).
    then: list[Route] = field(default_factory=list)


class QuietThreadingServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections the tests hang up on are expected: no traceback on stderr."""


class JWKSServer:
    """Serves configurable JSON documents and counts requests per path."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are separate writes: without this, Nagle + delayed ACK add 40 ms.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                server._serve(self)

            def do_POST(self) -> None:
                server._serve(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = QuietThreadingServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> JWKSServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # ---------------------------------------------------------------- configuration
    def reset(self) -> None:
        with self._lock:
            self._routes.clear()
            self.hits.clear()
            self.requests.clear()

    def set_route(self, path: str, route: Route) -> None:
        with self._lock:
            self._routes[path] = route

    def set_json(
        self,
        path: str,
        doc: Any,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(doc).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        self.set_route(path, Route(status, body, all_headers))

    def set_issuer(
        self,
        path: str = "/issuer",
        *,
        jwks: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        jwks_headers: dict[str, str] | None = None,
    ) -> str:
        """Serve a discovery document (and JWKS) for the issuer at ``path``; return the issuer."""
        issuer = self.url(path)
        jwks_path = path.rstrip("/") + "/jwks"
        doc = {
            "issuer": issuer,
            "jwks_uri": self.url(jwks_path),
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "PS256", "ES256", "EdDSA"],
        }
        doc.update(extra or {})
        self.set_json(path.rstrip("/") + "/.well-known/openid-configuration", doc, headers=headers)
        if jwks is not None:
            self.set_json(jwks_path, jwks, headers=jwks_headers)
        return issuer

    # ---------------------------------------------------------------- counters
    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(self.hits.values()) if path is None else self.hits[path]

    # ---------------------------------------------------------------- serving
    def _next_route(self, path: str) -> Route | None:
        with self._lock:
            self.hits[path] += 1
            route = self._routes.get(path)
            if route is not None and route.then:
                return route.then.pop(0)
            return route

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.requests.append((handler.command, handler.path))
        route = self._next_route(path)
        if route is None:
            route = Route(404, b'{"error":"not_found"}', {"Content-Type": "application/json"})
        if route.hang_up:
            handler.close_connection = True
            handler.connection.close()
            return
        handler.send_response(route.status)
        for name, value in route.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(route.body)))
        handler.end_headers()
        handler.wfile.write(route.body)


@contextmanager
def running_server() -> Iterator[JWKSServer]:
    """Start a server for the duration of the block."""
    server = JWKSServer().start()
    try:
        yield server
    finally:
        server.stop()
