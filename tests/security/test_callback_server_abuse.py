"""Local processes attacking the loopback callback server (security items 8 and 9).

8. Slow clients: connections dripping one header byte at a time must not hold the server's
   slots past one total request deadline, and a request may not exceed a byte budget.
9. ``localhost``: a browser may resolve it to ``::1``; a process listening on ``[::1]`` at
   the login's port must not receive the redirect.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kstlib.auth.callback import MAX_CONNECTIONS, MAX_REQUEST_BYTES, CallbackServer
from kstlib.auth.errors import CallbackServerError

STATE = "state-of-this-login"


def _get(address: str, family: socket.AddressFamily, port: int, target: str) -> int:
    """One GET; the status, or 0 when the connection closed without an answer."""
    host = address if family == socket.AF_INET else f"[{address}]"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect((address, port))
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


class _Drippers:
    """Connections that each send one header byte every ``interval`` seconds, forever."""

    def __init__(self, port: int, count: int, interval: float) -> None:
        self.stop = threading.Event()
        self.sockets = [socket.create_connection(("127.0.0.1", port), 5) for _ in range(count)]
        self.thread = threading.Thread(target=self._drip, args=(interval,), daemon=True)
        self.thread.start()

    def _drip(self, interval: float) -> None:
        header = b"GET /callback HTTP/1.1\r\nX-Slow: " + b"a" * 10_000
        position = 0
        while not self.stop.wait(interval):
            for sock in self.sockets:
                try:
                    sock.sendall(header[position : position + 1])
                except OSError:
                    pass
            position = (position + 1) % len(header)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def drippers_factory() -> Iterator[list[_Drippers]]:
    made: list[_Drippers] = []
    yield made
    for drippers in made:
        drippers.close()


def test_dripping_connections_cannot_stall_a_login(drippers_factory: list[_Drippers]) -> None:
    """Every slot held by a drip-feeding client: the real redirect still completes the login.

    Before the fix each read had its own 5 s timeout, so a byte every 0.5 s kept a slot
    forever, and the redirect was dropped while every slot was busy.
    """
    with CallbackServer(port=0, expected_state=STATE, request_timeout=1.0) as server:
        drippers = _Drippers(server.port, MAX_CONNECTIONS + 4, interval=0.5)
        drippers_factory.append(drippers)
        time.sleep(0.3)  # let the drippers take every slot
        status = _get("127.0.0.1", socket.AF_INET, server.port, f"/callback?code=c&state={STATE}")
        assert status == 200
        assert server.wait_for_callback(5).code == "c"


def test_a_request_larger_than_the_byte_budget_is_dropped_unanswered() -> None:
    with CallbackServer(port=0, expected_state=STATE) as server:
        headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(90))
        assert len(headers) > MAX_REQUEST_BYTES
        with socket.create_connection(("127.0.0.1", server.port), 10) as sock:
            sock.settimeout(10)
            try:
                sock.sendall(
                    b"GET /callback?code=c&state=" + STATE.encode() + b" HTTP/1.0\r\n" + headers
                )
                sock.sendall(b"\r\n")
            except OSError:
                pass  # the server closed the connection while we were still sending
            try:
                answer = sock.recv(65536)
            except ConnectionResetError:
                answer = b""
        assert answer == b""
        assert server.result is None  # the oversized request completed nothing
        status = _get("127.0.0.1", socket.AF_INET, server.port, f"/callback?code=c&state={STATE}")
        assert status == 200


def test_localhost_listens_on_ipv6_loopback_too() -> None:
    """A browser resolving localhost to ::1 reaches the login, not another process."""
    with CallbackServer("localhost", 0, expected_state=STATE) as server:
        status = _get("::1", socket.AF_INET6, server.port, f"/callback?code=v6&state={STATE}")
        assert status == 200
        assert server.wait_for_callback(5).code == "v6"


def test_localhost_refuses_a_port_taken_on_ipv6_loopback() -> None:
    """A local process already on [::1]:port: the login must not start on 127.0.0.1 alone."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        squatter.bind(("::1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(CallbackServerError) as info:
            CallbackServer("localhost", port).start()
    assert info.value.reason == "port in use"
    assert "::1" in info.value.message
