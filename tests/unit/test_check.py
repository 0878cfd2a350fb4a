"""kstlib.auth.check: the six-step TokenChecker and its report (against a real local IdP stub)."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from kstlib.auth._discovery import MetadataCache
from kstlib.auth._http import RetryPolicy
from kstlib.auth.check import (
    STEP_NAMES,
    TokenChecker,
    TokenCheckReport,
    ValidationStep,
    format_duration,
)
from tests import jwt_factory as f
from tests.jwks_server import JWKSServer, Route

pytestmark = pytest.mark.usefixtures("server")

NO_RETRY = RetryPolicy(max_retries=0)


def _checker(client: httpx.Client, issuer: str | None, **kw: Any) -> TokenChecker:
    kw.setdefault("retry", NO_RETRY)
    return TokenChecker(client, expected_issuer=issuer, expected_audience="my-app", **kw)


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize(
    ("make", "alg", "key_type", "bits"),
    [
        (lambda: f.rsa_key(), "RS256", "RSA", 2048),
        (lambda: f.rsa_key(3072, alg="PS256"), "PS256", "RSA", 3072),
        (lambda: f.ec_key(), "ES256", "EC P-256", 256),
        (f.ed25519_key, "EdDSA", "OKP Ed25519", 256),
    ],
)
def test_valid_token_passes_all_six_steps(
    server: JWKSServer, client: httpx.Client, make: Any, alg: str, key_type: str, bits: int
) -> None:
    key = make()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    report = _checker(client, issuer).check(key.sign(f.claims(issuer)))
    assert report.valid, report.error
    assert [s.name for s in report.steps] == list(STEP_NAMES)
    assert all(s.passed for s in report.steps)
    assert report.error is None
    assert report.signature_algorithm == alg
    assert report.key_id == key.kid
    assert report.key_type == key_type
    assert report.key_size_bits == bits
    assert report.key_fingerprint == key.spki_sha256
    assert report.public_key_pem is not None
    assert report.public_key_pem.encode() == key.public_pem
    assert report.issuer_match is True
    assert report.audience_match is True
    assert report.discovery_url == server.url("/issuer/.well-known/openid-configuration")
    assert report.discovery_data["issuer"] == issuer
    assert report.jwks_uri == server.url("/issuer/jwks")
    assert report.jwks_data == {"keys": [key.public_jwk]}
    assert report.header["alg"] == alg
    assert report.payload["sub"] == "user-123"


def test_report_to_dict_is_json(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    key.x5c = f.self_signed_x5c(key)
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    report = _checker(client, issuer).check(key.sign(f.claims(issuer)))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["valid"] is True
    assert data["steps"][0] == {
        "name": "decode_structure",
        "passed": True,
        "message": report.steps[0].message,
        "details": report.steps[0].details,
    }
    assert data["x509_info"]["matches_jwk"] is True
    assert set(data) == set(TokenCheckReport.__dataclass_fields__)


def test_report_defaults_match_the_contract() -> None:
    report = TokenCheckReport()
    assert report.token_type == "id_token"
    assert report.valid is False
    assert report.steps == [] and report.header == {} and report.x509_info == {}
    assert report.issuer_match is None and report.audience_match is None and report.error is None
    step = ValidationStep("decode_structure", True, "ok")
    assert step.details == {}


def test_x509_info_from_x5c(server: JWKSServer, client: httpx.Client) -> None:
    key = f.ec_key()
    key.x5c = f.self_signed_x5c(key, common_name="idp-signing")
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    report = _checker(client, issuer).check(key.sign(f.claims(issuer)))
    assert report.x509_info["subject"] == "CN=idp-signing"
    assert report.x509_info["matches_jwk"] is True
    assert report.x509_info["currently_valid"] is True


def test_warm_checker_makes_no_requests(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    checker = _checker(client, issuer)
    token = key.sign(f.claims(issuer))
    assert checker.check(token).valid
    assert server.count() == 2
    for _ in range(20):
        assert checker.check(token).valid
    assert server.count() == 2


def test_checkers_have_private_caches_unless_shared(
    server: JWKSServer, client: httpx.Client
) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    token = key.sign(f.claims(issuer))
    _checker(client, issuer).check(token)
    _checker(client, issuer).check(token)
    assert server.count() == 4
    shared = MetadataCache()
    _checker(client, issuer, cache=shared).check(token)
    _checker(client, issuer, cache=shared).check(token)
    assert server.count() == 6


def test_report_is_detached_from_the_cache(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    checker = _checker(client, issuer)
    first = checker.check(key.sign(f.claims(issuer)))
    first.discovery_data["jwks_uri"] = "https://evil.example/jwks"
    first.jwks_data["keys"].clear()
    assert checker.check(key.sign(f.claims(issuer))).valid


def test_access_token_check(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    claims = {"iss": issuer, "exp": f.claims(issuer)["exp"], "scope": "read"}
    token = key.sign(claims, header={"typ": "at+jwt"})
    report = TokenChecker(client, expected_issuer=issuer).check(token, token_type="access_token")
    assert report.valid, report.error
    assert report.token_type == "access_token"
    assert report.audience_match is None
    assert "audience not checked" in report.steps[-1].message


def test_unknown_token_type_is_reported(client: httpx.Client) -> None:
    report = TokenChecker(client).check("a.b.c", token_type="refresh_token")
    assert not report.valid
    assert "unknown token type" in (report.error or "")


def test_claim_times_in_details(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    report = _checker(client, issuer).check(key.sign(f.claims(issuer, lifetime=7200, nbf=0)))
    details = report.steps[-1].details
    assert details["expires"].startswith("expires in 1h 59m") or details["expires"].startswith(
        "expires in 2h"
    )
    assert details["nbf"] == "1970-01-01T00:00:00+00:00"
    assert details["audience_checked"] is True
    assert details["issuer_pinned"] is True


def test_token_surrounding_whitespace_is_ignored(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    assert _checker(client, issuer).check("  " + key.sign(f.claims(issuer)) + "\n").valid


# --------------------------------------------------------------------------- failures


def _failed(report: TokenCheckReport) -> ValidationStep:
    assert not report.valid
    step = report.failed_step
    assert step is not None
    assert report.steps[-1] is step
    assert report.error == step.message
    return step


def test_wrong_audience(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    report = _checker(client, issuer).check(key.sign(f.claims(issuer, aud="someone-else")))
    step = _failed(report)
    assert step.name == "validate_claims"
    assert step.details == {"claim": "aud"}
    assert report.audience_match is False


def test_expired_token(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    report = _checker(client, issuer).check(key.sign(f.claims(issuer, lifetime=-3600)))
    step = _failed(report)
    assert (step.name, step.details) == ("validate_claims", {"claim": "exp"})
    assert "expired" in step.message


def test_leeway_is_configurable(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    token = key.sign(f.claims(issuer, lifetime=-30))
    assert _checker(client, issuer).check(token).valid
    assert not _checker(client, issuer, leeway=0).check(token).valid
    with pytest.raises(ValueError, match="leeway"):
        TokenChecker(client, leeway=-1)


def test_azp_must_name_the_client(server: JWKSServer, client: httpx.Client) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    checker = _checker(client, issuer)
    assert checker.check(key.sign(f.claims(issuer, aud=["my-app", "api"], azp="my-app"))).valid
    report = checker.check(key.sign(f.claims(issuer, aud=["my-app", "api"], azp="api")))
    assert _failed(report).details == {"claim": "azp"}


@pytest.mark.parametrize("missing", ["sub", "iat", "aud"])
def test_id_token_required_claims(server: JWKSServer, client: httpx.Client, missing: str) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    removed: dict[str, Any] = {missing: None}
    report = TokenChecker(client, expected_issuer=issuer).check(
        key.sign(f.claims(issuer, **removed))
    )
    assert _failed(report).details == {"claim": missing}


def test_discovery_unreachable_is_a_failed_step(client: httpx.Client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        issuer = f"http://127.0.0.1:{sock.getsockname()[1]}/issuer"
    report = _checker(client, issuer).check(f.rsa_key().sign(f.claims(issuer)))
    step = _failed(report)
    assert step.name == "discover_issuer"
    assert "cannot connect" in step.message


def test_jwks_server_error_is_a_failed_step(server: JWKSServer, client: httpx.Client) -> None:
    issuer = server.set_issuer("/issuer")
    server.set_json("/issuer/jwks", {"error": "down"}, status=500)
    report = _checker(client, issuer).check(f.rsa_key().sign(f.claims(issuer)))
    step = _failed(report)
    assert step.name == "fetch_jwks"
    assert "HTTP 500" in step.message
    assert step.details == {"status_code": 500}


def test_discovery_without_jwks_uri(server: JWKSServer, client: httpx.Client) -> None:
    issuer = server.url("/issuer")
    server.set_json("/issuer/.well-known/openid-configuration", {"issuer": issuer})
    report = _checker(client, issuer).check(f.rsa_key().sign(f.claims(issuer)))
    step = _failed(report)
    assert (step.name, step.message.endswith("has no jwks_uri")) == ("discover_issuer", True)


def test_discovery_hang_up(server: JWKSServer, client: httpx.Client) -> None:
    issuer = server.url("/issuer")
    server.set_route("/issuer/.well-known/openid-configuration", Route(hang_up=True))
    report = _checker(client, issuer).check(f.rsa_key().sign(f.claims(issuer)))
    assert _failed(report).name == "discover_issuer"


def test_unexpected_bug_becomes_a_failed_step(
    server: JWKSServer, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    checker = _checker(client, issuer)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(checker.cache, "jwks", boom)
    report = checker.check(key.sign(f.claims(issuer)))
    step = _failed(report)
    assert (step.name, step.message) == ("fetch_jwks", "unexpected error (KeyError)")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (61, "1m 1s"), (3600, "1h 0m"), (3725, "1h 2m"), (90061, "1d 1h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
