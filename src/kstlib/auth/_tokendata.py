"""A token's fields, their validation and its staleness: the one owner of each decision.

:class:`~kstlib.auth.models.Token` (a dataclass) and the command line's fast path
(``kstlib auth token``, ``git-credential get``, run by kubectl and git on every call)
both use these functions: the fast path reads a stored token into a
:class:`StoredToken` without building a ``Token`` (no :mod:`dataclasses`, :mod:`enum`,
:mod:`typing`: they cost more than Python's own start-up), and decides with the very
same :func:`refresh_due_in` whether it is stale.

Standard library only (:mod:`datetime`, :mod:`math`); the errors module it raises from
is itself cheap to import.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from kstlib.auth.errors import TokenValidationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DEFAULT_REFRESH_SKEW",
    "MAX_EXPIRES_IN",
    "MAX_SKEW_FRACTION",
    "TOKEN_TYPES",
    "UNKNOWN_LIFETIME",
    "StoredToken",
    "as_utc",
    "canonical_token_type",
    "check_token_chars",
    "effective_skew",
    "expires_in",
    "optional_str",
    "parse_datetime",
    "parse_expires_in",
    "parse_scope",
    "refresh_due_in",
    "required_token_str",
    "stored_fields",
    "token_is_stale",
    "utcnow",
]

#: Seconds before expiry at which a token is refreshed proactively.
DEFAULT_REFRESH_SKEW = 60.0
#: The refresh skew never exceeds this fraction of a token's lifetime, so a short-lived
#: token (30 s, 60 s) is not refreshed at every use.
MAX_SKEW_FRACTION = 0.5
#: A token of unknown lifetime is considered expired after this long.
UNKNOWN_LIFETIME = timedelta(hours=1)
#: Longest ``expires_in`` accepted (ten years); beyond that the server is broken or hostile.
MAX_EXPIRES_IN = 10 * 365 * 24 * 3600
#: The token types known by name (RFC 6750 Bearer, the MAC draft, RFC 9449 DPoP), spelled
#: as :class:`~kstlib.auth.models.TokenType`'s values.
TOKEN_TYPES = ("Bearer", "MAC", "DPoP")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC (a naive datetime is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def canonical_token_type(value: str) -> str | None:
    """The known token type ``value`` names, case-insensitively (``bearer`` -> ``Bearer``);
    None when it names none."""
    wanted = value.strip().lower()
    for known in TOKEN_TYPES:
        if known.lower() == wanted:
            return known
    return None


# --------------------------------------------------------------------------- staleness


def effective_skew(expires_at: datetime | None, issued_at: datetime, skew: float) -> float:
    """``skew``, clamped to :data:`MAX_SKEW_FRACTION` of the lifetime (issue to expiry).

    A 30 s token with the default 60 s skew is refreshed 15 s before it expires, not at
    every use. Unknown lifetime: ``skew`` unchanged (never negative).
    """
    if expires_at is None:
        return max(skew, 0.0)
    lifetime = (expires_at - issued_at).total_seconds()
    return max(0.0, min(skew, lifetime * MAX_SKEW_FRACTION))


def refresh_due_in(
    expires_at: datetime | None,
    issued_at: datetime,
    skew: float = DEFAULT_REFRESH_SKEW,
    now: datetime | None = None,
) -> float:
    """Seconds until a token is stale (0 or less: stale now).

    The one staleness decision, shared by providers, sessions and the CLI's fast path:
    stale :func:`effective_skew` seconds before expiry; a token of unknown lifetime turns
    stale :data:`UNKNOWN_LIFETIME` after it was issued.
    """
    if now is None:
        now = utcnow()
    if expires_at is None:
        return (issued_at + UNKNOWN_LIFETIME - now).total_seconds()
    return (expires_at - now).total_seconds() - effective_skew(expires_at, issued_at, skew)


def token_is_stale(
    expires_at: datetime | None, issued_at: datetime, skew: float = DEFAULT_REFRESH_SKEW
) -> bool:
    """True when a token should be renewed before use (see :func:`refresh_due_in`)."""
    return refresh_due_in(expires_at, issued_at, skew) <= 0


def expires_in(expires_at: datetime | None) -> int | None:
    """Whole seconds until ``expires_at`` (negative once past), None when unknown."""
    if expires_at is None:
        return None
    return math.floor((expires_at - utcnow()).total_seconds())


# --------------------------------------------------------------------------- field validation


def parse_datetime(value: Any, name: str) -> datetime | None:
    """A UTC datetime from a datetime, a POSIX timestamp or an ISO 8601 string."""
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            return as_utc(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            return as_utc(datetime.fromisoformat(value))
    except (OverflowError, OSError, ValueError):
        # Out of datetime's range (year 9999 with a negative offset, 1e300...) or not a date.
        raise TokenValidationError(
            f"Token field '{name}' is not a usable date-time", claim=name
        ) from None
    raise TokenValidationError(f"Token field '{name}' has an invalid type", claim=name)


def parse_expires_in(value: Any) -> float | None:
    """Accept an int or a numeric string; refuse negatives, NaN, booleans and junk."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TokenValidationError(
            "Token response 'expires_in' is not a number", claim="expires_in"
        )
    if isinstance(value, int) and abs(value) > MAX_EXPIRES_IN:
        number = math.inf  # also keeps huge JSON integers (10**400) away from float()
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError as exc:
            raise TokenValidationError(
                "Token response 'expires_in' is not a number", claim="expires_in"
            ) from exc
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise TokenValidationError(
            "Token response 'expires_in' is not a number", claim="expires_in"
        )
    if not math.isfinite(number) or number < 0 or number > MAX_EXPIRES_IN:
        raise TokenValidationError(
            "Token response 'expires_in' is out of range (must be 0..10 years)", claim="expires_in"
        )
    return number


def parse_scope(value: Any) -> list[str]:
    """A list of scope names from a space-separated string or a list of such strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list | tuple) and all(isinstance(s, str) for s in value):
        return [s for item in value for s in item.split()]
    raise TokenValidationError(
        "Token field 'scope' must be a string or a list of strings", claim="scope"
    )


def check_token_chars(value: str, name: str) -> str:
    """RFC 6749 A.12/A.17: token values are 1*VSCHAR (%x20-7E), so they fit in a header."""
    if not (value.isascii() and value.isprintable()):
        raise TokenValidationError(
            f"Token field '{name}' contains characters outside visible ASCII (RFC 6749 "
            "VSCHAR); it could not be sent in a header",
            claim=name,
        )
    return value


def required_token_str(data: dict[str, Any], name: str, what: str) -> str:
    """``data[name]``: a non-empty string of visible ASCII characters."""
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise TokenValidationError(f"{what} has no '{name}'", claim=name)
    return check_token_chars(value, name)


def optional_str(data: dict[str, Any], name: str) -> str | None:
    """``data[name]`` when present: a non-empty string of visible ASCII characters."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise TokenValidationError(f"Token field '{name}' must be a non-empty string", claim=name)
    return check_token_chars(value, name)


def stored_fields(data: Any) -> dict[str, Any]:
    """The validated fields of a token saved by :meth:`Token.to_dict
    <kstlib.auth.models.Token.to_dict>`: the keyword arguments of ``Token``, except that
    ``token_type`` is the stored string and ``dpop_key`` the stored (unchecked) mapping,
    turned into a key by :meth:`Token.from_dict <kstlib.auth.models.Token.from_dict>`.

    Raises:
        TokenValidationError: naming the field that is missing or malformed.
    """
    if not isinstance(data, dict):
        raise TokenValidationError("Stored token is not a JSON object")
    access_token = required_token_str(data, "access_token", "Stored token")
    token_type = data.get("token_type") or TOKEN_TYPES[0]
    if not isinstance(token_type, str):
        raise TokenValidationError("Stored token 'token_type' is not a string", claim="token_type")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise TokenValidationError("Stored token 'metadata' is not an object", claim="metadata")
    issued_at = parse_datetime(data.get("issued_at"), "issued_at") or utcnow()
    return {
        "access_token": access_token,
        "token_type": token_type,
        "expires_at": parse_datetime(data.get("expires_at"), "expires_at"),
        "refresh_token": optional_str(data, "refresh_token"),
        "scope": parse_scope(data.get("scope")),
        "id_token": optional_str(data, "id_token"),
        "issued_at": issued_at,
        "metadata": dict(metadata),
        "dpop_key": data.get("dpop_key"),
    }


class StoredToken:
    """A stored token read for display, validated by :func:`stored_fields` like
    :meth:`Token.from_dict <kstlib.auth.models.Token.from_dict>`, without building a
    ``Token``: the command line's fast path. Its staleness is :func:`refresh_due_in`'s.

    ``token_type`` is the known type's spelling (``Bearer``) or the stored string;
    ``dpop_key`` is the stored key's mapping (not checked: the fast path leaves a
    DPoP-bound token to the full command line). ``repr()`` shows no token value.
    """

    __slots__ = (
        "access_token",
        "dpop_key",
        "expires_at",
        "id_token",
        "issued_at",
        "metadata",
        "refresh_token",
        "scope",
        "token_type",
    )

    def __init__(self, data: Any) -> None:
        fields = stored_fields(data)
        self.access_token: str = fields["access_token"]
        raw_type: str = fields["token_type"]
        self.token_type: str = canonical_token_type(raw_type) or raw_type
        self.expires_at: datetime | None = fields["expires_at"]
        self.refresh_token: str | None = fields["refresh_token"]
        self.scope: list[str] = fields["scope"]
        self.id_token: str | None = fields["id_token"]
        self.issued_at: datetime = fields["issued_at"]
        self.metadata: dict[str, Any] = fields["metadata"]
        self.dpop_key: Any = fields["dpop_key"]

    @property
    def expires_in(self) -> int | None:
        """Whole seconds until expiry (negative once expired), None when unknown."""
        return expires_in(self.expires_at)

    def refresh_due_in(self, skew: float = DEFAULT_REFRESH_SKEW) -> float:
        """Seconds until this token is stale (see :func:`refresh_due_in`)."""
        return refresh_due_in(self.expires_at, self.issued_at, skew)

    def is_stale(self, skew: float = DEFAULT_REFRESH_SKEW) -> bool:
        """True when the token should be renewed before use (see :func:`token_is_stale`)."""
        return token_is_stale(self.expires_at, self.issued_at, skew)

    def __repr__(self) -> str:
        expires = self.expires_at.isoformat() if self.expires_at else None
        return f"StoredToken(token_type={self.token_type!r}, expires_at={expires!r})"
