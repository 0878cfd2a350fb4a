"""The fast paths of a warm TokenChecker.check: same report as a cold check, nothing shared.

A reused checker derives per-issuer, per-JWKS and per-key data once (messages, jwks_uri
policy, the narrowed algorithm list, PEM, key labels, private snapshots of the discovery
document and JWKS) and hands out fresh copies; ``decode_jws`` caches validated headers;
``_iso`` formats integer timestamps without a datetime. These tests pin that the result
is exactly what the straightforward code produced, and that callers cannot poison it.
"""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kstlib.auth import _jose as jose
from kstlib.auth._discovery import MetadataCache
from kstlib.auth._http import RetryPolicy
from kstlib.auth._jose import JOSEError, decode_jws
from kstlib.auth.check import TokenChecker, TokenCheckReport, _iso, format_duration
from tests import jwt_factory as f
from tests.jwks_server import JWKSServer

pytestmark = pytest.mark.usefixtures("server")

NO_RETRY = RetryPolicy(max_retries=0)


def _checker(client: httpx.Client, issuer: str | None, **kw: Any) -> TokenChecker:
    kw.setdefault("retry", NO_RETRY)
    kw.setdefault("expected_audience", "my-app")
    return TokenChecker(client, expected_issuer=issuer, **kw)


def _stable(report: TokenCheckReport) -> dict[str, Any]:
    """``to_dict()`` without what depends on the second the check ran."""
    data: dict[str, Any] = json.loads(json.dumps(report.to_dict()))
    for step in data["steps"]:
        if step["name"] == "validate_claims" and step["passed"]:
            step["details"].pop("expires_in_seconds")
            step["details"].pop("expires")
            step["message"] = step["message"].split(";")[0]
    data["x509_info"].pop("currently_valid", None)
    return data


def _poison(report: TokenCheckReport) -> None:
    """Mutate every container a report hands out, at every depth."""

    def scrub(value: Any) -> None:
        if isinstance(value, dict):
            for item in list(value.values()):
                scrub(item)
            value.clear()
            value["poisoned"] = True
        elif isinstance(value, list):
            for item in list(value):
                scrub(item)
            value.clear()
            value.append("poisoned")

    for name in ("header", "payload", "discovery_data", "jwks_data", "x509_info"):
        scrub(getattr(report, name))
    for step in report.steps:
        scrub(step.details)


# --------------------------------------------------------------------------- warm == cold


def test_warm_reports_equal_cold_reports(server: JWKSServer, client: httpx.Client) -> None:
    rsa, ec = f.rsa_key(), f.ec_key()
    rsa.x5c = f.self_signed_x5c(rsa)
    issuer = server.set_issuer(
        "/issuer",
        jwks=f.jwks(rsa, ec, extra=[{"kty": "oct", "k": "c2VjcmV0"}]),
        extra={"scopes_supported": ["openid", {"nested": [1, {"deep": []}]}]},
    )
    tokens = [
        rsa.sign(f.claims(issuer)),
        ec.sign(f.claims(issuer, nbf=1, auth_time=2)),
        rsa.sign(f.claims(issuer), header={"jku": "https://evil.example", "x5c": ["AA"]}),
        rsa.sign(f.claims(issuer, aud="someone-else")),
        rsa.sign(f.claims(issuer), alg="RS384"),
        f.unsigned(f.claims(issuer)),
    ]
    warm = _checker(client, issuer)
    for token in tokens * 3:
        cold = _checker(client, issuer).check(token)
        again = warm.check(token)
        assert _stable(again) == _stable(cold)
        _poison(again)  # a caller scribbling on a report changes nothing for the next one
    assert warm.check(tokens[0]).valid


def test_warm_report_is_detached_at_every_depth(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    key.x5c = f.self_signed_x5c(key)
    issuer = server.set_issuer(
        "/issuer", jwks=f.jwks(key), extra={"claims_supported": ["sub", "email"]}
    )
    checker = _checker(client, issuer)
    token = key.sign(f.claims(issuer))
    first = checker.check(token)
    expected = _stable(first)
    handed_out = [first.discovery_data, first.jwks_data, first.steps[2].details["keys"]]
    _poison(first)
    second = checker.check(token)
    assert _stable(second) == expected
    assert second.discovery_data["claims_supported"] == ["sub", "email"]
    assert second.jwks_data == {"keys": [key.public_jwk]}
    assert second.x509_info["matches_jwk"] is True
    assert second.x509_info["currently_valid"] is True
    assert second.steps[2].details["keys"][0]["kid"] == key.kid
    assert second.steps[3].details["candidates"][0]["kid"] == key.kid
    fresh = [second.discovery_data, second.jwks_data, second.steps[2].details["keys"]]
    assert all(a is not b for a, b in zip(fresh, handed_out, strict=True))


def test_no_kid_several_keys_reports_the_key_that_verified(
    server: JWKSServer, client: httpx.Client
) -> None:
    one, two = f.rsa_key(kid=None), f.rsa_key(kid=None, slot=1)
    issuer = server.set_issuer("/issuer", jwks=f.jwks(one, two))
    checker = _checker(client, issuer)
    for _ in range(3):
        report = checker.check(two.sign(f.claims(issuer)))
        assert report.valid, report.error
        assert report.key_fingerprint == two.spki_sha256
        assert report.steps[3].message.startswith("2 candidate keys (the token has no kid)")
        assert report.steps[4].details["candidates_tried"] == 2


# ------------------------------------------------------------ derived data follows the cache


def test_derived_issuer_data_follows_a_refreshed_discovery_document(
    server: JWKSServer, client: httpx.Client
) -> None:
    clock = [0.0]
    cache = MetadataCache(clock=lambda: clock[0])
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    checker = _checker(client, issuer, cache=cache)
    token = key.sign(f.claims(issuer))
    assert checker.check(token).valid
    # the IdP stops advertising RS256 for ID tokens; once the entry expires, that counts
    server.set_issuer(
        "/issuer", jwks=f.jwks(key), extra={"id_token_signing_alg_values_supported": ["ES256"]}
    )
    assert checker.check(token).valid  # still cached
    clock[0] += 3601
    report = checker.check(token)
    assert not report.valid
    assert report.failed_step is not None and report.failed_step.name == "verify_signature"
    assert "id_token_signing_alg_values_supported ['ES256']" in report.failed_step.message
    assert report.discovery_data["id_token_signing_alg_values_supported"] == ["ES256"]
    # and a jwks_uri that became insecure is refused again, not remembered as fine
    server.set_issuer("/issuer", jwks=f.jwks(key), extra={"jwks_uri": "http://evil.example/j"})
    clock[0] += 3601
    report = checker.check(token)
    assert report.failed_step is not None and report.failed_step.name == "discover_issuer"
    assert "plain http" in report.failed_step.message
    assert report.discovery_data["jwks_uri"] == "http://evil.example/j"


def test_rotated_jwks_is_described_from_the_new_key_set(
    server: JWKSServer, client: httpx.Client
) -> None:
    clock = [0.0]
    cache = MetadataCache(clock=lambda: clock[0])
    old, new = f.rsa_key(kid="old"), f.rsa_key(kid="new", slot=1)
    issuer = server.set_issuer("/issuer", jwks=f.jwks(old))
    checker = _checker(client, issuer, cache=cache)
    assert checker.check(old.sign(f.claims(issuer))).valid
    clock[0] += 31
    server.set_json("/issuer/jwks", f.jwks(old, new))
    report = checker.check(new.sign(f.claims(issuer)))
    assert report.valid, report.error
    assert report.steps[3].details["jwks_refetched"] is True
    assert report.jwks_data == {"keys": [old.public_jwk, new.public_jwk]}
    assert report.key_fingerprint == new.spki_sha256
    warm = checker.check(new.sign(f.claims(issuer)))
    assert "jwks_refetched" not in warm.steps[3].details
    assert warm.steps[2].message == "JWKS holds 2 usable key(s)"


def test_checker_settings_changed_after_use_take_effect(
    server: JWKSServer, client: httpx.Client
) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    checker = _checker(client, issuer)
    token = key.sign(f.claims(issuer))
    assert checker.check(token).valid
    checker.allowed_algorithms = frozenset({"ES256"})
    report = checker.check(token)
    assert report.failed_step is not None and report.failed_step.name == "decode_structure"
    checker.allowed_algorithms = frozenset({"RS256"})
    assert checker.check(token).valid
    checker.expected_issuer = None  # not pinned any more: the report must say so
    checker.allow_loopback_issuer = True  # (the test issuer is on 127.0.0.1)
    report = checker.check(token)
    assert report.valid
    assert report.steps[1].details["issuer_pinned"] is False
    assert "issuer not pinned" in report.steps[1].message
    checker.expected_issuer = issuer
    report = checker.check(token)
    assert report.steps[1].details["issuer_pinned"] is True


# ------------------------------------------------------------------ decode_jws header cache


def _segment(value: Any) -> str:
    return f.b64json(value)


def test_decoded_headers_are_fresh_dicts() -> None:
    key = f.rsa_key()
    token = key.sign(f.claims("https://idp.example"))
    first = decode_jws(token)
    first.header["alg"] = "none"
    first.header["injected"] = True
    second = decode_jws(token)
    assert second.header == {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}
    assert second.header is not decode_jws(token).header


def test_nested_headers_are_not_shared() -> None:
    token = f"{_segment({'alg': 'RS256', 'jwk': {'kty': 'RSA', 'n': 'AQAB'}})}.{_segment({})}.AA"
    first = decode_jws(token)
    first.header["jwk"]["n"] = "changed"
    assert decode_jws(token).header["jwk"] == {"kty": "RSA", "n": "AQAB"}


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "RS256", "crit": ["exp"]}, "crit"),
        ({"alg": 1}, "non-empty string"),
        ({"kid": "x"}, "no 'alg'"),
        ({"alg": "RS256", "kid": 7}, "'kid' is not a string"),
    ],
)
def test_refused_headers_are_refused_every_time(header: dict[str, Any], reason: str) -> None:
    token = f"{_segment(header)}.{_segment({})}.AA"
    for _ in range(3):
        with pytest.raises(JOSEError, match=reason):
            decode_jws(token)


def test_header_cache_stays_bounded() -> None:
    payload = _segment({})
    for index in range(jose._HEADER_CACHE_MAX * 3):
        decode_jws(f"{_segment({'alg': 'RS256', 'kid': f'k{index}'})}.{payload}.AA")
        assert len(jose._HEADER_CACHE) <= jose._HEADER_CACHE_MAX
    big = _segment({"alg": "RS256", "kid": "x" * 1000})
    assert decode_jws(f"{big}.{payload}.AA").header["kid"] == "x" * 1000
    assert big.encode() not in jose._HEADER_CACHE


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"alg":"RS256","alg":"HS256"}', "duplicate JSON member 'alg'"),
        ('{"alg":"RS256"} x', "not valid UTF-8 JSON"),
        ('{"alg":"RS256"}{}', "not valid UTF-8 JSON"),
        ('{"alg":NaN}', "JSON constant NaN"),
        ('["RS256"]', "not a JSON object"),
        (" ", "not valid UTF-8 JSON"),
    ],
)
def test_strict_json_errors_are_unchanged(raw: str, reason: str) -> None:
    segment = base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()
    with pytest.raises(JOSEError, match=reason):
        decode_jws(f"{segment}.{_segment({})}.AA")
    with pytest.raises(JOSEError, match=reason):
        decode_jws(f"{_segment({'alg': 'RS256'})}.{segment}.AA")


@pytest.mark.parametrize("raw", [' {"alg":"RS256"}', '{"alg":"RS256"}\n', '\t{"alg":"RS256"} '])
def test_json_surrounded_by_whitespace_still_decodes(raw: str) -> None:
    segment = base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()
    assert decode_jws(f"{segment}.{segment}.AA").payload == {"alg": "RS256"}


# --------------------------------------------------------------------------- report formatting


def _reference_iso(timestamp: Any) -> str | None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


def test_iso_matches_datetime() -> None:
    rng = random.Random(5)
    edges: list[Any] = [0, 1, 59, 60, 3599, 3600, 86399, 86400, 951782400, 4107542399]
    edges += [253402300799, 253402300800, -1, -86401, 10**30, -(10**30), 2**63]
    edges += [0.0, 1.5, 1.9999999, -0.5, 1e300, float("nan"), True, False, None, "1", [1]]
    samples = [rng.randrange(0, 253402300800) for _ in range(20000)]
    samples += [rng.randrange(1_500_000_000, 2_100_000_000) for _ in range(20000)]
    for value in edges + samples:
        assert _iso(value) == _reference_iso(value), value


def _reference_duration(seconds: float) -> str:
    total = max(0, int(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for index, (name, size) in enumerate(units[:-1]):
        if total >= size:
            next_name, next_size = units[index + 1]
            return f"{total // size}{name} {total % size // next_size}{next_name}"
    return f"{total}s"


def test_format_duration_matches_the_reference() -> None:
    rng = random.Random(7)
    values: list[float] = [0, 0.9, 59, 60, 61, 3599, 3600, 3661, 86399, 86400, 90061, -5, 1e9]
    values += [rng.uniform(-100, 10**7) for _ in range(20000)]
    values += list(range(0, 200_000, 13))
    for value in values:
        assert format_duration(value) == _reference_duration(value), value
