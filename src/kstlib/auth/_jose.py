"""The one JWS layer of kstlib: compact JWS parsing, JWK keys, verification, claim checks.

Scope (RFC 7515 / 7517 / 7518 / 7519 / 8037, OIDC Core 3.1.3.6):

* :func:`decode_jws` parses a compact JWS strictly (no padding, no stray
  characters, no duplicate JSON keys, size limits) and refuses what this
  layer does not understand (``crit``, unencoded payloads, JWE).
* :func:`parse_jwk` turns a public JWK into a ``cryptography`` key, refusing
  weak or malformed keys; :class:`KeySet` holds the usable keys of a JWKS.
* :func:`verify_signature` checks one signature against one key, with an
  algorithm allow-list and a key-type/algorithm match (no ``none``, no HMAC:
  no algorithm confusion).
* :func:`validate_claims` checks ``iss``, ``aud``, ``exp``, ``iat``, ``nbf``.

Headers that name keys (``jku``, ``x5u``, ``jwk``, ``x5c``) are never used to
find or trust a key: keys come only from the JWKS the caller chose.
Every failure raises :class:`JOSEError`; nothing here touches the network.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from types import MappingProxyType
from typing import Any, Final, NamedTuple, NoReturn, TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from kstlib.auth._names import ALLOWED_ALGORITHMS

__all__ = [
    "ALLOWED_ALGORITHMS",
    "IGNORED_KEY_HEADERS",
    "JWS",
    "MAX_HEADER_BYTES",
    "MAX_JWKS_KEYS",
    "MAX_RSA_BITS",
    "MAX_TOKEN_BYTES",
    "MIN_RSA_BITS",
    "SUPPORTED_ALGORITHMS",
    "Derivable",
    "JOSEError",
    "KeySet",
    "PublicJWK",
    "PublicKey",
    "SignatureCheck",
    "SkippedKey",
    "at_hash",
    "b64url_decode",
    "b64url_encode",
    "decode_jws",
    "json_copy",
    "number_claim",
    "parse_jwk",
    "signature_verifier",
    "validate_claims",
    "verify_signature",
]


PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

#: Largest compact token accepted (characters).
MAX_TOKEN_BYTES: Final = 64 * 1024
#: Largest decoded JOSE header accepted (bytes).
MAX_HEADER_BYTES: Final = 4 * 1024
#: Smallest RSA modulus accepted (RFC 7518 3.3 requires 2048 bits).
MIN_RSA_BITS: Final = 2048
#: Largest RSA modulus accepted: bigger keys only make verification slow.
MAX_RSA_BITS: Final = 16384
#: Largest RSA public exponent accepted (real keys use 65537).
_MAX_RSA_EXPONENT_BITS: Final = 64
#: Most keys read from one JWKS; the rest are skipped.
MAX_JWKS_KEYS: Final = 100
#: Header parameters that designate keys. Recorded, never followed or trusted.
IGNORED_KEY_HEADERS: Final[tuple[str, ...]] = ("jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256")

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_ALPHABET_AND_DOT = _ALPHABET + b"."
_TO_STD_B64 = bytes.maketrans(b"-_", b"+/")
#: base64url to standard base64 for a strict decode: ``+``, ``/`` and ``=`` of the input become
#: ``*``, which ``a2b_base64(strict_mode=True)`` refuses like any other non-alphabet byte.
_TO_STRICT_B64 = bytes.maketrans(b"-_+/=", b"+/***")
# For a segment of length 4k+2 (resp. 4k+3) the last character carries 4 (resp. 2) unused bits,
# which must be zero for the encoding to be canonical (RFC 4648 3.5).
_CANONICAL_LAST = {
    2: frozenset(c for i, c in enumerate(_ALPHABET) if i % 16 == 0),
    3: frozenset(c for i, c in enumerate(_ALPHABET) if i % 4 == 0),
}
_PADDING = (b"", b"===", b"==", b"=")
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
_METADATA_MEMBERS = ("kid", "alg", "use", "key_ops", "x5c", "x5t", "x5t#S256")
_EC_CURVES: Final[dict[str, tuple[ec.EllipticCurve, int]]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-384": (ec.SECP384R1(), 48),
    "P-521": (ec.SECP521R1(), 66),
}
_OKP_CURVES: Final[dict[str, int]] = {"Ed25519": 32, "Ed448": 57}


T = TypeVar("T")
_MISSING: Final = object()
#: Most variants of derived data kept per cached object (reader configurations, and per
#: key set the (alg, kid) pairs of the tokens seen).
_DERIVED_MAX: Final = 32


class Derivable:
    """A cached object (discovery document, key set, key) that keeps what readers derive
    from it.

    Readers (the token checker) keep what they derive from a cached object *on that
    object*: it lives and dies with the cache entry, under the cache's own key, and is
    never found for another object. Subclasses provide a ``_derived`` dict.
    """

    __slots__ = ()
    _derived: dict[Hashable, Any]

    def derived(self, variant: Hashable, make: Callable[[Any, Any], T]) -> T:
        """``make(self, variant)``, computed once per ``variant`` (a hashable of the reader's
        settings and of what it asks).

        Bounded; a ``None`` made is not kept (hostile input cannot fill the store); plain
        dict operations, so safe between threads (two threads may both make a value: the
        same one).
        """
        store = self._derived
        value = store.get(variant, _MISSING)
        if value is _MISSING:
            value = make(self, variant)
            if value is not None:
                if len(store) >= _DERIVED_MAX:
                    store.clear()
                store[variant] = value
        return value  # type: ignore[no-any-return]  # ``make`` made it (no typing.cast call)


class JOSEError(Exception):
    """A token, key or claim was refused.

    ``reason`` is one line for humans; ``claim`` names the failing claim when
    a claim check failed (callers map it onto ``TokenValidationError``).
    """

    def __init__(self, reason: str, *, claim: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claim = claim


def _fail(reason: str, *, claim: str | None = None) -> NoReturn:
    raise JOSEError(reason, claim=claim)


# --------------------------------------------------------------------------- base64url


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str, what: str = "value") -> bytes:
    """Decode strict unpadded base64url: no ``=``, no whitespace, canonical last character."""
    try:
        data = segment.encode("ascii")
    except (AttributeError, UnicodeEncodeError):
        _fail(f"{what} is not base64url (ASCII text expected)")
    if data.translate(None, _ALPHABET):
        _fail(f"{what} is not base64url (only A-Z a-z 0-9 - _ without padding are allowed)")
    return _decode_alphabet_checked(data, what)


def _decode_alphabet_checked(data: bytes, what: str) -> bytes:
    """Decode base64url bytes already known to hold only alphabet characters."""
    remainder = len(data) % 4
    if remainder == 1:
        _fail(f"{what} has an impossible base64url length")
    if remainder and data[-1] not in _CANONICAL_LAST[remainder]:
        _fail(f"{what} is not canonical base64url (non-zero trailing bits)")
    # The alphabet and length are checked, so the lenient decoder is exact (and faster).
    return binascii.a2b_base64(data.translate(_TO_STD_B64) + _PADDING[remainder])


# --------------------------------------------------------------------------- JSON


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars); cheaper than ``copy.deepcopy``."""
    if isinstance(value, dict | MappingProxyType):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_copy(v) for v in value]
    return value


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                _fail(f"duplicate JSON member {key!r}")
            seen.add(key)
    return result


def _refuse_constant(name: str) -> NoReturn:
    _fail(f"JSON constant {name} is not allowed")


# Built once: ``json.loads`` with hooks would build a decoder per call.
_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant
)


# The decoder's scanner (the C one when available): one value at an index, without the
# whitespace handling of ``decode`` (typeshed does not declare the attribute).
_SCAN_ONCE: Final[Callable[[str, int], tuple[Any, int]]] = _STRICT_JSON.scan_once  # type: ignore[attr-defined]


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        try:
            # Fast path: the text is exactly one JSON value (no surrounding whitespace).
            value, end = _SCAN_ONCE(text, 0)
        except (StopIteration, ValueError):
            end = -1
        if end != len(text):  # whitespace, trailing data or an error: the full decoder says
            value = _STRICT_JSON.decode(text)
    except JOSEError as exc:
        _fail(f"{what}: {exc.reason}")
    except (UnicodeDecodeError, ValueError, RecursionError):
        _fail(f"{what} is not valid UTF-8 JSON")
    if not isinstance(value, dict):
        _fail(f"{what} is not a JSON object")
    return value


# --------------------------------------------------------------------------- JWS


class JWS(NamedTuple):
    """A structurally valid compact JWS whose signature is not yet verified.

    A named tuple: built on every decode, it costs a fraction of a frozen dataclass.
    """

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        """The ``alg`` header (always a string after :func:`decode_jws`)."""
        alg: str = self.header["alg"]
        return alg

    @property
    def kid(self) -> str | None:
        """The ``kid`` header, if any."""
        kid: str | None = self.header.get("kid")
        return kid

    @property
    def ignored_key_headers(self) -> tuple[str, ...]:
        """Key-designating headers present in the token, which were not used."""
        return tuple(name for name in IGNORED_KEY_HEADERS if name in self.header)


def decode_jws(token: str) -> JWS:
    """Parse a compact JWS without verifying it; raise :class:`JOSEError` if malformed."""
    if not isinstance(token, str):
        _fail("token must be a string")
    if len(token) > MAX_TOKEN_BYTES:
        _fail(f"token is too large ({len(token)} characters, limit {MAX_TOKEN_BYTES})")
    if not token.isascii():
        _fail("token contains non-ASCII characters")
    data = token.encode("ascii")
    segments = data.split(b".")
    if len(segments) == 5:
        _fail("token is a JWE (encrypted JWT); only signed tokens (JWS) are supported")
    if len(segments) != 3:
        _fail(f"token must have 3 dot-separated segments, found {len(segments)}")
    header_seg, payload_seg, signature_seg = segments
    if len(header_seg) > (MAX_HEADER_BYTES * 4 + 2) // 3:
        _fail(f"token header is too large (limit {MAX_HEADER_BYTES} bytes)")
    if not payload_seg:
        _fail("token has an empty payload (detached content is not supported)")
    if not signature_seg:
        _fail("token is unsigned (empty signature)")
    # Fast path: the strict decoder checks the alphabet while decoding (no separate pass over
    # the token); anything it refuses takes the checked path below, which says what is wrong.
    payload_raw = _strict_b64url(payload_seg)
    signature = _strict_b64url(signature_seg)
    if (
        payload_raw is None
        or signature is None
        or (header_seg not in _HEADER_CACHE and header_seg.translate(None, _ALPHABET))
    ):
        if data.translate(None, _ALPHABET_AND_DOT):  # let the per-segment check say where
            for segment, what in zip(segments, ("header", "payload", "signature"), strict=True):
                b64url_decode(segment.decode("ascii"), what)
        header = _header_object(header_seg)
        payload = _json_object(_decode_alphabet_checked(payload_seg, "payload"), "payload")
        signature = _decode_alphabet_checked(signature_seg, "signature")
    else:
        header = _header_object(header_seg)
        payload = _json_object(payload_raw, "payload")
    return _NEW_TUPLE(
        JWS, (header, payload, data[: len(header_seg) + 1 + len(payload_seg)], signature)
    )


#: Builds a :class:`JWS` from a tuple in C (its generated ``__new__`` is a Python frame).
_NEW_TUPLE: Final = tuple.__new__


def _strict_b64url(data: bytes) -> bytes | None:
    """Canonical unpadded base64url ``data`` decoded, or None when it is not (any reason)."""
    remainder = len(data) % 4
    if remainder == 1 or (remainder and data[-1] not in _CANONICAL_LAST[remainder]):
        return None
    try:
        return binascii.a2b_base64(
            data.translate(_TO_STRICT_B64) + _PADDING[remainder], strict_mode=True
        )
    except binascii.Error:
        return None


# Validated headers by encoded segment: the tokens of one issuer share a handful of headers.
# Bounded in entries and entry size: forged headers can churn it, never grow it.
_HEADER_CACHE: dict[bytes, dict[str, Any]] = {}
_HEADER_CACHE_MAX: Final = 256
_HEADER_CACHE_SEGMENT_MAX: Final = 512
_SCALAR_TYPES: Final = frozenset({str, int, float, bool, type(None)})


def _header_object(segment: bytes) -> dict[str, Any]:
    """The checked header of an alphabet-checked segment (a fresh dict on every call)."""
    cached = _HEADER_CACHE.get(segment)
    if cached is not None:
        return cached.copy()  # flat: only immutable scalars, so a shallow copy is a deep one
    header = _json_object(_decode_alphabet_checked(segment, "header"), "header")
    _check_header(header)
    if len(segment) <= _HEADER_CACHE_SEGMENT_MAX and all(
        type(value) in _SCALAR_TYPES for value in header.values()
    ):
        if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[segment] = header.copy()
    return header


def _check_header(header: dict[str, Any]) -> None:
    alg = header.get("alg")
    if alg is None:
        _fail("header has no 'alg'")
    if not isinstance(alg, str) or not alg:
        _fail("header 'alg' is not a non-empty string")
    if "crit" in header:
        _fail("header lists critical extensions ('crit'); none are supported")
    if "b64" in header:
        _fail("header 'b64' (unencoded payload, RFC 7797) is not supported")
    if "enc" in header or "zip" in header:
        _fail("header has JWE parameters ('enc'/'zip'); only signed tokens are supported")
    for name in ("kid", "typ", "cty"):
        if name in header and not isinstance(header[name], str):
            _fail(f"header {name!r} is not a string")


# --------------------------------------------------------------------------- algorithms


_Check = Callable[[bytes, bytes], None]
#: What ``cryptography`` raises for a signature it cannot even parse. Each bound check below
#: maps the errors itself (the same few lines in each) rather than through a shared wrapper: a
#: signature check is then one Python frame, in the token checker's hottest call.
_MALFORMED: Final = (ValueError, TypeError, UnsupportedAlgorithm)


@dataclass(frozen=True, slots=True)
class _AlgSpec:
    families: frozenset[str]
    #: A public key of one of ``families`` -> its check of (signature, signing input),
    #: raising :class:`JOSEError` ("signature is invalid" / "signature is malformed").
    bind: Callable[[Any], _Check]


def _rsa_verifier(
    pad: padding.AsymmetricPadding, hash_alg: hashes.HashAlgorithm
) -> Callable[[rsa.RSAPublicKey], _Check]:
    def bind(key: rsa.RSAPublicKey) -> _Check:
        size = (key.key_size + 7) // 8
        key_verify = key.verify

        def verify(signature: bytes, data: bytes) -> None:
            if len(signature) != size:
                _fail("signature is invalid")
            try:
                key_verify(signature, data, pad, hash_alg)
            except InvalidSignature:
                _fail("signature is invalid")
            except _MALFORMED:
                _fail("signature is malformed")

        return verify

    return bind


def _ecdsa_verifier(
    hash_alg: hashes.HashAlgorithm, coordinate_size: int
) -> Callable[[ec.EllipticCurvePublicKey], _Check]:
    scheme = ec.ECDSA(hash_alg)

    def bind(key: ec.EllipticCurvePublicKey) -> _Check:
        key_verify = key.verify

        def verify(signature: bytes, data: bytes) -> None:
            if len(signature) != 2 * coordinate_size:
                _fail("signature is invalid")
            r = int.from_bytes(signature[:coordinate_size], "big")
            s = int.from_bytes(signature[coordinate_size:], "big")
            try:
                key_verify(encode_dss_signature(r, s), data, scheme)
            except InvalidSignature:
                _fail("signature is invalid")
            except _MALFORMED:
                _fail("signature is malformed")

        return verify

    return bind


def _eddsa_verifier(key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) -> _Check:
    key_verify = key.verify

    def verify(signature: bytes, data: bytes) -> None:
        try:
            key_verify(signature, data)
        except InvalidSignature:
            _fail("signature is invalid")
        except _MALFORMED:
            _fail("signature is malformed")

    return verify


def _pss(hash_alg: hashes.HashAlgorithm) -> padding.PSS:
    # RFC 7518 3.5: the salt is as long as the hash output.
    return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)


def _build_alg_specs() -> dict[str, _AlgSpec]:
    specs: dict[str, _AlgSpec] = {}
    rsa_family = frozenset({"RSA"})
    for bits, hash_alg in (
        ("256", hashes.SHA256()),
        ("384", hashes.SHA384()),
        ("512", hashes.SHA512()),
    ):
        specs["RS" + bits] = _AlgSpec(rsa_family, _rsa_verifier(padding.PKCS1v15(), hash_alg))
        specs["PS" + bits] = _AlgSpec(rsa_family, _rsa_verifier(_pss(hash_alg), hash_alg))
    for alg, crv, hash_alg in (
        ("ES256", "P-256", hashes.SHA256()),
        ("ES384", "P-384", hashes.SHA384()),
        ("ES512", "P-521", hashes.SHA512()),
    ):
        size = _EC_CURVES[crv][1]
        specs[alg] = _AlgSpec(frozenset({"EC:" + crv}), _ecdsa_verifier(hash_alg, size))
    specs["EdDSA"] = _AlgSpec(frozenset({"OKP:Ed25519", "OKP:Ed448"}), _eddsa_verifier)
    # Fully-specified names (RFC 9864): supported, but not in the default allow-list.
    specs["Ed25519"] = _AlgSpec(frozenset({"OKP:Ed25519"}), _eddsa_verifier)
    specs["Ed448"] = _AlgSpec(frozenset({"OKP:Ed448"}), _eddsa_verifier)
    return specs


_ALG_SPECS: Final = _build_alg_specs()
#: Every algorithm :func:`verify_signature` can check when a caller allows it.
SUPPORTED_ALGORITHMS: Final[frozenset[str]] = frozenset(_ALG_SPECS)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicJWK:
    """A parsed public JWK: the ``cryptography`` key plus the JWK metadata.

    Instances are immutable and shared between caches; ``jwk`` is a read-only
    view of the public members (private members of the source are dropped).
    """

    kid: str | None
    kty: str
    alg: str | None
    use: str | None
    key: PublicKey
    size_bits: int
    curve: str | None
    fingerprint: str
    jwk: Mapping[str, Any]
    key_ops: tuple[str, ...] | None = None
    x5c: tuple[str, ...] = ()
    private_members_present: bool = False
    #: Key family matched against algorithms: ``RSA``, ``EC:P-256``, ``OKP:Ed25519``...
    family: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        family = self.kty if self.curve is None else f"{self.kty}:{self.curve}"
        object.__setattr__(self, "family", family)

    @property
    def key_type(self) -> str:
        """Human description such as ``RSA``, ``EC P-256`` or ``OKP Ed25519``."""
        return self.kty if self.curve is None else f"{self.kty} {self.curve}"

    def pem(self) -> str:
        """The key as a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo)."""
        return self._pem

    @cached_property
    def _pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def usable_for(self, alg: str) -> bool:
        """Whether this key may verify signatures made with ``alg`` (type, ``use``, ``alg``)."""
        spec = _ALG_SPECS.get(alg)
        return (
            spec is not None
            and self.family in spec.families
            and self.use in (None, "sig")
            and self.alg in (None, alg)
            and (self.key_ops is None or "verify" in self.key_ops)
        )

    def certificate_info(self, *, now: datetime | None = None) -> dict[str, Any]:
        """Facts about the first ``x5c`` certificate (empty when there is none).

        Informational only: the chain is not validated against any trust store.
        ``matches_jwk`` says whether the certificate holds this very key.
        """
        facts = dict(self._certificate_facts)
        if "not_before" in facts:
            moment = now or datetime.now(UTC)
            start = datetime.fromisoformat(facts["not_before"])
            facts["currently_valid"] = start <= moment <= datetime.fromisoformat(facts["not_after"])
        return facts

    @cached_property
    def _certificate_facts(self) -> Mapping[str, Any]:
        if not self.x5c:
            return MappingProxyType({})
        return MappingProxyType(_certificate_facts(self.x5c, self.key))


def _certificate_facts(chain: tuple[str, ...], key: PublicKey) -> dict[str, Any]:
    # imported here: only a key with an x5c chain needs it, and it is ~30 ms of every
    # kstlib process's start-up (cryptography's X.509 layer builds its OID tables at import)
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
        cert_spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
        return {"error": f"x5c[0] is not a readable X.509 certificate ({type(exc).__name__})"}
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "matches_jwk": cert_spki == _spki_der(key),
        "chain_length": len(chain),
        "sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }


def _spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _optional_str(jwk: Mapping[str, Any], name: str) -> str | None:
    value = jwk.get(name)
    if value is not None and not isinstance(value, str):
        _fail(f"JWK member {name!r} is not a string")
    return value


def _member_bytes(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        _fail(f"JWK member {name!r} is missing or not a string")
    return b64url_decode(value, f"JWK member {name!r}")


def _rsa_key(jwk: Mapping[str, Any]) -> tuple[PublicKey, int, None]:
    n = int.from_bytes(_member_bytes(jwk, "n"), "big")
    e = int.from_bytes(_member_bytes(jwk, "e"), "big")
    bits = n.bit_length()
    if bits < MIN_RSA_BITS:
        _fail(f"RSA key is too weak ({bits} bits, minimum {MIN_RSA_BITS})")
    if bits > MAX_RSA_BITS:
        _fail(f"RSA key is too large ({bits} bits, maximum {MAX_RSA_BITS})")
    if e.bit_length() > _MAX_RSA_EXPONENT_BITS:
        _fail("RSA public exponent is unreasonably large")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key(), bits, None
    except ValueError as exc:
        _fail(f"RSA key is invalid ({exc})")


def _ec_key(jwk: Mapping[str, Any]) -> tuple[PublicKey, int, str]:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _EC_CURVES:
        _fail(f"EC curve {crv!r} is not supported (P-256, P-384, P-521)")
    curve, size = _EC_CURVES[crv]
    x, y = _member_bytes(jwk, "x"), _member_bytes(jwk, "y")
    if len(x) != size or len(y) != size:
        _fail(f"EC {crv} coordinates must be {size} bytes each")
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    except ValueError:
        _fail(f"EC point is not on curve {crv}")
    return key, curve.key_size, crv


def _okp_key(jwk: Mapping[str, Any]) -> tuple[PublicKey, int, str]:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _OKP_CURVES:
        _fail(f"OKP curve {crv!r} is not supported for signatures (Ed25519, Ed448)")
    x = _member_bytes(jwk, "x")
    if len(x) != _OKP_CURVES[crv]:
        _fail(f"{crv} public key must be {_OKP_CURVES[crv]} bytes")
    try:
        key: PublicKey = (
            ed25519.Ed25519PublicKey.from_public_bytes(x)
            if crv == "Ed25519"
            else ed448.Ed448PublicKey.from_public_bytes(x)
        )
    except ValueError:
        _fail(f"{crv} public key is invalid")
    return key, len(x) * 8, crv


_KEY_BUILDERS: Final = {"RSA": _rsa_key, "EC": _ec_key, "OKP": _okp_key}


def _x5c(jwk: Mapping[str, Any]) -> tuple[str, ...]:
    chain = jwk.get("x5c")
    if chain is None:
        return ()
    if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
        _fail("JWK member 'x5c' is not a list of strings")
    return tuple(chain)


def _key_ops(jwk: Mapping[str, Any]) -> tuple[str, ...] | None:
    ops = jwk.get("key_ops")
    if ops is None:
        return None
    if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
        _fail("JWK member 'key_ops' is not a list of strings")
    return tuple(ops)


def _build_public_jwk(jwk: Mapping[str, Any]) -> PublicJWK:
    kty = jwk.get("kty")
    if kty == "oct":
        _fail("symmetric (oct) keys are never accepted")
    if not isinstance(kty, str) or kty not in _KEY_BUILDERS:
        _fail(f"key type {kty!r} is not supported (RSA, EC, OKP)")
    key, size_bits, curve = _KEY_BUILDERS[kty](jwk)
    members = ("kty", *_PUBLIC_MEMBERS[kty], *_METADATA_MEMBERS)
    public = {name: json_copy(jwk[name]) for name in members if name in jwk}
    return PublicJWK(
        kid=_optional_str(jwk, "kid"),
        kty=kty,
        alg=_optional_str(jwk, "alg"),
        use=_optional_str(jwk, "use"),
        key=key,
        size_bits=size_bits,
        curve=curve,
        fingerprint=hashlib.sha256(_spki_der(key)).hexdigest(),
        jwk=MappingProxyType(public),
        key_ops=_key_ops(jwk),
        x5c=_x5c(jwk),
        private_members_present=any(name in jwk for name in _PRIVATE_MEMBERS),
    )


class _ParsedKeyCache:
    """A small thread-safe LRU of parsed keys, keyed by the canonical JWK JSON."""

    def __init__(self, maxsize: int = 256) -> None:
        self._maxsize = maxsize
        self._items: OrderedDict[str, PublicJWK] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, canonical: str) -> PublicJWK | None:
        with self._lock:
            found = self._items.get(canonical)
            if found is not None:
                self._items.move_to_end(canonical)
            return found

    def put(self, canonical: str, key: PublicJWK) -> None:
        with self._lock:
            self._items[canonical] = key
            while len(self._items) > self._maxsize:
                self._items.popitem(last=False)


_PARSED_KEYS = _ParsedKeyCache()


def parse_jwk(jwk: Mapping[str, Any]) -> PublicJWK:
    """Parse one public JWK (RSA >= 2048 bits, EC P-256/384/521, OKP Ed25519/Ed448).

    Private members are ignored. Results are cached by the canonical JWK, so
    parsing the same key twice costs one JSON serialisation.
    """
    if not isinstance(jwk, Mapping):
        _fail("JWK is not a JSON object")
    try:
        canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        _fail("JWK is not plain JSON")
    cached = _PARSED_KEYS.get(canonical)
    if cached is not None:
        return cached
    parsed = _build_public_jwk(jwk)
    _PARSED_KEYS.put(canonical, parsed)
    return parsed


@dataclass(frozen=True, slots=True)
class SkippedKey:
    """A JWKS entry that was not usable, and why."""

    index: int
    kid: str | None
    kty: str | None
    reason: str


class KeySet(Derivable):
    """The usable keys of a JWKS (immutable after construction; safe to share between threads)."""

    __slots__ = ("_by_kid", "_derived", "_memo", "_public_text", "keys", "skipped")

    def __init__(self, keys: Iterable[PublicJWK], skipped: Iterable[SkippedKey] = ()) -> None:
        self.keys: tuple[PublicJWK, ...] = tuple(keys)
        self.skipped: tuple[SkippedKey, ...] = tuple(skipped)
        by_kid: dict[str, list[PublicJWK]] = {}
        for key in self.keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        self._by_kid = {kid: tuple(found) for kid, found in by_kid.items()}
        self._memo: dict[tuple[str, str | None], tuple[PublicJWK, ...]] = {}
        self._public_text = json.dumps({"keys": [json_copy(key.jwk) for key in self.keys]})
        self._derived: dict[Hashable, Any] = {}

    def __repr__(self) -> str:
        kids = [key.kid for key in self.keys]
        return f"KeySet(keys={kids!r}, skipped={len(self.skipped)})"

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def from_jwks(cls, doc: Any) -> KeySet:
        """Parse a JWKS document, skipping unusable keys; raise if none is usable."""
        if not isinstance(doc, Mapping):
            _fail("JWKS is not a JSON object")
        entries = doc.get("keys")
        if not isinstance(entries, list):
            _fail("JWKS has no 'keys' list")
        keys: list[PublicJWK] = []
        skipped: list[SkippedKey] = []
        for index, entry in enumerate(entries):
            if index >= MAX_JWKS_KEYS:
                skipped.append(SkippedKey(index, None, None, "too many keys in the JWKS"))
                break
            try:
                keys.append(parse_jwk(entry))
            except JOSEError as exc:
                skipped.append(_skipped(index, entry, exc.reason))
        if not keys:
            reasons = "; ".join(f"#{s.index}: {s.reason}" for s in skipped[:5]) or "it is empty"
            _fail(f"JWKS has no usable signature key ({reasons})")
        return cls(keys, skipped)

    def has_kid(self, kid: str) -> bool:
        """Whether any usable key carries this ``kid``."""
        return kid in self._by_kid

    def candidates(self, alg: str, kid: str | None) -> list[PublicJWK]:
        """Keys that may verify a token signed with ``alg`` and carrying ``kid``.

        With a ``kid``: the keys with that ``kid`` usable for ``alg`` (several when
        the JWKS repeats a ``kid``). Without: every key usable for ``alg``.
        """
        memo_key = (alg, kid)
        found = self._memo.get(memo_key)
        if found is None:
            pool = self.keys if kid is None else self._by_kid.get(kid, ())
            found = tuple(key for key in pool if key.usable_for(alg))
            if found:  # memoise hits only: hostile kids cannot grow the memo
                self._memo[memo_key] = found
        return list(found)

    def public_document(self) -> dict[str, Any]:
        """The usable keys as a JWKS (public members only; a fresh copy on every call)."""
        document: dict[str, Any] = json.loads(self._public_text)
        return document


def _skipped(index: int, entry: Any, reason: str) -> SkippedKey:
    kid = entry.get("kid") if isinstance(entry, Mapping) else None
    kty = entry.get("kty") if isinstance(entry, Mapping) else None
    return SkippedKey(
        index,
        kid if isinstance(kid, str) else None,
        kty if isinstance(kty, str) else None,
        reason,
    )


# --------------------------------------------------------------------------- verify


#: Verifies one signature (``signature``, ``signing_input``); raises :class:`JOSEError`.
SignatureCheck = Callable[[bytes, bytes], None]


def signature_verifier(
    key: PublicJWK, alg: str, *, allowed: frozenset[str] = ALLOWED_ALGORITHMS
) -> SignatureCheck:
    """What :func:`verify_signature` decides about ``key`` and ``alg``, decided once.

    The returned function verifies the signature of one token signed with ``alg``; a
    pair that may not be used (algorithm not allowed or not supported, key of another
    type, key restricted to another use or algorithm) gives a function that refuses
    every signature with the reason. Nothing in it depends on a token, so callers that
    see the same key and algorithm again may keep it.
    """
    if alg not in allowed:
        return _refusal(f"algorithm {alg!r} is not allowed")
    spec = _ALG_SPECS.get(alg)
    if spec is None:
        return _refusal(f"algorithm {alg!r} is not supported")
    if key.family not in spec.families:
        return _refusal(f"a {key.key_type} key cannot verify {alg} signatures")
    if not key.usable_for(alg):
        return _refusal(
            f"key {key.kid or key.fingerprint[:16]!r} is restricted to another use or algorithm"
        )
    return spec.bind(key.key)


def _refusal(reason: str) -> SignatureCheck:
    def refuse(signature: bytes, signing_input: bytes) -> None:
        _fail(reason)

    return refuse


def verify_signature(
    jws: JWS, key: PublicJWK, *, allowed: frozenset[str] = ALLOWED_ALGORITHMS
) -> None:
    """Verify the signature of ``jws`` with ``key``; raise :class:`JOSEError` if it fails.

    The algorithm must be in ``allowed`` and supported, and ``key`` must be of the
    type the algorithm requires (and not restricted to another ``alg``/``use``).
    """
    signature_verifier(key, jws.header["alg"], allowed=allowed)(jws.signature, jws.signing_input)


# --------------------------------------------------------------------------- claims


_NUMBERS: Final = (int, float)
#: Integers below this size convert to finite floats (no overflow, no infinity).
_EXACT_INT: Final = 2**53


def number_claim(payload: Mapping[str, Any], name: str) -> float | None:
    """The NumericDate claim ``name`` as a finite float (``None`` when absent).

    Raises:
        JOSEError: the claim is not a finite number (booleans are not numbers).
    """
    value = payload.get(name)
    if value is None:
        return None
    if type(value) is int and -_EXACT_INT < value < _EXACT_INT:  # the common case, exact
        return float(value)
    if isinstance(value, bool) or not isinstance(value, _NUMBERS):
        _fail(f"claim {name!r} is not a number", claim=name)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        _fail(f"claim {name!r} is not a finite number", claim=name)
    return number


def _check_audience(payload: Mapping[str, Any], audience: str) -> None:
    aud = payload.get("aud")
    if isinstance(aud, str):
        audiences: list[Any] = [aud]
    elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
        audiences = aud
    elif aud is None:
        _fail("token has no 'aud' claim", claim="aud")
    else:
        _fail("claim 'aud' is neither a string nor a list of strings", claim="aud")
    if audience not in audiences:
        _fail(f"token audience does not include {audience!r}", claim="aud")


def _check_times(payload: Mapping[str, Any], leeway: float, now: float) -> None:
    exp = number_claim(payload, "exp")
    if exp is not None and now >= exp + leeway:
        _fail(f"token expired at {_utc(exp)}", claim="exp")
    iat = number_claim(payload, "iat")
    if iat is not None and iat > now + leeway:
        _fail(f"token is issued in the future ({_utc(iat)})", claim="iat")
    nbf = number_claim(payload, "nbf")
    if nbf is not None and nbf > now + leeway:
        _fail(f"token is not valid before {_utc(nbf)}", claim="nbf")


def _utc(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return str(timestamp)


def validate_claims(
    payload: Mapping[str, Any],
    *,
    issuer: str | None,
    audience: str | None,
    leeway: float = 60.0,
    now: float | None = None,
    require: Iterable[str] = ("exp", "iat"),
) -> None:
    """Check registered claims; raise :class:`JOSEError` naming the failing ``claim``.

    ``issuer``/``audience`` are compared when given (``aud`` may be a string or
    a list). Time claims must be numbers (not booleans); ``exp``, ``iat`` and
    ``nbf`` are checked with ``leeway`` seconds of clock skew.
    """
    if not math.isfinite(leeway) or leeway < 0:
        raise ValueError("leeway must be a finite, non-negative number of seconds")
    checked_claims(payload, issuer, audience, leeway, time.time() if now is None else now, require)


def checked_claims(  # noqa: PLR0917 - positional on purpose: no keyword matching per check
    payload: Mapping[str, Any],
    issuer: str | None,
    audience: str | None,
    leeway: float,
    now: float,
    require: Iterable[str],
) -> None:
    """:func:`validate_claims` for callers whose ``leeway`` is already known valid (an
    :class:`~kstlib.auth._idtoken.IDTokenPolicy`'s), positional: the warm token check's path.
    """
    for name in require:
        if payload.get(name) is None:
            _fail(f"token has no {name!r} claim", claim=name)
    if issuer is not None and payload.get("iss") != issuer:
        _fail(f"token issuer {payload.get('iss')!r} is not {issuer!r}", claim="iss")
    if audience is not None:
        _check_audience(payload, audience)
    _check_times(payload, leeway, now)


# --------------------------------------------------------------------------- OIDC hashes


def at_hash(access_token: str, alg: str, *, curve: str | None = None) -> str:
    """The OIDC ``at_hash`` (also ``c_hash``) of a value for an ID token signed with ``alg``.

    Left half of the hash named by ``alg``, base64url. For EdDSA the hash depends on
    the curve: SHA-512 for Ed25519 (the default), SHAKE256 (114 bytes) for Ed448
    (OpenID Connect Token Hash Algorithms).
    """
    data = access_token.encode("utf-8")
    if alg == "Ed448" or (alg == "EdDSA" and curve == "Ed448"):
        digest = hashlib.shake_256(data).digest(114)
    elif alg in ("EdDSA", "Ed25519"):
        digest = hashlib.sha512(data).digest()
    elif alg in _ALG_SPECS:
        digest = hashlib.new("sha" + alg[2:], data).digest()
    else:
        _fail(f"no hash is defined for algorithm {alg!r}")
    return b64url_encode(digest[: len(digest) // 2])
