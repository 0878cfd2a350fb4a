"""TokenChecker.check of an RS256 id_token: warm (reused checker) and cold, vs kstlib 3.8.2.

The issuer's discovery document and JWKS are served by a local HTTP server
(tests/jwks_server.py, 127.0.0.1). Warm: one reused checker whose cache is
hot (no network). Cold: a new checker per check (discovery + JWKS fetched).
kstlib 3.8.2: its reused TokenChecker (it caches the JWKS but fetches the
discovery document on every check), driven through bench/peer_old.py. The floor:
a bare ``cryptography`` RS256 verify of the same token (pre-split, pre-decoded).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import httpx

from bench.common import OLD_NAME, Comparison, Context, Goal, alternate, calibrate, per_op

GOAL_SPEEDUP = 20.0
#: The warm check costs at most this many bare RSA verifications (seams issue, part 2).
GOAL_BARE_RATIO = 3.0
AUDIENCE = "my-app"
WARM = "kstlib TokenChecker, warm (reused)"
COLD = "kstlib TokenChecker, cold (new checker)"
OLD = f"{OLD_NAME} TokenChecker (reused)"
BARE = "bare cryptography RS256 verify"


def _bare_verify(key: object, token: str) -> Callable[[], None]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input, _, sig_b64 = token.rpartition(".")
    data = signing_input.encode()
    sig = base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))
    public = key.private.public_key()  # type: ignore[attr-defined]
    pad, h = padding.PKCS1v15(), hashes.SHA256()
    return lambda: public.verify(sig, data, pad, h)


def run(ctx: Context) -> list[Comparison]:
    from tests import jwt_factory as f
    from tests.jwks_server import running_server

    from kstlib.auth.check import TokenChecker

    seconds = 0.01 if ctx.smoke else 0.15
    key = f.rsa_key(2048, alg="RS256")
    skipped: dict[str, str] = {}
    with running_server() as srv, httpx.Client(timeout=10.0) as client:
        issuer = srv.set_issuer("/issuer", jwks=f.jwks(key))
        token = key.sign(f.claims(issuer, AUDIENCE, lifetime=86400))
        warm = TokenChecker(client, expected_issuer=issuer, expected_audience=AUDIENCE)

        def warm_check() -> None:
            if not warm.check(token).valid:
                raise RuntimeError("warm check rejected the token")

        def cold_check() -> None:
            checker = TokenChecker(client, expected_issuer=issuer, expected_audience=AUDIENCE)
            if not checker.check(token).valid:
                raise RuntimeError("cold check rejected the token")

        bare = _bare_verify(key, token)
        contenders: dict[str, Callable[[], float]] = {
            WARM: per_op(warm_check, calibrate(warm_check, seconds)),
            COLD: per_op(cold_check, calibrate(cold_check, seconds)),
            BARE: per_op(bare, calibrate(bare, seconds)),
        }
        peer = ctx.peer()
        if peer is not None:
            reply = peer.call("checker_setup", issuer=issuer, audience=AUDIENCE, token=token)
            if reply["valid"]:
                started = peer.call("time", op="checker_reused", n=20)["seconds"] / 20
                contenders[OLD] = peer.timer("checker_reused", max(5, round(seconds / started)))
            else:
                skipped[OLD] = f"it rejected the token: {'; '.join(reply['failed'])}"
        else:
            skipped[OLD] = ctx.old_reason()
        series = alternate(contenders, rounds=ctx.rounds, warmup=1)
    comp = Comparison(
        title="TokenChecker.check, RS256 id_token (discovery + JWKS on a loopback server)",
        unit="us/check",
        baseline=WARM,
        series=series,
        skipped=skipped,
        section="5. TokenChecker and JWT verification",
        notes=[
            f"{OLD_NAME}'s reused checker caches the JWKS but GETs the discovery document on "
            "every check (one loopback round trip to the threaded server in the bench process)"
        ],
    )
    to_bare = 1 / comp.ratio(BARE)[0]
    comp.goals.append(
        Goal(
            f"warm check <= {GOAL_BARE_RATIO:.0f}x a bare RS256 verify (measured {to_bare:.2f}x)",
            to_bare <= GOAL_BARE_RATIO,
            "seams issue",
        )
    )
    if OLD in series:
        speedup = comp.ratio(OLD)[0]
        comp.goals.append(
            Goal(
                f"warm check >= {GOAL_SPEEDUP:.0f}x faster than {OLD_NAME}'s reused checker "
                f"(measured {speedup:.1f}x)",
                speedup >= GOAL_SPEEDUP,
                "issue 5",
            )
        )
    else:
        comp.goals.append(
            Goal(
                f"warm check >= {GOAL_SPEEDUP:.0f}x faster than {OLD_NAME}'s reused checker",
                None,
                "issue 5",
            )
        )
    return [comp]
