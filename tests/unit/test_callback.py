"""CallbackServer: the loopback redirect receiver, including every hostile case of issue 6 §2."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from kstlib.auth.callback import (
    MAX_CONNECTIONS,
    MAX_TARGET_LENGTH,
    CallbackResult,
    CallbackServer,
    parse_callback_params,
    parse_pasted_redirect,
)
from kstlib.auth.errors import AuthorizationError, CallbackServerError

STATE = "expected-state-Zx9"
CODE = "the-authorization-code-123"


def raw_get(
    port: int,
    target: bytes | str,
    *,
    host: bytes | str | None = None,
    family: socket.AddressFamily = socket.AF_INET,
    address: str = "127.0.0.1",
    method: bytes = b"GET",
) -> tuple[int, str]:
    """Send one HTTP/1.0 request with exactly these bytes; return (status, body)."""
    if isinstance(target, str):
        target = target.encode("ascii")
    if host is None:
        host = f"{address if family == socket.AF_INET else '[' + address + ']'}:{port}"
    if isinstance(host, str):
        host = host.encode("ascii")
    request = method + b" " + target + b" HTTP/1.0\r\nHost: " + host + b"\r\n\r\n"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect((address, port))
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        return 0, ""  # closed without an answer
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body.decode("utf-8", "replace")


@pytest.fixture
def server() -> Iterator[CallbackServer]:
    with CallbackServer(port=0, expected_state=STATE) as srv:
        yield srv


def callback(server: CallbackServer, query: str) -> tuple[int, str]:
    return raw_get(server.port, f"{server.path}?{query}")


# --------------------------------------------------------------------------- the happy path


def test_success_completes_the_wait_with_every_parameter(server: CallbackServer) -> None:
    status, body = callback(server, f"code={CODE}&state={STATE}&iss=https%3A%2F%2Fidp.example")
    assert status == 200
    assert "Login complete" in body
    assert CODE not in body and STATE not in body
    result = server.wait_for_callback(timeout=1)
    assert result.success
    assert result.code == CODE and result.state == STATE
    assert result.raw_params["iss"] == "https://idp.example"
    assert result.raise_for_error() == CODE


def test_redirect_uri_reflects_the_bound_port() -> None:
    with CallbackServer(port=0, path="/cb") as srv:
        assert srv.port != 0
        assert srv.redirect_uri == f"http://127.0.0.1:{srv.port}/cb"
    assert not srv.running


def test_from_redirect_uri_uses_host_port_and_path() -> None:
    srv = CallbackServer.from_redirect_uri("http://127.0.0.1:0/auth/done", expected_state=STATE)
    with srv:
        status, _ = raw_get(srv.port, f"/auth/done?code=c&state={STATE}")
        assert status == 200
        assert srv.wait_for_callback(1).code == "c"


@pytest.mark.parametrize("uri", ["https://127.0.0.1:8400/cb", "not a url", "http://:80/x"])
def test_from_redirect_uri_refuses_non_loopback_http(uri: str) -> None:
    with pytest.raises(CallbackServerError):
        CallbackServer.from_redirect_uri(uri)


def test_localhost_binds_ipv4_loopback_and_keeps_its_name() -> None:
    with CallbackServer("localhost", 0, expected_state=STATE) as srv:
        assert srv.redirect_uri.startswith("http://localhost:")
        status, _ = raw_get(
            srv.port, f"/callback?code=c&state={STATE}", host=f"localhost:{srv.port}"
        )
        assert status == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", "10.0.0.1"])
def test_non_loopback_hosts_are_refused(host: str) -> None:
    with pytest.raises(CallbackServerError) as info:
        CallbackServer(host, 0)
    assert info.value.reason == "non-loopback host"


def test_ipv6_loopback() -> None:
    with CallbackServer("::1", 0, expected_state=STATE) as srv:
        assert srv.redirect_uri == f"http://[::1]:{srv.port}/callback"
        status, _ = raw_get(
            srv.port, f"/callback?code=c6&state={STATE}", family=socket.AF_INET6, address="::1"
        )
        assert status == 200
        assert srv.wait_for_callback(1).code == "c6"
        # Not reachable over IPv4: its only listening socket is IPv6-only on ::1. (Connecting to
        # 127.0.0.1 on the same port number proves nothing: another test's IPv4 server may
        # hold that number at that moment, and it did once.)
        listening = [httpd.socket for httpd in srv._httpds]
        assert [sock.family for sock in listening] == [socket.AF_INET6]
        assert listening[0].getsockname()[:2] == ("::1", srv.port)
        assert listening[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_ipv6_from_redirect_uri() -> None:
    with CallbackServer.from_redirect_uri("http://[::1]:0/callback") as srv:
        assert srv.host == "::1"
        assert srv.redirect_uri.startswith("http://[::1]:")


# --------------------------------------------------------------------------- hostile requests


@pytest.mark.parametrize(
    "path",
    [
        "/evil/callback",
        "/callback/",
        "/callbackx",
        "/CALLBACK",
        "/%63allback",
        "/",
        "/x/../callback",
    ],
)
def test_other_paths_get_404_and_the_wait_goes_on(server: CallbackServer, path: str) -> None:
    status, _ = raw_get(server.port, f"{path}?code=evil&state={STATE}")
    assert status == 404
    assert server.result is None
    assert callback(server, f"code={CODE}&state={STATE}")[0] == 200
    assert server.wait_for_callback(1).code == CODE


@pytest.mark.parametrize(
    "query",
    [f"code=evil&state={STATE}x", "code=evil&state=", "code=evil", f"code=evil&state={STATE[:-1]}"],
)
def test_wrong_or_missing_state_is_rejected_and_the_wait_goes_on(
    server: CallbackServer, query: str
) -> None:
    status, body = callback(server, query)
    assert status == 400
    assert "wrong or missing state" in body
    assert server.result is None
    assert callback(server, f"code={CODE}&state={STATE}")[0] == 200
    assert server.wait_for_callback(1).code == CODE


def test_error_with_a_wrong_state_cannot_abort_the_login(server: CallbackServer) -> None:
    assert callback(server, "error=access_denied&state=forged")[0] == 400
    assert server.result is None


def test_error_redirect_completes_the_wait_with_the_error(server: CallbackServer) -> None:
    status, body = callback(
        server, f"error=access_denied&error_description=User+said+no&state={STATE}"
    )
    assert status == 400
    assert "access_denied: User said no" in body
    result = server.wait_for_callback(1)
    assert not result.success
    assert result.error == "access_denied"
    with pytest.raises(AuthorizationError) as info:
        result.raise_for_error()
    assert info.value.error_code == "access_denied"


def test_request_without_code_or_error_is_rejected(server: CallbackServer) -> None:
    assert callback(server, f"state={STATE}")[0] == 400
    assert callback(server, f"code=&state={STATE}")[0] == 400
    assert server.result is None


def test_requests_after_success_get_already_completed_and_change_nothing(
    server: CallbackServer,
) -> None:
    assert callback(server, f"code={CODE}&state={STATE}")[0] == 200
    replay = callback(server, f"code={CODE}&state={STATE}")
    other = callback(server, f"code=another&state={STATE}")
    error = callback(server, f"error=access_denied&state={STATE}")
    for status, body in (replay, other, error):
        assert status == 409
        assert "already completed" in body
    result = server.wait_for_callback(1)
    assert result.code == CODE and result.error is None
    assert server.wait_for_callback(1) is result  # waiting again returns the same result


def test_very_long_query_gets_414_and_the_wait_goes_on(server: CallbackServer) -> None:
    long_value = "a" * MAX_TARGET_LENGTH
    assert callback(server, f"code={long_value}&state={STATE}")[0] == 414
    try:  # past http.server's own 64 KiB cap: 414, or closed while we are still sending
        assert raw_get(server.port, "/callback?x=" + "b" * 70000)[0] in {0, 414}
    except ConnectionResetError:
        pass
    assert server.result is None
    assert callback(server, f"code={CODE}&state={STATE}")[0] == 200


def test_too_many_parameters_are_rejected(server: CallbackServer) -> None:
    query = "&".join(f"p{i}=v" for i in range(200)) + f"&code=c&state={STATE}"
    assert callback(server, query)[0] == 400
    assert server.result is None


def test_duplicated_parameters_are_rejected(server: CallbackServer) -> None:
    assert callback(server, f"code=a&code=b&state={STATE}")[0] == 400
    assert callback(server, f"code=a&state={STATE}&state={STATE}")[0] == 400
    assert server.result is None


@pytest.mark.parametrize(
    "target",
    [
        b"/callback?code=%FF%FE&state=" + STATE.encode(),  # escapes that are not UTF-8
        b"/callback?code=\xff\xfe&state=" + STATE.encode(),  # raw non-UTF-8 bytes
        b"/callback?code=caf\xc3\xa9&state=" + STATE.encode(),  # raw UTF-8, not ASCII
    ],
)
def test_non_utf8_bytes_are_rejected_without_crashing(
    server: CallbackServer, target: bytes
) -> None:
    status, _ = raw_get(server.port, target)
    assert status == 400
    assert server.result is None
    assert callback(server, f"code={CODE}&state={STATE}")[0] == 200


def test_percent_encoded_utf8_values_are_decoded(server: CallbackServer) -> None:
    assert callback(server, f"code=caf%C3%A9%2B%2F&state={STATE}")[0] == 200
    assert server.wait_for_callback(1).code == "café+/"


def test_foreign_host_header_is_rejected(server: CallbackServer) -> None:
    """A page re-bound by DNS to 127.0.0.1 sends its own host name: refused."""
    for host in (f"evil.example:{server.port}", "evil.example", f"127.0.0.1:{server.port + 1}"):
        status, _ = raw_get(server.port, f"/callback?code=c&state={STATE}", host=host)
        assert status == 400
    assert server.result is None


def test_only_get_completes_a_login(server: CallbackServer) -> None:
    status, _ = raw_get(server.port, f"/callback?code=c&state={STATE}", method=b"POST")
    assert status == 501
    assert server.result is None


def test_garbage_request_lines_do_not_crash_the_server(server: CallbackServer) -> None:
    for junk in (b"\x00\x01\x02\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), 5) as sock:
            sock.sendall(junk)
            sock.recv(65536)
    assert callback(server, f"code={CODE}&state={STATE}")[0] == 200


def test_concurrent_requests_complete_exactly_once(server: CallbackServer) -> None:
    queries = [f"code=good{i}&state={STATE}" for i in range(12)]
    queries += [f"code=bad{i}&state=forged{i}" for i in range(12)]
    queries += ["code=x&state=" + STATE + "&code=y"] * 4
    barrier = threading.Barrier(len(queries))

    def hit(query: str) -> int:
        barrier.wait()
        return callback(server, query)[0]

    with ThreadPoolExecutor(len(queries)) as pool:
        statuses = list(pool.map(hit, queries))
    good = statuses[:12]
    assert good.count(200) == 1
    assert set(good) <= {200, 409}
    assert set(statuses[12:24]) <= {400, 409}  # 409 once the login completed
    assert set(statuses[24:]) == {400}  # malformed: always refused
    result = server.wait_for_callback(1)
    assert result.code is not None and result.code.startswith("good")
    assert statuses[queries.index(f"code={result.code}&state={STATE}")] == 200


def test_idle_connections_cannot_block_the_server_forever(server: CallbackServer) -> None:
    """More idle connections than slots: excess ones are dropped, idle ones time out."""
    idle = [
        socket.create_connection(("127.0.0.1", server.port), 5) for _ in range(MAX_CONNECTIONS + 4)
    ]
    try:
        time.sleep(0.2)
        for sock in idle:
            sock.sendall(b"GET /callback")  # never finishes its request line
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            status = callback(server, f"code={CODE}&state={STATE}")[0]
        except OSError:
            status = 0
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200


# --------------------------------------------------------------------------- pages and secrets


def test_every_value_shown_is_html_escaped(server: CallbackServer) -> None:
    script = "%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    status, body = callback(
        server, f"error={script}&error_description=%22%3E%3Cimg+src%3Dx%3E&state={STATE}"
    )
    assert status == 400
    assert "<script>" not in body and "<img" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&quot;&gt;&lt;img src=x&gt;" in body


def test_pages_forbid_caching_framing_and_referrers(server: CallbackServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), 5) as sock:
        sock.sendall(
            f"GET /callback?code=c&state={STATE} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
        )
        head = sock.recv(65536).split(b"\r\n\r\n")[0].decode().lower()
    for header in (
        "cache-control: no-store",
        "referrer-policy: no-referrer",
        "x-frame-options: deny",
    ):
        assert header in head
    assert "content-security-policy: default-src 'none'" in head


def test_code_and_state_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(1, logger="kstlib")
    with CallbackServer(port=0, expected_state=STATE) as srv:
        raw_get(srv.port, f"/callback?code={CODE}&state=wrong-state-value")
        raw_get(srv.port, f"/evil?code={CODE}&state={STATE}")
        raw_get(srv.port, f"/callback?code={CODE}&state={STATE}")
        raw_get(srv.port, f"/callback?code={CODE}&state={STATE}")
        srv.wait_for_callback(1)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Callback server" in text
    for secret in (CODE, STATE, "wrong-state-value"):
        assert secret not in text


def test_result_repr_hides_code_state_and_values() -> None:
    result = CallbackResult(
        code=CODE, state=STATE, raw_params={"code": CODE, "state": STATE, "iss": "https://i"}
    )
    text = repr(result)
    assert CODE not in text and STATE not in text and "https://i" not in text
    assert "code=<present>" in text and "iss" in text


# --------------------------------------------------------------------------- lifecycle


def test_timeout_raises_with_a_reason() -> None:
    with CallbackServer(port=0) as srv:
        started = time.monotonic()
        with pytest.raises(CallbackServerError) as info:
            srv.wait_for_callback(timeout=0.3)
        assert 0.25 <= time.monotonic() - started < 3
    assert info.value.reason == "timeout"
    assert info.value.port == srv.port


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_invalid_timeout_is_refused(timeout: float) -> None:
    with CallbackServer(port=0) as srv, pytest.raises(CallbackServerError):
        srv.wait_for_callback(timeout=timeout)


def test_on_tick_reports_the_time_left() -> None:
    ticks: list[float] = []
    with CallbackServer(port=0) as srv, pytest.raises(CallbackServerError):
        srv.wait_for_callback(timeout=0.7, on_tick=ticks.append)
    assert len(ticks) >= 2
    assert ticks == sorted(ticks, reverse=True)
    assert 0 < ticks[-1] <= ticks[0] <= 0.7


def test_wait_starts_the_server_and_stop_is_idempotent() -> None:
    srv = CallbackServer(port=0, expected_state=STATE)
    thread = threading.Thread(target=lambda: srv.wait_for_callback(5), daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not srv.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert raw_get(srv.port, f"/callback?code=c&state={STATE}")[0] == 200
    thread.join(5)
    port = srv.port
    srv.stop()
    srv.stop()
    assert srv.result is not None and srv.result.code == "c"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), 1).close()


def test_expected_state_can_be_given_to_wait() -> None:
    with CallbackServer(port=0) as srv:
        threading.Timer(0.2, lambda: callback(srv, "code=bad&state=other")).start()
        threading.Timer(0.4, lambda: callback(srv, f"code=good&state={STATE}")).start()
        assert srv.wait_for_callback(5, expected_state=STATE).code == "good"


def test_expect_state_after_a_mismatching_completion_fails() -> None:
    with CallbackServer(port=0) as srv:
        assert callback(srv, "code=c&state=unchecked")[0] == 200
        with pytest.raises(CallbackServerError) as info:
            srv.wait_for_callback(1, expected_state=STATE)
    assert info.value.reason == "state mismatch"


def test_without_expected_state_any_state_is_returned_for_the_caller_to_check() -> None:
    with CallbackServer(port=0) as srv:
        assert callback(srv, "code=c&state=whatever")[0] == 200
        assert srv.wait_for_callback(1).state == "whatever"


def test_two_servers_in_one_process_are_independent() -> None:
    with (
        CallbackServer(port=0, expected_state="s-a") as a,
        CallbackServer(port=0, expected_state="s-b") as b,
    ):
        assert a.port != b.port
        assert callback(a, "code=for-b&state=s-b")[0] == 400
        assert callback(b, "code=for-b&state=s-b")[0] == 200
        assert a.result is None
        assert callback(a, "code=for-a&state=s-a")[0] == 200
        assert a.wait_for_callback(1).code == "for-a"
        assert b.wait_for_callback(1).code == "for-b"


def test_busy_port_raises_port_in_use() -> None:
    with CallbackServer(port=0) as first:
        with pytest.raises(CallbackServerError) as info:
            CallbackServer(port=first.port).start()
    assert info.value.reason == "port in use"
    assert info.value.port == first.port


def _free_port_pair() -> tuple[int, socket.socket]:
    """A port held busy by a listening socket, with the next port free."""
    for _ in range(50):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port + 1))
        except OSError:
            holder.close()
            continue
        finally:
            probe.close()
        holder.listen()
        return port, holder
    raise RuntimeError("no adjacent free ports")


def test_port_range_takes_the_first_free_port() -> None:
    busy, holder = _free_port_pair()
    with holder, CallbackServer(port=busy, port_range=(busy, busy + 1)) as srv:
        assert srv.port == busy + 1
        assert srv.redirect_uri.endswith(f":{busy + 1}/callback")


def test_port_zero_with_a_range_uses_the_range() -> None:
    busy, holder = _free_port_pair()
    with holder, CallbackServer(port=0, port_range=(busy, busy + 1)) as srv:
        assert srv.port == busy + 1


@pytest.mark.parametrize("port_range", [(10, 5), (0, 10), (1, 70000)])
def test_invalid_port_range_is_refused(port_range: tuple[int, int]) -> None:
    with pytest.raises(CallbackServerError):
        CallbackServer(port=0, port_range=port_range)


@pytest.mark.parametrize("path", ["callback", "/cb?x=1", "/cb#f"])
def test_invalid_path_is_refused(path: str) -> None:
    with pytest.raises(CallbackServerError):
        CallbackServer(port=0, path=path)


def test_warning_names_the_rejection_without_values(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="kstlib")
    with CallbackServer(port=0, expected_state=STATE) as srv:
        callback(srv, "code=x&state=nope-nope")
    assert any("wrong or missing state" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- parsing helpers


def test_parse_callback_params_decodes_form_encoding() -> None:
    assert parse_callback_params("code=a%2Bb+c&state=s&empty=") == {
        "code": "a+b c",
        "state": "s",
        "empty": "",
    }


@pytest.mark.parametrize("query", ["code=%FF", "a=1&a=2", "code=é", "&".join(["x=1"] * 100)])
def test_parse_callback_params_refuses_bad_queries(query: str) -> None:
    with pytest.raises(CallbackServerError) as info:
        parse_callback_params(query)
    assert info.value.reason == "malformed query"


def test_pasted_full_url() -> None:
    result = parse_pasted_redirect(
        "  http://127.0.0.1:8400/callback?code=ab%2Fc%3D&state=st&iss=https%3A%2F%2Fi\n"
    )
    assert (result.code, result.state, result.raw_params["iss"]) == ("ab/c=", "st", "https://i")


def test_pasted_query_only() -> None:
    assert parse_pasted_redirect("?code=x&state=y").state == "y"
    assert parse_pasted_redirect("code=x&state=y").code == "x"
    assert parse_pasted_redirect("error=access_denied").error == "access_denied"


def test_pasted_bare_code_is_percent_decoded_and_keeps_plus() -> None:
    result = parse_pasted_redirect("abc%2Fdef%3D%3D+xyz")
    assert result.code == "abc/def==+xyz"
    assert result.state is None


@pytest.mark.parametrize("text", ["abc%FF", "cödé"])
def test_pasted_bare_code_must_decode(text: str) -> None:
    with pytest.raises(CallbackServerError):
        parse_pasted_redirect(text)
