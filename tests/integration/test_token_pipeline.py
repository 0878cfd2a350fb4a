"""The one token pipeline: ``provider.acquire()`` decides, everyone asks it.

Measured against the real IdP (which counts refresh grants) and a real storage
that counts its loads and locks; the 401 cases use a real resource server on
127.0.0.1 that refuses every token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from kstlib.auth import AuthSession, ProviderAuth
from kstlib.auth.errors import TokenExpiredError, TokenRefreshError
from kstlib.auth.models import Token
from kstlib.auth.providers.base import REFRESH_REJECTED_KEY, AcquiredToken
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage
from kstlib.auth.token.lock import StorageLock
from tests import loopback_http
from tests.flows import login, make_oidc
from tests.idp_support import CONFIDENTIAL, IdP
from tests.jwks_server import JWKSServer


class CountingStorage(MemoryTokenStorage):
    """A real memory storage that counts loads and lock acquisitions."""

    def __init__(self) -> None:
        super().__init__()
        self.loads = 0
        self.locks = 0

    def load(self, provider_name: str) -> Token | None:
        self.loads += 1
        return super().load(provider_name)

    async def aload(self, provider_name: str) -> Token | None:
        self.loads += 1
        return super().load(provider_name)

    def create_lock(self, provider_name: str) -> StorageLock:
        self.locks += 1
        return super().create_lock(provider_name)


def refreshes(idp: IdP) -> int:
    return idp.stats().get("token:refresh_token", 0)


def expiring_in(token: Token, seconds: float, *, lifetime: float = 3600) -> Token:
    """``token`` expiring in ``seconds``, issued ``lifetime`` seconds before it expires."""
    expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
    return replace(token, expires_at=expires_at, issued_at=expires_at - timedelta(seconds=lifetime))


@pytest.fixture
def counting(idp: IdP) -> tuple[OIDCProvider, CountingStorage]:
    storage = CountingStorage()
    provider = make_oidc(idp, CONFIDENTIAL, storage=storage)
    login(provider)
    return provider, storage


# --------------------------------------------------------------------------- one skew


def test_provider_auth_skew_feeds_the_provider_one_refresh_then_none(
    idp: IdP, counting: tuple[OIDCProvider, CountingStorage]
) -> None:
    """Measured defect: ProviderAuth(refresh_skew=300), token 200 s from expiry, 100 requests
    cost 100 storage locks and 200 loads and never refreshed. Now: one refresh, then none."""
    provider, storage = counting
    token = storage.load("test")
    assert token is not None
    provider.save_token(expiring_in(token, 200))
    storage.loads = storage.locks = 0
    idp.reset_stats()
    with loopback_http.client(auth=ProviderAuth(provider, refresh_skew=300)) as client:
        codes = [client.get(idp.api_url(f"skew/{i}")).status_code for i in range(100)]
    assert codes == [200] * 100
    assert refreshes(idp) == 1
    assert storage.locks == 1
    assert storage.loads <= 3, storage.loads  # before the lock, under it, and nothing after


def test_provider_auth_skew_async_one_refresh_then_none(
    idp: IdP, counting: tuple[OIDCProvider, CountingStorage]
) -> None:
    provider, storage = counting
    token = storage.load("test")
    assert token is not None
    provider.save_token(expiring_in(token, 200))
    storage.loads = storage.locks = 0
    idp.reset_stats()

    async def main() -> list[int]:
        async with loopback_http.async_client(
            auth=ProviderAuth(provider, refresh_skew=300)
        ) as client:
            return [(await client.get(idp.api_url(f"a/{i}"))).status_code for i in range(50)]

    assert asyncio.run(main()) == [200] * 50
    assert refreshes(idp) == 1
    assert storage.locks == 1 and storage.loads <= 3, (storage.locks, storage.loads)


def test_acquire_answers_the_token_and_when_it_turns_stale(
    counting: tuple[OIDCProvider, CountingStorage],
) -> None:
    provider, storage = counting
    stored = storage.load("test")
    assert stored is not None
    # Taken before acquire(): due only shrinks as time passes, so after + due bounds stale_at
    # (computing it after acquire() made the upper bound wrong by the elapsed microseconds).
    due = stored.refresh_due_in(provider.config.refresh_skew)  # 60 s before expiry
    before = time.monotonic()
    acquired = provider.acquire()
    after = time.monotonic()
    assert isinstance(acquired, AcquiredToken)
    assert acquired.token.access_token == stored.access_token
    assert before + due - 5 <= acquired.stale_at <= after + due
    assert stored.access_token not in repr(acquired)


# --------------------------------------------------------------------------- short-lived tokens


@pytest.fixture
def short_lived(idp: IdP) -> Iterator[None]:
    """The IdP issues 30 s access tokens (restored afterwards: the fixture is shared)."""
    before = idp.settings()["access_token_ttl"]
    idp.configure(access_token_ttl=30)
    try:
        yield
    finally:
        idp.configure(access_token_ttl=before)


def test_a_30s_access_token_is_not_refreshed_at_every_request(idp: IdP, short_lived: None) -> None:
    """Measured defect: a 30 s token (skew 60 s) made every request a refresh grant."""
    provider = make_oidc(idp, CONFIDENTIAL)
    token = login(provider)
    assert token.expires_in is not None and token.expires_in <= 30
    idp.reset_stats()
    with AuthSession(provider) as session:
        codes = [session.get(idp.api_url(f"short/{i}")).status_code for i in range(20)]
    assert codes == [200] * 20
    assert refreshes(idp) == 0
    assert provider.acquire().token.access_token == token.access_token


def test_a_30s_access_token_is_refreshed_once_half_way(idp: IdP, short_lived: None) -> None:
    """Clamped, not disabled: 15 s (half the lifetime) before expiry it is renewed, once."""
    provider = make_oidc(idp, CONFIDENTIAL)
    token = login(provider)
    provider.save_token(expiring_in(token, 10, lifetime=30))  # 20 s old, 10 s left
    idp.reset_stats()
    with AuthSession(provider) as session:
        codes = [session.get(idp.api_url(f"half/{i}")).status_code for i in range(10)]
    assert codes == [200] * 10
    assert refreshes(idp) == 1


# --------------------------------------------------------------------------- 401


@pytest.fixture
def refusing_api(server: JWKSServer) -> str:
    """A real resource server on 127.0.0.1 that answers 401 to every request."""
    server.set_json("/api", {"error": "invalid_token"}, status=401)
    return server.url("/api")


def test_50_calls_answered_401_send_at_most_one_refresh(
    idp: IdP, provider_a_minute_old: OIDCProvider, refusing_api: str, server: JWKSServer
) -> None:
    """Measured defect: 50 API calls answered 401 sent 50 refresh grants."""
    idp.reset_stats()
    with AuthSession(provider_a_minute_old) as session:
        codes = [session.get(refusing_api).status_code for _ in range(50)]
    assert codes == [401] * 50
    assert 1 <= refreshes(idp) <= 2
    assert server.count("/api") <= 52  # each call sent, plus at most one replay per refresh


def test_50_concurrent_calls_answered_401_send_at_most_one_refresh(
    idp: IdP, provider_a_minute_old: OIDCProvider, refusing_api: str
) -> None:
    idp.reset_stats()

    async def main() -> list[int]:
        async with AuthSession(provider_a_minute_old) as session:
            responses = await asyncio.gather(*(session.aget(refusing_api) for _ in range(50)))
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [401] * 50
    assert 1 <= refreshes(idp) <= 2


def test_a_401_on_a_token_obtained_seconds_ago_refreshes_nothing(
    idp: IdP, refusing_api: str, server: JWKSServer
) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    login(provider)  # just now
    idp.reset_stats()
    with AuthSession(provider) as session:
        assert session.get(refusing_api).status_code == 401
    assert refreshes(idp) == 0
    assert server.count("/api") == 1  # not replayed with the same token


@pytest.fixture
def provider_a_minute_old(idp: IdP) -> OIDCProvider:
    """Logged in, with a token obtained a minute ago (older than the 401 grace)."""
    provider = make_oidc(idp, CONFIDENTIAL)
    token = login(provider)
    provider.save_token(replace(token, issued_at=token.issued_at - timedelta(minutes=1)))
    return provider


# --------------------------------------------------------------------------- who can renew


def test_whether_a_token_can_be_renewed_is_the_providers_answer(idp: IdP) -> None:
    """An expired token without a refresh token is renewed when the provider says it can."""
    storage = MemoryTokenStorage()
    provider = make_oidc(idp, CONFIDENTIAL, storage=storage)
    renewed: list[Token] = []

    def renew(token: Token) -> Token:
        new = Token(
            access_token=f"reissued-{len(renewed)}",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        renewed.append(new)
        provider.save_token(new)
        return new

    provider.can_renew = lambda token: True  # type: ignore[method-assign]
    provider._renew = renew  # type: ignore[method-assign]
    provider.save_token(
        Token(access_token="old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    )
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200)

    with loopback_http.client(
        auth=ProviderAuth(provider), transport=httpx.MockTransport(handler)
    ) as client:
        assert client.get("https://api.example.test/x").status_code == 200
    assert seen == ["Bearer reissued-0"] and len(renewed) == 1


# --------------------------------------------------------------------------- a dead refresh token


def test_invalid_grant_marks_the_refresh_token_dead_and_keeps_the_access_token(
    idp: IdP, tmp_path: Any
) -> None:
    storage = FileTokenStorage(tmp_path / "tokens")
    provider = make_oidc(idp, CONFIDENTIAL, storage=storage)
    token = login(provider)
    dying = replace(expiring_in(token, 30), refresh_token="a-refresh-token-the-idp-refuses")
    provider.save_token(dying)
    idp.reset_stats()
    with AuthSession(provider) as session:
        codes = [session.get(idp.api_url(f"dead/{i}")).status_code for i in range(20)]
    assert codes == [200] * 20  # the access token is still valid: it keeps serving
    assert refreshes(idp) == 1
    stored = storage.load("test")
    assert stored is not None and stored.access_token == dying.access_token
    assert REFRESH_REJECTED_KEY in stored.metadata  # persisted: other processes see it

    # another process (a new provider on the same storage) sends nothing either
    other = make_oidc(idp, CONFIDENTIAL, storage=FileTokenStorage(tmp_path / "tokens"))
    assert not other.can_renew(stored)
    assert other.acquire().token.access_token == dying.access_token
    with pytest.raises(TokenRefreshError) as forced:
        other.acquire(force=True)
    assert forced.value.retryable is False and "kstlib auth login test" in str(forced.value)

    # once it has expired: a clear error, and still no grant with the dead refresh token
    provider.save_token(replace(stored, expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    for candidate in (provider, other):
        with pytest.raises(TokenRefreshError) as err:
            candidate.acquire()
        assert err.value.retryable is False
        assert "run 'kstlib auth login test'" in str(err.value)
    with AuthSession(other) as session, pytest.raises(TokenRefreshError, match="auth login test"):
        session.get(idp.api_url("dead/expired"))
    assert refreshes(idp) == 1


def test_a_new_login_clears_the_dead_mark(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    token = login(provider)
    provider.save_token(replace(expiring_in(token, -5), refresh_token="refused-refresh-token"))
    with pytest.raises(TokenRefreshError):
        provider.acquire()
    fresh = login(provider)
    assert provider.can_renew(fresh)
    provider.save_token(expiring_in(fresh, 5))
    idp.reset_stats()
    assert provider.acquire().token.access_token != fresh.access_token
    assert refreshes(idp) == 1


def test_not_logged_in_is_a_token_expired_error(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    with pytest.raises(TokenExpiredError, match="kstlib auth login test"):
        provider.acquire()
    assert provider.get_token() is None
