"""kstlib.auth._idtoken: the one ID-token validation (policy, claim rules, at_hash per curve)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest

from kstlib.auth._idtoken import (
    IDTokenPolicy,
    check_before_network,
    narrow_algorithms,
    validate_id_token,
)
from kstlib.auth._jose import ALLOWED_ALGORITHMS, JOSEError, decode_jws, parse_jwk
from tests import jwt_factory as f

ISSUER = "https://idp.example.com"
POLICY = IDTokenPolicy(issuer=ISSUER, audience="my-app")


def _validate(key: f.TestKey, policy: IDTokenPolicy = POLICY, **kw: Any) -> dict[str, Any]:
    access_token = kw.pop("access_token", None)
    token = key.sign(f.claims(ISSUER, **kw))
    return validate_id_token(
        decode_jws(token), parse_jwk(key.public_jwk), policy, access_token=access_token
    )


def _refused(key: f.TestKey, policy: IDTokenPolicy = POLICY, **kw: Any) -> str | None:
    with pytest.raises(JOSEError) as err:
        _validate(key, policy, **kw)
    return err.value.claim


def _half(digest: bytes) -> str:
    return f.b64(digest[: len(digest) // 2])


def test_a_good_token_returns_its_claims() -> None:
    assert _validate(f.rsa_key())["sub"] == "user-123"


@pytest.mark.parametrize(
    ("claims", "claim"),
    [
        ({"aud": ["my-app", "api"]}, "azp"),
        ({"aud": ["my-app", "api"], "azp": "api"}, "azp"),
        ({"azp": 42}, "azp"),
        ({"sub": ""}, "sub"),
        ({"sub": 7}, "sub"),
        ({"sub": None}, "sub"),
        ({"aud": None}, "aud"),
        ({"iss": "https://other.example"}, "iss"),
    ],
)
def test_claim_rules(claims: dict[str, Any], claim: str) -> None:
    assert _refused(f.rsa_key(), **claims) == claim


def test_several_audiences_with_azp_of_the_client_are_accepted() -> None:
    assert _validate(f.rsa_key(), aud=["my-app", "api"], azp="my-app")["azp"] == "my-app"


def test_several_audiences_without_azp_are_refused_even_without_a_known_client() -> None:
    policy = IDTokenPolicy(issuer=ISSUER, audience=None)
    assert _refused(f.rsa_key(), policy, aud=["a", "b"]) == "azp"
    assert _validate(f.rsa_key(), policy, aud=["a", "b"], azp="a")["azp"] == "a"


def test_nonce_is_compared_when_given() -> None:
    policy = IDTokenPolicy(issuer=ISSUER, audience="my-app", nonce="n-0S6_WzA2Mj")
    assert _validate(f.rsa_key(), policy)["nonce"] == "n-0S6_WzA2Mj"
    assert _refused(f.rsa_key(), policy, nonce="other") == "nonce"
    assert _refused(f.rsa_key(), policy, nonce=None) == "nonce"


def test_max_age_checks_auth_time() -> None:
    policy = IDTokenPolicy(issuer=ISSUER, audience="my-app", max_age=300, leeway=0)
    now = int(time.time())
    assert _validate(f.rsa_key(), policy, auth_time=now - 100)
    assert _refused(f.rsa_key(), policy, auth_time=now - 1000) == "auth_time"
    assert _refused(f.rsa_key(), policy) == "auth_time"  # no auth_time at all
    assert _refused(f.rsa_key(), policy, auth_time="yesterday") == "auth_time"


@pytest.mark.parametrize(
    ("key", "digest"),
    [
        (f.rsa_key(), lambda data: hashlib.sha256(data).digest()),
        (f.ec_key("P-384"), lambda data: hashlib.sha384(data).digest()),
        (f.ed25519_key(), lambda data: hashlib.sha512(data).digest()),
        (f.ed448_key(), lambda data: hashlib.shake_256(data).digest(114)),
    ],
    ids=["RS256", "ES384", "Ed25519", "Ed448"],
)
def test_at_hash_follows_the_algorithm_and_the_curve(key: f.TestKey, digest: Any) -> None:
    good = _half(digest(b"the-access-token"))
    assert _validate(key, at_hash=good, access_token="the-access-token")
    assert _refused(key, at_hash=good, access_token="another-token") == "at_hash"
    assert _refused(key, at_hash=42, access_token="the-access-token") == "at_hash"
    assert _validate(key, at_hash=good)  # no access token given: nothing to compare


def test_ed448_key_is_not_checked_with_the_ed25519_hash() -> None:
    wrong = _half(hashlib.sha512(b"the-access-token").digest())
    assert _refused(f.ed448_key(), at_hash=wrong, access_token="the-access-token") == "at_hash"


def test_check_before_network() -> None:
    token = decode_jws(f.rsa_key().sign(f.claims(ISSUER)))
    check_before_network(token, POLICY)
    with pytest.raises(JOSEError) as err:
        check_before_network(token, IDTokenPolicy(issuer="https://other", audience=None))
    assert err.value.claim == "iss"
    with pytest.raises(JOSEError, match="not allowed"):
        check_before_network(
            token, IDTokenPolicy(issuer=ISSUER, audience=None, allowed_algorithms=frozenset())
        )


def test_narrow_algorithms_only_narrows() -> None:
    assert narrow_algorithms(ALLOWED_ALGORITHMS, {}) is ALLOWED_ALGORITHMS
    assert narrow_algorithms(
        ALLOWED_ALGORITHMS, {"id_token_signing_alg_values_supported": "x"}
    ) is (ALLOWED_ALGORITHMS)
    advertised = {"id_token_signing_alg_values_supported": ["RS256", "HS256", "none", 3]}
    assert narrow_algorithms(ALLOWED_ALGORITHMS, advertised) == {"RS256"}


@pytest.mark.parametrize(
    "kw", [{"leeway": -1}, {"leeway": float("nan")}, {"max_age": -1}, {"max_age": float("inf")}]
)
def test_policy_refuses_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        IDTokenPolicy(issuer=ISSUER, audience="my-app", **kw)
