"""kstlib.auth._jose: strict compact JWS parsing, JWK parsing, verification, claims."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from kstlib.auth import _jose as jose
from kstlib.auth._jose import (
    ALLOWED_ALGORITHMS,
    JWS,
    JOSEError,
    KeySet,
    at_hash,
    b64url_decode,
    decode_jws,
    parse_jwk,
    validate_claims,
    verify_signature,
)
from tests import jwt_factory as f
from tests.jwt_factory import b64, b64json

ISS = "https://idp.example.com"

# RFC 7515 Appendix A.3 (ES256, raw R||S signature) and RFC 8037 Appendix A.4 (Ed25519).
RFC7515_A3_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}
RFC7515_A3_TOKEN = (
    "eyJhbGciOiJFUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)
RFC8037_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC8037_INPUT = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC8037_SIG = (
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)


def _token(header: dict[str, Any], payload: dict[str, Any], sig: bytes = b"\x01" * 32) -> str:
    return f"{b64json(header)}.{b64json(payload)}.{b64(sig)}"


def _raw_token(header: bytes, payload: bytes, sig: bytes = b"\x01" * 32) -> str:
    return f"{b64(header)}.{b64(payload)}.{b64(sig)}"


# --------------------------------------------------------------------------- base64url


@pytest.mark.parametrize(
    "segment",
    ["ab=", "ab==", "a+b/", "ab c", "abc\n", "a", "abcde", "ab", "AR", "AAB", "é"],
)
def test_b64url_decode_is_strict(segment: str) -> None:
    with pytest.raises(JOSEError):
        b64url_decode(segment)


@pytest.mark.parametrize(
    ("segment", "expected"),
    [("", b""), ("AQ", b"\x01"), ("AQI", b"\x01\x02"), ("-_8", b"\xfb\xff")],
)
def test_b64url_decode_accepts_canonical_input(segment: str, expected: bytes) -> None:
    assert b64url_decode(segment) == expected


def test_b64url_decode_refuses_non_strings() -> None:
    with pytest.raises(JOSEError):
        b64url_decode(b"AQ")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- decode_jws


def test_decode_jws_returns_header_payload_and_signing_input() -> None:
    key = f.rsa_key()
    token = key.sign(f.claims(ISS))
    jws = decode_jws(token)
    assert jws.alg == "RS256"
    assert jws.kid == "rsa-1"
    assert jws.payload["iss"] == ISS
    assert jws.signing_input == token.rsplit(".", 1)[0].encode()
    assert jws.signature == base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
    assert jws.ignored_key_headers == ()


def test_decode_jws_rfc7515_a3_vector() -> None:
    jws = decode_jws(RFC7515_A3_TOKEN)
    assert jws.header == {"alg": "ES256"}
    assert jws.payload == {"iss": "joe", "exp": 1300819380, "http://example.com/is_root": True}


@pytest.mark.parametrize(
    ("token", "fragment"),
    [
        ("a.b", "3 dot-separated segments"),
        ("a.b.c.d", "3 dot-separated segments"),
        ("a.b.c.d.e", "JWE"),
        ("", "3 dot-separated segments"),
        (f"{b64json({'alg': 'RS256'})}..{b64(b'x')}", "empty payload"),
        (f"{b64json({'alg': 'RS256'})}.{b64json({})}.", "unsigned"),
        (f"{b64json({'alg': 'RS256'})}.{b64json({})}.é", "non-ASCII"),
    ],
)
def test_decode_jws_refuses_bad_structure(token: str, fragment: str) -> None:
    with pytest.raises(JOSEError, match=fragment):
        decode_jws(token)


def test_decode_jws_refuses_non_string() -> None:
    with pytest.raises(JOSEError, match="string"):
        decode_jws(None)  # type: ignore[arg-type]


def test_decode_jws_refuses_oversized_token() -> None:
    payload = {"blob": "x" * (jose.MAX_TOKEN_BYTES)}
    with pytest.raises(JOSEError, match="too large"):
        decode_jws(_token({"alg": "RS256"}, payload))


def test_decode_jws_refuses_oversized_header() -> None:
    header = {"alg": "RS256", "pad": "x" * jose.MAX_HEADER_BYTES}
    with pytest.raises(JOSEError, match="header is too large"):
        decode_jws(_token(header, {}))


@pytest.mark.parametrize(
    ("header", "payload", "fragment"),
    [
        (b"not json", b"{}", "header is not valid UTF-8 JSON"),
        (b"[1,2]", b"{}", "header is not a JSON object"),
        (b'{"alg":"RS256"}', b"[]", "payload is not a JSON object"),
        (b'{"alg":"RS256"}', b'"text"', "payload is not a JSON object"),
        (b'{"alg":"RS256"}', b"\xff\xfe{}", "payload is not valid UTF-8 JSON"),
        (b'{"alg":"RS256","alg":"none"}', b"{}", "duplicate JSON member 'alg'"),
        (b'{"alg":"RS256"}', b'{"sub":"a","sub":"b"}', "duplicate JSON member 'sub'"),
        (b'{"alg":"RS256"}', b'{"a":{"b":1,"b":2}}', "duplicate"),
        (b'{"alg":"RS256"}', b'{"exp":NaN}', "NaN"),
        (b'{"alg":"RS256"}', b'{"exp":Infinity}', "Infinity"),
        (b'{"alg":"RS256"} trailing', b"{}", "not valid UTF-8 JSON"),
        (b'{"alg":"RS256"}', b"[" * 5000 + b"]" * 5000, "payload"),
    ],
)
def test_decode_jws_refuses_bad_json(header: bytes, payload: bytes, fragment: str) -> None:
    with pytest.raises(JOSEError, match=fragment):
        decode_jws(_raw_token(header, payload))


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ({}, "no 'alg'"),
        ({"alg": None}, "no 'alg'"),
        ({"alg": 256}, "not a non-empty string"),
        ({"alg": ""}, "not a non-empty string"),
        ({"alg": "RS256", "crit": ["exp"], "exp": 1}, "crit"),
        ({"alg": "RS256", "crit": []}, "crit"),
        ({"alg": "RS256", "b64": False, "crit": ["b64"]}, "crit"),
        ({"alg": "RS256", "b64": False}, "b64"),
        ({"alg": "RS256", "enc": "A128GCM"}, "JWE"),
        ({"alg": "RS256", "kid": 7}, "'kid' is not a string"),
        ({"alg": "RS256", "typ": ["JWT"]}, "'typ' is not a string"),
    ],
)
def test_decode_jws_refuses_bad_headers(header: dict[str, Any], fragment: str) -> None:
    with pytest.raises(JOSEError, match=fragment):
        decode_jws(_token(header, {}))


def test_decode_jws_records_key_headers_without_using_them() -> None:
    header = {"alg": "RS256", "jku": "https://evil/jwks", "x5u": "https://evil/cert", "jwk": {}}
    jws = decode_jws(_token(header, {}))
    assert jws.ignored_key_headers == ("jku", "x5u", "jwk")


# --------------------------------------------------------------------------- parse_jwk


@pytest.mark.parametrize("bits", [2048, 3072])
def test_parse_rsa_jwk(bits: int) -> None:
    key = f.rsa_key(bits, kid=f"r{bits}")
    parsed = parse_jwk(key.public_jwk)
    assert (parsed.kty, parsed.kid, parsed.size_bits, parsed.curve) == (
        "RSA",
        f"r{bits}",
        bits,
        None,
    )
    assert parsed.fingerprint == key.spki_sha256
    assert parsed.pem().encode() == key.public_pem
    assert parsed.key_type == "RSA"
    assert dict(parsed.jwk) == key.public_jwk


@pytest.mark.parametrize(("crv", "bits"), [("P-256", 256), ("P-384", 384), ("P-521", 521)])
def test_parse_ec_jwk(crv: str, bits: int) -> None:
    key = f.ec_key(crv, kid=crv)
    parsed = parse_jwk(key.public_jwk)
    assert (parsed.kty, parsed.curve, parsed.size_bits) == ("EC", crv, bits)
    assert parsed.family == f"EC:{crv}"
    assert parsed.fingerprint == key.spki_sha256


@pytest.mark.parametrize(
    ("factory", "crv", "bits"), [(f.ed25519_key, "Ed25519", 256), (f.ed448_key, "Ed448", 456)]
)
def test_parse_okp_jwk(factory: Any, crv: str, bits: int) -> None:
    key = factory()
    parsed = parse_jwk(key.public_jwk)
    assert (parsed.kty, parsed.curve, parsed.size_bits) == ("OKP", crv, bits)
    assert parsed.fingerprint == key.spki_sha256


def test_parse_jwk_refuses_weak_rsa() -> None:
    with pytest.raises(JOSEError, match="too weak"):
        parse_jwk(f.rsa_key(1024).public_jwk)


def test_parse_jwk_ignores_and_flags_private_members() -> None:
    key = f.rsa_key(kid="leaky")
    jwk = {**key.public_jwk, **f.private_jwk_members(key.private)}  # type: ignore[arg-type]
    parsed = parse_jwk(jwk)
    assert parsed.private_members_present
    assert "d" not in parsed.jwk and "p" not in parsed.jwk
    assert parsed.fingerprint == key.spki_sha256


def _ec_jwk_with(**changes: Any) -> dict[str, Any]:
    return {**f.ec_key().public_jwk, **changes}


@pytest.mark.parametrize(
    ("jwk", "fragment"),
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, "symmetric"),
        ({"kty": "DSA"}, "not supported"),
        ({"n": "AQ"}, "not supported"),
        ({"kty": "RSA", "e": "AQAB"}, "'n'"),
        ({"kty": "RSA", "n": 5, "e": "AQAB"}, "'n'"),
        ({"kty": "RSA", "n": "AQ==", "e": "AQAB"}, "base64url"),
        ({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}, "not supported"),
        ({"kty": "OKP", "crv": "X25519", "x": b64(b"\x09" * 32)}, "not supported"),
        ({"kty": "OKP", "crv": "Ed25519", "x": b64(b"\x01" * 31)}, "32 bytes"),
        ("not an object", "not a JSON object"),
    ],
)
def test_parse_jwk_refuses_bad_keys(jwk: Any, fragment: str) -> None:
    with pytest.raises(JOSEError, match=fragment):
        parse_jwk(jwk)


def test_parse_jwk_refuses_point_off_curve() -> None:
    jwk = f.ec_key().public_jwk
    y = bytearray(base64.urlsafe_b64decode(jwk["y"] + "=="))
    y[-1] ^= 1
    with pytest.raises(JOSEError, match="not on curve"):
        parse_jwk({**jwk, "y": b64(bytes(y))})


def test_parse_jwk_refuses_short_ec_coordinates() -> None:
    with pytest.raises(JOSEError, match="32 bytes"):
        parse_jwk(_ec_jwk_with(x=b64(b"\x01" * 31)))


def test_parse_jwk_refuses_huge_rsa_exponent() -> None:
    jwk = {**f.rsa_key().public_jwk, "e": b64(((1 << 100) + 1).to_bytes(13, "big"))}
    with pytest.raises(JOSEError, match="exponent"):
        parse_jwk(jwk)


@pytest.mark.parametrize(
    ("member", "value"),
    [("kid", 1), ("alg", ["RS256"]), ("use", 2), ("x5c", "abc"), ("key_ops", "verify")],
)
def test_parse_jwk_refuses_mistyped_metadata(member: str, value: Any) -> None:
    with pytest.raises(JOSEError, match=member):
        parse_jwk({**f.rsa_key().public_jwk, member: value})


def test_parse_jwk_caches_parsed_keys() -> None:
    jwk = f.rsa_key(kid="cached").public_jwk
    assert parse_jwk(jwk) is parse_jwk(dict(reversed(list(jwk.items()))))


def test_certificate_info_from_x5c() -> None:
    key = f.rsa_key(kid="with-cert")
    key.x5c = f.self_signed_x5c(key, common_name="signer")
    info = parse_jwk(key.public_jwk).certificate_info()
    assert info["subject"] == "CN=signer"
    assert info["serial"] == "1234abcd"
    assert info["matches_jwk"] is True
    assert info["currently_valid"] is True


def test_certificate_info_detects_foreign_certificate() -> None:
    key = f.rsa_key(kid="foreign-cert")
    other = f.ec_key(kid="other")
    key.x5c = f.self_signed_x5c(other)
    assert parse_jwk(key.public_jwk).certificate_info()["matches_jwk"] is False


def test_certificate_info_survives_garbage_x5c() -> None:
    key = f.rsa_key(kid="bad-cert")
    key.x5c = ["bm90IGEgY2VydA=="]
    assert "error" in parse_jwk(key.public_jwk).certificate_info()
    assert parse_jwk(f.rsa_key().public_jwk).certificate_info() == {}


# --------------------------------------------------------------------------- KeySet


def test_keyset_skips_unusable_keys_with_reasons() -> None:
    doc = f.jwks(
        f.rsa_key(kid="good"),
        f.rsa_key(1024, kid="weak"),
        extra=[{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}, "junk", {"kty": "EC", "kid": 3}],
    )
    keys = KeySet.from_jwks(doc)
    assert [k.kid for k in keys.keys] == ["good"]
    reasons = {s.index: s.reason for s in keys.skipped}
    assert "too weak" in reasons[1]
    assert "symmetric" in reasons[2]
    assert "not a JSON object" in reasons[3]
    assert keys.skipped[0].kid == "weak"
    assert all("k" not in key for key in keys.public_document()["keys"])


@pytest.mark.parametrize(
    "doc", [{"keys": []}, {"keys": [{"kty": "oct", "k": "AA"}]}, {}, [], {"keys": {}}, None]
)
def test_keyset_without_usable_keys_raises(doc: Any) -> None:
    with pytest.raises(JOSEError):
        KeySet.from_jwks(doc)


def test_keyset_limits_key_count() -> None:
    many = [f.ec_key(kid=f"k{i}").public_jwk for i in range(jose.MAX_JWKS_KEYS + 5)]
    keys = KeySet.from_jwks({"keys": many})
    assert len(keys) == jose.MAX_JWKS_KEYS
    assert keys.skipped[-1].reason == "too many keys in the JWKS"


def test_candidates_by_kid_and_type() -> None:
    rsa1, rsa2 = f.rsa_key(kid="a"), f.rsa_key(kid="b", slot=1)
    ec256, ec384 = f.ec_key(kid="e"), f.ec_key("P-384", kid="e384")
    keys = KeySet.from_jwks(f.jwks(rsa1, rsa2, ec256, ec384))
    assert [k.kid for k in keys.candidates("RS256", "b")] == ["b"]
    assert keys.candidates("ES256", "a") == []  # kid known, wrong type
    assert keys.candidates("RS256", "zzz") == []
    assert [k.kid for k in keys.candidates("RS256", None)] == ["a", "b"]
    assert [k.kid for k in keys.candidates("PS256", None)] == ["a", "b"]
    assert [k.kid for k in keys.candidates("ES256", None)] == ["e"]
    assert [k.kid for k in keys.candidates("ES384", None)] == ["e384"]
    assert keys.candidates("ES512", None) == []
    assert keys.candidates("HS256", None) == []
    assert keys.has_kid("a") and not keys.has_kid("zzz")


def test_candidates_with_duplicate_kid_returns_all_of_matching_type() -> None:
    rsa1, rsa2 = f.rsa_key(kid="dup"), f.rsa_key(kid="dup", slot=1)
    ec = f.ec_key(kid="dup")
    keys = KeySet.from_jwks(f.jwks(rsa1, rsa2, ec))
    assert [k.fingerprint for k in keys.candidates("RS256", "dup")] == [
        rsa1.spki_sha256,
        rsa2.spki_sha256,
    ]
    assert [k.fingerprint for k in keys.candidates("ES256", "dup")] == [ec.spki_sha256]


def test_candidates_respect_jwk_alg_use_and_key_ops() -> None:
    pinned = f.rsa_key(kid="pinned")
    pinned.jwk_extra = {"alg": "PS256"}
    enc = f.rsa_key(kid="enc", slot=1)
    enc.jwk_extra = {"use": "enc"}
    wrap = f.rsa_key(kid="wrap", slot=2)
    wrap.jwk_extra = {"key_ops": ["wrapKey"]}
    keys = KeySet.from_jwks(f.jwks(pinned, enc, wrap))
    assert [k.kid for k in keys.candidates("PS256", None)] == ["pinned"]
    assert keys.candidates("RS256", None) == []
    assert keys.candidates("RS256", "enc") == []


# --------------------------------------------------------------------------- verify_signature

_ALL_KEYS = [
    ("RS256", lambda: f.rsa_key(alg="RS256")),
    ("RS384", lambda: f.rsa_key(alg="RS384")),
    ("RS512", lambda: f.rsa_key(3072, alg="RS512")),
    ("PS256", lambda: f.rsa_key(alg="PS256")),
    ("PS384", lambda: f.rsa_key(alg="PS384")),
    ("PS512", lambda: f.rsa_key(3072, alg="PS512")),
    ("ES256", lambda: f.ec_key("P-256")),
    ("ES384", lambda: f.ec_key("P-384")),
    ("ES512", lambda: f.ec_key("P-521")),
    ("EdDSA", f.ed25519_key),
    ("EdDSA", f.ed448_key),
]


@pytest.mark.parametrize(("alg", "make"), _ALL_KEYS)
def test_verify_signature_round_trip(alg: str, make: Any) -> None:
    key = make()
    jws = decode_jws(key.sign(f.claims(ISS), alg=alg))
    verify_signature(jws, parse_jwk(key.public_jwk))


@pytest.mark.parametrize(("alg", "make"), _ALL_KEYS)
def test_verify_signature_detects_tampering(alg: str, make: Any) -> None:
    key = make()
    header, _, sig = key.sign(f.claims(ISS), alg=alg).split(".")
    forged = f"{header}.{b64json(f.claims(ISS, sub='admin'))}.{sig}"
    with pytest.raises(JOSEError, match="signature is invalid"):
        verify_signature(decode_jws(forged), parse_jwk(key.public_jwk))


def test_verify_signature_with_another_key_fails() -> None:
    jws = decode_jws(f.rsa_key().sign(f.claims(ISS)))
    with pytest.raises(JOSEError, match="invalid"):
        verify_signature(jws, parse_jwk(f.rsa_key(slot=1).public_jwk))


def test_verify_rfc7515_a3_es256_vector() -> None:
    jws = decode_jws(RFC7515_A3_TOKEN)
    verify_signature(jws, parse_jwk(RFC7515_A3_JWK))


def test_verify_rfc8037_ed25519_vector() -> None:
    jws = JWS({"alg": "EdDSA"}, {}, RFC8037_INPUT, b64url_decode(RFC8037_SIG))
    verify_signature(jws, parse_jwk(RFC8037_JWK))
    with pytest.raises(JOSEError):
        verify_signature(JWS({"alg": "EdDSA"}, {}, b"other", jws.signature), parse_jwk(RFC8037_JWK))


def test_verify_fully_specified_ed25519_only_when_allowed() -> None:
    key = f.ed25519_key()
    jws = decode_jws(key.sign(f.claims(ISS), alg="EdDSA", header={"alg": "Ed25519"}))
    parsed = parse_jwk(key.public_jwk)
    with pytest.raises(JOSEError, match="not allowed"):
        verify_signature(jws, parsed)
    verify_signature(jws, parsed, allowed=ALLOWED_ALGORITHMS | {"Ed25519"})


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512", "RS1", "ES256K", "rs256"])
def test_verify_refuses_algorithms_outside_the_allow_list(alg: str) -> None:
    key = f.rsa_key()
    jws = decode_jws(_token({"alg": alg}, {}))
    with pytest.raises(JOSEError, match="not allowed"):
        verify_signature(jws, parse_jwk(key.public_jwk))


def test_verify_respects_a_narrower_allow_list() -> None:
    key = f.rsa_key(alg="PS256")
    jws = decode_jws(key.sign(f.claims(ISS)))
    with pytest.raises(JOSEError, match="not allowed"):
        verify_signature(jws, parse_jwk(key.public_jwk), allowed=frozenset({"RS256"}))


def test_verify_refuses_unsupported_extra_algorithm() -> None:
    jws = decode_jws(_token({"alg": "HS256"}, {}))
    with pytest.raises(JOSEError, match="not supported"):
        verify_signature(jws, parse_jwk(f.rsa_key().public_jwk), allowed=frozenset({"HS256"}))


@pytest.mark.parametrize(
    ("alg", "make_signer", "make_verifier"),
    [
        ("RS256", f.rsa_key, lambda: f.ec_key()),
        ("ES256", f.ec_key, lambda: f.rsa_key()),
        ("ES256", f.ec_key, lambda: f.ec_key("P-384")),
        ("ES384", lambda: f.ec_key("P-384"), lambda: f.ec_key("P-256")),
        ("EdDSA", f.ed25519_key, lambda: f.ec_key()),
        ("RS256", f.rsa_key, f.ed25519_key),
    ],
)
def test_verify_refuses_key_type_mismatch(alg: str, make_signer: Any, make_verifier: Any) -> None:
    jws = decode_jws(make_signer().sign(f.claims(ISS), alg=alg))
    with pytest.raises(JOSEError, match="cannot verify"):
        verify_signature(jws, parse_jwk(make_verifier().public_jwk))


def test_verify_refuses_key_restricted_to_another_alg() -> None:
    key = f.rsa_key(kid="only-ps")
    key.jwk_extra = {"alg": "PS256"}
    jws = decode_jws(key.sign(f.claims(ISS), alg="RS256"))
    with pytest.raises(JOSEError, match="restricted"):
        verify_signature(jws, parse_jwk(key.public_jwk))


def test_verify_refuses_der_encoded_ecdsa_signature() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = f.ec_key()
    assert isinstance(key.private, ec.EllipticCurvePrivateKey)
    signing_input = f"{b64json({'alg': 'ES256'})}.{b64json(f.claims(ISS))}"
    der = key.private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    jws = decode_jws(f"{signing_input}.{b64(der)}")
    with pytest.raises(JOSEError, match="invalid"):
        verify_signature(jws, parse_jwk(key.public_jwk))


@pytest.mark.parametrize("cut", [1, 2, 10])
def test_verify_refuses_truncated_signatures(cut: int) -> None:
    for key in (f.rsa_key(), f.ec_key()):
        jws = decode_jws(key.sign(f.claims(ISS)))
        short = JWS(jws.header, jws.payload, jws.signing_input, jws.signature[:-cut])
        with pytest.raises(JOSEError, match="invalid"):
            verify_signature(short, parse_jwk(key.public_jwk))


def test_verify_refuses_pss_signature_under_rs256() -> None:
    key = f.rsa_key()
    header, payload, _ = key.sign(f.claims(ISS)).split(".")
    pss = f.raw_signature(key.private, "PS256", f"{header}.{payload}".encode())
    with pytest.raises(JOSEError, match="invalid"):
        verify_signature(decode_jws(f"{header}.{payload}.{b64(pss)}"), parse_jwk(key.public_jwk))


# --------------------------------------------------------------------------- validate_claims

NOW = 1_700_000_000.0


def _claims(**changes: Any) -> dict[str, Any]:
    return f.claims(ISS, now=NOW, **changes)


def test_validate_claims_accepts_good_claims() -> None:
    validate_claims(_claims(), issuer=ISS, audience="my-app", now=NOW)
    validate_claims(_claims(aud=["other", "my-app"]), issuer=ISS, audience="my-app", now=NOW)
    validate_claims(_claims(), issuer=None, audience=None, now=NOW)


@pytest.mark.parametrize(
    ("changes", "claim", "fragment"),
    [
        ({"exp": None}, "exp", "no 'exp'"),
        ({"iat": None}, "iat", "no 'iat'"),
        ({"exp": str(int(NOW) + 60)}, "exp", "not a number"),
        ({"exp": True}, "exp", "not a number"),
        ({"iat": [1]}, "iat", "not a number"),
        ({"nbf": "soon"}, "nbf", "not a number"),
        ({"exp": 10**400}, "exp", "finite"),
        ({"exp": float("inf")}, "exp", "finite"),
        ({"exp": NOW - 61}, "exp", "expired"),
        ({"exp": NOW - 60}, "exp", "expired"),
        ({"iat": NOW + 61}, "iat", "future"),
        ({"nbf": NOW + 61}, "nbf", "not valid before"),
        ({"iss": "https://evil.example.com"}, "iss", "issuer"),
        ({"iss": None}, "iss", "issuer"),
        ({"aud": "other"}, "aud", "does not include"),
        ({"aud": ["a", "b"]}, "aud", "does not include"),
        ({"aud": None}, "aud", "no 'aud'"),
        ({"aud": 5}, "aud", "neither"),
        ({"aud": ["my-app", 5]}, "aud", "neither"),
        ({"aud": []}, "aud", "neither"),
    ],
)
def test_validate_claims_refuses(changes: dict[str, Any], claim: str, fragment: str) -> None:
    with pytest.raises(JOSEError, match=fragment) as info:
        validate_claims(_claims(**changes), issuer=ISS, audience="my-app", now=NOW)
    assert info.value.claim == claim


def test_validate_claims_leeway() -> None:
    validate_claims(
        _claims(exp=NOW - 59, iat=NOW + 59, nbf=NOW + 59), issuer=ISS, audience=None, now=NOW
    )
    with pytest.raises(JOSEError, match="expired"):
        validate_claims(_claims(exp=NOW - 1), issuer=ISS, audience=None, now=NOW, leeway=0)
    with pytest.raises(ValueError, match="leeway"):
        validate_claims(_claims(), issuer=ISS, audience=None, now=NOW, leeway=-1)


def test_validate_claims_custom_requirements() -> None:
    validate_claims({"exp": NOW + 10}, issuer=None, audience=None, now=NOW, require=("exp",))
    with pytest.raises(JOSEError, match="'sub'") as info:
        validate_claims(_claims(sub=None), issuer=None, audience=None, now=NOW, require=("sub",))
    assert info.value.claim == "sub"


def test_validate_claims_uses_wall_clock_by_default() -> None:
    validate_claims(f.claims(ISS), issuer=ISS, audience=None)
    with pytest.raises(JOSEError, match="expired"):
        validate_claims(f.claims(ISS, now=time.time() - 7200), issuer=ISS, audience=None)


# --------------------------------------------------------------------------- at_hash

# From the oidc-token-hash documentation (cross-implementation vectors).
_AT = (
    "YmJiZTAwYmYtMzgyOC00NzhkLTkyOTItNjJjNDM3MGYzOWIy9sFhvH8K_x8UIHj1osisS57f5DduL-ar_qw5jl3lthwp"
    "Mjm283aVMQXDmoqqqydDSqJfbhptzw8rUVwkuQbolw"
)


def test_at_hash_vectors() -> None:
    assert (
        at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", "RS256") == "77QmUPtjPfzWtF2AnpK9RQ"
    )
    assert at_hash(_AT, "RS256") == "x7vk7f6BvQj0jQHYFIk4ag"
    assert at_hash(_AT, "EdDSA") == "EGEAhGYyfuwDaVTifvrWSoD5MSy_5hZPy6I7Vm-7pTQ"
    assert at_hash(_AT, "Ed25519") == at_hash(_AT, "EdDSA", curve="Ed25519")


@pytest.mark.parametrize(
    ("alg", "name", "size"), [("ES384", "sha384", 24), ("PS512", "sha512", 32)]
)
def test_at_hash_uses_the_algorithm_hash(alg: str, name: str, size: int) -> None:
    expected = b64(hashlib.new(name, b"token").digest()[:size])
    assert at_hash("token", alg) == expected


def test_at_hash_ed448_uses_shake256() -> None:
    expected = b64(hashlib.shake_256(b"token").digest(114)[:57])
    assert at_hash("token", "EdDSA", curve="Ed448") == expected


def test_at_hash_unknown_algorithm() -> None:
    with pytest.raises(JOSEError):
        at_hash("token", "none")


def test_public_jwk_pem_is_loadable() -> None:
    parsed = parse_jwk(f.ec_key("P-521").public_jwk)
    loaded = serialization.load_pem_public_key(parsed.pem().encode())
    assert loaded.public_numbers() == parsed.key.public_numbers()  # type: ignore[union-attr]
