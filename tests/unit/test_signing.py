"""JWS signing (kstlib.auth._signing), proven by the verification of kstlib.auth._jose.

Every algorithm is signed here and verified there, with keys loaded from PEM, JWK
(mapping and JSON text), a ``file://`` reference, an ``env://`` reference and an absolute
path; HMAC tokens are checked against an independent ``hmac`` computation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from kstlib.auth._jose import SUPPORTED_ALGORITHMS, b64url_decode, decode_jws, parse_jwk
from kstlib.auth._jose import verify_signature as jose_verify
from kstlib.auth._signing import (
    HMAC_ALGORITHMS,
    SIGNING_ALGORITHMS,
    SigningError,
    SigningKey,
    hmac_key,
    load_signing_key,
    sign_jws,
)
from tests import jwt_factory as f

CLAIMS = {"iss": "client", "sub": "client", "aud": "https://idp.test/token", "jti": "j-1"}


def _pem(key: f.TestKey) -> str:
    return key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def private_jwk(key: f.TestKey) -> dict[str, Any]:
    private = key.private
    jwk = dict(key.public_jwk)
    if jwk["kty"] == "RSA":
        jwk.update(f.private_jwk_members(private))  # type: ignore[arg-type]
    elif jwk["kty"] == "EC":
        size = {"P-256": 32, "P-384": 48, "P-521": 66}[jwk["crv"]]
        d = private.private_numbers().private_value  # type: ignore[union-attr]
        jwk["d"] = f.b64(d.to_bytes(size, "big"))
    else:
        jwk["d"] = f.b64(
            private.private_bytes(  # type: ignore[call-arg]
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )
    return jwk


#: (algorithm, test key) for every asymmetric algorithm.
ASYMMETRIC = [
    *[
        (f"{family}{bits}", f.rsa_key(kid="rsa-sign"))
        for family in ("RS", "PS")
        for bits in (256, 384, 512)
    ],
    ("ES256", f.ec_key("P-256", kid="ec256")),
    ("ES384", f.ec_key("P-384", kid="ec384")),
    ("ES512", f.ec_key("P-521", kid="ec521")),
    ("EdDSA", f.ed25519_key(kid="ed25519")),
    ("EdDSA", f.ed448_key(kid="ed448")),
    ("Ed25519", f.ed25519_key(kid="ed25519")),
    ("Ed448", f.ed448_key(kid="ed448")),
]


def _verify(token: str, key: f.TestKey, alg: str) -> dict[str, Any]:
    jws = decode_jws(token)
    assert jws.alg == alg
    jose_verify(jws, parse_jwk(key.public_jwk), allowed=SUPPORTED_ALGORITHMS)
    return jws.payload


@pytest.mark.parametrize(("alg", "key"), ASYMMETRIC, ids=[f"{a}-{k.kid}" for a, k in ASYMMETRIC])
@pytest.mark.parametrize("form", ["pem", "jwk", "jwk_text"])
def test_every_algorithm_round_trips_through_jose_verification(
    alg: str, key: f.TestKey, form: str
) -> None:
    source: Any = {"pem": _pem(key), "jwk": private_jwk(key)}.get(form)
    if form == "jwk_text":
        source = json.dumps(private_jwk(key))
    signing_key = load_signing_key(source, kid=key.kid)
    token = sign_jws(CLAIMS, signing_key, alg)
    assert _verify(token, key, alg) == CLAIMS
    assert decode_jws(token).header == {"alg": alg, "typ": "JWT", "kid": key.kid}


def test_a_tampered_signature_does_not_verify() -> None:
    key = f.ec_key("P-256")
    token = sign_jws(CLAIMS, load_signing_key(_pem(key)), "ES256")
    head, body, _ = token.split(".")
    forged = sign_jws({**CLAIMS, "sub": "other"}, load_signing_key(_pem(key)), "ES256")
    with pytest.raises(Exception, match="signature is invalid"):
        _verify(f"{head}.{body}.{forged.split('.')[2]}", key, "ES256")


@pytest.mark.parametrize("alg", sorted(HMAC_ALGORITHMS))
def test_hmac_signatures_match_an_independent_computation(alg: str) -> None:
    secret = "s" * 64
    token = sign_jws(CLAIMS, hmac_key(secret), alg)
    head, body, signature = token.split(".")
    expected = hmac.new(secret.encode(), f"{head}.{body}".encode(), "sha" + alg[2:]).digest()
    assert b64url_decode(signature) == expected
    assert decode_jws(token).payload == CLAIMS


def test_hmac_secret_shorter_than_the_hash_is_refused() -> None:
    with pytest.raises(SigningError, match=r"too short for HS256 \(10 bytes, at least 32"):
        sign_jws(CLAIMS, hmac_key("0123456789"), "HS256")
    with pytest.raises(SigningError, match="too short for HS512"):
        sign_jws(CLAIMS, hmac_key("x" * 40), "HS512")


def test_an_oct_jwk_is_an_hmac_key() -> None:
    secret = b"k" * 48
    key = load_signing_key({"kty": "oct", "k": f.b64(secret), "kid": "shared"})
    token = sign_jws(CLAIMS, key, "HS384")
    head, body, signature = token.split(".")
    assert (
        b64url_decode(signature)
        == hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha384).digest()
    )


@pytest.mark.parametrize(
    ("alg", "key", "needed"),
    [
        ("ES256", f.rsa_key(), "EC P-256 needed"),
        ("ES384", f.ec_key("P-256"), "EC P-384 needed"),
        ("RS256", f.ec_key("P-256"), "RSA needed"),
        ("PS256", f.ed25519_key(), "RSA needed"),
        ("EdDSA", f.rsa_key(), "OKP key needed"),
        ("Ed448", f.ed25519_key(), "OKP key needed"),
        ("HS256", f.rsa_key(), "shared secret needed"),
    ],
)
def test_a_key_of_the_wrong_type_is_refused(alg: str, key: f.TestKey, needed: str) -> None:
    """No algorithm confusion: the key type must fit the algorithm."""
    with pytest.raises(SigningError, match=needed):
        sign_jws(CLAIMS, load_signing_key(_pem(key)), alg)


def test_an_hmac_secret_cannot_sign_an_asymmetric_algorithm() -> None:
    with pytest.raises(SigningError, match="cannot sign RS256"):
        sign_jws(CLAIMS, hmac_key("s" * 64), "RS256")


@pytest.mark.parametrize("alg", ["none", "None", "HS1", "RS1", ""])
def test_unknown_algorithms_and_none_are_refused(alg: str) -> None:
    with pytest.raises(SigningError, match="is never used|is not supported"):
        sign_jws(CLAIMS, hmac_key("s" * 64), alg)


def test_headers_cannot_change_alg_but_add_fields() -> None:
    key = load_signing_key(_pem(f.ec_key("P-256")), kid="k1")
    with pytest.raises(SigningError, match="cannot change 'alg'"):
        sign_jws(CLAIMS, key, "ES256", headers={"alg": "none"})
    token = sign_jws(CLAIMS, key, "ES256", headers={"typ": "dpop+jwt"})
    assert decode_jws(token).header == {"alg": "ES256", "typ": "dpop+jwt", "kid": "k1"}


def test_weak_rsa_and_public_keys_are_refused() -> None:
    with pytest.raises(SigningError, match=r"too weak \(1024 bits"):
        load_signing_key(_pem(f.rsa_key(1024, slot=14)))
    with pytest.raises(SigningError, match="not a private key"):
        load_signing_key(f.rsa_key().public_pem.decode())
    with pytest.raises(SigningError, match="public key \\(no 'd'\\)"):
        load_signing_key(f.rsa_key().public_jwk)


def test_a_jwk_whose_public_part_does_not_match_is_refused() -> None:
    jwk = private_jwk(f.ec_key("P-256"))
    jwk["x"] = f.ec_key("P-256", slot=5).public_jwk["x"]
    with pytest.raises(SigningError, match="does not match"):
        load_signing_key(jwk)


def test_keys_load_from_file_and_env_references_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f.ed25519_key()
    (tmp_path / "key.pem").write_text(_pem(key))
    (tmp_path / "key.jwk").write_text(json.dumps(private_jwk(key)))
    monkeypatch.setenv("CLIENT_KEY_PEM", _pem(key))
    for source in (
        f"file://{tmp_path / 'key.pem'}",
        f"file://{tmp_path / 'key.jwk'}",
        "env://CLIENT_KEY_PEM",
        str(tmp_path / "key.pem"),
    ):
        token = sign_jws(CLAIMS, load_signing_key(source), "EdDSA")
        assert _verify(token, key, "EdDSA") == CLAIMS


def test_unreadable_sources_give_one_line_reasons_without_key_material(tmp_path: Path) -> None:
    pem = _pem(f.rsa_key())
    broken = pem.replace(pem.splitlines()[3], "A" * 64)
    cases = {
        "relative/key.pem": "nor an absolute file path",
        str(tmp_path / "missing.pem"): "not a regular file",
        "{not json": "does not parse",
        "env://KSTLIB_NO_SUCH_VARIABLE": "KSTLIB_NO_SUCH_VARIABLE",
        broken: "not a private key",
    }
    for source, reason in cases.items():
        with pytest.raises(SigningError) as err:
            load_signing_key(source)
        assert reason in err.value.reason
        assert "PRIVATE KEY" not in str(err.value)


def test_repr_never_shows_key_material() -> None:
    secret = "very-secret-hmac-key-" * 3
    assert secret not in repr(hmac_key(secret))
    key = load_signing_key(private_jwk(f.rsa_key()))
    assert repr(key) == "SigningKey(kty='RSA', 2048 bits, kid='rsa-1')"
    assert isinstance(key, SigningKey)


def test_public_jwk_of_a_loaded_key_verifies_its_signatures() -> None:
    for alg, key in ASYMMETRIC:
        loaded = load_signing_key(_pem(key), kid="pub")
        token = sign_jws(CLAIMS, loaded, alg)
        jose_verify(decode_jws(token), parse_jwk(loaded.public_jwk()), allowed=SUPPORTED_ALGORITHMS)


def test_the_signing_list_covers_the_verification_list() -> None:
    assert SUPPORTED_ALGORITHMS <= SIGNING_ALGORITHMS


# ------------------------------------------------------------------ DER -> JWS r || s


@pytest.mark.parametrize(
    ("curve", "size"),
    [("SECP256R1", 32), ("SECP384R1", 48), ("SECP521R1", 66)],
)
def test_ecdsa_raw_matches_cryptography_der_parser(curve: str, size: int) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from kstlib.auth._signing import ecdsa_raw

    key = ec.generate_private_key(getattr(ec, curve)())
    for i in range(40):  # leading-zero r or s (shorter INTEGERs) turn up in some of these
        der = key.sign(b"message %d" % i, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        assert ecdsa_raw(der, size) == r.to_bytes(size, "big") + s.to_bytes(size, "big")


def test_ecdsa_raw_pads_short_integers_and_rejects_garbage() -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from kstlib.auth._signing import ecdsa_raw

    assert ecdsa_raw(encode_dss_signature(1, 2**255), 32) == (
        (1).to_bytes(32, "big") + (2**255).to_bytes(32, "big")  # 2**255: a 0x00 sign byte
    )
    assert ecdsa_raw(encode_dss_signature(5, 7), 4) == b"\0\0\0\x05\0\0\0\x07"
    with pytest.raises(ValueError):  # not DER: cryptography's parser says so
        ecdsa_raw(b"\x30\x06\x02\x01\x01\x02\x02\x01", 32)
    with pytest.raises(OverflowError):  # r does not fit the curve's size
        ecdsa_raw(encode_dss_signature(2**40, 1), 4)
