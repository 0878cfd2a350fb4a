"""DPoP (RFC 9449): the client's proof-of-possession key, its proofs, and server nonces.

One :class:`DPoPKey` per login: generated when the authorization starts (its thumbprint
goes out as ``dpop_jkt``), used for the code exchange, every refresh and every API
request, and kept next to the token in the token storage (``Token.dpop_key``), so it
rests exactly where the token rests (a 0600 file, a sops-encrypted file). A new login
makes a new key; a refresh keeps it.

A proof is a compact JWS with the header ``{"typ": "dpop+jwt", "alg", "jwk"}`` (the
public key only) and the claims ``jti``, ``htm``, ``htu`` (no query, no fragment),
``iat``, plus ``ath`` (the access token's hash) on resource requests and ``nonce`` when
the server gave one. The header segment never changes for a key: it is encoded once.

:class:`NonceBook` keeps the last ``DPoP-Nonce`` of each origin (bounded); a malformed
nonce is never kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

from kstlib.auth._names import DPOP_ALGORITHMS
from kstlib.auth.errors import DPoPBindingError, DPoPError, DPoPNonceError

__all__ = [
    "DEFAULT_DPOP_ALG",
    "DPOP_ALGORITHMS",
    "DPoPKey",
    "NonceBook",
    "access_token_jkt",
    "htu_of",
    "is_nonce_challenge",
    "origin_of",
    "valid_nonce",
]

DEFAULT_DPOP_ALG: Final = DPOP_ALGORITHMS[0]
#: Longest ``DPoP-Nonce`` accepted (the RFC sets no limit; a server's is a few dozen chars).
MAX_NONCE_LENGTH: Final = 512
#: Origins whose nonce is remembered at once (least recently used dropped first).
MAX_NONCE_ORIGINS: Final = 64
#: RFC 9449 section 8.1: ``nonce = 1*NQCHAR``, ``NQCHAR = %x21 / %x23-5B / %x5D-7E``.
_NONCE_RE: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
#: The ``DPoP`` auth-scheme in a WWW-Authenticate value, and a ``use_dpop_nonce`` error
#: after it (two linear searches: no backtracking on a hostile header).
_SCHEME_RE: Final = re.compile(r"(?:^|[\s,])DPoP(?=[\s,]|$)", re.IGNORECASE)
_NONCE_ERROR_RE: Final = re.compile(r"\berror\s*=\s*\"?use_dpop_nonce\b", re.IGNORECASE)
#: Longest WWW-Authenticate value looked at.
_MAX_CHALLENGE_LENGTH: Final = 8192
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def _b64url(data: bytes) -> bytes:
    """Unpadded base64url as bytes, in one C call (a proof encodes two segments)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


def b64url_encode(data: bytes) -> str:
    """Unpadded base64url (this module stays free of ``cryptography`` until it signs)."""
    return _b64url(data).decode("ascii")


def _json_str(value: str) -> str:
    """``value`` as a JSON string; plain printable ASCII (a method, a URL) needs no encoder."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


#: ``htm`` of the usual methods, as JSON.
_HTM_JSON: Final = {m: f'"{m}"' for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")}

#: A ``jti`` is 18 random bytes (144 bits; RFC 9449 4.2 asks for at least 96): 24
#: base64url characters, no padding. They are drawn from ``os.urandom`` by the batch (one
#: system call per :data:`_JTI_BATCH` proofs instead of one per proof); each is handed out
#: once (``list.pop`` is atomic), and a forked child drops its parent's batch so two
#: processes never share one. A jti is public (it travels in the proof), so holding the next
#: few in memory discloses nothing; the proof's security rests on its signature.
_JTI_BYTES: Final = 18
_JTI_CHARS: Final = 24
_JTI_BATCH: Final = 128
_jtis: list[str] = []
if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_jtis.clear)


def new_jti() -> str:
    """A fresh, unique ``jti`` (base64url of 144 random bits)."""
    try:
        return _jtis.pop()
    except IndexError:
        text = _b64url(os.urandom(_JTI_BYTES * _JTI_BATCH)).decode("ascii")
        batch = [text[i : i + _JTI_CHARS] for i in range(0, len(text), _JTI_CHARS)]
        mine = batch.pop()
        _jtis.extend(batch)
        return mine


def valid_nonce(value: str | None) -> bool:
    """Whether ``value`` is a usable ``DPoP-Nonce`` (1*NQCHAR, at most 512 characters)."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_NONCE_LENGTH
        and _NONCE_RE.fullmatch(value) is not None
    )


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url`` (lowercased, default port dropped)."""
    scheme, _, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
    scheme = scheme.lower()
    authority = authority.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and authority.endswith(f":{default}"):
        authority = authority[: -len(str(default)) - 1]
    return f"{scheme}://{authority}"


def htu_of(url: str) -> str:
    """The ``htu`` claim of a request to ``url``: the URL without query and fragment."""
    return url.split("#", 1)[0].split("?", 1)[0]


def is_nonce_challenge(status_code: int, www_authenticate: list[str]) -> bool:
    """Whether a resource server's answer asks for a DPoP nonce (RFC 9449 section 9)."""
    if status_code != 401:
        return False
    for value in www_authenticate:
        head = value[:_MAX_CHALLENGE_LENGTH]
        scheme = _SCHEME_RE.search(head)
        if scheme is not None and _NONCE_ERROR_RE.search(head, scheme.end()):
            return True
    return False


def _segment(value: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(value, separators=(",", ":")).encode("ascii"))


def _private_jwk(alg: str) -> dict[str, Any]:
    """A fresh private JWK for ``alg`` (generated by ``cryptography``)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    from kstlib.auth._signing import load_signing_key

    if alg in ("ES256", "ES384"):
        curve, size = (ec.SECP256R1(), 32) if alg == "ES256" else (ec.SECP384R1(), 48)
        ec_key = ec.generate_private_key(curve)
        point = ec_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256" if alg == "ES256" else "P-384",
            "x": b64url_encode(point.x.to_bytes(size, "big")),
            "y": b64url_encode(point.y.to_bytes(size, "big")),
            "d": b64url_encode(ec_key.private_numbers().private_value.to_bytes(size, "big")),
        }
    if alg == "EdDSA":
        from cryptography.hazmat.primitives import serialization

        ed_key = ed25519.Ed25519PrivateKey.generate()
        raw = serialization.Encoding.Raw
        public = ed_key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
        private = ed_key.private_bytes(
            raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64url_encode(public),
            "d": b64url_encode(private),
        }
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = rsa_key.private_numbers()
    jwk = load_signing_key(_rsa_members(numbers)).public_jwk()
    jwk.update(_rsa_members(numbers))
    return jwk


def _rsa_members(numbers: Any) -> dict[str, Any]:
    def enc(value: int) -> str:
        return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))

    public = numbers.public_numbers
    return {
        "kty": "RSA",
        "n": enc(public.n),
        "e": enc(public.e),
        "d": enc(numbers.d),
        "p": enc(numbers.p),
        "q": enc(numbers.q),
        "dp": enc(numbers.dmp1),
        "dq": enc(numbers.dmq1),
        "qi": enc(numbers.iqmp),
    }


#: JWK members of the public half, per key type (RFC 7638 section 3.2 order for thumbprints).
_PUBLIC_MEMBERS: Final = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


class DPoPKey:
    """A DPoP key pair: signs proofs; ``repr`` shows only its algorithm and thumbprint.

    Stored inside the token (``Token.dpop_key``) as :meth:`to_dict`; the private key is
    parsed on first use and the proof header encoded once.
    """

    __slots__ = (
        "_ath",
        "_header",
        "_htu",
        "_jwk",
        "_lock",
        "_sign_fast",
        "_thumbprint",
        "alg",
    )

    def __init__(self, alg: str, jwk: Mapping[str, Any]) -> None:
        if alg not in DPOP_ALGORITHMS:
            raise ValueError(f"DPoP algorithm {alg!r} is not supported")
        kty = jwk.get("kty")
        members = _PUBLIC_MEMBERS.get(kty) if isinstance(kty, str) else None
        if members is None or not all(isinstance(jwk.get(m), str) for m in (*members, "d")):
            raise ValueError("the DPoP key is not a private EC, OKP or RSA JWK")
        self.alg = alg
        self._jwk = dict(jwk)
        #: ``data -> signature``, built on first use (the private key parsed once).
        self._sign_fast: Callable[[bytes], bytes] | None = None
        self._lock = threading.Lock()
        #: The last access token and its ``ath`` (a session sends one token many times).
        self._ath: tuple[str, str] = ("", "")
        #: The last request URL and its ``htu`` as JSON (a session calls one URL many times).
        self._htu: tuple[str, str] = ("", "")
        public = {name: self._jwk[name] for name in members}
        canonical = json.dumps(public, separators=(",", ":"), sort_keys=True).encode("ascii")
        self._thumbprint = b64url_encode(hashlib.sha256(canonical).digest())
        #: The header segment and its dot, as bytes: the start of every signing input.
        self._header = _segment({"typ": "dpop+jwt", "alg": alg, "jwk": public}).encode() + b"."

    @classmethod
    def generate(cls, alg: str = DEFAULT_DPOP_ALG) -> DPoPKey:
        """A new key pair for ``alg`` (one of :data:`DPOP_ALGORITHMS`)."""
        if alg not in DPOP_ALGORITHMS:
            raise ValueError(f"DPoP algorithm {alg!r} is not supported")
        return cls(alg, _private_jwk(alg))

    @classmethod
    def from_dict(cls, data: Any) -> DPoPKey:
        """Restore a key saved by :meth:`to_dict` (ValueError / TypeError when malformed)."""
        if not isinstance(data, Mapping):
            raise TypeError("the stored DPoP key is not an object")
        alg, jwk = data.get("alg"), data.get("jwk")
        if not isinstance(alg, str) or not isinstance(jwk, Mapping):
            raise TypeError("the stored DPoP key has no 'alg' and 'jwk'")
        return cls(alg, jwk)

    def to_dict(self) -> dict[str, Any]:
        """``{"alg", "jwk"}`` with the PRIVATE JWK: only for the token storage."""
        return {"alg": self.alg, "jwk": dict(self._jwk)}

    @property
    def thumbprint(self) -> str:
        """The JWK SHA-256 thumbprint (RFC 7638) of the public key: ``jkt``, ``dpop_jkt``."""
        return self._thumbprint

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK."""
        members = _PUBLIC_MEMBERS[self._jwk["kty"]]
        return {name: self._jwk[name] for name in members}

    def __repr__(self) -> str:
        return f"DPoPKey(alg={self.alg!r}, jkt={self._thumbprint[:8]}...)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DPoPKey) and other._thumbprint == self._thumbprint

    def __hash__(self) -> int:
        return hash(self._thumbprint)

    def __getstate__(self) -> None:
        raise TypeError("a DPoPKey is not picklable (it holds a private key)")

    def __copy__(self) -> DPoPKey:
        return self  # never changes once made: a copied token shares its key

    def __deepcopy__(self, memo: dict[int, Any]) -> DPoPKey:
        return self

    def _signer(self) -> Callable[[bytes], bytes]:
        """Parse (and check) the private key once; EC keys get a direct ECDSA path."""
        with self._lock:
            if self._sign_fast is not None:
                return self._sign_fast
            from kstlib.auth._signing import SigningError, load_signing_key

            try:
                signer = load_signing_key(self._jwk)  # checks the key and its public half
            except SigningError as exc:
                raise DPoPError(
                    f"The DPoP key stored with the token is unusable ({exc.reason}); log in "
                    "again to get a new key",
                    reason="unusable key",
                ) from None
            alg = self.alg
            if alg in _EC_SIZES:
                self._sign_fast = _ecdsa_signer(self._jwk, alg)
            else:
                self._sign_fast = lambda data: signer.sign(alg, data)
            return self._sign_fast

    def _htu_json(self, url: str) -> str:
        last_url, last_json = self._htu
        if last_url == url:
            return last_json
        value = _json_str(htu_of(url))
        self._htu = (url, value)
        return value

    def _ath_of(self, access_token: str) -> str:
        last_token, last_ath = self._ath
        if last_token == access_token:
            return last_ath
        value = ath_of(access_token)
        self._ath = (access_token, value)
        return value

    def proof(
        self,
        htm: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
    ) -> str:
        """A DPoP proof for an ``htm`` request to ``url`` (query and fragment dropped).

        ``access_token`` adds ``ath`` (resource requests); ``nonce`` the server's nonce.
        """
        # The claims as JSON without json.dumps of a dict (a proof per request): jti and ath
        # are base64url, iat an int; htm and htu are JSON-escaped; a nonce is 1*NQCHAR
        # (no quote, no backslash), checked before it is used.
        iat = int(time.time() if now is None else now)
        text = (
            f'{{"jti":"{new_jti()}","htm":{_HTM_JSON.get(htm) or _json_str(htm)},'
            f'"htu":{self._htu_json(url)},"iat":{iat}'
        )
        if access_token is not None:
            text += f',"ath":"{self._ath_of(access_token)}"'
        if nonce is not None:
            if not valid_nonce(nonce):
                raise ValueError("the DPoP nonce is not 1*NQCHAR")
            text += f',"nonce":"{nonce}"'
        signing_input = self._header + _b64url((text + "}").encode("ascii"))
        sign = self._sign_fast or self._signer()
        return (signing_input + b"." + _b64url(sign(signing_input))).decode("ascii")


def ath_of(access_token: str) -> str:
    """``ath``: base64url(SHA-256(access token)) (RFC 9449 section 4.2)."""
    return b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest())


class NonceBook:
    """The last ``DPoP-Nonce`` of each origin (at most :data:`MAX_NONCE_ORIGINS`)."""

    def __init__(self, max_origins: int = MAX_NONCE_ORIGINS) -> None:
        self._nonces: OrderedDict[str, str] = OrderedDict()
        self._max = max_origins
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"NonceBook(origins={len(self._nonces)})"

    def get(self, url: str) -> str | None:
        """The nonce to put in a proof for a request to ``url`` (None: none known)."""
        if not self._nonces:
            return None
        return self._nonces.get(origin_of(url))  # one dict read: atomic, no lock needed

    def record(self, url: str, nonce: str | None) -> bool:
        """Remember a well-formed ``nonce`` for ``url``'s origin; False when malformed/absent."""
        if nonce is None or not valid_nonce(nonce):
            return False
        origin = origin_of(url)
        with self._lock:
            self._nonces[origin] = nonce
            self._nonces.move_to_end(origin)
            while len(self._nonces) > self._max:
                self._nonces.popitem(last=False)
        return True

    def forget(self, url: str) -> None:
        """Drop the nonce of ``url``'s origin."""
        with self._lock:
            self._nonces.pop(origin_of(url), None)

    def take_challenge(self, url: str, nonce: str | None, *, provider: str, where: str) -> None:
        """Record the nonce a ``use_dpop_nonce`` answer came with; a typed error if unusable."""
        if not self.record(url, nonce):
            what = "no" if not nonce else "a malformed"
            raise DPoPNonceError(
                f"{where} of '{provider}' asked for a DPoP nonce (use_dpop_nonce) but sent "
                f"{what} DPoP-Nonce header (RFC 9449 8.1: 1*NQCHAR, at most "
                f"{MAX_NONCE_LENGTH} characters); nothing was stored: the server is "
                "misconfigured, contact its operator",
                reason="malformed nonce" if nonce else "missing nonce",
                origin=origin_of(url),
            )


_EC_SIZES: Final = {"ES256": 32, "ES384": 48}


def _ecdsa_signer(jwk: Mapping[str, Any], alg: str) -> Callable[[bytes], bytes]:
    """``data -> r || s`` for an EC key (JWS ES256/ES384), with no per-call set-up."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from kstlib.auth._signing import ecdsa_raw

    size = _EC_SIZES[alg]
    d = int.from_bytes(base64.urlsafe_b64decode(jwk["d"] + "=" * (-len(jwk["d"]) % 4)), "big")
    curve = ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()
    key = ec.derive_private_key(d, curve)
    ecdsa = ec.ECDSA(hashes.SHA256() if alg == "ES256" else hashes.SHA384())

    def sign(data: bytes) -> bytes:
        return ecdsa_raw(key.sign(data, ecdsa), size)

    return sign


def nonce_loop_error(url: str, *, provider: str, where: str) -> DPoPNonceError:
    """The error of a second ``use_dpop_nonce`` for one request (the server's nonce loops)."""
    return DPoPNonceError(
        f"{where} of '{provider}' refused the DPoP nonce it had just sent (use_dpop_nonce "
        "twice in a row); nothing was stored: check the client's clock and the server's "
        "nonce configuration",
        reason="nonce loop",
        origin=origin_of(url),
    )


def access_token_jkt(access_token: str) -> tuple[bool, str | None]:
    """``(is_jwt, cnf.jkt)`` of an access token (unverified: only to check the binding)."""
    parts = access_token.split(".")
    if len(parts) != 3 or not parts[0].startswith("eyJ"):
        return False, None
    from kstlib.auth._jose import b64url_decode

    try:
        payload = json.loads(b64url_decode(parts[1], "access token payload"))
    except Exception:  # not a JWT after all: an opaque token that looks like one
        return False, None
    if not isinstance(payload, dict):
        return False, None
    cnf = payload.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return True, jkt if isinstance(jkt, str) else None


def check_binding(token_type: str, access_token: str, key: DPoPKey, *, provider: str) -> None:
    """Refuse a token the server did not bind to ``key`` (no silent downgrade to Bearer)."""
    if token_type != "DPoP":
        raise DPoPBindingError(
            f"'{provider}' issued a {token_type!r} token although DPoP was asked (dpop: true): "
            "the server did not bind it to the client's key; nothing was stored. Enable DPoP "
            "for this client at the server, or set dpop: false",
            reason="not bound",
        )
    is_jwt, jkt = access_token_jkt(access_token)
    if is_jwt and jkt != key.thumbprint:
        why = "has no cnf.jkt" if jkt is None else "is bound to another key (cnf.jkt)"
        raise DPoPBindingError(
            f"'{provider}' issued a DPoP access token that {why}: it is not bound to the "
            "client's key; nothing was stored",
            reason="jkt mismatch" if jkt else "no cnf.jkt",
        )
