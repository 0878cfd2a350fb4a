"""Data models: :class:`Token`, :class:`TokenType`, :class:`AuthFlow` and the preflight report."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from kstlib._redaction import fingerprint, redact_mapping, redact_urls
from kstlib.auth._tokendata import (
    DEFAULT_REFRESH_SKEW,
    MAX_EXPIRES_IN,
    MAX_SKEW_FRACTION,
    UNKNOWN_LIFETIME,
    as_utc,
    canonical_token_type,
    effective_skew,
    expires_in,
    optional_str,
    parse_datetime,
    parse_expires_in,
    parse_scope,
    refresh_due_in,
    required_token_str,
    stored_fields,
    token_is_stale,
    utcnow,
)
from kstlib.auth.errors import TokenValidationError

if TYPE_CHECKING:
    from kstlib.auth._dpop import DPoPKey

__all__ = [
    "DEFAULT_REFRESH_SKEW",
    "MAX_SKEW_FRACTION",
    "AuthFlow",
    "PreflightReport",
    "PreflightResult",
    "PreflightStatus",
    "Token",
    "TokenType",
]

#: A token of unknown lifetime is considered expired after this long.
_UNKNOWN_LIFETIME = UNKNOWN_LIFETIME
#: Fields of a token response that the model keeps as attributes, not metadata.
_RESPONSE_FIELDS = frozenset(
    {"access_token", "token_type", "expires_in", "expires_at", "refresh_token", "scope", "id_token"}
)


class TokenType(StrEnum):
    """Token types of RFC 6750 (Bearer), RFC 9449 (DPoP) and the MAC draft."""

    BEARER = "Bearer"
    MAC = "MAC"
    DPOP = "DPoP"

    @classmethod
    def parse(cls, value: str) -> TokenType:
        """Case-insensitive lookup (``bearer`` -> ``BEARER``); raises ValueError when unknown."""
        known = canonical_token_type(value)
        if known is None:
            raise ValueError(value)
        return cls(known)


class AuthFlow(StrEnum):
    """OAuth2 grants / flows a provider can use."""

    AUTHORIZATION_CODE = "authorization_code"
    AUTHORIZATION_CODE_PKCE = "authorization_code_pkce"
    CLIENT_CREDENTIALS = "client_credentials"
    DEVICE_CODE = "device_code"
    REFRESH_TOKEN = "refresh_token"
    TOKEN_EXCHANGE = "token_exchange"


# The validation of each field lives in kstlib.auth._tokendata (shared with the command
# line's fast path, which reads a stored token without building a Token).
_utcnow = utcnow
_as_utc = as_utc
_parse_datetime = parse_datetime
_parse_expires_in = parse_expires_in
_parse_scope = parse_scope
_required_token_str = required_token_str
_optional_str = optional_str


def _parse_token_type(value: Any) -> TokenType:
    if value is None or value == "":
        return TokenType.BEARER
    if not isinstance(value, str):
        raise TokenValidationError("Token field 'token_type' must be a string", claim="token_type")
    try:
        return TokenType.parse(value)
    except ValueError as exc:
        raise TokenValidationError(
            "Token response has an unsupported 'token_type' (expected Bearer, DPoP or MAC)",
            claim="token_type",
        ) from exc


@dataclass(repr=False)
class Token:
    """An OAuth2/OIDC token set.

    Datetimes are timezone-aware UTC. ``repr()`` never shows a token value:
    only a short fingerprint of the access token.

    Example:
        >>> from datetime import datetime, timezone
        >>> token = Token(
        ...     access_token="eyJhbGc...",
        ...     expires_at=datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc),
        ...     refresh_token="dGhpcyBpcyBh...",
        ...     scope=["openid", "profile"],
        ... )
        >>> token.is_expired
        True
        >>> token.is_refreshable
        True
    """

    access_token: str
    token_type: TokenType | str = TokenType.BEARER
    expires_at: datetime | None = None
    refresh_token: str | None = None
    scope: list[str] = field(default_factory=list)
    id_token: str | None = None
    issued_at: datetime = field(default_factory=_utcnow)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: DPoP (RFC 9449): the key pair the access token is bound to (None: not bound). It is
    #: stored with the token (``to_dict``'s ``dpop_key``, redacted by the one redaction
    #: path) and never shown by ``repr`` (only its algorithm and thumbprint).
    dpop_key: DPoPKey | None = None

    def __post_init__(self) -> None:
        if self.expires_at is not None:
            self.expires_at = _as_utc(self.expires_at)
        self.issued_at = _as_utc(self.issued_at)
        if isinstance(self.token_type, str) and not isinstance(self.token_type, TokenType):
            with contextlib.suppress(ValueError):
                self.token_type = TokenType.parse(self.token_type)

    # -- state ---------------------------------------------------------------------------

    @property
    def expires_in(self) -> int | None:
        """Whole seconds until expiry (negative once expired), None when unknown."""
        return expires_in(self.expires_at)

    @property
    def is_expired(self) -> bool:
        """True if expired, or if the lifetime is unknown and the token is over an hour old."""
        now = _utcnow()
        if self.expires_at is None:
            return now - self.issued_at > _UNKNOWN_LIFETIME
        return now >= self.expires_at

    @property
    def is_refreshable(self) -> bool:
        """True when a refresh token is available."""
        return bool(self.refresh_token)

    @property
    def should_refresh(self) -> bool:
        """True if the token expires within 60 seconds or has already expired."""
        return self.needs_refresh(DEFAULT_REFRESH_SKEW)

    def needs_refresh(self, skew: float = DEFAULT_REFRESH_SKEW) -> bool:
        """True if it expires within ``skew`` seconds (or its lifetime is unknown and old)."""
        if self.expires_at is None:
            return self.is_expired
        return _utcnow() + timedelta(seconds=skew) >= self.expires_at

    def effective_skew(self, skew: float = DEFAULT_REFRESH_SKEW) -> float:
        """``skew``, clamped to :data:`MAX_SKEW_FRACTION` of the lifetime (issue to expiry).

        A 30 s token with the default 60 s skew is refreshed 15 s before it expires,
        not at every use. Unknown lifetime: ``skew`` unchanged.
        """
        return effective_skew(self.expires_at, self.issued_at, skew)

    def refresh_due_in(self, skew: float = DEFAULT_REFRESH_SKEW) -> float:
        """Seconds until this token is stale (0 or less: stale now).

        The one staleness decision, shared by providers, sessions and the CLI's fast
        path (:func:`kstlib.auth._tokendata.refresh_due_in`): stale :meth:`effective_skew`
        seconds before expiry; a token of unknown lifetime turns stale when
        :attr:`is_expired` says so (an hour after issue).
        """
        return refresh_due_in(self.expires_at, self.issued_at, skew)

    def is_stale(self, skew: float = DEFAULT_REFRESH_SKEW) -> bool:
        """True when the token should be renewed before use (see :meth:`refresh_due_in`)."""
        return token_is_stale(self.expires_at, self.issued_at, skew)

    @property
    def refresh_expires_at(self) -> datetime | None:
        """Expiry of the refresh token when the server said it (``refresh_expires_in``)."""
        value = self.metadata.get("refresh_expires_at")
        if not isinstance(value, str):
            return None
        try:
            return _parse_datetime(value, "refresh_expires_at")
        except TokenValidationError:
            return None

    # -- (de)serialisation ---------------------------------------------------------------

    @classmethod
    def from_response(cls, data: dict[str, Any]) -> Token:
        """Build a token from an OAuth2 token response (RFC 6749 5.1).

        ``expires_in`` may be an int or a numeric string, ``scope`` a string or
        a list; unknown fields are kept in ``metadata``; ``token_type``
        defaults to Bearer. Raises :class:`TokenValidationError` naming the
        field when the response is not a usable token response.

        Example:
            >>> response = {
            ...     "access_token": "eyJhbGc...",
            ...     "token_type": "Bearer",
            ...     "expires_in": 3600,
            ...     "refresh_token": "dGhpcyBpcyBh...",
            ...     "scope": "openid profile",
            ...     "id_token": "eyJhbGc...",
            ... }
            >>> token = Token.from_response(response)
            >>> token.scope
            ['openid', 'profile']
        """
        if not isinstance(data, dict):
            raise TokenValidationError("Token response is not a JSON object", claim=None)
        access_token = _required_token_str(data, "access_token", "Token response")
        now = _utcnow()
        expires_in = _parse_expires_in(data.get("expires_in"))
        expires_at = now + timedelta(seconds=expires_in) if expires_in is not None else None
        metadata = {k: v for k, v in data.items() if k not in _RESPONSE_FIELDS}
        refresh_expires_in = metadata.get("refresh_expires_in")
        if (
            isinstance(refresh_expires_in, int | float)
            and not isinstance(refresh_expires_in, bool)
            and 0 < refresh_expires_in <= MAX_EXPIRES_IN
        ):
            metadata["refresh_expires_at"] = (
                now + timedelta(seconds=refresh_expires_in)
            ).isoformat()
        return cls(
            access_token=access_token,
            token_type=_parse_token_type(data.get("token_type")),
            expires_at=expires_at,
            refresh_token=_optional_str(data, "refresh_token"),
            scope=_parse_scope(data.get("scope")),
            id_token=_optional_str(data, "id_token"),
            issued_at=now,
            metadata=metadata,
        )

    def to_dict(self) -> dict[str, Any]:
        """Serialise for storage (JSON-compatible; ``from_dict`` restores it exactly)."""
        token_type = (
            self.token_type.value if isinstance(self.token_type, TokenType) else self.token_type
        )
        data = {
            "access_token": self.access_token,
            "token_type": token_type,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "refresh_token": self.refresh_token,
            "scope": list(self.scope),
            "id_token": self.id_token,
            "issued_at": self.issued_at.isoformat(),
            "metadata": dict(self.metadata),
        }
        if self.dpop_key is not None:
            data["dpop_key"] = self.dpop_key.to_dict()  # the private key: storage only
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Token:
        """Restore a token saved by :meth:`to_dict` (:class:`TokenValidationError` if malformed)."""
        fields = stored_fields(data)
        raw_key = fields.pop("dpop_key")
        if raw_key is not None:
            from kstlib.auth._dpop import DPoPKey

            try:
                fields["dpop_key"] = DPoPKey.from_dict(raw_key)
            except (TypeError, ValueError):
                raise TokenValidationError(
                    "Stored token 'dpop_key' is not a usable DPoP key", claim="dpop_key"
                ) from None
        return cls(**fields)

    def __repr__(self) -> str:
        token_type = (
            self.token_type.value if isinstance(self.token_type, TokenType) else self.token_type
        )
        expires = self.expires_at.isoformat() if self.expires_at else None
        return (
            f"Token(access_token={fingerprint(self.access_token)}, token_type={token_type!r}, "
            f"expires_at={expires!r}, refreshable={self.is_refreshable}, "
            f"id_token={'present' if self.id_token else None}, scope={self.scope!r}"
            + (f", dpop_key={self.dpop_key!r})" if self.dpop_key is not None else ")")
        )

    __str__ = __repr__


class PreflightStatus(StrEnum):
    """Outcome of one preflight step."""

    SUCCESS = "success"
    FAILURE = "failure"
    WARNING = "warning"
    SKIPPED = "skipped"


@dataclass
class PreflightResult:
    """Result of one preflight step, with its duration."""

    step: str
    status: PreflightStatus
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0

    def __post_init__(self) -> None:
        # Messages and details quote endpoints: no secret in their query strings is shown.
        self.message = redact_urls(self.message)
        self.details = redact_mapping(self.details)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "status": self.status.value,
            "message": self.message,
            "details": self.details,
            "duration_ms": round(self.duration_ms, 3),
        }


@dataclass
class PreflightReport:
    """All preflight steps run for one provider."""

    provider_name: str
    results: list[PreflightResult] = field(default_factory=list)
    started_at: datetime = field(default_factory=_utcnow)
    completed_at: datetime | None = None

    @property
    def success(self) -> bool:
        """True when no step failed (warnings and skips are allowed)."""
        return all(r.status is not PreflightStatus.FAILURE for r in self.results)

    @property
    def duration_ms(self) -> float:
        return sum(r.duration_ms for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider_name": self.provider_name,
            "success": self.success,
            "started_at": self.started_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "results": [r.to_dict() for r in self.results],
        }
