"""The ``AuthError`` tree.

Every error carries a message a user can act on (what failed, for which
provider/file/key, and what to do next) plus structured fields for code.
No error ever holds a secret: messages are built by this library from
non-secret facts, and ``details`` is passed through :func:`redact_mapping`
before it is kept, so ``str()``/``repr()`` are always safe to print.
"""

from __future__ import annotations

from kstlib._errors import AuthError, ConfigurationError

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing this module loads nothing else (the CLI's fast path uses it)
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "AuthError",
    "AuthorizationError",
    "CallbackServerError",
    "ConfigurationError",
    "DPoPBindingError",
    "DPoPError",
    "DPoPNonceError",
    "DeviceAuthorizationDeniedError",
    "DeviceAuthorizationError",
    "DeviceCodeExpiredError",
    "DiscoveryError",
    "InsecureDestinationError",
    "PushedAuthorizationExpiredError",
    "RefreshedTokenInvalidError",
    "TokenError",
    "TokenExchangeError",
    "TokenExpiredError",
    "TokenRefreshError",
    "TokenStorageError",
    "TokenValidationError",
]


class DiscoveryError(AuthError):
    """The discovery document (or JWKS) could not be fetched or is not trustworthy."""

    def __init__(
        self,
        message: str,
        *,
        issuer: str | None = None,
        reason: str | None = None,
        status_code: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.issuer = issuer
        self.reason = reason or message
        self.status_code = status_code


class InsecureDestinationError(AuthError):
    """A token was about to be sent where it must not go; nothing was sent.

    ``reason`` is ``"plain http"`` (RFC 6750 section 5.3: bearer tokens need TLS) or
    ``"origin not allowed"`` (outside the session's ``allowed_origins``); ``origin``
    is the request's ``scheme://host[:port]`` (never its path or query).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        origin: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.reason = reason
        self.origin = origin


class AuthorizationError(AuthError):
    """The authorization step failed (error returned to the redirect URI, state mismatch...)."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        error_code: str | None = None,
        error_description: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.reason = reason or message
        self.error_code = error_code
        self.error_description = error_description


# -- device authorization grant (RFC 8628; issue #13 item 1) ----------------------------


class DeviceAuthorizationError(AuthorizationError):
    """A device login (RFC 8628) failed: the device authorization request was refused or
    answered badly, the wait timed out (``reason="timeout"``), or the token request
    ended with an error other than the two below (``error_code`` names it)."""


class DeviceAuthorizationDeniedError(DeviceAuthorizationError):
    """The user (or the server) refused the device login (``access_denied``); nothing stored."""


class DeviceCodeExpiredError(DeviceAuthorizationError):
    """The device code expired before the login was approved (``expired_token``, or its
    ``expires_in`` passed while waiting); start a new device login. Nothing stored."""


# -- end of the device authorization block ----------------------------------------------
# --- issue 14 -------------------------------------------------------------------------


class PushedAuthorizationExpiredError(AuthorizationError):
    """The pushed authorization request (RFC 9126) expired before the browser used it.

    Its ``request_uri`` lived ``expires_in`` seconds (the server's choice) and the URL
    reached the browser later, or the server answered ``invalid_request_uri``. Nothing was
    stored; start the login again (a new request is pushed).
    """


# --- end issue 14 ---------------------------------------------------------------------


class CallbackServerError(AuthError):
    """The loopback callback server could not start, timed out or received a bad request."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        port: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.reason = reason or message
        self.port = port


class TokenError(AuthError):
    """Base class of token errors."""


class TokenExpiredError(TokenError):
    """The token has expired and cannot be used (nor refreshed)."""


class TokenRefreshError(TokenError):
    """A refresh failed. ``retryable`` says whether trying again later may succeed."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        retryable: bool = False,
        error_code: str | None = None,
        status_code: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.reason = reason or message
        self.retryable = retryable
        self.error_code = error_code
        self.status_code = status_code


class TokenExchangeError(TokenError):
    """A token request (code exchange, grant) was refused or failed."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        error_code: str | None = None,
        status_code: int | None = None,
        retryable: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.reason = reason or message
        self.error_code = error_code
        self.status_code = status_code
        self.retryable = retryable


class TokenValidationError(TokenError):
    """A token (usually an ID token) failed validation; ``claim`` names the failing claim."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        claim: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.reason = reason or message
        self.claim = claim


class RefreshedTokenInvalidError(TokenRefreshError, TokenValidationError):
    """A refresh was answered with a token that failed validation (a forged or foreign ID
    token...): a refresh failure (``retryable`` False: asking again gives the same answer)
    and a validation failure (``claim`` names the claim). The stored token is unchanged."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        claim: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, retryable=False, details=details)
        self.claim = claim


class TokenStorageError(TokenError):
    """A token could not be saved, loaded or deleted; ``path`` names the file when there is one."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        provider: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.path = path
        self.provider = provider


# -- DPoP (RFC 9449) ---------------------------------------------------------------------


class DPoPError(TokenExchangeError, TokenRefreshError):
    """A DPoP failure: at a token request (code exchange, refresh, any grant) or at a
    resource server. Nothing was stored; ``retryable`` is False (the same request gets
    the same answer). A refresh failure too, so the token pipeline records it as one.
    ``origin`` is the server's ``scheme://host[:port]`` when known."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        origin: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, details=details)
        self.origin = origin


class DPoPNonceError(DPoPError):
    """The server's ``DPoP-Nonce`` cannot be used: missing or malformed with a
    ``use_dpop_nonce`` answer (``reason`` "missing nonce" / "malformed nonce"), or asked
    for twice in a row for one request (``reason`` "nonce loop")."""


class DPoPBindingError(DPoPError):
    """DPoP was asked (``dpop: true``) but the server did not bind the token to the
    client's key: ``token_type`` is not ``DPoP`` (``reason`` "not bound"), or a JWT access
    token has no ``cnf.jkt`` / another key's (``reason`` "no cnf.jkt" / "jkt mismatch").
    The token is refused, never stored nor sent as Bearer."""
