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
  call; without one, the report says the issuer was not pinned, the issuer must be
  https without a query and off this machine (unless ``allow_loopback_issuer``),
  and its ``jwks_uri`` must be on its own origin; the discovery document must
  name the same issuer;
* ``check()`` never raises for a bad token: every failure is a failed step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

import httpx

from kstlib.auth._discovery import (
    Discovered,
    MetadataCache,
    check_jwks_uri,
    require_same_origin,
    require_unpinned_issuer,
    select_verified,
)
from kstlib.auth._http import HTTPTraceLogger, RetryPolicy
from kstlib.auth._idtoken import (
    ID_TOKEN_REQUIRED_CLAIMS,
    IDTokenPolicy,
    narrow_algorithms,
    validate_id_token,
)
from kstlib.auth._jose import (
    ALLOWED_ALGORITHMS,
    IGNORED_KEY_HEADERS,
    JWS,
    JOSEError,
    KeySet,
    PublicJWK,
    SignatureCheck,
    decode_jws,
    json_copy,
    signature_verifier,
    validate_claims,
)
from kstlib.auth.errors import DiscoveryError
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
    "id_token": ID_TOKEN_REQUIRED_CLAIMS,
    "access_token": ("iss", "exp"),
}
_ACCESS_TOKEN_TYPS: Final = frozenset({"at+jwt", "application/at+jwt"})
_KEY_HEADERS: Final = frozenset(IGNORED_KEY_HEADERS)
_logger = get_logger("kstlib.auth.check")


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
_SCALAR_TYPES: Final = frozenset({str, int, float, bool, type(None)})


def _copier(value: Any) -> Callable[[], Any]:
    """A function returning a fresh deep copy of the JSON ``value`` on every call.

    ``value`` must stay private (never handed out): copies share only its immutable
    scalars, and nested dicts/lists are copied as cheaply as ``dict.copy``/``list.copy``.
    """
    if type(value) in _SCALAR_TYPES:
        return lambda: value
    if type(value) is dict:
        members = [(k, _copier(v)) for k, v in value.items() if type(v) not in _SCALAR_TYPES]
        if not members:
            return value.copy
        base: dict[str, Any] = value

        def copy_dict() -> dict[str, Any]:
            fresh = base.copy()
            for name, copy in members:
                fresh[name] = copy()
            return fresh

        return copy_dict
    if type(value) is list:
        items = [(i, _copier(v)) for i, v in enumerate(value) if type(v) not in _SCALAR_TYPES]
        if not items:
            return value.copy
        seq: list[Any] = value

        def copy_list() -> list[Any]:
            fresh = seq.copy()
            for index, copy in items:
                fresh[index] = copy()
            return fresh

        return copy_list
    return lambda: json_copy(value)


@dataclass(frozen=True, slots=True)
class _IssuerFacts:
    """What a check derives from one cached discovery document (reused while it is cached)."""

    found: Discovered
    issuer: str
    pinned: bool
    allowed: frozenset[str]
    jwks_uri: str
    message: str
    details: dict[str, Any]  # flat (scalars only): hand out ``details.copy()``
    document: Callable[[], dict[str, Any]]  # fresh private copies of the document
    id_token_algs: frozenset[str]  # the allow-list narrowed to what the issuer signs with
    policy: IDTokenPolicy  # the ID token policy of checks against this issuer (no nonce)


@dataclass(frozen=True, slots=True)
class _KeySetFacts:
    """What a check derives from one cached JWKS."""

    keys: KeySet
    message: str
    details: Callable[[], dict[str, Any]]
    document: Callable[[], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _KeyFacts:
    """What a report shows of one (immutable, shared) key."""

    key: PublicJWK
    label: str
    summary: dict[str, Any]  # flat (scalars only): hand out ``summary.copy()``
    pem: str
    key_type: str


@dataclass(frozen=True, slots=True)
class _Selection:
    """What a check derives from one key set for the tokens of one (alg, kid): the candidate
    keys, what the report shows of them, and their signature checks per allow-list.

    Kept on the key set (``derived``, key ``(_SELECTION, alg, kid)``), so it lives and dies
    with the cached JWKS; made only for pairs with candidates (hostile kids keep nothing).
    """

    alg: str
    candidates: tuple[PublicJWK, ...]
    facts: tuple[_KeyFacts, ...]
    message: str  # of the extract_public_key step
    details: Callable[[], dict[str, Any]]  # fresh copies of that step's details
    verified: tuple[tuple[str, dict[str, Any]], ...]  # per candidate: verify step outcome
    verifiers: dict[frozenset[str], tuple[tuple[PublicJWK, SignatureCheck], ...]]

    @classmethod
    def of(
        cls, alg: str, kid: str | None, candidates: list[PublicJWK], *, refetched: bool = False
    ) -> _Selection:
        facts = tuple(_make_key_facts(key) for key in candidates)
        details: dict[str, Any] = {"candidates": [fact.summary.copy() for fact in facts]}
        if refetched:
            details["jwks_refetched"] = True
        if len(candidates) == 1:
            message = f"using {facts[0].label}"
        else:
            why = "the token has no kid" if kid is None else f"kid {kid!r} is repeated"
            message = f"{len(candidates)} candidate keys ({why}); the signature decides"
        verified = tuple(
            (
                f"{alg} signature verified with {fact.label}",
                {
                    "alg": alg,
                    "kid": fact.key.kid,
                    "fingerprint": fact.key.fingerprint,
                    "candidates_tried": len(candidates),
                },
            )
            for fact in facts
        )
        return cls(alg, tuple(candidates), facts, message, _copier(details), verified, {})

    def checks(self, allowed: frozenset[str]) -> tuple[tuple[PublicJWK, SignatureCheck], ...]:
        """Each candidate with its signature check under ``allowed`` (decided once)."""
        found = tuple(
            (key, signature_verifier(key, self.alg, allowed=allowed)) for key in self.candidates
        )
        if len(self.verifiers) >= _VERIFIERS_MAX:
            self.verifiers.clear()
        self.verifiers[allowed] = found
        return found

    def index_of(self, key: PublicJWK) -> int:
        """Position of ``key`` (by identity) among the candidates."""
        return next(i for i, candidate in enumerate(self.candidates) if candidate is key)


def _make_selection(keys: KeySet, variant: tuple[str, str, str | None]) -> _Selection | None:
    _, alg, kid = variant
    candidates = keys.candidates(alg, kid)
    return _Selection.of(alg, kid, candidates) if candidates else None


class _Run:
    """Mutable state of one check (attributes appear as the steps, run in order, set them)."""

    __slots__ = (
        "access_token",
        "described",
        "issuer",
        "issuer_facts",
        "jwks_uri",
        "jws",
        "key",
        "keys",
        "nonce",
        "pinned",
        "report",
        "selection",
        "token",
        "token_type",
    )
    jws: JWS
    issuer: str
    issuer_facts: _IssuerFacts
    jwks_uri: str
    keys: KeySet
    selection: _Selection
    key: PublicJWK

    def __init__(
        self,
        token: Any,
        token_type: str,
        report: TokenCheckReport,
        access_token: str | None,
        nonce: str | None,
    ) -> None:
        self.token = token
        self.token_type = token_type
        self.report = report
        self.access_token = access_token
        self.nonce = nonce
        self.pinned = False
        self.described: PublicJWK | None = None


class TokenChecker:
    """Validates JWT tokens with full cryptographic verification.

    Args:
        http_client: Client for discovery and JWKS requests (its TLS settings apply).
        expected_issuer: Pin the issuer: the token's ``iss`` must equal it, checked
            before any network call. Without it, the issuer is taken from the token
            (and reported as not pinned): it must then be an https URL without a query,
            off this machine, and its ``jwks_uri`` must be on its own origin.
        expected_audience: The ``aud`` the token must contain (e.g. the client id).
        leeway: Seconds of clock skew allowed on ``exp``/``iat``/``nbf``.
        cache: Discovery/JWKS cache; by default one private to this checker, so a
            reused checker makes no request on a warm check.
        allowed_algorithms: Accepted signature algorithms (a subset of the default).
        retry: Retry policy of discovery/JWKS fetches (default: the cache's).
        tracer: HTTP trace logger.
        allow_loopback_issuer: Without an expected issuer, also accept an issuer on this
            machine (``localhost``, ``127.0.0.1``, ``::1``; http or https), e.g. a
            development IdP. Off by default: a token must not make the checker call
            local services.
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
        allow_loopback_issuer: bool = False,
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
        self.allow_loopback_issuer = allow_loopback_issuer
        # What a check derives from a cached discovery document, key set or key is kept on
        # that object (``derived``): one owner (the cache entry), one key (the cache's).
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
        access_token: str | None = None,
        nonce: str | None = None,
    ) -> TokenCheckReport:
        """Run the full validation chain; never raises for a bad token.

        For an ID token, ``access_token`` (the one issued with it) is checked against its
        ``at_hash``, and ``nonce`` (the one of the login) against its ``nonce``; the claim
        rules are those a provider applies (:func:`kstlib.auth._idtoken.validate_id_token`).
        """
        report = TokenCheckReport(token_type)  # positional: no keyword matching
        run = _Run(token_str, token_type, report, access_token, nonce)
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
        header = jws.header
        alg: str = header["alg"]
        kid: str | None = header.get("kid")
        typ = header.get("typ")
        report = run.report
        report.header = header  # decoded for this check only: nothing else holds them
        report.payload = jws.payload
        report.signature_algorithm = alg
        report.key_id = kid
        run.jws = jws
        details: dict[str, Any] = {"alg": alg, "kid": kid, "typ": typ}
        if alg not in self.allowed_algorithms:
            _refuse_algorithm(alg, self.allowed_algorithms, details)
        if (
            run.token_type == "id_token"
            and isinstance(typ, str)
            and typ.lower() in _ACCESS_TOKEN_TYPS
        ):
            raise _StepFailed(f"this is an access token (typ {typ!r}), not an ID token", details)
        message = f"JWS structure is valid ({alg}, kid {kid!r})"
        if not _KEY_HEADERS.isdisjoint(header):
            ignored = jws.ignored_key_headers
            details["ignored_headers"] = list(ignored)
            message += f"; header(s) {', '.join(ignored)} ignored: keys come only from the JWKS"
        return message, details

    def _discover_issuer(self, run: _Run) -> _Outcome:
        issuer = self._issuer_to_trust(run.jws.payload.get("iss"), run)
        found = self.cache.discovered(
            self.http_client, issuer, retry=self.retry, tracer=self.tracer
        )
        report = run.report
        report.discovery_url = found.url
        pinned = run.pinned
        allowed, audience, leeway = self.allowed_algorithms, self.expected_audience, self.leeway
        try:
            facts: _IssuerFacts = found.derived(
                (_ISSUER_FACTS, issuer, pinned, allowed, audience, leeway), self._issuer_facts
            )
        except Exception:  # the refused document is still shown (and nothing is kept)
            report.discovery_data = found.document_copy()
            raise
        report.discovery_data = facts.document()
        run.issuer_facts = facts
        run.jwks_uri = report.jwks_uri = facts.jwks_uri
        return facts.message, facts.details.copy()

    def _fetch_jwks(self, run: _Run) -> _Outcome:
        keys = self.cache.jwks(self.http_client, run.jwks_uri, retry=self.retry, tracer=self.tracer)
        run.keys = keys
        facts = self._keyset_facts(keys)
        run.report.jwks_data = facts.document()
        return facts.message, facts.details()

    def _extract_public_key(self, run: _Run) -> _Outcome:
        jws, keys = run.jws, run.keys
        alg: str = jws.header["alg"]
        kid: str | None = jws.header.get("kid")
        selection: _Selection | None = keys.derived((_SELECTION, alg, kid), _make_selection)
        if selection is None:
            candidates: list[PublicJWK] = []
            refetched = False
            if kid is None or not keys.has_kid(kid):
                # Unknown kid (or no kid and no key of the right type): the cache decides
                # whether the JWKS may be fetched again (once per cooldown), then the latest
                # keys are used.
                candidates = self.cache.key_candidates(
                    self.http_client, run.jwks_uri, jws, retry=self.retry, tracer=self.tracer
                )
                latest = self.cache.jwks(self.http_client, run.jwks_uri, retry=self.retry)
                if latest is not keys:
                    refetched = True
                    run.keys = latest
                    run.report.jwks_data = self._keyset_facts(latest).document()
            selection = _Selection.of(alg, kid, candidates, refetched=refetched)
            if not candidates:
                wanted = f"kid {kid!r}" if kid is not None else "no kid in the token"
                raise _StepFailed(
                    f"no key in the JWKS can verify {alg} ({wanted})", selection.details()
                )
        run.selection = selection
        if len(selection.candidates) == 1:
            _describe_key(run.report, selection.facts[0])
            run.described = selection.candidates[0]
        return selection.message, selection.details()

    def _verify_signature(self, run: _Run) -> _Outcome:
        if run.token_type == "id_token":  # the allow-list narrowed to what the issuer signs with
            allowed = run.issuer_facts.id_token_algs
            if run.jws.header["alg"] not in allowed:
                raise _StepFailed(
                    f"algorithm {run.jws.alg} is not in the issuer's "
                    f"id_token_signing_alg_values_supported {sorted(allowed)}"
                )
        else:
            allowed = self.allowed_algorithms
        selection = run.selection
        checks = selection.verifiers.get(allowed) or selection.checks(allowed)
        key = select_verified(run.jws, checks)
        run.key = key
        index = 0 if len(checks) == 1 else selection.index_of(key)
        if key is not run.described:  # the one candidate was described by the previous step
            _describe_key(run.report, selection.facts[index])
            run.described = key
        message, details = selection.verified[index]
        return message, details.copy()

    def _validate_claims(self, run: _Run) -> _Outcome:
        payload = run.jws.payload
        report = run.report
        audience = self.expected_audience
        if audience is not None:
            aud = payload.get("aud")
            report.audience_match = (
                aud == audience
                if isinstance(aud, str)
                else isinstance(aud, list) and audience in aud
            )
        now = time.time()
        if run.token_type == "id_token":
            policy = run.issuer_facts.policy  # the issuer's, with this check's nonce
            if run.nonce is not None:
                policy = replace(policy, nonce=run.nonce)
            validate_id_token(run.jws, run.key, policy, access_token=run.access_token, now=now)
        else:
            validate_claims(
                payload,
                issuer=run.issuer,
                audience=audience,
                leeway=self.leeway,
                now=now,
                require=_REQUIRED_CLAIMS[run.token_type],
            )
        details = _time_details(payload, now)
        details["audience_checked"] = audience is not None
        details["issuer_pinned"] = run.pinned
        message = f"claims are valid; {details['expires']}"
        if audience is None:
            message += "; audience not checked (no expected audience)"
        if run.token_type == "id_token" and run.access_token is not None and "at_hash" in payload:
            details["at_hash_checked"] = True
            message += "; at_hash matches the access token"
        return message, details

    # ---------------------------------------------------------------- derived data

    def _issuer_facts(
        self,
        found: Discovered,
        variant: tuple[str, str, bool, frozenset[str], str | None, float],
    ) -> _IssuerFacts:
        """Everything a check derives from ``found`` with the settings in ``variant``;
        raises if its ``jwks_uri`` is refused.
        """
        _, issuer, pinned, allowed, audience, leeway = variant
        jwks_uri = self._jwks_uri_of(found, pinned)
        details = {
            "issuer": issuer,
            "issuer_pinned": pinned,
            "discovery_url": found.url,
            "jwks_uri": jwks_uri,
        }
        if pinned:
            message = f"issuer {issuer} matches the expected issuer; discovery document loaded"
        else:
            message = (
                f"issuer {issuer} discovered; issuer not pinned: it was taken from the token "
                "itself (pass an expected issuer to prove who issued it)"
            )
        snapshot = found.document_copy()  # private: only copies of it are handed out
        id_token_algs = narrow_algorithms(allowed, snapshot)
        return _IssuerFacts(
            found=found,
            issuer=issuer,
            pinned=pinned,
            allowed=allowed,
            jwks_uri=jwks_uri,
            message=message,
            details=details,
            document=_copier(snapshot),
            id_token_algs=id_token_algs,
            policy=IDTokenPolicy(
                issuer=issuer, audience=audience, allowed_algorithms=id_token_algs, leeway=leeway
            ),
        )

    @staticmethod
    def _keyset_facts(keys: KeySet) -> _KeySetFacts:
        return keys.derived(_KEYSET_FACTS, _make_keyset_facts)

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
        require_unpinned_issuer(token_iss, allow_loopback=self.allow_loopback_issuer)
        run.issuer = token_iss
        return token_iss

    def _jwks_uri_of(self, found: Discovered, pinned: bool) -> str:
        jwks_uri = found.document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise _StepFailed(f"the discovery document at {found.url} has no jwks_uri")
        if pinned:
            check_jwks_uri(jwks_uri, issuer=found.issuer)
        else:
            require_same_origin(jwks_uri, issuer=found.issuer)
        return jwks_uri


# --------------------------------------------------------------------------- module helpers

#: Variants of what a check derives from cached objects (``derived``'s first key part).
_ISSUER_FACTS: Final = "check:issuer"
_KEYSET_FACTS: Final = "check:keyset"
_SELECTION: Final = "check:selection"
#: Most allow-lists a selection keeps signature checks for (checker settings seen).
_VERIFIERS_MAX: Final = 8


def _make_keyset_facts(keys: KeySet, variant: object) -> _KeySetFacts:
    message = f"JWKS holds {len(keys)} usable key(s)"
    if keys.skipped:
        message += f"; {len(keys.skipped)} skipped"
    return _KeySetFacts(
        keys=keys,
        message=message,
        details=_copier(_keyset_details(keys)),
        document=_copier(keys.public_document()),
    )


def _make_key_facts(key: PublicJWK) -> _KeyFacts:
    return _KeyFacts(
        key=key,
        label=_key_label(key),
        summary=_key_summary(key),
        pem=key.pem(),
        key_type=key.key_type,
    )


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


def _key_label(key: PublicJWK) -> str:
    kid = f"kid {key.kid!r}" if key.kid is not None else "no kid"
    return f"{key.key_type} {key.size_bits}-bit key ({kid}, SHA-256 {key.fingerprint[:16]}...)"


def _key_summary(key: PublicJWK) -> dict[str, Any]:
    return {"kid": key.kid, "key_type": key.key_type, "fingerprint": key.fingerprint}


def _describe_key(report: TokenCheckReport, facts: _KeyFacts) -> None:
    key = facts.key
    report.public_key_pem = facts.pem
    report.key_fingerprint = key.fingerprint
    report.key_type = facts.key_type
    report.key_size_bits = key.size_bits
    # ``currently_valid`` depends on the time: computed on every check (when there is an x5c)
    report.x509_info = key.certificate_info() if key.x5c else {}


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


#: ``YYYY-MM-DDT`` by day number since the epoch (bounded: a few days are live at a time).
_DAYS: dict[int, str] = {}
_DAYS_MAX: Final = 1024
_TWO_DIGITS: Final = tuple(f"{n:02d}" for n in range(60))
#: ``HH:MM:`` by minute of the day.
_MINUTES: Final = tuple(f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
#: Integer timestamps from 1970 to 9999 take the fast path of :func:`_iso`.
_FAST_ISO_END: Final = 253402300800


def _day_prefix(day: int) -> str:
    if len(_DAYS) >= _DAYS_MAX:
        _DAYS.clear()
    prefix = _DAYS[day] = datetime.fromtimestamp(day * 86400, UTC).date().isoformat() + "T"
    return prefix


def _iso(timestamp: Any) -> str | None:
    """``timestamp`` as ``datetime.isoformat(timespec="seconds")`` in UTC, or None."""
    if type(timestamp) is int and 0 <= timestamp < _FAST_ISO_END:
        # Same text as the datetime path below (exact for integers), without a datetime.
        day = timestamp // 86400
        seconds = timestamp - day * 86400
        prefix = _DAYS.get(day) or _day_prefix(day)
        return f"{prefix}{_MINUTES[seconds // 60]}{_TWO_DIGITS[seconds % 60]}+00:00"
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


def _time_details(payload: dict[str, Any], now: float) -> dict[str, Any]:
    details: dict[str, Any] = {}
    exp = payload.get("exp", _NO_CLAIM)
    if exp is not _NO_CLAIM:
        details["exp"] = _iso(exp)
    if "iat" in payload:
        details["iat"] = _iso(payload["iat"])
    if "nbf" in payload:
        details["nbf"] = _iso(payload["nbf"])
    if "auth_time" in payload:
        details["auth_time"] = _iso(payload["auth_time"])
    # JSON gives exact ints and floats; ``bool`` (an int subclass) is not a time.
    kind = type(exp)
    if kind is int or kind is float or (isinstance(exp, _NUMBERS) and kind is not bool):
        remaining = exp - now
        details["expires_in_seconds"] = round(remaining)
        if remaining >= 0:
            details["expires"] = f"expires in {format_duration(remaining)}"
        else:
            details["expires"] = f"expired {format_duration(-remaining)} ago (within leeway)"
    else:
        details["expires"] = "no expiry"
    return details


_NO_CLAIM: Final = object()
_NUMBERS: Final = (int, float)


def format_duration(seconds: float) -> str:
    """A short duration in its two largest units: ``2d 3h``, ``1h 2m``, ``4m 5s``, ``7s``."""
    total = int(seconds) if seconds > 0 else 0
    if total >= 86400:
        return f"{total // 86400}d {total % 86400 // 3600}h"
    if total >= 3600:
        return f"{total // 3600}h {total % 3600 // 60}m"
    if total >= 60:
        return f"{total // 60}m {total % 60}s"
    return f"{total}s"
