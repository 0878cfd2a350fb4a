"""One ID-token validation (OIDC Core 3.1.3.7), shared by the provider and ``TokenChecker``.

* :class:`IDTokenPolicy` says what an ID token must satisfy: the expected issuer and
  audience (the client id), the nonce of the login, a ``max_age``, the allowed signature
  algorithms, the clock leeway and the required claims.
* :func:`narrow_algorithms` narrows an allow-list to what the issuer says it signs ID
  tokens with (``id_token_signing_alg_values_supported``).
* :func:`check_before_network` refuses a token whose algorithm or issuer is wrong before
  any key is looked up (so a forged token never makes a request).
* :func:`validate_id_token` runs every claim rule on a token whose signature ``key``
  verified: registered claims, ``sub``, ``azp``, ``nonce``, ``auth_time``, ``at_hash``
  (whose hash depends on the key for EdDSA).
* :func:`verify_id_token` is the whole path a provider needs.

The provider turns a :class:`~kstlib.auth._jose.JOSEError` into a ``TokenValidationError``;
the checker turns it into a failed report step. Neither adds rules of its own.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from kstlib.auth._jose import (
    ALLOWED_ALGORITHMS,
    JWS,
    JOSEError,
    PublicJWK,
    at_hash,
    checked_claims,
    decode_jws,
    number_claim,
)

if TYPE_CHECKING:
    import httpx

    from kstlib.auth._discovery import MetadataCache
    from kstlib.auth._http import HTTPTraceLogger, RetryPolicy

__all__ = [
    "ID_TOKEN_REQUIRED_CLAIMS",
    "IDTokenPolicy",
    "check_before_network",
    "narrow_algorithms",
    "validate_id_token",
    "verify_id_token",
]

#: Claims every ID token carries (OIDC Core 2).
ID_TOKEN_REQUIRED_CLAIMS: Final[tuple[str, ...]] = ("iss", "sub", "aud", "exp", "iat")


@dataclass(frozen=True, slots=True)
class IDTokenPolicy:
    """What an ID token must satisfy.

    Args:
        issuer: The expected ``iss`` (compared exactly, before any network call).
        audience: The client id: ``aud`` must contain it and ``azp``, when present, must
            equal it. ``None`` only where no client is known (a checker without an
            expected audience): ``aud`` must then still be present.
        nonce: The nonce sent with the authorization request (``None``: not checked).
        max_age: Seconds since ``auth_time`` allowed (``None``: not checked).
        allowed_algorithms: Signature algorithms accepted.
        leeway: Seconds of clock skew allowed on ``exp``/``iat``/``nbf``/``auth_time``.
        required_claims: Claims that must be present.
    """

    issuer: str
    audience: str | None
    nonce: str | None = None
    max_age: float | None = None
    allowed_algorithms: frozenset[str] = ALLOWED_ALGORITHMS
    leeway: float = 60.0
    required_claims: tuple[str, ...] = ID_TOKEN_REQUIRED_CLAIMS

    def __post_init__(self) -> None:
        if not math.isfinite(self.leeway) or self.leeway < 0:
            raise ValueError("leeway must be a finite, non-negative number of seconds")
        if self.max_age is not None and (not math.isfinite(self.max_age) or self.max_age < 0):
            raise ValueError("max_age must be a finite, non-negative number of seconds")


def narrow_algorithms(allowed: frozenset[str], metadata: Mapping[str, Any]) -> frozenset[str]:
    """``allowed`` narrowed to the issuer's ``id_token_signing_alg_values_supported``.

    A document without that list (or with a malformed one) leaves ``allowed`` unchanged:
    the list only ever narrows, never widens (``none`` or ``HS256`` there change nothing).
    """
    advertised = metadata.get("id_token_signing_alg_values_supported")
    if not isinstance(advertised, list):
        return allowed
    return allowed & {alg for alg in advertised if isinstance(alg, str)}


def check_before_network(jws: JWS, policy: IDTokenPolicy) -> None:
    """Refuse a wrong algorithm or issuer before any key lookup.

    Raises:
        JOSEError: the algorithm is not allowed, or ``iss`` is not the expected issuer.
    """
    if jws.header["alg"] not in policy.allowed_algorithms:
        raise JOSEError(f"algorithm {jws.header['alg']!r} is not allowed")
    iss = jws.payload.get("iss")
    if iss != policy.issuer:
        raise JOSEError(f"token issuer {iss!r} is not {policy.issuer!r}", claim="iss")


def validate_id_token(
    jws: JWS,
    key: PublicJWK,
    policy: IDTokenPolicy,
    *,
    access_token: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Check the claims of an ID token whose signature ``key`` verified; return them.

    ``access_token`` (issued with the ID token) is checked against ``at_hash`` when the
    token carries one; the hash is the one of the signing algorithm, and for EdDSA the
    one of the key's curve (SHA-512 for Ed25519, SHAKE256 for Ed448).

    Raises:
        JOSEError: a rule failed; ``claim`` names the claim.
    """
    claims = jws.payload
    checked_claims(  # the policy checked its leeway when it was made
        claims,
        policy.issuer,
        policy.audience,
        policy.leeway,
        time.time() if now is None else now,
        policy.required_claims,
    )
    sub = claims.get("sub")
    if sub is not None and (not isinstance(sub, str) or not sub):
        raise JOSEError("token has no 'sub' (it must be a non-empty string)", claim="sub")
    if "azp" in claims or type(claims.get("aud")) is list:
        _check_azp(claims, policy.audience)
    if policy.nonce is not None:
        _check_nonce(claims, policy.nonce)
    if policy.max_age is not None:
        _check_auth_time(claims, policy.max_age, policy.leeway, now)
    if access_token is not None and "at_hash" in claims:
        _check_at_hash(claims["at_hash"], access_token, jws.header["alg"], key)
    return claims


def _check_azp(claims: Mapping[str, Any], audience: str | None) -> None:
    """OIDC Core 3.1.3.7 (4, 5): several audiences need an ``azp``; it names the client."""
    azp = claims.get("azp")
    aud = claims.get("aud")
    if azp is None:
        if isinstance(aud, list) and len(aud) > 1:
            raise JOSEError(
                "token has several audiences and no 'azp' (authorized party); refused",
                claim="azp",
            )
        return
    if not isinstance(azp, str):
        raise JOSEError("claim 'azp' is not a string", claim="azp")
    if audience is not None and azp != audience:
        raise JOSEError(
            f"token was issued to another client (azp {azp!r} is not {audience!r})", claim="azp"
        )


def _check_nonce(claims: Mapping[str, Any], nonce: str) -> None:
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise JOSEError(
            "token has a wrong or missing nonce (replayed or injected response); refused",
            claim="nonce",
        )


def _check_auth_time(
    claims: Mapping[str, Any], max_age: float, leeway: float, now: float | None
) -> None:
    auth_time = number_claim(claims, "auth_time")
    if auth_time is None:
        raise JOSEError("token has no 'auth_time' although a max_age was asked", claim="auth_time")
    moment = time.time() if now is None else now
    if moment > auth_time + max_age + leeway:
        raise JOSEError(
            f"the user authenticated more than max_age ({max_age:g} s) ago",
            claim="auth_time",
        )


def _check_at_hash(expected: Any, access_token: str, alg: str, key: PublicJWK) -> None:
    if not isinstance(expected, str) or not hmac.compare_digest(
        expected.encode(), at_hash(access_token, alg, curve=key.curve).encode()
    ):
        raise JOSEError(
            "token does not match its access token (at_hash)",
            claim="at_hash",
        )


def verify_id_token(
    client: httpx.Client,
    id_token: str,
    policy: IDTokenPolicy,
    *,
    cache: MetadataCache,
    jwks_uri: str,
    access_token: str | None = None,
    now: float | None = None,
    retry: RetryPolicy | None = None,
    tracer: HTTPTraceLogger | None = None,
) -> tuple[JWS, PublicJWK]:
    """Decode, check offline, find the key, verify the signature, validate the claims.

    Returns the decoded token and the key that verified it.

    Raises:
        JOSEError: the token is refused (``claim`` names a failing claim).
        DiscoveryError: the JWKS could not be fetched or holds no usable key.
    """
    from kstlib.auth._discovery import select_key

    jws = decode_jws(id_token)
    check_before_network(jws, policy)
    candidates = cache.key_candidates(client, jwks_uri, jws, retry=retry, tracer=tracer)
    key = select_key(jws, candidates, policy.allowed_algorithms)
    validate_id_token(jws, key, policy, access_token=access_token, now=now)
    return jws, key
