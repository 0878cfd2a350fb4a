"""Keys, JWKS documents and signed tokens for tests, made with ``cryptography``.

Independent of :mod:`kstlib.auth._jose` on purpose: tokens are signed here and
verified there, so a bug in one cannot hide a bug in the other.
Key generation is slow (RSA), so keys are cached per (type, size, slot).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, Callable[[], ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_CURVE_SIZES = {"P-256": 32, "P-384": 48, "P-521": 66}
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def b64(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    """Unpadded base64url of compact JSON."""
    return b64(json.dumps(value, separators=(",", ":")).encode())


def _int_bytes(value: int, size: int | None = None) -> bytes:
    size = size or max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(size, "big")


@dataclass
class TestKey:
    """A private key plus the public JWK describing it."""

    private: PrivateKey
    kid: str | None
    alg: str
    jwk_extra: dict[str, Any] = field(default_factory=dict)
    x5c: list[str] | None = None

    __test__ = False  # not a pytest test class

    @property
    def public_jwk(self) -> dict[str, Any]:
        jwk = public_jwk(self.private)
        if self.kid is not None:
            jwk["kid"] = self.kid
        if self.x5c is not None:
            jwk["x5c"] = self.x5c
        jwk.update(self.jwk_extra)
        return jwk

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def spki_sha256(self) -> str:
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()

    def sign(self, claims: dict[str, Any], **kwargs: Any) -> str:
        return sign(claims, self, **kwargs)


@cache
def _rsa(bits: int, slot: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def _ec(crv: str, slot: int) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(_CURVES[crv]())


@cache
def _ed25519(slot: int) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@cache
def _ed448(slot: int) -> ed448.Ed448PrivateKey:
    return ed448.Ed448PrivateKey.generate()


def rsa_key(
    bits: int = 2048, *, kid: str | None = "rsa-1", alg: str = "RS256", slot: int = 0
) -> TestKey:
    return TestKey(_rsa(bits, slot), kid, alg)


def ec_key(crv: str = "P-256", *, kid: str | None = "ec-1", slot: int = 0) -> TestKey:
    return TestKey(_ec(crv, slot), kid, _EC_ALGS[crv])


def ed25519_key(*, kid: str | None = "ed-1", slot: int = 0) -> TestKey:
    return TestKey(_ed25519(slot), kid, "EdDSA")


def ed448_key(*, kid: str | None = "ed448-1", slot: int = 0) -> TestKey:
    return TestKey(_ed448(slot), kid, "EdDSA")


def public_jwk(private: PrivateKey) -> dict[str, Any]:
    """The public JWK of a private key (no kid)."""
    if isinstance(private, rsa.RSAPrivateKey):
        numbers = private.public_key().public_numbers()
        return {"kty": "RSA", "n": b64(_int_bytes(numbers.n)), "e": b64(_int_bytes(numbers.e))}
    if isinstance(private, ec.EllipticCurvePrivateKey):
        crv = _CURVE_NAMES[private.curve.name]
        nums = private.public_key().public_numbers()
        size = _CURVE_SIZES[crv]
        return {
            "kty": "EC",
            "crv": crv,
            "x": b64(_int_bytes(nums.x, size)),
            "y": b64(_int_bytes(nums.y, size)),
        }
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    crv = "Ed25519" if isinstance(private, ed25519.Ed25519PrivateKey) else "Ed448"
    return {"kty": "OKP", "crv": crv, "x": b64(raw)}


def private_jwk_members(private: rsa.RSAPrivateKey) -> dict[str, str]:
    """The private members of an RSA JWK (for 'private key leaked in JWKS' tests)."""
    nums = private.private_numbers()
    return {
        "d": b64(_int_bytes(nums.d)),
        "p": b64(_int_bytes(nums.p)),
        "q": b64(_int_bytes(nums.q)),
        "dp": b64(_int_bytes(nums.dmp1)),
        "dq": b64(_int_bytes(nums.dmq1)),
        "qi": b64(_int_bytes(nums.iqmp)),
    }


def jwks(*keys: TestKey, extra: list[Any] | None = None) -> dict[str, Any]:
    """A JWKS document holding the public JWKs of ``keys`` (plus raw ``extra`` entries)."""
    return {"keys": [k.public_jwk for k in keys] + list(extra or [])}


def raw_signature(private: PrivateKey, alg: str, data: bytes) -> bytes:
    """Sign ``data`` as JWS algorithm ``alg`` does (ECDSA as raw r||s)."""
    if alg.startswith("RS"):
        assert isinstance(private, rsa.RSAPrivateKey)
        return private.sign(data, padding.PKCS1v15(), _HASHES[alg[2:]]())
    if alg.startswith("PS"):
        assert isinstance(private, rsa.RSAPrivateKey)
        h = _HASHES[alg[2:]]()
        return private.sign(data, padding.PSS(padding.MGF1(h), h.digest_size), h)
    if alg.startswith("ES"):
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        der = private.sign(data, ec.ECDSA(_HASHES[alg[2:]]()))
        r, s = decode_dss_signature(der)
        size = (private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        assert isinstance(private, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        return private.sign(data)
    raise ValueError(f"cannot sign {alg}")


def sign(
    claims: dict[str, Any],
    key: TestKey,
    *,
    alg: str | None = None,
    header: dict[str, Any] | None = None,
    kid: str | None | bool = True,
) -> str:
    """A compact JWS of ``claims`` signed by ``key``.

    ``kid=True`` uses the key's kid, ``False``/``None`` omits it, a string overrides it.
    ``header`` entries are merged last (they may override ``alg``/``typ``).
    """
    alg = alg or key.alg
    hdr: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is True and key.kid is not None:
        hdr["kid"] = key.kid
    elif isinstance(kid, str):
        hdr["kid"] = kid
    hdr.update(header or {})
    signing_input = f"{b64json(hdr)}.{b64json(claims)}"
    signature = raw_signature(key.private, alg, signing_input.encode())
    return f"{signing_input}.{b64(signature)}"


def hs256(claims: dict[str, Any], secret: bytes, *, header: dict[str, Any] | None = None) -> str:
    """An HS256 token keyed with ``secret`` (for algorithm-confusion attacks)."""
    hdr = {"alg": "HS256", "typ": "JWT", **(header or {})}
    signing_input = f"{b64json(hdr)}.{b64json(claims)}"
    mac = hmac.HMAC(secret, hashes.SHA256())
    mac.update(signing_input.encode())
    return f"{signing_input}.{b64(mac.finalize())}"


def unsigned(claims: dict[str, Any], *, alg: str = "none") -> str:
    """An ``alg: none`` token (empty signature)."""
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims)}."


def claims(
    issuer: str,
    audience: str | list[str] = "my-app",
    *,
    lifetime: int = 3600,
    now: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Typical ID-token claims; ``extra`` adds or (with value None) removes claims."""
    now = int(time.time() if now is None else now)
    out: dict[str, Any] = {
        "iss": issuer,
        "sub": "user-123",
        "aud": audience,
        "iat": now,
        "exp": now + lifetime,
        "nonce": "n-0S6_WzA2Mj",
    }
    for name, value in extra.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def self_signed_x5c(
    key: TestKey, *, common_name: str = "test-signing", days: int = 365
) -> list[str]:
    """A one-certificate x5c chain for ``key`` (standard base64 DER, as RFC 7517 4.7 says)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = time.time()
    import datetime as dt

    start = dt.datetime.fromtimestamp(now - 60, dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private.public_key())
        .serial_number(0x1234ABCD)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
    )
    algorithm = (
        None
        if isinstance(key.private, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )
    cert = builder.sign(key.private, algorithm)
    return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")]
