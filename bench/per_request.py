"""Per-request cost, sync and async, against a loopback HTTP/1.1 server in its own process.

Contenders send the same GET with a Bearer token over one keep-alive
connection: a plain ``httpx.Client``/``AsyncClient`` with a static
``Authorization`` header (the floor), this project's ``AuthSession``,
Authlib's ``OAuth2Client``/``AsyncOAuth2Client`` (token dict with
``expires_at``, auto-refresh armed), httpx-auth's ``OAuth2AuthorizationCodePKCE``
on an ``httpx.Client``/``AsyncClient`` (its token cache seeded with the same
token and a refresh token, see ``HTTPX_AUTH_SEED_NOTE``) and kstlib 3.8.2's
``AuthSession`` (in its own interpreter, driven through bench/peer_old.py). A sample is a batch
of N sequential requests; contenders alternate batch by batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.common import (
    HTTPX_AUTH_SEED_NOTE,
    OLD_NAME,
    Comparison,
    Context,
    Goal,
    alternate,
    httpx_auth_cache,
    httpx_auth_pkce,
    loopback_server,
    per_op,
    seed_httpx_auth,
)

GOAL_RATIO = 1.05
PLAIN = "httpx (static Authorization header)"
MINE = "kstlib AuthSession"
AUTHLIB = "Authlib OAuth2Client"
OLD = f"{OLD_NAME} AuthSession"
HTTPX_AUTH = "httpx-auth OAuth2AuthorizationCodePKCE"
MINE_REDIS = "kstlib AuthSession (Redis storage)"  # issue 15
#: The async name of each sync contender.
ASYNC_NAMES = {
    PLAIN: PLAIN.replace("httpx", "httpx.AsyncClient"),
    MINE: MINE + " (aget)",
    AUTHLIB: AUTHLIB.replace("OAuth2Client", "AsyncOAuth2Client"),
    HTTPX_AUTH: HTTPX_AUTH + " (httpx.AsyncClient)",
    OLD: OLD + " (aget)",
    MINE_REDIS: MINE_REDIS + " (aget)",
}
ISSUER = "http://127.0.0.1:9/realms/bench"  # never contacted: the token is fresh
ACCESS_TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIn0." + "x" * 600 + ".sig"
RAW: dict[str, Any] = {
    "access_token": ACCESS_TOKEN,
    "token_type": "Bearer",
    "expires_in": 86400,
    "refresh_token": "refresh-token-value",
    "scope": "openid profile",
}


def _ok(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"loopback server answered {response.status_code}")


def _provider(storage: Any = None) -> Any:
    from kstlib.auth._discovery import MetadataCache
    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.models import Token
    from kstlib.auth.providers.oidc import OIDCProvider
    from kstlib.auth.token import MemoryTokenStorage

    provider = OIDCProvider(
        "bench",
        AuthProviderConfig(client_id="bench", issuer=ISSUER),
        MemoryTokenStorage() if storage is None else storage,
        metadata_cache=MetadataCache(),
    )
    provider.save_token(Token.from_response(dict(RAW)))
    return provider


def _authlib_token() -> dict[str, Any]:
    return {**RAW, "expires_at": int(time.time()) + 86400}


def run(ctx: Context) -> list[Comparison]:
    from kstlib.auth import AuthSession

    # Small batches, many rounds: the two halves of a pair run milliseconds apart, so a burst
    # of load from a neighbour hits both (the 1.05x goal is tighter than the machine's noise).
    n = 20 if ctx.smoke else 100
    rounds = ctx.rounds if ctx.smoke else 6 * ctx.rounds
    warnings.simplefilter("ignore")  # Authlib warns that its httpx fallback is deprecated
    results: list[Comparison] = []
    with loopback_server() as base, contextlib.ExitStack() as stack:
        url = base + "/api/items"
        token_url = base + "/token"
        skipped: dict[str, str] = {}
        authlib_missing = ctx.available("authlib")
        if authlib_missing:
            skipped[AUTHLIB] = authlib_missing
        httpx_auth_missing = "skipped in smoke" if not ctx.peers else ctx.available("httpx_auth")
        if httpx_auth_missing:
            skipped[HTTPX_AUTH] = httpx_auth_missing
        peer = ctx.peer()
        if peer is not None:
            peer.call("session_setup", url=url, raw=RAW, client_id="bench", issuer=ISSUER)
        else:
            skipped[OLD] = ctx.old_reason()
        # issue 15: the same session on a Redis storage (a real redis-server; not in smoke)
        redis_storage: Any = None
        if ctx.smoke:
            skipped[MINE_REDIS] = "skipped in smoke (starts a redis-server)"
        else:
            from kstlib.auth.token import RedisTokenStorage

            redis_storage = RedisTokenStorage(ctx.redis().url, prefix="bench:per-request:")
            stack.callback(redis_storage.close)
        hx_auth: Any = None
        if not httpx_auth_missing:
            from httpx_auth import TokenMemoryCache

            cache = stack.enter_context(httpx_auth_cache(TokenMemoryCache()))  # type: ignore[no-untyped-call]
            # The authorization URL is never opened: the seeded token is fresh.
            hx_auth = httpx_auth_pkce(ISSUER + "/auth", token_url, client_id="bench", timeout=30)
            seed_httpx_auth(cache, hx_auth, ACCESS_TOKEN, 86400, str(RAW["refresh_token"]))

        # -- sync ----------------------------------------------------------------------
        plain = httpx.Client(headers={"Authorization": f"Bearer {ACCESS_TOKEN}"}, timeout=30.0)
        session = AuthSession(_provider(), timeout=30.0)
        sync: dict[str, Callable[[], float]] = {
            PLAIN: per_op(lambda: _ok(plain.get(url)), n),
            MINE: per_op(lambda: _ok(session.get(url)), n),
        }
        closers: list[Callable[[], Any]] = [plain.close, session.close]
        if redis_storage is not None:
            rsession = AuthSession(_provider(redis_storage), timeout=30.0)
            sync[MINE_REDIS] = per_op(lambda: _ok(rsession.get(url)), n)
            closers.append(rsession.close)
        if not authlib_missing:
            from authlib.integrations.httpx_client import OAuth2Client

            oauth = OAuth2Client(
                client_id="bench",
                token=_authlib_token(),
                token_endpoint=token_url,
                timeout=30.0,
            )
            sync[AUTHLIB] = per_op(lambda: _ok(oauth.get(url)), n)
            closers.append(oauth.close)
        if hx_auth is not None:
            hx_client = httpx.Client(auth=hx_auth, timeout=30.0)
            sync[HTTPX_AUTH] = per_op(lambda: _ok(hx_client.get(url)), n)
            closers.append(hx_client.close)
        if peer is not None:
            sync[OLD] = peer.timer("session_sync", n)
        try:
            series = alternate(sync, rounds=rounds, warmup=1)
        finally:
            for close in closers:
                close()
        results.append(_comparison("sync", series, skipped, n, hx_auth is not None))

        # -- async ---------------------------------------------------------------------
        with asyncio.Runner() as runner:
            aplain = httpx.AsyncClient(
                headers={"Authorization": f"Bearer {ACCESS_TOKEN}"}, timeout=30.0
            )
            asession = AuthSession(_provider(), timeout=30.0)

            def batch(get: Callable[[str], Awaitable[httpx.Response]]) -> Callable[[], float]:
                async def many() -> None:
                    for _ in range(n):
                        _ok(await get(url))

                def sample() -> float:
                    started = time.perf_counter()
                    runner.run(many())
                    return (time.perf_counter() - started) / n * 1e6

                return sample

            asynchronous: dict[str, Callable[[], float]] = {
                ASYNC_NAMES[PLAIN]: batch(aplain.get),
                ASYNC_NAMES[MINE]: batch(asession.aget),
            }
            aclosers: list[Callable[[], Awaitable[Any]]] = [aplain.aclose, asession.aclose]
            if redis_storage is not None:
                arsession = AuthSession(_provider(redis_storage), timeout=30.0)
                asynchronous[ASYNC_NAMES[MINE_REDIS]] = batch(arsession.aget)
                aclosers.append(arsession.aclose)
            if not authlib_missing:
                from authlib.integrations.httpx_client import AsyncOAuth2Client

                async def make() -> Any:
                    return AsyncOAuth2Client(
                        client_id="bench",
                        token=_authlib_token(),
                        token_endpoint=token_url,
                        timeout=30.0,
                    )

                aoauth = runner.run(make())
                asynchronous[ASYNC_NAMES[AUTHLIB]] = batch(aoauth.get)
                aclosers.append(aoauth.aclose)
            if hx_auth is not None:
                # httpx drives httpx-auth's (synchronous) auth flow from the async client.
                ahx_client = httpx.AsyncClient(auth=hx_auth, timeout=30.0)
                asynchronous[ASYNC_NAMES[HTTPX_AUTH]] = batch(ahx_client.get)
                aclosers.append(ahx_client.aclose)
            if peer is not None:
                asynchronous[ASYNC_NAMES[OLD]] = peer.timer("session_async", n)
            try:
                aseries = alternate(asynchronous, rounds=rounds, warmup=1)
            finally:
                for aclose in aclosers:
                    runner.run(aclose())
        askipped = {ASYNC_NAMES[k]: v for k, v in skipped.items()}
        results.append(_comparison("async", aseries, askipped, n, hx_auth is not None))
    return results


def _comparison(
    kind: str, series: dict[str, Any], skipped: dict[str, str], n: int, httpx_auth: bool
) -> Comparison:
    names = list(series)
    notes = [f"a sample = {n} sequential requests; the server checks the Authorization header"]
    if httpx_auth:
        notes.append(HTTPX_AUTH_SEED_NOTE)
    comp = Comparison(
        title=f"Per-request cost, {kind} (GET, keep-alive, loopback server in another process)",
        unit="us/request",
        baseline=names[0],
        series=series,
        skipped=skipped,
        notes=notes,
        section="3. per request",
    )
    ratio = comp.ratio(names[1])[0]
    comp.goals.append(
        Goal(
            f"AuthSession {kind} <= {GOAL_RATIO}x plain httpx (measured {ratio:.2f}x)",
            ratio <= GOAL_RATIO,
            "issue 4",
        )
    )
    redis_name = next((name for name in names if name.startswith(MINE_REDIS)), None)
    if redis_name is not None:  # issue 15
        redis_ratio = comp.ratio(redis_name)[0]
        comp.goals.append(
            Goal(
                f"AuthSession {kind} with Redis storage <= {GOAL_RATIO}x plain httpx "
                f"(measured {redis_ratio:.2f}x)",
                redis_ratio <= GOAL_RATIO,
                "issue 15",
            )
        )
    return comp
