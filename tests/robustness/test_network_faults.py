"""Network faults between the provider and its IdP: down, slow, cut mid-response, 503.

Real sockets only: the hostile provider of tests/security/hostile_idp.py, a
raw socket server that breaks HTTP on purpose, and ports nobody listens on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from kstlib.auth import AuthSession
from kstlib.auth.errors import (
    DiscoveryError,
    TokenExchangeError,
    TokenRefreshError,
)
from kstlib.auth.models import Token
from kstlib.auth.providers import base
from kstlib.auth.providers.oidc import OIDCProvider
from tests.security.hostile_idp import (
    PROVIDER_NAME,
    HostileIdP,
    Scenario,
    login,
    make_provider,
    running_hostile_idp,
)


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileIdP]:
    with running_hostile_idp() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(hostile: HostileIdP) -> None:
    hostile.reset()


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def dead_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class RawServer:
    """Answers every connection with fixed raw bytes, then closes it (optionally with a RST).

    ``connections`` counts accepted connections (one per attempt of the client).
    """

    def __init__(self, reply: bytes, *, reset: bool = False) -> None:
        self.reply = reply
        self.reset = reset
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(2)
                self._read_request(conn)
                conn.sendall(self.reply)
                if self.reset:  # close with a TCP RST instead of a FIN
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    @staticmethod
    def _read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                missing = int(line.split(b":", 1)[1]) - len(body)
                while missing > 0:
                    chunk = conn.recv(missing)
                    if not chunk:
                        return
                    missing -= len(chunk)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)


@pytest.fixture
def raw_server() -> Iterator[type[RawServer]]:
    servers: list[RawServer] = []

    class Tracked(RawServer):
        def __init__(self, reply: bytes, *, reset: bool = False) -> None:
            super().__init__(reply, reset=reset)
            servers.append(self)

    yield Tracked
    for server in servers:
        server.close()


def stored(provider: OIDCProvider) -> Token | None:
    return provider.token_storage.load(PROVIDER_NAME)


# --------------------------------------------------------------------------- IdP down


def test_idp_down_discovery_error_names_the_host(hostile: HostileIdP) -> None:
    url = dead_url()
    provider = make_provider(hostile, issuer=url)
    started = time.monotonic()
    with pytest.raises(DiscoveryError) as err:
        provider.get_authorization_url()
    message = one_line(err.value)
    assert f"cannot fetch the discovery document at {url}" in message
    assert "cannot connect to 127.0.0.1" in message
    assert time.monotonic() - started < 3  # 3 attempts with 0.2 s + 0.4 s backoff
    assert stored(provider) is None


def test_idp_down_refresh_error_is_retryable_and_token_kept() -> None:
    with running_hostile_idp() as server:
        provider = make_provider(server)
        before = login(provider, server)
    # the server is gone; discovery is cached, the token endpoint refuses connections
    with pytest.raises(TokenRefreshError) as err:
        provider.refresh()
    message = one_line(err.value)
    assert err.value.retryable is True
    assert f"Token refresh for '{PROVIDER_NAME}' failed: cannot connect to 127.0.0.1" in message
    assert stored(provider) == before


# --------------------------------------------------------------------------- slow IdP


def test_slow_discovery_times_out_within_the_configured_timeout(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.DISCOVERY_SLOW
    provider = make_provider(hostile, timeout=0.5, max_retries=0)
    started = time.monotonic()
    with pytest.raises(DiscoveryError) as err:
        provider.get_authorization_url()
    elapsed = time.monotonic() - started
    assert "timed out talking to 127.0.0.1" in one_line(err.value)
    assert 0.4 <= elapsed <= 2.0, elapsed  # the server would answer after 3 s
    assert hostile.count("discovery") == 1


def test_slow_discovery_with_retries_is_bounded(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.DISCOVERY_SLOW
    provider = make_provider(hostile, timeout=0.5, max_retries=2)
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match="timed out"):
        provider.get_authorization_url()
    elapsed = time.monotonic() - started
    assert hostile.count("discovery") == 3
    assert elapsed <= 3 * 0.5 + 0.2 + 0.4 + 1.0, elapsed  # attempts + backoff + slack


def test_slow_token_endpoint_times_out_and_is_not_retried(hostile: HostileIdP) -> None:
    provider = make_provider(hostile, timeout=0.5)
    provider.discover()
    hostile.scenario = Scenario.TOKEN_SLOW
    started = time.monotonic()
    with pytest.raises(TokenExchangeError) as err:
        login(provider, hostile)
    elapsed = time.monotonic() - started
    assert "timed out talking to 127.0.0.1" in one_line(err.value)
    assert err.value.retryable is True
    assert 0.4 <= elapsed <= 2.0, elapsed  # the server would answer after 3 s
    assert hostile.count("token") == 1  # a code is single-use: a POST is never replayed
    assert stored(provider) is None


# --------------------------------------------------------------------------- cut connections

CUT_REPLIES = {
    "half_headers": (b"HTTP/1.1 200 OK\r\nContent-Type: appli", False),
    "half_body": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
        b'{"access_token": "at-cut", "token_type": "Bearer", "exp',
        False,
    ),
    "reset_after_headers": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n",
        True,
    ),
}


@pytest.mark.parametrize("cut", sorted(CUT_REPLIES))
def test_token_response_cut_mid_way_is_a_clear_exchange_error(
    hostile: HostileIdP, raw_server: type[RawServer], cut: str
) -> None:
    reply, reset = CUT_REPLIES[cut]
    broken = raw_server(reply, reset=reset)
    hostile.overrides = {"token_endpoint": broken.base_url + "/token"}
    provider = make_provider(hostile)
    with pytest.raises(TokenExchangeError) as err:
        login(provider, hostile)
    message = one_line(err.value)
    assert re.search(r"closed the connection mid-response|network error talking to", message)
    assert err.value.retryable is True
    assert broken.connections == 1
    assert stored(provider) is None


@pytest.mark.parametrize("cut", sorted(CUT_REPLIES))
def test_discovery_cut_mid_way_is_a_clear_discovery_error(
    hostile: HostileIdP, raw_server: type[RawServer], cut: str
) -> None:
    reply, reset = CUT_REPLIES[cut]
    broken = raw_server(reply, reset=reset)
    provider = make_provider(hostile, issuer=broken.base_url, max_retries=2)
    with pytest.raises(DiscoveryError) as err:
        provider.get_authorization_url()
    message = one_line(err.value)
    assert re.search(r"closed the connection mid-response|network error talking to", message)
    assert 1 <= broken.connections <= 3  # bounded: at most max_retries + 1 attempts


# --------------------------------------------------------------------------- 503 + Retry-After


def test_discovery_503_is_retried_a_bounded_number_of_times(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.DISCOVERY_503
    provider = make_provider(hostile, max_retries=2)
    with pytest.raises(DiscoveryError) as err:
        provider.get_authorization_url()
    assert "HTTP 503" in one_line(err.value)
    assert err.value.status_code == 503
    assert hostile.count("discovery") == 3


def test_discovery_retry_count_follows_max_retries(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.DISCOVERY_503
    provider = make_provider(hostile, max_retries=4)
    with pytest.raises(DiscoveryError):
        provider.get_authorization_url()
    assert hostile.count("discovery") == 5


def test_discovery_503_then_ok_succeeds_after_honouring_retry_after(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.DISCOVERY_503
    hostile.fail_times = 1
    hostile.retry_after = "1"
    provider = make_provider(hostile)
    started = time.monotonic()
    url, _ = provider.get_authorization_url()
    elapsed = time.monotonic() - started
    assert url.startswith(hostile.issuer + "/authorize?")
    assert hostile.count("discovery") == 2
    assert 0.9 <= elapsed < 30, elapsed  # honoured (>= 1 s), and not some other, long wait


def test_an_hour_long_retry_after_fails_at_once(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.DISCOVERY_503
    hostile.retry_after = "3600"
    provider = make_provider(hostile)
    started = time.monotonic()
    with pytest.raises(DiscoveryError, match="HTTP 503"):
        provider.get_authorization_url()
    assert time.monotonic() - started < 1
    assert hostile.count("discovery") == 1


def test_jwks_503_is_retried_a_bounded_number_of_times(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.JWKS_503
    provider = make_provider(hostile)
    with pytest.raises(DiscoveryError) as err:
        login(provider, hostile)
    assert "cannot fetch the JWKS" in one_line(err.value)
    assert "HTTP 503" in str(err.value)
    assert hostile.count("jwks") == 3
    assert stored(provider) is None


def test_jwks_503_then_ok_logs_in(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.JWKS_503
    hostile.fail_times = 2
    provider = make_provider(hostile)
    token = login(provider, hostile)
    assert hostile.count("jwks") == 3
    assert stored(provider) == token


# --------------------------------------------------------------------------- outage under load


def _with_expiry(token: Token, seconds: float) -> Token:
    """``token`` expiring in ``seconds``, issued an hour before (the skew is not clamped)."""
    expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
    return replace(token, expires_at=expires_at, issued_at=expires_at - timedelta(hours=1))


async def _burst(session: AuthSession, url: str, n: int) -> list[int | BaseException]:
    results = await asyncio.gather(
        *(session.aget(f"{url}/{i}") for i in range(n)), return_exceptions=True
    )
    return [r if isinstance(r, BaseException) else r.status_code for r in results]


def test_outage_with_an_expired_token_gives_callers_a_clear_error(hostile: HostileIdP) -> None:
    provider = make_provider(hostile)
    expired = _with_expiry(login(provider, hostile), -30)
    provider.save_token(expired)
    hostile.scenario = Scenario.TOKEN_DOWN

    refreshes_before = hostile.count("token:refresh_token")
    seen: dict[str, int] = {}

    async def main() -> tuple[list[int | BaseException], list[int | BaseException]]:
        async with AuthSession(provider) as session:
            during = await _burst(session, hostile.url("/api/outage"), 20)
            seen["api"] = hostile.count("api")
            seen["refresh"] = hostile.count("token:refresh_token") - refreshes_before
            assert stored(provider) == expired  # the stored token survived the outage
            hostile.scenario = Scenario.NORMAL
            after = await _burst(session, hostile.url("/api/back"), 1)
            return during, after

    during, after = asyncio.run(main())
    errors = [r for r in during if isinstance(r, BaseException)]
    assert len(errors) == 20, during
    for error in errors:
        assert isinstance(error, TokenRefreshError), repr(error)
        assert error.retryable is True
        assert f"Token refresh for '{PROVIDER_NAME}' failed" in one_line(error)
    assert seen["api"] == 0  # an expired token is never sent
    assert 1 <= seen["refresh"] <= 20
    assert after == [200]
    assert hostile.count("token:refresh_token") - refreshes_before == seen["refresh"] + 1
    now_stored = stored(provider)
    assert now_stored is not None and now_stored.access_token != expired.access_token


def test_outage_with_a_nearly_expired_token_keeps_serving(
    hostile: HostileIdP, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base, "REFRESH_RETRY_PAUSE", 0.5)  # the provider's pause, shortened
    provider = make_provider(hostile)
    nearly = _with_expiry(login(provider, hostile), 30)  # valid, but inside the 60 s skew
    provider.save_token(nearly)
    hostile.scenario = Scenario.TOKEN_DOWN
    caplog.set_level(logging.WARNING, logger="kstlib")

    async def main() -> list[int | BaseException]:
        async with AuthSession(provider) as session:
            return await _burst(session, hostile.url("/api/outage"), 20)

    assert asyncio.run(main()) == [200] * 20
    assert any(
        "refresh" in r.getMessage().lower() and "failed" in r.getMessage().lower()
        for r in caplog.records
        if r.levelno == logging.WARNING
    ), caplog.text
    assert stored(provider) == nearly
    hostile.scenario = Scenario.NORMAL
    time.sleep(0.6)  # past the provider's pause after the failed attempt
    refreshes_before = hostile.count("token:refresh_token")

    async def back() -> list[int | BaseException]:
        async with AuthSession(provider) as session:
            return await _burst(session, hostile.url("/api/back"), 5)

    assert asyncio.run(back()) == [200] * 5
    assert hostile.count("token:refresh_token") - refreshes_before == 1
    now_stored = stored(provider)
    assert now_stored is not None and now_stored.access_token != nearly.access_token


def test_sequential_requests_during_an_outage_pause_between_refresh_attempts(
    hostile: HostileIdP,
) -> None:
    """A valid token inside the skew keeps serving; an outage costs one attempt per pause."""
    provider = make_provider(hostile)
    provider.save_token(_with_expiry(login(provider, hostile), 30))
    hostile.scenario = Scenario.TOKEN_DOWN
    before = hostile.count("token:refresh_token")
    with AuthSession(provider) as session:
        codes = [session.get(hostile.url(f"/api/seq/{i}")).status_code for i in range(20)]
    assert codes == [200] * 20
    assert hostile.count("token:refresh_token") - before == 1  # not one per request


@pytest.mark.parametrize("outage", ["down_503", "hanging"])
def test_outage_burst_sends_at_most_one_refresh_attempt(hostile: HostileIdP, outage: str) -> None:
    """8 concurrent requests with a still-valid but stale token while the IdP is out."""
    provider = make_provider(hostile, timeout=0.3)
    nearly = _with_expiry(login(provider, hostile), 30)
    provider.save_token(nearly)
    hostile.scenario = Scenario.TOKEN_DOWN if outage == "down_503" else Scenario.TOKEN_SLOW
    refreshes_before = hostile.count("token:refresh_token")

    async def main() -> list[int | BaseException]:
        async with AuthSession(provider) as session:
            return await _burst(session, hostile.url("/api/storm"), 8)

    results = asyncio.run(main())
    assert results == [200] * 8
    # Not 8 serialized attempts (8 x the timeout): the count proves it, with no wall clock.
    assert hostile.count("token:refresh_token") - refreshes_before <= 2


def test_jwks_fetch_during_login_follows_max_retries(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.JWKS_503
    provider = make_provider(hostile, max_retries=0)
    with pytest.raises(DiscoveryError, match="HTTP 503"):
        login(provider, hostile)
    assert hostile.count("discovery") == 1  # discovery honours max_retries=0 ...
    assert hostile.count("jwks") == 1  # ... and so should the JWKS fetch
