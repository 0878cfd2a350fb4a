"""TokenChecker against hostile tokens and hostile servers.

Each test pins one defect of the reference implementation or one hardening
rule; the hypothesis tests feed more than 10,000 random and mutated tokens and
require a report (never an exception, never an "unexpected error").
"""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kstlib.auth._discovery import MetadataCache
from kstlib.auth._http import RetryPolicy
from kstlib.auth.check import TokenChecker, TokenCheckReport, ValidationStep
from tests import jwt_factory as f
from tests import loopback_http
from tests.hypothesis_support import examples
from tests.jwks_server import JWKSServer, running_server
from tests.jwt_factory import b64, b64json

pytestmark = pytest.mark.usefixtures("server")

NO_RETRY = RetryPolicy(max_retries=0)
DISCOVERY = "/issuer/.well-known/openid-configuration"
JWKS = "/issuer/jwks"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with loopback_http.client(timeout=5.0) as c:
        yield c


def _checker(client: httpx.Client, issuer: str | None, **kw: Any) -> TokenChecker:
    kw.setdefault("retry", NO_RETRY)
    return TokenChecker(client, expected_issuer=issuer, expected_audience="my-app", **kw)


def _failed(report: TokenCheckReport, step_name: str) -> ValidationStep:
    assert isinstance(report, TokenCheckReport)
    assert not report.valid
    step = report.failed_step
    assert step is not None, report
    assert step.name == step_name, (step.name, step.message)
    assert report.error == step.message
    assert not report.error.startswith("unexpected error")
    return step


# --------------------------------------------------------------------------- algorithms


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_tokens_are_refused_offline(
    server: JWKSServer, client: httpx.Client, alg: str
) -> None:
    issuer = server.set_issuer("/issuer", jwks=f.jwks(f.rsa_key()))
    unsigned = f.unsigned(f.claims(issuer), alg=alg)
    _failed(_checker(client, issuer).check(unsigned), "decode_structure")
    forged = unsigned + b64(b"sig")
    step = _failed(_checker(client, issuer).check(forged), "decode_structure")
    assert "never accepted" in step.message
    assert server.count() == 0


def test_algorithm_confusion_hs256_with_the_rsa_public_key(
    server: JWKSServer, client: httpx.Client
) -> None:
    """The classic attack: HMAC keyed with the public key PEM. It must be reported, not raise."""
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    for secret in (key.public_pem, key.public_pem.strip(), json.dumps(key.public_jwk).encode()):
        token = f.hs256(f.claims(issuer), secret, header={"kid": key.kid})
        step = _failed(_checker(client, issuer).check(token), "decode_structure")
        assert "algorithm confusion" in step.message
        assert step.details["alg"] == "HS256"
    assert server.count() == 0


def test_hmac_cannot_be_allowed(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    checker = _checker(client, issuer, allowed_algorithms=frozenset({"HS256", "RS256", "none"}))
    assert checker.allowed_algorithms == frozenset({"RS256"})
    _failed(checker.check(f.hs256(f.claims(issuer), key.public_pem)), "decode_structure")


def test_allow_list_is_enforced(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key(alg="PS256")
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    checker = _checker(client, issuer, allowed_algorithms=frozenset({"RS256"}))
    step = _failed(checker.check(key.sign(f.claims(issuer))), "decode_structure")
    assert "not allowed" in step.message
    assert server.count() == 0


def test_id_token_alg_must_be_advertised_by_the_issuer(
    server: JWKSServer, client: httpx.Client
) -> None:
    key = f.rsa_key(alg="PS256")
    issuer = server.set_issuer(
        "/issuer", jwks=f.jwks(key), extra={"id_token_signing_alg_values_supported": ["RS256"]}
    )
    token = key.sign(f.claims(issuer))
    step = _failed(_checker(client, issuer).check(token), "verify_signature")
    assert "id_token_signing_alg_values_supported" in step.message
    # The issuer's ID-token list does not govern access tokens.
    report = TokenChecker(client, expected_issuer=issuer).check(token, token_type="access_token")
    assert report.valid, report.error


@pytest.mark.parametrize(
    ("signer", "jwks_key"),
    [
        (lambda: f.ec_key(kid="k"), lambda: f.rsa_key(kid="k")),
        (lambda: f.rsa_key(kid="k"), lambda: f.ec_key(kid="k")),
        (lambda: f.ec_key(kid="k"), lambda: f.ec_key("P-384", kid="k")),
        (lambda: f.ed25519_key(kid="k"), lambda: f.ec_key(kid="k")),
    ],
)
def test_key_type_must_match_the_algorithm(
    server: JWKSServer, client: httpx.Client, signer: Any, jwks_key: Any
) -> None:
    issuer = server.set_issuer("/issuer", jwks=f.jwks(jwks_key()))
    step = _failed(
        _checker(client, issuer).check(signer().sign(f.claims(issuer))), "extract_public_key"
    )
    assert "no key in the JWKS can verify" in step.message


def test_weak_rsa_keys_are_refused(server: JWKSServer, client: httpx.Client) -> None:
    weak = f.rsa_key(1024, kid="weak")
    issuer = server.set_issuer("/issuer", jwks=f.jwks(weak))
    step = _failed(_checker(client, issuer).check(weak.sign(f.claims(issuer))), "fetch_jwks")
    assert "too weak" in step.message


def test_weak_rsa_key_beside_good_keys_is_skipped(server: JWKSServer, client: httpx.Client) -> None:
    weak, good = f.rsa_key(1024, kid="weak"), f.rsa_key(kid="good")
    issuer = server.set_issuer("/issuer", jwks=f.jwks(weak, good))
    checker = _checker(client, issuer)
    report = checker.check(weak.sign(f.claims(issuer)))
    _failed(report, "extract_public_key")
    assert "too weak" in report.steps[2].details["skipped"][0]["reason"]
    assert checker.check(good.sign(f.claims(issuer))).valid


# --------------------------------------------------------------------------- key headers


def test_jku_and_x5u_are_never_followed(server: JWKSServer, client: httpx.Client) -> None:
    real, attacker = f.rsa_key(kid="real"), f.rsa_key(kid="evil", slot=3)
    issuer = server.set_issuer("/issuer", jwks=f.jwks(real))
    server.set_json("/attacker/jwks", f.jwks(attacker))
    server.set_json("/attacker/cert", {"x5c": attacker.x5c})
    header = {"jku": server.url("/attacker/jwks"), "x5u": server.url("/attacker/cert")}
    token = attacker.sign(f.claims(issuer), header=header)
    report = _checker(client, issuer).check(token)
    _failed(report, "extract_public_key")
    assert report.steps[0].details["ignored_headers"] == ["jku", "x5u"]
    assert "ignored" in report.steps[0].message
    assert server.count("/attacker/jwks") == 0
    assert server.count("/attacker/cert") == 0


def test_embedded_jwk_and_x5c_are_never_trusted(server: JWKSServer, client: httpx.Client) -> None:
    real, attacker = f.rsa_key(kid="real"), f.rsa_key(kid="real", slot=3)
    issuer = server.set_issuer("/issuer", jwks=f.jwks(real))
    header = {"jwk": attacker.public_jwk, "x5c": f.self_signed_x5c(attacker)}
    report = _checker(client, issuer).check(attacker.sign(f.claims(issuer), header=header))
    step = _failed(report, "verify_signature")
    assert "invalid" in step.message
    assert report.key_fingerprint == real.spki_sha256


def test_unknown_critical_header_fails(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    token = key.sign(f.claims(issuer), header={"crit": ["http://example.com/ext"]})
    assert "crit" in _failed(_checker(client, issuer).check(token), "decode_structure").message
    assert server.count() == 0


# --------------------------------------------------------------------------- issuer trust


def test_pinned_issuer_is_compared_before_any_request(
    server: JWKSServer, client: httpx.Client
) -> None:
    attacker = f.rsa_key(kid="evil", slot=3)
    evil_issuer = server.set_issuer("/evil", jwks=f.jwks(attacker))
    pinned = server.url("/issuer")
    report = _checker(client, pinned).check(attacker.sign(f.claims(evil_issuer)))
    step = _failed(report, "discover_issuer")
    assert "nothing was fetched" in step.message
    assert report.issuer_match is False
    assert server.count() == 0


def test_missing_iss_with_pinned_issuer(server: JWKSServer, client: httpx.Client) -> None:
    report = _checker(client, server.url("/issuer")).check(
        f.rsa_key().sign(f.claims("x", iss=None))
    )
    _failed(report, "discover_issuer")
    assert server.count() == 0


def test_unpinned_issuer_is_reported(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    report = TokenChecker(client, allow_loopback_issuer=True).check(key.sign(f.claims(issuer)))
    assert report.valid, report.error
    step = report.steps[1]
    assert step.details["issuer_pinned"] is False
    assert "issuer not pinned" in step.message
    assert report.issuer_match is None
    assert report.steps[-1].details["issuer_pinned"] is False


@pytest.mark.parametrize(
    "iss",
    [
        "http://idp.example.com",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "https://user:pw@idp.example.com",
        "",
        None,
        42,
    ],
)
def test_unpinned_issuer_must_be_https(client: httpx.Client, iss: Any) -> None:
    token = f.rsa_key().sign(f.claims("x", iss=iss) if iss is not None else f.claims("x", iss=None))
    for loopback in (False, True):
        checker = TokenChecker(client, retry=NO_RETRY, allow_loopback_issuer=loopback)
        _failed(checker.check(token), "discover_issuer")


def test_unpinned_discovery_cannot_point_jwks_elsewhere(
    server: JWKSServer, client: httpx.Client
) -> None:
    for jwks_uri in ("http://keys.example.com/jwks", "https://keys.example.com/jwks"):
        issuer = server.set_issuer("/issuer", extra={"jwks_uri": jwks_uri})
        checker = TokenChecker(client, allow_loopback_issuer=True)
        step = _failed(checker.check(f.rsa_key().sign(f.claims(issuer))), "discover_issuer")
        assert "not on the origin of the issuer" in step.message


def test_unpinned_token_cannot_make_the_checker_call_local_services(
    server: JWKSServer, client: httpx.Client
) -> None:
    """Security #15: a crafted token chose a loopback URL, path and query to GET."""
    with running_server() as victim:
        target = victim.url("/admin/rotate-keys?all=1")
        issuer = server.set_issuer("/issuer", extra={"jwks_uri": target})
        token = f.rsa_key().sign(f.claims(issuer))
        step = _failed(TokenChecker(client).check(token), "discover_issuer")
        assert "loopback" in step.message
        assert server.count() == 0  # not even the discovery document: refused offline
        # opted in (a development IdP on this machine): still only the issuer's own origin
        opted_in = TokenChecker(client, allow_loopback_issuer=True)
        step = _failed(opted_in.check(token), "discover_issuer")
        assert "not on the origin of the issuer" in step.message
        # an issuer with a query is refused before anything is fetched
        for iss in (target, "https://idp.example.com/realm?x=1"):
            step = _failed(opted_in.check(f.rsa_key().sign(f.claims(iss))), "discover_issuer")
            assert "must not contain a query" in step.message
        assert victim.count() == 0


def test_discovery_issuer_must_equal_token_issuer(server: JWKSServer, client: httpx.Client) -> None:
    """Mix-up: the token names issuer A, whose discovery document claims to be issuer B."""
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key), extra={"issuer": "https://b.example"})
    for checker in (TokenChecker(client, allow_loopback_issuer=True), _checker(client, issuer)):
        step = _failed(checker.check(key.sign(f.claims(issuer))), "discover_issuer")
        assert "must be identical" in step.message


# --------------------------------------------------------------------------- keys and kids


def test_unknown_kid_triggers_one_refetch_with_cooldown(
    server: JWKSServer, client: httpx.Client
) -> None:
    clock = [0.0]
    cache = MetadataCache(clock=lambda: clock[0])
    old, new = f.rsa_key(kid="old"), f.rsa_key(kid="new", slot=1)
    issuer = server.set_issuer("/issuer", jwks=f.jwks(old))
    checker = _checker(client, issuer, cache=cache)
    assert checker.check(old.sign(f.claims(issuer))).valid
    clock[0] += 31
    server.set_json(JWKS, f.jwks(old, new))  # the IdP rotates its keys
    report = checker.check(new.sign(f.claims(issuer)))
    assert report.valid, report.error
    assert report.steps[3].details["jwks_refetched"] is True
    assert server.count(JWKS) == 2
    for n in range(25):  # a flood of forged kids within the cooldown: no request
        forged = f.rsa_key(kid=f"forged-{n}", slot=3)
        _failed(checker.check(forged.sign(f.claims(issuer))), "extract_public_key")
    assert server.count(JWKS) == 2  # the rotation re-fetch started the cooldown
    clock[0] += 31
    _failed(
        checker.check(f.rsa_key(kid="late", slot=3).sign(f.claims(issuer))), "extract_public_key"
    )
    assert server.count(JWKS) == 3


def test_no_kid_tries_only_keys_of_the_right_type(server: JWKSServer, client: httpx.Client) -> None:
    rsa_a, rsa_b = f.rsa_key(kid="a"), f.rsa_key(kid="b", slot=1)
    ec, ed = f.ec_key(kid="e"), f.ed25519_key(kid="d")
    issuer = server.set_issuer("/issuer", jwks=f.jwks(ec, rsa_a, ed, rsa_b))
    report = _checker(client, issuer).check(rsa_b.sign(f.claims(issuer), kid=False))
    assert report.valid, report.error
    extract, verify = report.steps[3], report.steps[4]
    assert [c["kid"] for c in extract.details["candidates"]] == ["a", "b"]
    assert "2 candidate keys" in extract.message
    assert verify.details["kid"] == "b"
    assert verify.details["fingerprint"] == rsa_b.spki_sha256
    assert verify.details["candidates_tried"] == 2
    assert report.key_fingerprint == rsa_b.spki_sha256


def test_private_key_material_in_jwks_is_flagged_not_echoed(
    server: JWKSServer, client: httpx.Client
) -> None:
    key = f.rsa_key(kid="leaky")
    leaky = {**key.public_jwk, **f.private_jwk_members(key.private)}  # type: ignore[arg-type]
    secret = {"kty": "oct", "kid": "hmac", "k": b64(b"super-secret-hmac-key")}
    issuer = server.set_issuer("/issuer", jwks={"keys": [leaky, secret]})
    report = _checker(client, issuer).check(key.sign(f.claims(issuer)))
    assert report.valid, report.error
    assert report.steps[2].details["private_key_material_published"] == ["leaky"]
    dumped = json.dumps(report.to_dict())
    assert leaky["d"] not in dumped
    assert secret["k"] not in dumped


# --------------------------------------------------------------------------- claims


def test_missing_exp_fails(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    for token_type in ("id_token", "access_token"):
        report = _checker(client, issuer).check(
            key.sign(f.claims(issuer, exp=None)), token_type=token_type
        )
        assert _failed(report, "validate_claims").details == {"claim": "exp"}


@pytest.mark.parametrize("exp", ["9999999999", True, None, [1], {"t": 1}, 1e400])
def test_wrongly_typed_exp_fails(server: JWKSServer, client: httpx.Client, exp: Any) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    claims = f.claims(issuer)
    claims["exp"] = exp
    header = b64json({"alg": "RS256", "kid": key.kid})
    body = b64(json.dumps(claims).replace("Infinity", "1e400").encode())
    sig = f.raw_signature(key.private, "RS256", f"{header}.{body}".encode())
    report = _checker(client, issuer).check(f"{header}.{body}.{b64(sig)}")
    step = report.failed_step
    assert step is not None and step.name in ("decode_structure", "validate_claims")
    assert not report.valid


def test_duplicate_claims_are_refused(server: JWKSServer, client: httpx.Client) -> None:
    """A parser differential: which 'sub' would the application read?"""
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    header = b64json({"alg": "RS256", "kid": key.kid})
    claims = json.dumps(f.claims(issuer))[:-1] + ', "sub": "admin"}'
    body = b64(claims.encode())
    sig = f.raw_signature(key.private, "RS256", f"{header}.{body}".encode())
    step = _failed(
        _checker(client, issuer).check(f"{header}.{body}.{b64(sig)}"), "decode_structure"
    )
    assert "duplicate" in step.message


def test_access_token_presented_as_id_token(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    token = key.sign(f.claims(issuer), header={"typ": "at+jwt"})
    _failed(_checker(client, issuer).check(token), "decode_structure")


# --------------------------------------------------------------------------- garbage in


def _b64_raw(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "..",
        "a.b.c",
        "eyJ.eyJ.eyJ",
        "eyJhbGciOiJSUzI1NiJ9.e30=.AAAA",
        f"{_b64_raw(b'{not json')}.{b64json({})}.AAAA",
        f"{b64json([1, 2])}.{b64json({})}.AAAA",
        f"{b64json({'alg': 'RS256'})}.{_b64_raw(b'null')}.AAAA",
        f"{b64json({'alg': ['RS256']})}.{b64json({})}.AAAA",
        f"{b64json({'alg': 'RS256', 'kid': {'x': 1}})}.{b64json({})}.AAAA",
        f"{b64json({'alg': 'RS256', 'pad': 'x' * 5000})}.{b64json({})}.AAAA",
        f"{b64json({'alg': 'RS256'})}.{b64json({'x': 'y' * 70000})}.AAAA",
        "x" * 100_000,
        "\x00\x01\x02",
        "😀.😀.😀",
    ],
)
def test_garbage_is_reported_not_raised(client: httpx.Client, token: str) -> None:
    report = _checker(client, "https://idp.example.com").check(token)
    _failed(report, "decode_structure")


@pytest.mark.parametrize("token", [None, 123, b"a.b.c", ["a", "b"]])
def test_non_string_tokens_are_reported(client: httpx.Client, token: Any) -> None:
    _failed(_checker(client, None).check(token), "decode_structure")


def test_oversized_jwks_is_refused(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer")
    server.set_json(JWKS, {"keys": [key.public_jwk], "pad": "x" * (1024 * 1024 + 10)})
    step = _failed(_checker(client, issuer).check(key.sign(f.claims(issuer))), "fetch_jwks")
    assert "too large" in step.message


# --------------------------------------------------------------------------- fuzzing

_ALPHABET = string.ascii_letters + string.digits + "-_.=+/ \n"


@pytest.fixture(scope="module")
def fuzz_env() -> Iterator[tuple[TokenChecker, str, list[str]]]:
    """A pinned, warm checker and a few valid tokens to mutate (own server: module scope)."""
    with running_server() as srv, loopback_http.client(timeout=5.0) as c:
        keys = [f.rsa_key(kid="r"), f.ec_key(kid="e"), f.ed25519_key(kid="d")]
        issuer = srv.set_issuer("/issuer", jwks=f.jwks(*keys))
        checker = _checker(c, issuer, cache=MetadataCache(jwks_refetch_cooldown=3600))
        tokens = [k.sign(f.claims(issuer)) for k in keys]
        assert all(checker.check(t).valid for t in tokens)
        yield checker, issuer, tokens


def _assert_reported(report: Any) -> None:
    assert isinstance(report, TokenCheckReport)
    assert report.steps
    if not report.valid:
        assert report.error
        assert not report.error.startswith("unexpected error"), report.error


def _fuzz(count: int) -> Any:
    return settings(
        max_examples=examples(count),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# Example counts: almost all of a fuzz test's time is Hypothesis drawing the inputs (cProfile
# of test_fuzz_structured_json at 3,000 examples: 0.33 s of 110 s in TokenChecker.check). The
# counts are what the checker's branch coverage needs, measured with coverage.py (branch arcs
# of src/kstlib reached by this file, "ci" profile): the structured and mutated fuzzers at
# 1,000 examples (were 3,000) and the validly-signed one at 750 (was 1,500), with the
# @example cases, reach every arc the former counts reached, and five more. The cases that
# only a high count met, by chance (a five-segment JWE, an expired validly-signed token, a
# NumericDate that is a float, an iat that is not a number), are pinned with @example so
# every run meets them. Then the structured fuzzer at 500 with one more @example (a header
# naming a key by x5c): the 2171 arcs test_fuzz_structured_json reached alone at 1,000, the
# same set (500 alone lost 10: the ignored-key-header message, an uncached header). And the
# validly-signed fuzzer at 375 with two more @example (an audience without the client, a
# token expired in 1970): its 2181 arcs at 750, the same set (375 alone lost 3). The mutated
# fuzzer reaches its 2257 arcs at 500 as at 1,000; the random-text one at 1,500 with three
# more @example (an empty payload, a non-base64url character, a header that is not JSON)
# reaches the 2155 of 3,000 and 8 more.


@_fuzz(1500)
@example(token="a.b.c.d.e")  # five segments: a JWE, refused as such
@example(token="a..c")  # an empty payload
@example(token="a!.b.c")  # a character outside base64url, found by the per-segment check
@example(token="YQ.e30.c2ln")  # well-formed base64url whose header is not JSON
@given(token=st.one_of(st.text(max_size=300), st.text(alphabet=_ALPHABET, max_size=600)))
def test_fuzz_random_text(fuzz_env: tuple[TokenChecker, str, list[str]], token: str) -> None:
    _assert_reported(fuzz_env[0].check(token))


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_claim_names = st.sampled_from(["iss", "aud", "exp", "iat", "nbf", "sub", "azp", "nonce", "x"])
_header_names = st.sampled_from(["alg", "kid", "typ", "crit", "jku", "jwk", "x5c", "b64", "enc"])


@_fuzz(500)
@given(
    header=st.dictionaries(
        _header_names,
        _json_values | st.sampled_from(["RS256", "ES256", "EdDSA", "none", "HS256", "r", "e", "d"]),
        max_size=5,
    ),
    payload=st.dictionaries(_claim_names, _json_values, max_size=8),
    signature=st.binary(max_size=300),
)
# a well-formed header naming a key by x5c (ignored: keys come only from the JWKS; a list
# value, so the header is not cached)
@example(header={"alg": "RS256", "kid": "r", "x5c": ["MIIB"]}, payload={"sub": "u"}, signature=b"s")
def test_fuzz_structured_json(
    fuzz_env: tuple[TokenChecker, str, list[str]],
    header: dict[str, Any],
    payload: dict[str, Any],
    signature: bytes,
) -> None:
    token = f"{b64json(header)}.{b64json(payload)}.{b64(signature)}"
    _assert_reported(fuzz_env[0].check(token))


@_fuzz(500)
@given(
    which=st.integers(min_value=0, max_value=2),
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.sampled_from(["replace", "delete", "insert"]),
            st.sampled_from(_ALPHABET),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_mutated_valid_tokens(
    fuzz_env: tuple[TokenChecker, str, list[str]],
    which: int,
    edits: list[tuple[int, str, str]],
) -> None:
    chars = list(fuzz_env[2][which])
    for position, action, char in edits:
        index = position % (len(chars) + 1)
        if action == "insert":
            chars.insert(index, char)
        elif chars and action == "delete":
            del chars[index % len(chars)]
        elif chars:
            chars[index % len(chars)] = char
    _assert_reported(fuzz_env[0].check("".join(chars)))


@_fuzz(375)
@example(claims={"aud": "my-app", "exp": 1.5}, keep_issuer=True)  # expired, a float exp
# with every claim an ID token needs: an audience without the client; expired in 1970
@example(claims={"aud": "other", "sub": "u", "exp": 2**60, "iat": 0}, keep_issuer=True)
@example(claims={"aud": "my-app", "sub": "u", "exp": 1, "iat": 0}, keep_issuer=True)
@example(claims={"aud": "my-app", "exp": -1e300}, keep_issuer=True)  # expired before year 1
# past the sub and exp checks: an iat that is not a number, an iat and an nbf in the future
@example(claims={"aud": "my-app", "sub": "u", "exp": 2**60, "iat": "x"}, keep_issuer=True)
@example(claims={"aud": "my-app", "sub": "u", "exp": 2**60, "iat": 1e300}, keep_issuer=True)
@example(claims={"aud": "my-app", "sub": "u", "exp": 2**60, "nbf": 1e300}, keep_issuer=True)
@given(
    claims=st.fixed_dictionaries(
        {},
        optional={
            "iss": _json_values,
            "aud": _json_values | st.just("my-app") | st.just(["my-app", "x"]),
            "exp": _json_values,
            "iat": _json_values,
            "nbf": _json_values,
            "sub": _json_values,
            "azp": _json_values,
        },
    ),
    keep_issuer=st.booleans(),
)
def test_fuzz_validly_signed_hostile_claims(
    fuzz_env: tuple[TokenChecker, str, list[str]], claims: dict[str, Any], keep_issuer: bool
) -> None:
    """Correct signatures over hostile claim values exercise the claim checks."""
    checker, issuer, _ = fuzz_env
    if keep_issuer:
        claims["iss"] = issuer
    key = f.ec_key(kid="e")
    report = checker.check(key.sign(claims))
    _assert_reported(report)
    if report.valid:
        exp = claims["exp"]
        assert isinstance(exp, int | float) and not isinstance(exp, bool)
