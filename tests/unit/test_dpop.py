"""DPoP (RFC 9449) building blocks: the key, its proofs, nonces, challenges, the binding check,
and how the key rests in the Token model (stored, never shown)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import pickle
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from kstlib._redaction import REDACTED, redact_mapping
from kstlib.auth import DPoPBindingError, DPoPError, DPoPNonceError, TokenRefreshError
from kstlib.auth._dpop import (
    DPOP_ALGORITHMS,
    MAX_NONCE_ORIGINS,
    DPoPKey,
    NonceBook,
    access_token_jkt,
    check_binding,
    htu_of,
    is_nonce_challenge,
    new_jti,
    origin_of,
    valid_nonce,
)
from kstlib.auth._jose import decode_jws, parse_jwk, verify_signature
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import ConfigurationError, TokenValidationError
from kstlib.auth.models import Token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _parts(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = proof.split(".")
    return json.loads(_unb64(header)), json.loads(_unb64(payload))


@pytest.fixture(scope="module")
def es256() -> DPoPKey:
    return DPoPKey.generate()


# ------------------------------------------------------------------ proofs


def test_proof_header_is_dpop_jwt_with_the_public_key_only(es256: DPoPKey) -> None:
    header, _ = _parts(es256.proof("GET", "https://api.example/x"))
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == "ES256"
    assert set(header) == {"typ", "alg", "jwk"}
    assert header["jwk"] == es256.public_jwk
    assert "d" not in header["jwk"]
    assert header["jwk"]["kty"] == "EC" and header["jwk"]["crv"] == "P-256"


def test_proof_claims_htm_htu_iat_jti(es256: DPoPKey) -> None:
    before = int(time.time())
    _, claims = _parts(es256.proof("POST", "https://AS.example:8443/token?x=1&y=2#frag"))
    after = int(time.time())
    assert claims["htm"] == "POST"
    assert claims["htu"] == "https://AS.example:8443/token"  # no query, no fragment
    assert before <= claims["iat"] <= after
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert "ath" not in claims and "nonce" not in claims


def test_proof_ath_and_nonce(es256: DPoPKey) -> None:
    token = "an-access-token.value"
    _, claims = _parts(es256.proof("GET", "https://rs/x", access_token=token, nonce="n-1"))
    assert claims["ath"] == _b64(hashlib.sha256(token.encode()).digest())
    assert claims["nonce"] == "n-1"


def test_every_proof_has_its_own_jti(es256: DPoPKey) -> None:
    # more proofs than one batch of pre-drawn jti values, so a refill happens in between
    jtis = {_parts(es256.proof("GET", "https://rs/x"))[1]["jti"] for _ in range(300)}
    assert len(jtis) == 300
    for jti in jtis:  # 144 random bits each (RFC 9449 4.2 asks for 96 at least)
        assert len(_unb64(jti)) == 18 and _b64(_unb64(jti)) == jti


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_process_never_reuses_its_parents_jti() -> None:
    new_jti()  # the parent now holds a batch of drawn values
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first jti, then exit without running pytest's teardown
        try:
            os.write(write_end, new_jti().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        child = os.read(read_end, 64).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert len(child) == 24
    assert child != new_jti()  # without the at-fork reset both would pop the same value


def test_es256_signature_verifies_with_cryptography_directly(es256: DPoPKey) -> None:
    proof = es256.proof("GET", "https://rs/x", access_token="t")
    header_seg, payload_seg, sig_seg = proof.split(".")
    jwk = _parts(proof)[0]["jwk"]
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(_unb64(jwk["x"]), "big"),
        int.from_bytes(_unb64(jwk["y"]), "big"),
        ec.SECP256R1(),
    ).public_key()
    raw = _unb64(sig_seg)
    assert len(raw) == 64  # JWS ES256: raw r || s, not DER
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{header_seg}.{payload_seg}".encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(der, f"{header_seg}.{payload_seg}x".encode(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("alg", DPOP_ALGORITHMS)
def test_every_algorithm_signs_a_verifiable_proof(alg: str) -> None:
    key = DPoPKey.generate(alg)
    proof = key.proof("DELETE", "https://rs/items/1")
    jws = decode_jws(proof)
    assert jws.header["alg"] == alg
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(jws.header["jwk"])
    verify_signature(jws, parse_jwk(jws.header["jwk"]))


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="not supported"):
        DPoPKey.generate("HS256")


def test_thumbprint_is_rfc7638(es256: DPoPKey) -> None:
    jwk = es256.public_jwk
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}, separators=(",", ":")
    )
    assert es256.thumbprint == _b64(hashlib.sha256(canonical.encode()).digest())


def test_htu_and_origin() -> None:
    assert htu_of("https://h/p/a?b=1#c") == "https://h/p/a"
    assert origin_of("HTTPS://Host.Example:443/x?y") == "https://host.example"
    assert origin_of("http://127.0.0.1:8080/a") == "http://127.0.0.1:8080"
    assert origin_of("https://user@h:8443/") == "https://h:8443"


# ------------------------------------------------------------------ the key at rest


def test_key_round_trips_and_repr_hides_the_private_part(es256: DPoPKey) -> None:
    stored = es256.to_dict()
    private_d = stored["jwk"]["d"]
    again = DPoPKey.from_dict(json.loads(json.dumps(stored)))
    assert again == es256 and again.thumbprint == es256.thumbprint
    _, claims = _parts(again.proof("GET", "https://rs/"))
    assert claims["htm"] == "GET"
    for shown in (repr(es256), str(es256)):
        assert private_d not in shown
        assert es256.thumbprint[:8] in shown
    with pytest.raises(TypeError):
        pickle.dumps(es256)
    token = Token(access_token="at", token_type="DPoP", dpop_key=es256)
    assert copy.deepcopy(token).dpop_key is es256 and copy.copy(token) == token


@pytest.mark.parametrize(
    "stored",
    [
        "not an object",
        {"alg": "ES256"},
        {"alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA", "d": "x"}},
        {"alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}},  # public
    ],
)
def test_malformed_stored_key_is_a_validation_error(stored: Any) -> None:
    data = Token(access_token="at", token_type="DPoP").to_dict()
    data["dpop_key"] = stored
    with pytest.raises(TokenValidationError) as info:
        Token.from_dict(data)
    assert info.value.claim == "dpop_key"


def test_a_stored_key_that_cannot_sign_is_a_typed_error(es256: DPoPKey) -> None:
    stored = es256.to_dict()
    stored["jwk"]["d"] = DPoPKey.generate().to_dict()["jwk"]["d"]  # not this public key's
    broken = DPoPKey.from_dict(stored)
    with pytest.raises(DPoPError) as info:
        broken.proof("GET", "https://rs/")
    assert info.value.reason == "unusable key"
    assert stored["jwk"]["d"] not in str(info.value)


def test_token_stores_the_key_but_never_shows_it(es256: DPoPKey) -> None:
    token = Token(
        access_token="at-secret-value",
        token_type="DPoP",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        dpop_key=es256,
    )
    private_d = es256.to_dict()["jwk"]["d"]
    document = token.to_dict()
    assert document["dpop_key"]["jwk"]["d"] == private_d
    restored = Token.from_dict(json.loads(json.dumps(document)))
    assert restored.dpop_key == es256
    for shown in (repr(token), str(token), repr(restored)):
        assert private_d not in shown
        assert "at-secret-value" not in shown
        assert "DPoPKey(alg='ES256'" in shown
    redacted = redact_mapping(document)
    assert redacted["dpop_key"] == REDACTED
    assert private_d not in json.dumps(redacted)


def test_unbound_token_document_is_unchanged() -> None:
    assert "dpop_key" not in Token(access_token="at").to_dict()
    assert "dpop_key" not in repr(Token(access_token="at"))


# ------------------------------------------------------------------ nonces and challenges


@pytest.mark.parametrize("nonce", ["abc", "eyJ7S_zG.eyJH0-Z.HX4w-7v", "!#[]~", "x" * 512])
def test_valid_nonces(nonce: str) -> None:
    assert valid_nonce(nonce)


@pytest.mark.parametrize(
    "nonce", [None, "", "a b", 'a"b', "a\\b", "é", "a\nb", "x" * 513, "a\x7fb"]
)
def test_malformed_nonces(nonce: str | None) -> None:
    assert not valid_nonce(nonce)


def test_nonce_book_is_per_origin_and_bounded() -> None:
    book = NonceBook()
    assert book.record("https://as.example/token", "n1")
    assert book.get("https://as.example/other?x") == "n1"
    assert book.get("https://rs.example/") is None
    assert not book.record("https://as.example/token", "bad nonce")
    assert book.get("https://as.example/") == "n1"  # a malformed nonce is never kept
    for i in range(MAX_NONCE_ORIGINS + 10):
        book.record(f"https://h{i}.example/", f"n{i}")
    assert book.get("https://as.example/") is None  # the oldest origins were dropped
    assert book.get(f"https://h{MAX_NONCE_ORIGINS + 9}.example/") == f"n{MAX_NONCE_ORIGINS + 9}"
    assert len(book._nonces) == MAX_NONCE_ORIGINS


def test_nonce_challenge_with_a_malformed_nonce_is_a_typed_error() -> None:
    book = NonceBook()
    with pytest.raises(DPoPNonceError) as info:
        book.take_challenge("https://as.example/t", "bad nonce", provider="p", where="X")
    assert info.value.reason == "malformed nonce"
    assert info.value.origin == "https://as.example"
    with pytest.raises(DPoPNonceError, match="no DPoP-Nonce") as info:
        book.take_challenge("https://as.example/t", None, provider="p", where="X")
    assert info.value.reason == "missing nonce"
    assert book.get("https://as.example/") is None


@pytest.mark.parametrize(
    ("status", "values", "expected"),
    [
        (401, ['DPoP error="use_dpop_nonce", error_description="x"'], True),
        (401, ['DPoP algs="ES256 PS256", error="use_dpop_nonce"'], True),
        (401, ['Bearer realm="x"', 'dpop error="use_dpop_nonce"'], True),
        (401, ['Bearer realm="x", DPoP error=use_dpop_nonce'], True),
        (401, ['DPoP error="invalid_token"'], False),
        (401, ['Bearer error="use_dpop_nonce"'], False),
        (400, ['DPoP error="use_dpop_nonce"'], False),
        (401, [], False),
        (401, ['DPoPx error="use_dpop_nonce"'], False),
        (401, ['DPoP error="use_dpop_nonce_not"'], False),
    ],
)
def test_resource_nonce_challenge(status: int, values: list[str], expected: bool) -> None:
    assert is_nonce_challenge(status, values) is expected


def test_a_hostile_challenge_header_is_read_in_linear_time() -> None:
    """Many schemes and spaces (a backtracking regex would take minutes): a quick False."""
    value = "DPoP " * 20_000 + "x"
    assert not is_nonce_challenge(401, [value, "DPoP ,,, " * 10_000])
    assert is_nonce_challenge(401, ['Bearer realm="x"', "DPoP " + 'error="use_dpop_nonce"'])


# ------------------------------------------------------------------ the binding check


def _jwt(payload: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "at+jwt"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}.c2ln"


def test_binding_check(es256: DPoPKey) -> None:
    check_binding("DPoP", "opaque-token", es256, provider="p")
    check_binding("DPoP", _jwt({"cnf": {"jkt": es256.thumbprint}}), es256, provider="p")
    with pytest.raises(DPoPBindingError) as info:
        check_binding("Bearer", "opaque-token", es256, provider="p")
    assert info.value.reason == "not bound"
    with pytest.raises(DPoPBindingError) as info:
        check_binding("DPoP", _jwt({"sub": "x"}), es256, provider="p")
    assert info.value.reason == "no cnf.jkt"
    with pytest.raises(DPoPBindingError) as info:
        check_binding("DPoP", _jwt({"cnf": {"jkt": "another"}}), es256, provider="p")
    assert info.value.reason == "jkt mismatch"


def test_access_token_jkt_reads_only_jwts() -> None:
    assert access_token_jkt("opaque") == (False, None)
    assert access_token_jkt("eyJ.not-base64!.x") == (False, None)
    assert access_token_jkt(_jwt({"cnf": {"jkt": "k"}})) == (True, "k")
    assert access_token_jkt(_jwt({"cnf": "k"})) == (True, None)


def test_dpop_errors_are_refresh_and_exchange_failures() -> None:
    error = DPoPNonceError("m", reason="nonce loop", origin="https://x")
    assert isinstance(error, DPoPError)
    assert isinstance(error, TokenRefreshError)
    assert error.retryable is False and error.reason == "nonce loop"


# ------------------------------------------------------------------ configuration


def test_config_dpop_settings() -> None:
    base = {"client_id": "c", "issuer": "https://idp.example"}
    config = AuthProviderConfig(**base)
    assert config.dpop is False and config.dpop_alg == "ES256"
    assert AuthProviderConfig(**base, dpop=True, dpop_alg="EdDSA").dpop_alg == "EdDSA"
    for bad in ("none", "HS256", "ES512", ""):
        with pytest.raises(ConfigurationError) as info:
            AuthProviderConfig(**base, dpop=True, dpop_alg=bad)
        assert info.value.key == "dpop_alg"
    with pytest.raises(ConfigurationError):
        AuthProviderConfig(**base, dpop="yes")  # type: ignore[arg-type]
