"""Per-request cost with DPoP (RFC 9449) next to Bearer: the same ``AuthSession``, same server.

Two ``AuthSession`` objects on identical providers send the same GET over one keep-alive
connection to the loopback server: one holds a Bearer token, the other a DPoP-bound token
(ES256 key, the default), so each of its requests carries ``Authorization: DPoP <token>``
and a fresh proof (new ``jti``, ``iat``, ``htu``, ``ath``, the origin's nonce) signed for
that request. The server only checks that an Authorization header is present: what is
measured is the client's cost, proof included. Sync and async; contenders alternate batch
by batch.

A third, sync-only row is the floor of any ES256 DPoP: the Bearer session computing one
bare ES256 signature per request (no proof, nothing sent). Inside a request loop a
signature costs two to three times its tight-loop figure (it runs with cold caches: the
constant-time P-256 table alone is 150 KB, and it evicts what the rest of the request
needs), so this row shows how much of the DPoP ratio is the signature itself and how much
is the library's own work (claims, base64url, jti, the extra header).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.common import Comparison, Context, Goal, alternate, loopback_server, per_op

GOAL_RATIO = 1.15
BEARER = "kstlib AuthSession, Bearer token"
DPOP = "kstlib AuthSession, DPoP token (ES256 proof per request)"
FLOOR = "kstlib AuthSession, Bearer token + one bare ES256 signature per request (DPoP's floor)"
ISSUER = "http://127.0.0.1:9/realms/bench"  # never contacted: the tokens are fresh
ACCESS_TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIn0." + "x" * 600 + ".sig"


def _ok(response: httpx.Response) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"loopback server answered {response.status_code}")


def _provider(dpop: bool) -> Any:
    from kstlib.auth._discovery import MetadataCache
    from kstlib.auth._dpop import DPoPKey
    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.models import Token
    from kstlib.auth.providers.oidc import OIDCProvider
    from kstlib.auth.token import MemoryTokenStorage

    provider = OIDCProvider(
        "bench",
        AuthProviderConfig(client_id="bench", issuer=ISSUER, dpop=dpop),
        MemoryTokenStorage(),
        metadata_cache=MetadataCache(),
    )
    token = Token.from_response(
        {
            "access_token": ACCESS_TOKEN,
            "token_type": "DPoP" if dpop else "Bearer",
            "expires_in": 86400,
            "refresh_token": "refresh-token-value",
        }
    )
    if dpop:
        token.dpop_key = DPoPKey.generate()
    provider.save_token(token)
    return provider


def _signature_only(provider: Any) -> Any:
    """``provider`` (Bearer) made to compute one ES256 signature per request, sending nothing."""
    from kstlib.auth._dpop import DPoPKey

    key = DPoPKey.generate()
    key.proof("GET", "http://127.0.0.1:1/")  # the private key parsed once, as for DPoP
    sign = key._sign_fast
    assert sign is not None
    data = b"x" * 440  # a proof's signing input is about this long
    authorize = provider.authorize_request

    def authorize_request(request: httpx.Request, token: Any) -> None:
        authorize(request, token)
        sign(data)

    provider.authorize_request = authorize_request
    return provider


def _check_dpop_request(session: Any, url: str) -> None:
    """Once, before measuring: the DPoP contender really sends a DPoP proof."""
    response = session.get(url)
    _ok(response)
    sent = response.request.headers
    if not sent["Authorization"].startswith("DPoP ") or sent.get("DPoP", "").count(".") != 2:
        raise RuntimeError("the DPoP session did not send a DPoP proof")


def run(ctx: Context) -> list[Comparison]:
    from kstlib.auth import AuthSession

    n = 20 if ctx.smoke else 100
    rounds = ctx.rounds if ctx.smoke else 4 * ctx.rounds
    results: list[Comparison] = []
    with loopback_server() as base:
        url = base + "/api/items?page=1"
        bearer = AuthSession(_provider(dpop=False), timeout=30.0)
        dpop = AuthSession(_provider(dpop=True), timeout=30.0)
        floor = AuthSession(_signature_only(_provider(dpop=False)), timeout=30.0)
        try:
            _check_dpop_request(dpop, url)
            series = alternate(
                {
                    BEARER: per_op(lambda: _ok(bearer.get(url)), n),
                    DPOP: per_op(lambda: _ok(dpop.get(url)), n),
                    FLOOR: per_op(lambda: _ok(floor.get(url)), n),
                },
                rounds=rounds,
                warmup=1,
            )
        finally:
            bearer.close()
            dpop.close()
            floor.close()
        proof_us = _proof_cost()
        results.append(_comparison("sync", series, n, proof_us))

        with asyncio.Runner() as runner:
            abearer = AuthSession(_provider(dpop=False), timeout=30.0)
            adpop = AuthSession(_provider(dpop=True), timeout=30.0)

            def batch(get: Callable[[str], Awaitable[httpx.Response]]) -> Callable[[], float]:
                async def many() -> None:
                    for _ in range(n):
                        _ok(await get(url))

                def sample() -> float:
                    started = time.perf_counter()
                    runner.run(many())
                    return (time.perf_counter() - started) / n * 1e6

                return sample

            try:
                aseries = alternate(
                    {BEARER + " (aget)": batch(abearer.aget), DPOP + " (aget)": batch(adpop.aget)},
                    rounds=rounds,
                    warmup=1,
                )
            finally:
                runner.run(abearer.aclose())
                runner.run(adpop.aclose())
        results.append(_comparison("async", aseries, n, proof_us))
    return results


def _proof_cost(count: int = 300) -> tuple[float, float]:
    """Median microseconds of one proof, and of its ES256 signature alone (in-process)."""
    import statistics

    from kstlib.auth._dpop import DPoPKey

    key = DPoPKey.generate()
    url = "http://127.0.0.1:1/api/items?page=1"
    key.proof("GET", url, access_token=ACCESS_TOKEN)
    sign = key._sign_fast
    assert sign is not None
    data = b"x" * 440  # a proof's signing input is about this long
    proofs, signatures = [], []
    for _ in range(count):
        t0 = time.perf_counter()
        key.proof("GET", url, access_token=ACCESS_TOKEN)
        t1 = time.perf_counter()
        sign(data)
        t2 = time.perf_counter()
        proofs.append((t1 - t0) * 1e6)
        signatures.append((t2 - t1) * 1e6)
    return statistics.median(proofs), statistics.median(signatures)


def _comparison(
    kind: str, series: dict[str, Any], n: int, proof_us: tuple[float, float]
) -> Comparison:
    names = list(series)
    comp = Comparison(
        title=f"Per-request cost with DPoP vs Bearer, {kind} (same AuthSession, proof included)",
        unit="us/request",
        baseline=names[0],
        series=series,
        notes=[
            f"a sample = {n} sequential GETs, keep-alive, loopback server in another process",
            "DPoP: a new ES256 proof (jti, iat, htm, htu, ath) signed for every request",
            f"one proof alone, in a tight loop (warm caches): {proof_us[0]:.0f} us, of which the "
            f"ES256 signature (cryptography/OpenSSL) {proof_us[1]:.0f} us; the rest (claims, "
            "base64url, jti) is the library's",
        ],
        section="3. per request",
    )
    if FLOOR in series:
        comp.notes.append(
            f"the floor row: the signature alone, inside the loop, is {comp.ratio(FLOOR)[0]:.2f}x "
            f"Bearer; DPoP is {comp.pair_ratio(DPOP, FLOOR)[0]:.2f}x that floor (the library's "
            "own part: claims, base64url, jti, the DPoP header through httpx/h11)"
        )
    ratio = comp.ratio(names[1])[0]
    comp.goals.append(
        Goal(
            f"DPoP {kind} <= {GOAL_RATIO}x Bearer, same session (measured {ratio:.2f}x)",
            ratio <= GOAL_RATIO,
            "issue 14",
        )
    )
    return comp
