"""JWS signing (compact serialisation), the other half of the JOSE layer.

Verification lives in :mod:`kstlib.auth._jose`; this module only signs: client
assertions (``private_key_jwt``, ``client_secret_jwt``, RFC 7523) and, later, DPoP
proofs. ``cryptography`` does every computation; this layer picks the padding, hash and
signature encoding RFC 7518 names for each algorithm, and refuses keys that do not fit:

* RS256/384/512 (PKCS#1 v1.5) and PS256/384/512 (PSS, salt = hash length): RSA keys of
  at least 2048 bits;
* ES256/384/512: EC keys on P-256/P-384/P-521, signatures as raw ``r || s``;
* EdDSA (and the fully specified Ed25519 / Ed448): OKP keys;
* HS256/384/512: a shared secret at least as long as the hash output (RFC 7518 3.2).

Keys come from PEM text, a JWK (mapping or JSON text), a file (``file://`` or an absolute
path) or any secret reference of :mod:`kstlib.secrets` (``sops://``, ``env://``). A
:class:`SigningKey` never shows its material in ``repr``; :class:`SigningError` messages
never contain it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from kstlib.auth._jose import b64url_decode, b64url_encode

__all__ = [
    "HMAC_ALGORITHMS",
    "SIGNING_ALGORITHMS",
    "PrivateKey",
    "SigningError",
    "SigningKey",
    "ecdsa_raw",
    "hmac_key",
    "load_signing_key",
    "sign_jws",
]

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)

_HASHES: Final[dict[str, type[hashes.HashAlgorithm]]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_ALGS: Final[dict[str, tuple[str, int]]] = {
    "ES256": ("P-256", 32),
    "ES384": ("P-384", 48),
    "ES512": ("P-521", 66),
}
_CURVES: Final[dict[str, ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_CURVE_NAMES: Final[dict[str, str]] = {
    "secp256r1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}
#: Algorithms keyed with a shared secret.
HMAC_ALGORITHMS: Final[frozenset[str]] = frozenset({"HS256", "HS384", "HS512"})
#: Every algorithm :func:`sign_jws` signs with.
SIGNING_ALGORITHMS: Final[frozenset[str]] = frozenset(
    {
        *(f"{family}{bits}" for family in ("RS", "PS") for bits in _HASHES),
        *_EC_ALGS,
        "EdDSA",
        "Ed25519",
        "Ed448",
        *HMAC_ALGORITHMS,
    }
)
_MIN_RSA_BITS: Final = 2048
#: Largest key file or text read (a PEM or JWK is a few KiB).
_MAX_KEY_BYTES: Final = 64 * 1024


class SigningError(Exception):
    """A key cannot be loaded or cannot sign with the requested algorithm.

    ``reason`` is one line for humans and never contains key material.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, eq=False)
class SigningKey:
    """A private key or an HMAC secret, ready to sign; ``repr`` shows only its kind.

    ``kty`` is the JWK key type (RSA, EC, OKP or oct), ``curve`` the EC/OKP curve,
    ``kid`` the key id put in the JWS header (None: no ``kid``).
    """

    kty: str
    kid: str | None = None
    curve: str | None = None
    size_bits: int = 0
    _private: PrivateKey | None = field(default=None, repr=False)
    _secret: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        detail = self.curve or f"{self.size_bits} bits"
        return f"SigningKey(kty={self.kty!r}, {detail}, kid={self.kid!r})"

    @property
    def default_algorithm(self) -> str:
        """The algorithm used when none is configured (RS256, ES256/384/512, EdDSA, HS256)."""
        if self.kty == "RSA":
            return "RS256"
        if self.kty == "EC":
            return next(alg for alg, (crv, _) in _EC_ALGS.items() if crv == self.curve)
        if self.kty == "OKP":
            return "EdDSA"
        return "HS256"

    def with_kid(self, kid: str | None) -> SigningKey:
        """The same key with another ``kid`` (None keeps the current one)."""
        if kid is None or kid == self.kid:
            return self
        return SigningKey(self.kty, kid, self.curve, self.size_bits, self._private, self._secret)

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK (for registering the client); refused for HMAC secrets."""
        key = self._private
        if key is None:
            raise SigningError("an HMAC secret has no public half")
        jwk: dict[str, Any]
        if isinstance(key, rsa.RSAPrivateKey):
            numbers = key.public_key().public_numbers()
            jwk = {"kty": "RSA", "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            point = key.public_key().public_numbers()
            size = _EC_ALGS[self.default_algorithm][1]
            jwk = {
                "kty": "EC",
                "crv": self.curve,
                "x": _b64_int(point.x, size),
                "y": _b64_int(point.y, size),
            }
        else:
            raw = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            jwk = {"kty": "OKP", "crv": self.curve, "x": b64url_encode(raw)}
        if self.kid is not None:
            jwk["kid"] = self.kid
        return jwk

    def sign(self, alg: str, data: bytes) -> bytes:
        """The raw JWS signature of ``data`` with ``alg`` (checked against this key)."""
        if alg not in SIGNING_ALGORITHMS:
            refused = "is never used" if alg.lower() == "none" else "is not supported"
            raise SigningError(
                f"signing algorithm {alg!r} {refused} "
                f"(supported: {', '.join(sorted(SIGNING_ALGORITHMS))})"
            )
        if alg in HMAC_ALGORITHMS:
            return self._sign_hmac(alg, data)
        key = self._private
        if key is None:
            raise SigningError(f"an HMAC secret cannot sign {alg} (an asymmetric algorithm)")
        try:
            if alg[:2] in ("RS", "PS"):
                if not isinstance(key, rsa.RSAPrivateKey):
                    raise SigningError(f"a {self._kind()} key cannot sign {alg} (RSA needed)")
                hash_alg = _HASHES[alg[2:]]()
                pad: padding.AsymmetricPadding = (
                    padding.PKCS1v15()
                    if alg.startswith("RS")
                    else padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
                )
                return key.sign(data, pad, hash_alg)
            if alg in _EC_ALGS:
                crv, size = _EC_ALGS[alg]
                if not isinstance(key, ec.EllipticCurvePrivateKey) or self.curve != crv:
                    raise SigningError(f"a {self._kind()} key cannot sign {alg} (EC {crv} needed)")
                return ecdsa_raw(key.sign(data, ec.ECDSA(_HASHES[alg[2:]]())), size)
            return self._sign_eddsa(alg, key, data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SigningError(f"cannot sign {alg} with this key ({type(exc).__name__})") from None

    def _sign_eddsa(self, alg: str, key: PrivateKey, data: bytes) -> bytes:
        wanted = {"EdDSA": (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)}.get(
            alg,
            (ed25519.Ed25519PrivateKey,) if alg == "Ed25519" else (ed448.Ed448PrivateKey,),
        )
        if not isinstance(key, wanted):
            raise SigningError(f"a {self._kind()} key cannot sign {alg} (an OKP key needed)")
        return key.sign(data)

    def _sign_hmac(self, alg: str, data: bytes) -> bytes:
        secret = self._secret
        if secret is None:
            raise SigningError(f"a {self._kind()} key cannot sign {alg} (a shared secret needed)")
        hash_name = "sha" + alg[2:]
        minimum = hashlib.new(hash_name).digest_size
        if len(secret) < minimum:
            raise SigningError(
                f"the secret is too short for {alg} ({len(secret)} bytes, at least {minimum} "
                "needed: RFC 7518 3.2); use a longer client secret or HS256"
            )
        return hmac.new(secret, data, hash_name).digest()

    def _kind(self) -> str:
        return {"RSA": "RSA", "EC": f"EC {self.curve}", "OKP": str(self.curve)}.get(
            self.kty, "shared-secret"
        )


def ecdsa_raw(der: bytes, size: int) -> bytes:
    """JWS ``r || s`` (``size`` bytes each) of an ECDSA signature in DER (RFC 7518 3.4).

    A DER ``SEQUENCE`` of two ``INTEGER``s, read with slices (P-256, P-384 and P-521
    signatures are parsed without building integers); anything unexpected goes through
    ``cryptography``'s DER parser, which says what is wrong.
    """
    # short form (P-256, P-384): 30 L 02 Lr r 02 Ls s; long form (P-521): 30 81 L ...
    at = 3 if der[1:2] == b"\x81" else 2
    if len(der) > at + 4 and der[0] == 0x30 and der[at - 1] == len(der) - at and der[at] == 2:
        end_r = at + 2 + der[at + 1]
        if end_r + 2 < len(der) and der[end_r] == 2 and end_r + 2 + der[end_r + 1] == len(der):
            r = der[at + 2 : end_r].lstrip(b"\0")
            s = der[end_r + 2 :].lstrip(b"\0")
            if len(r) <= size and len(s) <= size:
                return r.rjust(size, b"\0") + s.rjust(size, b"\0")
    r_int, s_int = decode_dss_signature(der)
    return r_int.to_bytes(size, "big") + s_int.to_bytes(size, "big")


def _b64_int(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url_encode(value.to_bytes(length, "big"))


# --------------------------------------------------------------------------- loading


def hmac_key(secret: str | bytes, *, kid: str | None = None) -> SigningKey:
    """An HMAC key from a shared secret (the client secret of ``client_secret_jwt``)."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise SigningError("the HMAC secret is empty")
    return SigningKey("oct", kid, None, len(raw) * 8, None, raw)


def load_signing_key(
    source: str | bytes | Mapping[str, Any] | SigningKey,
    *,
    kid: str | None = None,
    password: bytes | None = None,
    base_dir: Path | None = None,
) -> SigningKey:
    """Load a private key (or an HMAC secret from an ``oct`` JWK).

    ``source`` is PEM text (PKCS#8, PKCS#1 or SEC1), a private JWK (a mapping or its
    JSON text), a secret reference (``file://path``, ``env://VAR``, ``sops://file#key``,
    resolved by :mod:`kstlib.secrets` and read again as PEM or JWK), or an absolute (or
    ``~``) path to a PEM or JWK file. ``kid`` overrides the JWK's ``kid``.

    Raises:
        SigningError: the source is unreadable, not a private key, or a weak key.
    """
    if isinstance(source, SigningKey):
        return source.with_kid(kid)
    if isinstance(source, Mapping):
        return _from_jwk(source).with_kid(kid)
    text = source.decode("utf-8", "replace") if isinstance(source, bytes) else source
    if not isinstance(text, str) or not text.strip():
        raise SigningError("the key is empty")
    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        return _from_pem(stripped.encode("utf-8"), password).with_kid(kid)
    if stripped.startswith("{"):
        return _from_jwk(_json_object(stripped)).with_kid(kid)
    from kstlib.secrets import is_secret_reference, resolve_secret

    if is_secret_reference(stripped):
        from kstlib.auth.errors import ConfigurationError

        try:
            resolved = resolve_secret(stripped, base_dir=base_dir, what="client_key")
        except ConfigurationError as exc:
            raise SigningError(str(exc)) from None
        if is_secret_reference(resolved.strip()):
            raise SigningError("the key reference resolves to another reference")
        return load_signing_key(resolved, kid=kid, password=password)
    path = Path(stripped).expanduser()
    if not path.is_absolute():
        raise SigningError(
            "the key is neither PEM text, a JWK, a secret reference (file://, env://, sops://) "
            "nor an absolute file path"
        )
    return load_signing_key(_read_key_file(path), kid=kid, password=password)


def _read_key_file(path: Path) -> str:
    try:
        if not path.is_file():
            raise SigningError(f"key file {path} is not a regular file")
        with path.open("rb") as handle:
            data = handle.read(_MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise SigningError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_KEY_BYTES:
        raise SigningError(f"key file {path} is larger than {_MAX_KEY_BYTES} bytes")
    text = data.decode("utf-8", "replace")
    if not text.strip().startswith(("-----BEGIN", "{")):
        raise SigningError(f"key file {path} holds neither a PEM key nor a JWK")
    return text


def _json_object(text: str) -> dict[str, Any]:
    if len(text) > _MAX_KEY_BYTES:
        raise SigningError("the JWK is too large")
    try:
        value = json.loads(text)
    except ValueError:
        raise SigningError("the key looks like JSON but does not parse") from None
    if not isinstance(value, dict):
        raise SigningError("the JWK is not a JSON object")
    return value


def _from_pem(data: bytes, password: bytes | None) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError:
        raise SigningError("the PEM key is encrypted; decrypt it or store it with sops") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningError(
            "the PEM text is not a private key (a public key or certificate cannot sign)"
        ) from None
    return _wrap(key, None)


def _wrap(key: object, kid: str | None) -> SigningKey:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < _MIN_RSA_BITS:
            raise SigningError(
                f"RSA key is too weak ({key.key_size} bits, minimum {_MIN_RSA_BITS})"
            )
        return SigningKey("RSA", kid, None, key.key_size, key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = _CURVE_NAMES.get(key.curve.name)
        if curve is None:
            raise SigningError(f"EC curve {key.curve.name} is not supported (P-256/384/521)")
        return SigningKey("EC", kid, curve, key.curve.key_size, key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return SigningKey("OKP", kid, "Ed25519", 256, key)
    if isinstance(key, ed448.Ed448PrivateKey):
        return SigningKey("OKP", kid, "Ed448", 456, key)
    raise SigningError(f"{type(key).__name__} keys cannot sign JWS")


def _member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise SigningError(f"JWK member {name!r} is missing or not a string")
    try:
        return b64url_decode(value, f"JWK member {name!r}")
    except Exception as exc:  # JOSEError: say which member, never its value
        raise SigningError(f"JWK member {name!r} is not base64url") from exc


def _int(jwk: Mapping[str, Any], name: str) -> int:
    return int.from_bytes(_member(jwk, name), "big")


def _rsa_private(jwk: Mapping[str, Any]) -> object:
    if "oth" in jwk:
        raise SigningError("multi-prime RSA keys ('oth') are not supported")
    public = rsa.RSAPublicNumbers(_int(jwk, "e"), _int(jwk, "n"))
    d = _int(jwk, "d")
    if all(name in jwk for name in ("p", "q", "dp", "dq", "qi")):
        numbers = rsa.RSAPrivateNumbers(
            _int(jwk, "p"),
            _int(jwk, "q"),
            d,
            _int(jwk, "dp"),
            _int(jwk, "dq"),
            _int(jwk, "qi"),
            public,
        )
    else:
        p, q = rsa.rsa_recover_prime_factors(public.n, public.e, d)
        numbers = rsa.RSAPrivateNumbers(
            p,
            q,
            d,
            rsa.rsa_crt_dmp1(d, p),
            rsa.rsa_crt_dmq1(d, q),
            rsa.rsa_crt_iqmp(p, q),
            public,
        )
    return numbers.private_key()


def _ec_private(jwk: Mapping[str, Any]) -> object:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _CURVES:
        raise SigningError(f"EC curve {crv!r} is not supported (P-256, P-384, P-521)")
    key = ec.derive_private_key(_int(jwk, "d"), _CURVES[crv])
    point = key.public_key().public_numbers()
    if (point.x, point.y) != (_int(jwk, "x"), _int(jwk, "y")):
        raise SigningError("the EC JWK's public point does not match its private key")
    return key


def _okp_private(jwk: Mapping[str, Any]) -> object:
    crv = jwk.get("crv")
    loaders: dict[str, Callable[[bytes], object]] = {
        "Ed25519": ed25519.Ed25519PrivateKey.from_private_bytes,
        "Ed448": ed448.Ed448PrivateKey.from_private_bytes,
    }
    if not isinstance(crv, str) or crv not in loaders:
        raise SigningError(f"OKP curve {crv!r} cannot sign (Ed25519, Ed448)")
    key = loaders[crv](_member(jwk, "d"))
    if "x" in jwk:
        public = key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        if public != _member(jwk, "x"):
            raise SigningError(f"the {crv} JWK's public key does not match its private key")
    return key


def _from_jwk(jwk: Mapping[str, Any]) -> SigningKey:
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise SigningError("JWK member 'kid' is not a string")
    if kty == "oct":
        return hmac_key(_member(jwk, "k"), kid=kid)
    if "d" not in jwk:
        raise SigningError("the JWK is a public key (no 'd'): a private key is needed to sign")
    loaders: dict[str, Callable[[Mapping[str, Any]], object]] = {
        "RSA": _rsa_private,
        "EC": _ec_private,
        "OKP": _okp_private,
    }
    if not isinstance(kty, str) or kty not in loaders:
        raise SigningError(f"JWK key type {kty!r} is not supported (RSA, EC, OKP, oct)")
    try:
        key = loaders[kty](jwk)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningError(
            f"the {kty} JWK is not a valid private key ({type(exc).__name__})"
        ) from None
    return _wrap(key, kid)


# --------------------------------------------------------------------------- signing


def sign_jws(
    payload: Mapping[str, Any],
    key: SigningKey | str | bytes | Mapping[str, Any],
    alg: str,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS of the JSON ``payload``, signed with ``key`` using ``alg``.

    The protected header is ``{"alg", "typ": "JWT", "kid"}`` (``kid`` when the key has
    one) updated with ``headers``, which cannot change ``alg``. ``key`` is a
    :class:`SigningKey` or anything :func:`load_signing_key` accepts.

    Raises:
        SigningError: unsupported algorithm, a key of the wrong type or too weak.
    """
    signing_key = key if isinstance(key, SigningKey) else load_signing_key(key)
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if signing_key.kid is not None:
        header["kid"] = signing_key.kid
    for name, value in (headers or {}).items():
        if name == "alg" and value != alg:
            raise SigningError("headers cannot change 'alg'; pass the algorithm as alg")
        header[name] = value
    try:
        segments = [_json_segment(header), _json_segment(dict(payload))]
    except (TypeError, ValueError):
        raise SigningError("the JWS header and payload must be plain JSON") from None
    signing_input = ".".join(segments).encode("ascii")
    signature = signing_key.sign(alg, signing_input)
    return f"{segments[0]}.{segments[1]}.{b64url_encode(signature)}"


def _json_segment(value: dict[str, Any]) -> str:
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return b64url_encode(text.encode("utf-8"))
