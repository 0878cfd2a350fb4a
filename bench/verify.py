"""JWT verification throughput: kstlib.auth._jose vs bare cryptography, PyJWT and joserfc.

Folded from the checker author's bench_verify.py, same contenders and method;
for each algorithm (RS256, PS256, ES256, EdDSA) every contender runs in
alternating rounds, each round a calibrated batch of verifications of the
same compact token with the same public key:

  bare      cryptography ``public_key.verify`` on pre-split, pre-decoded input (the floor)
  kstlib    decode_jws + verify_signature + validate_claims (the full path)
  kstlib-v  verify_signature + validate_claims on an already decoded JWS (the step)
  pyjwt     jwt.decode(token, key, algorithms, audience, issuer)
  joserfc   jwt.decode(token, key, algorithms) + JWTClaimsRegistry.validate

Goals (issue 5): kstlib >= 0.5x the bare throughput (time ratio <= 2), and
faster than PyJWT and joserfc. PyJWT and joserfc are bench-only installs.
"""

from __future__ import annotations

import base64
import warnings
from collections.abc import Callable
from typing import Any

from bench.common import Comparison, Context, Goal, alternate, calibrate, per_op

ISSUER = "https://idp.example.com/realms/main"
AUDIENCE = "my-app"
GOAL_BARE = 0.5
Op = Callable[[], Any]
BARE, KSTLIB, STEP, PYJWT, JOSERFC = (
    "bare cryptography verify",
    "kstlib decode+verify+claims",
    "kstlib verify+claims (decoded)",
    "PyJWT decode",
    "joserfc decode+claims",
)


def _b64d(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _bare(key: Any, token: str) -> Op:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    signing_input, _, sig_b64 = token.rpartition(".")
    data = signing_input.encode()
    sig = _b64d(sig_b64)
    public = key.private.public_key()
    alg = key.alg
    if alg == "RS256":
        pad, h = padding.PKCS1v15(), hashes.SHA256()
        return lambda: public.verify(sig, data, pad, h)
    if alg == "PS256":
        h = hashes.SHA256()
        pss = padding.PSS(mgf=padding.MGF1(h), salt_length=32)
        return lambda: public.verify(sig, data, pss, h)
    if alg == "ES256":
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        scheme = ec.ECDSA(hashes.SHA256())
        return lambda: public.verify(der, data, scheme)
    return lambda: public.verify(sig, data)


def _kstlib(key: Any, token: str) -> Op:
    from kstlib.auth._jose import decode_jws, parse_jwk, validate_claims, verify_signature

    public = parse_jwk(key.public_jwk)

    def run() -> None:
        jws = decode_jws(token)
        verify_signature(jws, public)
        validate_claims(jws.payload, issuer=ISSUER, audience=AUDIENCE)

    return run


def _kstlib_step(key: Any, token: str) -> Op:
    from kstlib.auth._jose import decode_jws, parse_jwk, validate_claims, verify_signature

    public = parse_jwk(key.public_jwk)
    jws = decode_jws(token)

    def run() -> None:
        verify_signature(jws, public)
        validate_claims(jws.payload, issuer=ISSUER, audience=AUDIENCE)

    return run


def _pyjwt(key: Any, token: str) -> Op:
    import jwt as pyjwt

    public = key.private.public_key()
    algs = [key.alg]
    return lambda: pyjwt.decode(token, public, algorithms=algs, audience=AUDIENCE, issuer=ISSUER)


def _joserfc(key: Any, token: str) -> Op:
    from joserfc import jwt as joserfc_jwt
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    cls = {"RS": RSAKey, "PS": RSAKey, "ES": ECKey, "Ed": OKPKey}[key.alg[:2]]
    public = cls.import_key(key.public_jwk)
    algs = [key.alg]
    registry = joserfc_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": AUDIENCE}
    )

    def run() -> None:
        decoded = joserfc_jwt.decode(token, public, algorithms=algs)
        registry.validate(decoded.claims)

    return run


def run(ctx: Context) -> list[Comparison]:
    from tests import jwt_factory as f

    warnings.simplefilter("ignore")  # joserfc warns that "EdDSA" is deprecated (RFC 9864)
    seconds = 0.004 if ctx.smoke else 0.1
    makers: dict[str, Callable[[Any, str], Op]] = {BARE: _bare, KSTLIB: _kstlib, STEP: _kstlib_step}
    skipped: dict[str, str] = {}
    for name, module, make in ((PYJWT, "jwt", _pyjwt), (JOSERFC, "joserfc", _joserfc)):
        reason = ctx.available(module)
        if reason:
            skipped[name] = reason
        else:
            makers[name] = make
    keys = [
        f.rsa_key(2048, alg="RS256"),
        f.rsa_key(2048, alg="PS256", slot=1),
        f.ec_key("P-256"),
        f.ed25519_key(),
    ]
    results: list[Comparison] = []
    for key in keys:
        token = key.sign(f.claims(ISSUER, AUDIENCE, lifetime=86400))
        ops = {name: make(key, token) for name, make in makers.items()}
        for op in ops.values():  # correctness first: every contender must accept the token
            op()
        contenders = {name: per_op(op, calibrate(op, seconds)) for name, op in ops.items()}
        series = alternate(contenders, rounds=ctx.rounds, warmup=1)
        comp = Comparison(
            title=f"JWT verification, {key.alg}",
            unit="us/verification",
            baseline=BARE,
            series=series,
            skipped=dict(skipped),
            section="5. TokenChecker and JWT verification",
        )
        to_bare = comp.ratio(KSTLIB)[0]
        comp.goals.append(
            Goal(
                f"{key.alg}: kstlib >= {GOAL_BARE}x bare cryptography throughput "
                f"(measured {1 / to_bare:.2f}x)",
                1 / to_bare >= GOAL_BARE,
                "issue 5",
            )
        )
        for name in (PYJWT, JOSERFC):
            if name in series:
                speedup = comp.pair_ratio(name, KSTLIB)[0]
                peer = name.split()[0]
                comp.goals.append(
                    Goal(
                        f"{key.alg}: kstlib faster than {peer} (measured {speedup:.2f}x)",
                        speedup > 1.0,
                        "issue 5",
                    )
                )
            else:
                comp.goals.append(
                    Goal(f"{key.alg}: kstlib faster than {name.split()[0]}", None, "issue 5")
                )
        results.append(comp)
    return results
