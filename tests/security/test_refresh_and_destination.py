"""Where a token may go, and a refresh that must not lose the session.

* A JWKS outage right after a refresh used to lose the session: the refresh token
  was spent, the new ID token could not be verified, the new tokens were thrown
  away and a DiscoveryError escaped. The keys are now loaded before the refresh
  token is spent, and the refresh path fails with TokenRefreshError only.
* A bearer token is never sent over plain http to a non-loopback host (RFC 6750
  5.3) unless the caller opts in, nor outside the session's ``allowed_origins``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from kstlib.auth import AuthSession, ProviderAuth
from kstlib.auth._discovery import MetadataCache
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import ConfigurationError, InsecureDestinationError, TokenRefreshError
from kstlib.auth.models import Token
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.token import MemoryTokenStorage
from tests.security.hostile_idp import (
    PROVIDER_NAME,
    FakeClock,
    HostileIdP,
    Scenario,
    login,
    make_provider,
    running_hostile_idp,
)

# --------------------------------------------------------------------------- JWKS outage


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileIdP]:
    with running_hostile_idp() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(hostile: HostileIdP, clock: FakeClock) -> Iterator[OIDCProvider]:
    """Logged in; its metadata cache (discovery, JWKS) then expired by the fake clock."""
    hostile.reset()
    p = make_provider(hostile, cache=MetadataCache(clock=clock))
    login(p, hostile)
    clock.advance(2 * 86400)  # past any TTL: the next use re-fetches discovery and the JWKS
    yield p
    p.close()


def _expiring(token: Token, seconds: float) -> Token:
    expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
    return replace(token, expires_at=expires_at, issued_at=expires_at - timedelta(hours=1))


def test_jwks_outage_before_a_refresh_keeps_the_refresh_token(
    provider: OIDCProvider, hostile: HostileIdP
) -> None:
    before = provider.token_storage.load(PROVIDER_NAME)
    hostile.scenario = Scenario.JWKS_503
    with pytest.raises(TokenRefreshError) as err:
        provider.refresh()
    assert err.value.retryable is True
    assert "cannot fetch the JWKS" in str(err.value) and "HTTP 503" in str(err.value)
    assert hostile.count("token:refresh_token") == 0  # the refresh token was not spent
    assert provider.token_storage.load(PROVIDER_NAME) == before
    hostile.scenario = Scenario.NORMAL
    provider.refresh()  # keys back: the kept refresh token works
    assert hostile.count("token:refresh_token") == 1


def test_jwks_outage_with_an_expired_token_is_a_retryable_refresh_error_in_a_session(
    provider: OIDCProvider, hostile: HostileIdP
) -> None:
    stored = provider.token_storage.load(PROVIDER_NAME)
    assert stored is not None
    provider.save_token(_expiring(stored, -5))
    hostile.scenario = Scenario.JWKS_503

    async def main() -> list[BaseException | int]:
        async with AuthSession(provider) as session:
            results = await asyncio.gather(
                *(session.aget(hostile.url(f"/api/{i}")) for i in range(5)), return_exceptions=True
            )
        return [r if isinstance(r, BaseException) else r.status_code for r in results]

    results = asyncio.run(main())
    assert all(isinstance(r, TokenRefreshError) and r.retryable for r in results), results
    assert hostile.count("token:refresh_token") == 0
    assert hostile.count("api") == 0  # the expired token was never sent
    hostile.scenario = Scenario.NORMAL
    with AuthSession(provider) as session:
        assert session.get(hostile.url("/api/back")).status_code == 200
    assert hostile.count("token:refresh_token") == 1


def test_jwks_outage_with_a_still_valid_token_keeps_serving(
    provider: OIDCProvider, hostile: HostileIdP
) -> None:
    stored = provider.token_storage.load(PROVIDER_NAME)
    assert stored is not None
    nearly = _expiring(stored, 30)  # inside the 60 s skew, still valid
    provider.save_token(nearly)
    hostile.scenario = Scenario.JWKS_503
    with AuthSession(provider) as session:
        codes = [session.get(hostile.url(f"/api/{i}")).status_code for i in range(10)]
    assert codes == [200] * 10
    assert hostile.count("token:refresh_token") == 0
    assert provider.token_storage.load(PROVIDER_NAME) == nearly


def test_keys_rotated_and_unreachable_after_the_grant_is_an_honest_refresh_error(
    hostile: HostileIdP, clock: FakeClock
) -> None:
    """The residual case: the keys were loaded, but the refreshed ID token is signed with a
    new key and the JWKS is down when it is fetched. The rotated refresh token is spent:
    TokenRefreshError(retryable=False) says to log in; nothing unverified is stored."""
    hostile.reset()
    provider = make_provider(hostile, cache=MetadataCache(clock=clock))
    before = login(provider, hostile)
    clock.advance(31)  # past the unknown-kid re-fetch cooldown, not past the JWKS TTL
    hostile.scenario = Scenario.ID_ROTATED_KID
    hostile.jwks_down = True
    with pytest.raises(TokenRefreshError) as err:
        provider.refresh()
    assert err.value.retryable is False
    message = str(err.value)
    assert "could not be validated" in message and "HTTP 503" in message
    assert "run 'kstlib auth login hostile'" in message and "\n" not in message
    assert hostile.count("token:refresh_token") == 1
    assert provider.token_storage.load(PROVIDER_NAME) == before
    provider.close()


# --------------------------------------------------------------------------- destinations

SECRET_QUERY = "leak-me-not-123"


@pytest.fixture
def offline() -> OAuth2Provider:
    """A provider with a fresh stored token (no network needed)."""
    config = AuthProviderConfig(
        client_id="dest-client",
        authorize_url="https://idp.example.test/authorize",
        token_url="https://idp.example.test/token",
    )
    storage = MemoryTokenStorage()
    storage.save(
        "dest",
        Token(access_token="dest-access-token", expires_at=datetime.now(UTC) + timedelta(hours=1)),
    )
    return OAuth2Provider("dest", config, storage)


class Recorder:
    """An httpx transport that records what would have been sent (nothing leaves)."""

    def __init__(self, responses: dict[str, httpx.Response] | None = None) -> None:
        self.sent: list[tuple[str, str | None]] = []
        self.responses = responses or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((str(request.url), request.headers.get("Authorization")))
        return self.responses.get(str(request.url), httpx.Response(200))


def client(auth: ProviderAuth, recorder: Recorder) -> httpx.Client:
    return httpx.Client(auth=auth, transport=httpx.MockTransport(recorder), follow_redirects=True)


def test_plain_http_to_a_remote_host_is_refused_before_anything_is_sent(
    offline: OAuth2Provider,
) -> None:
    recorder = Recorder()
    with (
        client(ProviderAuth(offline), recorder) as http,
        pytest.raises(InsecureDestinationError) as err,
    ):
        http.get(f"http://api.example.test/me?access_token={SECRET_QUERY}")
    assert recorder.sent == []
    assert err.value.reason == "plain http" and err.value.origin == "http://api.example.test"
    message = str(err.value)
    assert "RFC 6750" in message and "allow_insecure_http=True" in message
    assert SECRET_QUERY not in message and "\n" not in message


def test_auth_session_refuses_plain_http_without_connecting(offline: OAuth2Provider) -> None:
    """192.0.2.1 (TEST-NET-1) is never reachable: a refusal is the only way to fail fast."""
    with AuthSession(offline, timeout=1) as session, pytest.raises(InsecureDestinationError):
        session.get("http://192.0.2.1/me")

    async def main() -> None:
        async with AuthSession(offline, timeout=1) as session:
            await session.aget("http://192.0.2.1/me")

    with pytest.raises(InsecureDestinationError):
        asyncio.run(main())


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::1]:9/x", "https://a.test/"]
)
def test_https_and_loopback_http_are_allowed(offline: OAuth2Provider, url: str) -> None:
    recorder = Recorder()
    with client(ProviderAuth(offline), recorder) as http:
        assert http.get(url).status_code == 200
    assert recorder.sent == [(url, "Bearer dest-access-token")]


def test_allow_insecure_http_is_an_explicit_opt_in(offline: OAuth2Provider) -> None:
    recorder = Recorder()
    with client(ProviderAuth(offline, allow_insecure_http=True), recorder) as http:
        assert http.get("http://api.example.test/me").status_code == 200
    assert recorder.sent == [("http://api.example.test/me", "Bearer dest-access-token")]
    session = AuthSession(offline, allow_insecure_http=True)
    assert session.auth.allow_insecure_http is True


def test_allowed_origins_limit_where_the_token_goes(offline: OAuth2Provider) -> None:
    recorder = Recorder()
    auth = ProviderAuth(
        offline, allowed_origins=["https://api.example.test:443/", "https://b.test"]
    )
    with client(auth, recorder) as http:
        assert http.get("https://API.example.test/me").status_code == 200
        assert http.get("https://b.test:443/x").status_code == 200
        for url in ("https://other.test/me", "https://b.test:8443/x", "http://b.test/x"):
            with pytest.raises(InsecureDestinationError) as err:
                http.get(url)
            assert err.value.reason in ("origin not allowed", "plain http")
    assert [url for url, _ in recorder.sent] == [
        "https://api.example.test/me",
        "https://b.test/x",
    ]
    assert AuthSession(offline, allowed_origins=["https://b.test"]).auth.allowed_origins == {
        "https://b.test"
    }


def test_a_redirect_to_another_origin_does_not_carry_the_token(offline: OAuth2Provider) -> None:
    """httpx follows redirects inside one auth flow and drops Authorization across origins."""
    moved = httpx.Response(302, headers={"Location": "https://evil.test/steal"})
    recorder = Recorder({"https://api.example.test/me": moved})
    auth = ProviderAuth(offline, allowed_origins=["https://api.example.test"])
    with client(auth, recorder) as http:
        http.get("https://api.example.test/me")
    assert recorder.sent == [
        ("https://api.example.test/me", "Bearer dest-access-token"),
        ("https://evil.test/steal", None),
    ]


@pytest.mark.parametrize(
    "origin", ["ftp://a.test", "https://a.test/path", "https://user@a.test", "a.test", "https://"]
)
def test_a_malformed_allowed_origin_is_a_configuration_error(
    offline: OAuth2Provider, origin: str
) -> None:
    with pytest.raises(ConfigurationError, match="allowed_origins"):
        ProviderAuth(offline, allowed_origins=[origin])
