"""AuthSession / ProviderAuth against the real IdP and its protected test API.

The IdP counts requests per grant type, so "exactly one refresh" is measured
where it matters: at the identity provider.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from kstlib.auth import AuthSession, ProviderAuth
from kstlib.auth.errors import TokenExpiredError, TokenRefreshError
from kstlib.auth.models import Token
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage
from tests import forked, loopback_http, shared_storage_worker
from tests.flows import login, make_oidc
from tests.idp_support import CONFIDENTIAL, IdP

ROOT = Path(__file__).resolve().parents[2]


def rejected(token: Token, access_token: str) -> Token:
    """``token`` with an access token the API refuses, obtained a minute ago.

    A token obtained in the last few seconds is not renewed on a 401 (it would be
    refused the same way), so the rejected token must be older than that.
    """
    return replace(
        token, access_token=access_token, issued_at=token.issued_at - timedelta(minutes=1)
    )


def stale(token: Token) -> Token:
    """The same token, but expiring within the refresh skew (still valid at the IdP).

    Issued an hour before it expires: the skew is clamped to half the lifetime, so a
    token merely 5 s long (issued now, expiring in 5 s) would not be stale yet.
    """
    expires_at = datetime.now(UTC) + timedelta(seconds=5)
    return replace(token, expires_at=expires_at, issued_at=expires_at - timedelta(hours=1))


@pytest.fixture
def provider(idp: IdP) -> OIDCProvider:
    p = make_oidc(idp, CONFIDENTIAL, storage=MemoryTokenStorage())
    login(p)
    return p


def refreshes(idp: IdP) -> int:
    return idp.stats().get("token:refresh_token", 0)


def test_sync_methods_inject_the_token(idp: IdP, provider: OIDCProvider) -> None:
    with AuthSession(provider) as session:
        for method in ("get", "post", "put", "patch", "delete", "options"):
            response = getattr(session, method)(idp.api_url(f"m/{method}"))
            assert response.status_code == 200, method
            body = response.json()
            assert body["method"] == method.upper() and body["sub"] == "alice"
        assert session.head(idp.api_url("h")).status_code == 200
        assert session.request("GET", idp.api_url("r")).json()["path"].endswith("/r")
    assert session._client is None  # closed by the context manager


def test_async_methods_inject_the_token(idp: IdP, provider: OIDCProvider) -> None:
    async def main() -> None:
        async with AuthSession(provider) as session:
            for method in ("get", "post", "put", "patch", "delete", "options"):
                response = await getattr(session, "a" + method)(idp.api_url(f"m/{method}"))
                assert response.status_code == 200 and response.json()["method"] == method.upper()
            assert (await session.ahead(idp.api_url("h"))).status_code == 200
            assert (await session.arequest("GET", idp.api_url("r"))).status_code == 200

    asyncio.run(main())


def test_bring_your_own_client(idp: IdP, provider: OIDCProvider) -> None:
    with loopback_http.client(auth=ProviderAuth(provider)) as client:
        assert client.get(idp.api_url("own")).json()["sub"] == "alice"


def test_200_concurrent_async_requests_one_refresh(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(stale(token))
    idp.reset_stats()

    async def main() -> list[int]:
        async with AuthSession(provider) as session:
            responses = await asyncio.gather(
                *(session.aget(idp.api_url(f"c/{i}")) for i in range(200))
            )
            return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 200
    assert refreshes(idp) == 1
    # the stored refresh token is the rotated one, and it works
    assert provider.token_storage.load("test") != token
    provider.refresh()


def test_16_threads_one_refresh(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(stale(token))
    idp.reset_stats()
    session = AuthSession(provider)
    barrier = threading.Barrier(16)
    codes: list[int] = []

    def worker(i: int) -> None:
        barrier.wait()
        codes.append(session.get(idp.api_url(f"t/{i}")).status_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    session.close()
    assert codes == [200] * 16
    assert refreshes(idp) == 1
    provider.refresh()  # the stored, rotated refresh token works


def test_4_processes_sharing_a_file_storage_one_refresh(idp: IdP, tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path / "tokens")
    provider = make_oidc(idp, CONFIDENTIAL, name="shared", storage=storage)
    token = login(provider)
    storage.save("shared", stale(token))
    go = tmp_path / "go"
    idp.reset_stats()
    procs = [
        forked.start(
            shared_storage_worker.refresh,
            idp.issuer,
            str(storage.directory),
            str(go),
            idp.api_url("p"),
            CONFIDENTIAL.client_secret or "",
            cwd=ROOT,
        )
        for _ in range(4)
    ]
    for p in procs:  # processes forked with kstlib imported (tests/forked.py)
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for (out, err), p in zip(outputs, procs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "[200, 200, 200]"
    assert refreshes(idp) == 1
    provider.refresh()  # the rotated refresh token in the shared file works


def test_401_refresh_and_replay_once(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(rejected(token, "revoked-or-unknown-access-token"))
    idp.reset_stats()
    with AuthSession(provider) as session:
        response = session.post(idp.api_url("x"), json={"a": 1})
    assert response.status_code == 200 and response.json()["body"] == {"a": 1}
    stats = idp.stats()
    assert stats["api:401"] == 1 and stats["api:200"] == 1 and refreshes(idp) == 1


def test_401_async_refresh_and_replay(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(rejected(token, "unknown-access-token"))
    idp.reset_stats()

    async def main() -> int:
        async with AuthSession(provider) as session:
            return (await session.aget(idp.api_url("x"))).status_code

    assert asyncio.run(main()) == 200
    assert refreshes(idp) == 1


def test_401_with_a_streamed_body_is_not_replayed(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(rejected(token, "unknown-access-token"))
    idp.reset_stats()

    def body() -> object:
        yield b"chunk"

    with AuthSession(provider) as session:
        response = session.post(idp.api_url("s"), content=body())
    assert response.status_code == 401
    assert refreshes(idp) == 0


def test_retry_on_401_disabled(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(rejected(token, "unknown-access-token"))
    with AuthSession(provider, retry_on_401=False) as session:
        assert session.get(idp.api_url("x")).status_code == 401


def test_auto_refresh_disabled_uses_the_stale_token(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(stale(token))
    idp.reset_stats()
    with AuthSession(provider, auto_refresh=False) as session:
        assert session.get(idp.api_url("x")).status_code == 200
    assert refreshes(idp) == 0


def test_not_logged_in_and_expired_without_refresh_token(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    with (
        AuthSession(provider) as session,
        pytest.raises(TokenExpiredError, match="kstlib auth login test"),
    ):
        session.get(idp.api_url("x"))
    expired = Token(access_token="a", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    provider.save_token(expired)
    with (
        AuthSession(provider) as session,
        pytest.raises(TokenExpiredError, match="kstlib auth login test"),
    ):
        session.get(idp.api_url("x"))


def test_failed_refresh_reaches_caller_and_keeps_stored_token(
    idp: IdP, provider: OIDCProvider
) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    dead = replace(
        token,
        refresh_token="not-a-valid-refresh-token",
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    provider.save_token(dead)
    with AuthSession(provider) as session, pytest.raises(TokenRefreshError) as err:
        session.get(idp.api_url("x"))
    assert err.value.retryable is False and "kstlib auth login test" in str(err.value)
    kept = provider.token_storage.load("test")
    assert kept is not None  # the same tokens, only marked: the refresh token is dead
    assert (kept.access_token, kept.refresh_token) == (dead.access_token, dead.refresh_token)
    assert provider.refresh_token_rejected(kept)


def test_slow_idp_does_not_stall_other_tasks(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(stale(token))
    idp.configure(token_delay_ms=1000)
    try:

        async def main() -> tuple[int, int]:
            ticks = 0
            done = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(ticker())
            started = time.monotonic()
            async with AuthSession(provider) as session:
                status = (await session.aget(idp.api_url("slow"))).status_code
            elapsed = time.monotonic() - started
            done.set()
            await task
            assert elapsed >= 1.0  # the refresh really waited for the slow IdP
            return status, ticks

        status, ticks = asyncio.run(main())
    finally:
        idp.configure(token_delay_ms=0)
    assert status == 200
    assert ticks >= 50  # the loop kept running (100 possible in 1 s)


# A session used under several asyncio.run calls: each loop gets its own async client, closed on
# that loop when it shuts down (before: dropped with its pooled sockets open, "unclosed
# transport" ResourceWarnings, which fail this suite).
def test_async_client_survives_a_new_event_loop(idp: IdP, provider: OIDCProvider) -> None:
    session = AuthSession(provider)
    clients: list[httpx.AsyncClient] = []

    async def one() -> int:
        clients.append(session.async_client)
        return (await session.aget(idp.api_url("loop"))).status_code

    assert asyncio.run(one()) == 200
    assert clients[0].is_closed  # closed by its loop's shutdown, not dropped
    assert asyncio.run(one()) == 200
    assert clients[1] is not clients[0]
    assert clients[1].is_closed
    asyncio.run(session.aclose())


def test_aclose_inside_the_loop_closes_the_client_once(idp: IdP, provider: OIDCProvider) -> None:
    async def main() -> httpx.AsyncClient:
        async with AuthSession(provider) as session:
            await session.aget(idp.api_url("loop"))
            client = session.async_client
        assert client.is_closed
        return client

    asyncio.run(main())


class CountingStorage(MemoryTokenStorage):
    def __init__(self) -> None:
        super().__init__()
        self.loads = 0

    def load(self, provider_name: str) -> Token | None:
        self.loads += 1
        return super().load(provider_name)

    async def aload(self, provider_name: str) -> Token | None:
        self.loads += 1
        return super().load(provider_name)


def test_callers_queued_behind_a_refresh_do_not_reread_the_storage(idp: IdP) -> None:
    storage = CountingStorage()
    provider = make_oidc(idp, CONFIDENTIAL, storage=storage)
    token = login(provider)
    provider.save_token(stale(token))
    storage.loads = 0

    async def main() -> list[int]:
        async with AuthSession(provider) as session:
            responses = await asyncio.gather(
                *(session.aget(idp.api_url(f"q/{i}")) for i in range(100))
            )
            return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200] * 100
    # each task reads the token once to find it stale; then one reload under the lock before
    # the refresh, and none for the 99 tasks queued behind it (they take the refreshed token)
    assert storage.loads <= 100 + 2, storage.loads
