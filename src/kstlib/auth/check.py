"""Independent JWT verification with a cryptographic proof chain: :class:`TokenChecker`.

Six steps, each recorded as a :class:`ValidationStep`, stopping at the first
failure: decode the structure, discover the issuer, fetch its JWKS, pick the
public key, verify the signature, validate the claims.

Security properties (each one is tested):

* algorithm allow-list (never ``none`` or HMAC), narrowed for ID tokens to the
  issuer's ``id_token_signing_alg_values_supported``; key type must fit the
  algorithm; weak RSA keys refused;
* keys come only from the issuer's JWKS: ``jku``/``x5u``/``jwk``/``x5c``
  headers are never followed;
* with an expected issuer, the token's ``iss`` is compared before any network
  call; without one, the report says the issuer was not pinned and only https
  (or loopback) URLs are fetched; the discovery document must name the same
  issuer;
* ``check()`` never raises for a bad token: every failure is a failed step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import httpx

from kstlib.auth.discovery import (
    Discovered,
    MetadataCache,
    check_jwks_uri,
    require_https_or_loopback,
    select_key,
)
from kstlib.auth.errors import DiscoveryError
from kstlib.auth.http import HTTPTraceLogger, RetryPolicy
from kstlib.auth.jose import (
    ALLOWED_ALGORITHMS,
    JWS,
    JOSEError,
    KeySet,
    PublicJWK,
    decode_jws,
    validate_claims,
)
from kstlib.auth.redaction import get_logger

__all__ = ["STEP_NAMES", "TokenCheckReport", "TokenChecker", "ValidationStep"]

#: The steps of a check, in order.
STEP_NAMES: Final = (
    "decode_structure",
    "discover_issuer",
    "fetch_jwks",
    "extract_public_key",
    "verify_signature",
    "validate_claims",
)
_TOKEN_TYPES: Final = ("id_token", "access_token")
_REQUIRED_CLAIMS: Final = {
    "id_token": ("iss", "sub", "aud", "exp", "iat"),
    "access_token": ("iss", "exp"),
}
_ACCESS_TOKEN_TYPS: Final = frozenset({"at+jwt", "application/at+jwt"})
_logger = get_logger("kstlib.auth.check")
T = TypeVar("T")


@dataclass
class ValidationStep:
    """Result of a single validation step."""

    name: str
    passed: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenCheckReport:
    """Complete token validation report (``valid`` only when every step passed)."""

    token_type: str = "id_token"
    valid: bool = False
    steps: list[ValidationStep] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    signature_algorithm: str | None = None
    key_id: str | None = None
    discovery_url: str | None = None
    discovery_data: dict[str, Any] = field(default_factory=dict)
    jwks_uri: str | None = None
    jwks_data: dict[str, Any] = field(default_factory=dict)
    public_key_pem: str | None = None
    key_fingerprint: str | None = None
    key_type: str | None = None
    key_size_bits: int | None = None
    x509_info: dict[str, Any] = field(default_factory=dict)
    issuer_match: bool | None = None
    audience_match: bool | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-serialisable data."""
        return asdict(self)

    @property
    def failed_step(self) -> ValidationStep | None:
        """The step that failed, if any."""
        return next((step for step in self.steps if not step.passed), None)


class _StepFailed(Exception):
    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


_Outcome = tuple[str, dict[str, Any]]


@dataclass
class _Run:
    """Mutable state of one check."""

    token: Any
    token_type: str
    report: TokenCheckReport
    jws: JWS | None = None
    issuer: str | None = None
    pinned: bool = False
    discovered: Discovered | None = None
    jwks_uri: str | None = None
    keys: KeySet | None = None
    candidates: list[PublicJWK] = field(default_factory=list)


class TokenChecker:
    """Validates JWT tokens with full cryptographic verification.

    Args:
        http_client: Client for discovery and JWKS requests (its TLS settings apply).
        expected_issuer: Pin the issuer: the token's ``iss`` must equal it, checked
            before any network call. Without it, the issuer is taken from the token
            (and reported as not pinned).
        expected_audience: The ``aud`` the token must contain (e.g. the client id).
        leeway: Seconds of clock skew allowed on ``exp``/``iat``/``nbf``.
        cache: Discovery/JWKS cache; by default one private to this checker, so a
            reused checker makes no request on a warm check.
        allowed_algorithms: Accepted signature algorithms (a subset of the default).
        retry: Retry policy of discovery/JWKS fetches (default: the cache's).
        tracer: HTTP trace logger.
    """

    def __init__(
        self,
        http_client: httpx.Client,
        expected_issuer: str | None = None,
        expected_audience: str | None = None,
        *,
        leeway: float = 60.0,
        cache: MetadataCache | None = None,
        allowed_algorithms: frozenset[str] = ALLOWED_ALGORITHMS,
        retry: RetryPolicy | None = None,
        tracer: HTTPTraceLogger | None = None,
    ) -> None:
        if not math.isfinite(leeway) or leeway < 0:
            raise ValueError("leeway must be a finite, non-negative number of seconds")
        self.http_client = http_client
        self.expected_issuer = expected_issuer
        self.expected_audience = expected_audience
        self.leeway = leeway
        self.cache = cache if cache is not None else MetadataCache()
        self.allowed_algorithms = frozenset(allowed_algorithms) & ALLOWED_ALGORITHMS
        self.retry = retry
        self.tracer = tracer
        self._steps: tuple[tuple[str, Callable[[_Run], _Outcome]], ...] = tuple(
            zip(
                STEP_NAMES,
                (
                    self._decode_structure,
                    self._discover_issuer,
                    self._fetch_jwks,
                    self._extract_public_key,
                    self._verify_signature,
                    self._validate_claims,
                ),
                strict=True,
            )
        )

    def check(
        self,
        token_str: str,
        *,
        token_type: str = "id_token",  # noqa: S107 - a token kind, not a secret
    ) -> TokenCheckReport:
        """Run the full validation chain; never raises for a bad token."""
        report = TokenCheckReport(token_type=token_type)
        run = _Run(token_str, token_type, report)
        for name, step in self._steps:
            try:
                message, details = step(run)
            except _StepFailed as failure:
                return _fail(report, name, failure.message, failure.details)
            except JOSEError as exc:
                return _fail(report, name, exc.reason, {"claim": exc.claim} if exc.claim else {})
            except DiscoveryError as exc:
                status = {"status_code": exc.status_code} if exc.status_code else {}
                return _fail(report, name, exc.message, status)
            except Exception as exc:  # a bug must not turn a bad token into a crash
                _logger.debug("unexpected error in token check step %s", name, exc_info=True)
                return _fail(report, name, f"unexpected error ({type(exc).__name__})", {})
            report.steps.append(ValidationStep(name, True, message, details))
        report.valid = True
        return report

    # ---------------------------------------------------------------- steps

    def _decode_structure(self, run: _Run) -> _Outcome:
        if run.token_type not in _TOKEN_TYPES:
            raise _StepFailed(f"unknown token type {run.token_type!r} (id_token or access_token)")
        if not isinstance(run.token, str):
            raise _StepFailed("the token must be a string")
        jws = decode_jws(run.token.strip())
        report = run.report
        report.header = jws.header  # decoded for this check only: nothing else holds them
        report.payload = jws.payload
        report.signature_algorithm = jws.alg
        report.key_id = jws.kid
        run.jws = jws
        details: dict[str, Any] = {"alg": jws.alg, "kid": jws.kid, "typ": jws.header.get("typ")}
        _refuse_algorithm(jws.alg, self.allowed_algorithms, details)
        typ = jws.header.get("typ")
        if (
            run.token_type == "id_token"
            and isinstance(typ, str)
            and typ.lower() in _ACCESS_TOKEN_TYPS
        ):
            raise _StepFailed(f"this is an access token (typ {typ!r}), not an ID token", details)
        message = f"JWS structure is valid ({jws.alg}, kid {jws.kid!r})"
        ignored = jws.ignored_key_headers
        if ignored:
            details["ignored_headers"] = list(ignored)
            message += f"; header(s) {', '.join(ignored)} ignored: keys come only from the JWKS"
        return message, details

    def _discover_issuer(self, run: _Run) -> _Outcome:
        token_iss = _required(run.jws).payload.get("iss")
        issuer = self._issuer_to_trust(token_iss, run)
        found = self.cache.discovered(
            self.http_client, issuer, retry=self.retry, tracer=self.tracer
        )
        run.discovered = found
        run.report.discovery_url = found.url
        run.report.discovery_data = found.document_copy()
        run.jwks_uri = self._jwks_uri_of(found, run.pinned)
        run.report.jwks_uri = run.jwks_uri
        details = {
            "issuer": issuer,
            "issuer_pinned": run.pinned,
            "discovery_url": found.url,
            "jwks_uri": run.jwks_uri,
        }
        if run.pinned:
            return (
                f"issuer {issuer} matches the expected issuer; discovery document loaded",
                details,
            )
        return (
            f"issuer {issuer} discovered; issuer not pinned: it was taken from the token itself "
            "(pass an expected issuer to prove who issued it)",
            details,
        )

    def _fetch_jwks(self, run: _Run) -> _Outcome:
        jwks_uri = _required(run.jwks_uri)
        keys = self.cache.jwks(self.http_client, jwks_uri, retry=self.retry, tracer=self.tracer)
        run.keys = keys
        run.report.jwks_data = keys.public_document()
        details = _keyset_details(keys)
        message = f"JWKS holds {len(keys)} usable key(s)"
        if keys.skipped:
            message += f"; {len(keys.skipped)} skipped"
        return message, details

    def _extract_public_key(self, run: _Run) -> _Outcome:
        jws, jwks_uri = _required(run.jws), _required(run.jwks_uri)
        candidates = self.cache.key_candidates(
            self.http_client, jwks_uri, jws, retry=self.retry, tracer=self.tracer
        )
        details: dict[str, Any] = {"candidates": [_key_summary(k) for k in candidates]}
        latest = self.cache.jwks(self.http_client, jwks_uri, retry=self.retry)
        if latest is not run.keys:
            details["jwks_refetched"] = True
            run.keys = latest
            run.report.jwks_data = latest.public_document()
        if not candidates:
            wanted = f"kid {jws.kid!r}" if jws.kid is not None else "no kid in the token"
            raise _StepFailed(f"no key in the JWKS can verify {jws.alg} ({wanted})", details)
        run.candidates = candidates
        if len(candidates) == 1:
            _describe_key(run.report, candidates[0])
            return f"using {_key_label(candidates[0])}", details
        why = "the token has no kid" if jws.kid is None else f"kid {jws.kid!r} is repeated"
        return f"{len(candidates)} candidate keys ({why}); the signature decides", details

    def _verify_signature(self, run: _Run) -> _Outcome:
        jws = _required(run.jws)
        allowed = self._algorithms_for(run)
        key = select_key(jws, run.candidates, allowed)
        _describe_key(run.report, key)
        details = {
            "alg": jws.alg,
            "kid": key.kid,
            "fingerprint": key.fingerprint,
            "candidates_tried": len(run.candidates),
        }
        return f"{jws.alg} signature verified with {_key_label(key)}", details

    def _validate_claims(self, run: _Run) -> _Outcome:
        payload = _required(run.jws).payload
        report = run.report
        if self.expected_audience is not None:
            report.audience_match = _audience_contains(payload.get("aud"), self.expected_audience)
        now = time.time()
        validate_claims(
            payload,
            issuer=_required(run.issuer),
            audience=self.expected_audience,
            leeway=self.leeway,
            now=now,
            require=_REQUIRED_CLAIMS[run.token_type],
        )
        self._check_azp(run)
        details = _time_details(payload, now)
        details["audience_checked"] = self.expected_audience is not None
        details["issuer_pinned"] = run.pinned
        message = f"claims are valid; {details['expires']}"
        if self.expected_audience is None:
            message += "; audience not checked (no expected audience)"
        return message, details

    # ---------------------------------------------------------------- helpers

    def _issuer_to_trust(self, token_iss: Any, run: _Run) -> str:
        """The issuer to discover: the pinned one (compared first, offline) or the token's."""
        if self.expected_issuer is not None:
            run.pinned = True
            run.report.issuer_match = token_iss == self.expected_issuer
            if not run.report.issuer_match:
                raise _StepFailed(
                    f"token issuer {token_iss!r} is not the expected issuer "
                    f"{self.expected_issuer!r}; nothing was fetched",
                    {"token_issuer": token_iss, "expected_issuer": self.expected_issuer},
                )
            run.issuer = self.expected_issuer
            return self.expected_issuer
        if not isinstance(token_iss, str) or not token_iss:
            raise _StepFailed("the token has no 'iss' claim; pass the expected issuer")
        require_https_or_loopback(token_iss, what="token issuer")
        run.issuer = token_iss
        return token_iss

    def _jwks_uri_of(self, found: Discovered, pinned: bool) -> str:
        jwks_uri = found.document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise _StepFailed(f"the discovery document at {found.url} has no jwks_uri")
        if pinned:
            check_jwks_uri(jwks_uri, issuer=found.issuer)
        else:
            require_https_or_loopback(jwks_uri, what="jwks_uri")
        return jwks_uri

    def _algorithms_for(self, run: _Run) -> frozenset[str]:
        """The allow-list, narrowed for ID tokens to what the issuer says it signs with."""
        jws = _required(run.jws)
        advertised = _required(run.discovered).document.get("id_token_signing_alg_values_supported")
        if run.token_type != "id_token" or not isinstance(advertised, list):
            return self.allowed_algorithms
        narrowed = self.allowed_algorithms & {a for a in advertised if isinstance(a, str)}
        if jws.alg not in narrowed:
            raise _StepFailed(
                f"algorithm {jws.alg} is not in the issuer's "
                f"id_token_signing_alg_values_supported {sorted(narrowed)}"
            )
        return narrowed

    def _check_azp(self, run: _Run) -> None:
        """OIDC Core 3.1.3.7: an ID token's ``azp``, when present, names the client."""
        azp = _required(run.jws).payload.get("azp")
        expected = self.expected_audience
        if run.token_type == "id_token" and expected is not None and azp not in (None, expected):
            raise JOSEError(f"authorized party (azp) {azp!r} is not {expected!r}", claim="azp")


# --------------------------------------------------------------------------- module helpers


def _required(value: T | None) -> T:
    """A value an earlier step set (steps run in order, so it is always there)."""
    if value is None:
        raise RuntimeError("token check steps ran out of order")
    return value


def _fail(
    report: TokenCheckReport, name: str, message: str, details: dict[str, Any]
) -> TokenCheckReport:
    report.steps.append(ValidationStep(name, False, message, details))
    report.error = message
    report.valid = False
    return report


def _refuse_algorithm(alg: str, allowed: frozenset[str], details: dict[str, Any]) -> None:
    if alg in allowed:
        return
    if alg.lower() == "none":
        raise _StepFailed("algorithm 'none' (unsigned token) is never accepted", details)
    if alg.upper().startswith("HS"):
        raise _StepFailed(
            f"algorithm {alg!r} (HMAC, shared secret) is refused: a public key cannot verify it "
            "and accepting it enables algorithm confusion",
            details,
        )
    allowed_list = ", ".join(sorted(allowed))
    raise _StepFailed(f"algorithm {alg!r} is not allowed (allowed: {allowed_list})", details)


def _audience_contains(aud: Any, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    return isinstance(aud, list) and expected in aud


def _key_label(key: PublicJWK) -> str:
    kid = f"kid {key.kid!r}" if key.kid is not None else "no kid"
    return f"{key.key_type} {key.size_bits}-bit key ({kid}, SHA-256 {key.fingerprint[:16]}...)"


def _key_summary(key: PublicJWK) -> dict[str, Any]:
    return {"kid": key.kid, "key_type": key.key_type, "fingerprint": key.fingerprint}


def _describe_key(report: TokenCheckReport, key: PublicJWK) -> None:
    report.public_key_pem = key.pem()
    report.key_fingerprint = key.fingerprint
    report.key_type = key.key_type
    report.key_size_bits = key.size_bits
    report.x509_info = key.certificate_info()


def _keyset_details(keys: KeySet) -> dict[str, Any]:
    details: dict[str, Any] = {
        "keys": [_key_summary(k) for k in keys.keys],
        "skipped": [
            {"index": s.index, "kid": s.kid, "kty": s.kty, "reason": s.reason} for s in keys.skipped
        ],
    }
    leaked = [k.kid for k in keys.keys if k.private_members_present]
    if leaked:
        details["private_key_material_published"] = leaked
    return details


def _iso(timestamp: Any) -> str | None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


def _time_details(payload: dict[str, Any], now: float) -> dict[str, Any]:
    details: dict[str, Any] = {
        name: _iso(payload[name]) for name in ("exp", "iat", "nbf", "auth_time") if name in payload
    }
    exp = payload.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        remaining = exp - now
        details["expires_in_seconds"] = round(remaining)
        details["expires"] = (
            f"expires in {format_duration(remaining)}"
            if remaining >= 0
            else f"expired {format_duration(-remaining)} ago (within leeway)"
        )
    else:
        details["expires"] = "no expiry"
    return details


def format_duration(seconds: float) -> str:
    """A short duration in its two largest units: ``2d 3h``, ``1h 2m``, ``4m 5s``, ``7s``."""
    total = max(0, int(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for index, (name, size) in enumerate(units[:-1]):
        if total >= size:
            next_name, next_size = units[index + 1]
            return f"{total // size}{name} {total % size // next_size}{next_name}"
    return f"{total}s"
