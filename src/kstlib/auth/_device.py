"""The device authorization grant (RFC 8628): its answer, and the rules of polling.

:class:`DeviceAuthorization` is what the device authorization endpoint hands back (the
codes, where the user goes, how long it lasts, how often to ask). :class:`DevicePoll`
holds the rules a polling client follows between two token requests; the provider's
sync and async loops (``poll_device_authorization`` / ``apoll_device_authorization``) share
it, so both wait, slow down and give up the same way:

* wait ``interval`` seconds before each token request (5 s when the server sends none);
* ``authorization_pending``: ask again after ``interval``;
* ``slow_down``: ``interval`` grows by 5 s for every later request (RFC 8628 3.5);
* ``access_denied``: :class:`~kstlib.auth.errors.DeviceAuthorizationDeniedError`;
* ``expired_token``, or the code's ``expires_in`` passed here:
  :class:`~kstlib.auth.errors.DeviceCodeExpiredError`;
* the caller's ``timeout`` passed: :class:`~kstlib.auth.errors.DeviceAuthorizationError`
  (``reason="timeout"``);
* a transient failure (network, 5xx) is retried at the next interval, at most
  :data:`MAX_TRANSIENT_FAILURES` times in a row; anything else ends the wait with a
  :class:`~kstlib.auth.errors.DeviceAuthorizationError` naming the server's error.

The device code is a credential: it is never part of a ``repr``, a log line or an error.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Final

from kstlib.auth.errors import (
    DeviceAuthorizationDeniedError,
    DeviceAuthorizationError,
    DeviceCodeExpiredError,
    TokenExchangeError,
)
from kstlib.auth.redaction import get_logger, redact_text

__all__ = [
    "DEFAULT_INTERVAL",
    "DEVICE_CODE_GRANT",
    "MAX_TRANSIENT_FAILURES",
    "SLOW_DOWN_STEP",
    "DeviceAuthorization",
    "DevicePoll",
    "parse_device_authorization",
]

_log = get_logger("kstlib.auth.device")

#: ``grant_type`` of the token request that redeems a device code (RFC 8628 3.4).
DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
#: Seconds between polls when the server sends no ``interval`` (RFC 8628 3.2).
DEFAULT_INTERVAL: Final = 5
#: Seconds added to the interval by each ``slow_down`` (RFC 8628 3.5).
SLOW_DOWN_STEP: Final = 5
#: Largest interval and lifetime accepted from a server (a longer wait is a broken answer).
MAX_INTERVAL: Final = 300
MAX_EXPIRES_IN: Final = 24 * 3600
#: Transient failures (network, 5xx) in a row tolerated while polling.
MAX_TRANSIENT_FAILURES: Final = 3
#: Longest device or user code accepted (bytes of text; real ones are far shorter).
_MAX_CODE_LENGTH: Final = 2048


@dataclass(frozen=True, repr=False)
class DeviceAuthorization:
    """A device authorization in progress (RFC 8628 3.2), from ``start_device_authorization``.

    Show the user :attr:`verification_uri` and :attr:`user_code` (or
    :attr:`verification_uri_complete`, which carries the code), then hand the object to
    ``poll_device_authorization``. :attr:`device_code` is the credential the token
    request redeems: it is never shown in ``repr()`` nor logged.

    Attributes:
        device_code: The code this client polls with (secret).
        user_code: The code the user types at :attr:`verification_uri`.
        verification_uri: Where the user goes, on any device with a browser.
        verification_uri_complete: The same page with the code filled in (for a link or
            a QR code), or None when the server offers none.
        expires_in: Seconds the codes were valid for when the server answered.
        interval: Seconds to wait between two polls, as the server asked (5 when it
            did not say).
    """

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int
    #: ``time.monotonic()`` when the codes expire.
    expires_at: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        if not self.expires_at:
            object.__setattr__(self, "expires_at", time.monotonic() + self.expires_in)

    @property
    def seconds_left(self) -> float:
        """Seconds until the codes expire (0 once they have)."""
        return max(0.0, self.expires_at - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once the codes have expired (start a new device authorization)."""
        return self.seconds_left <= 0

    def __repr__(self) -> str:
        return (
            f"DeviceAuthorization(verification_uri={self.verification_uri!r}, "
            f"expires_in={self.expires_in}, interval={self.interval})"
        )


def _text(data: dict[str, Any], name: str, provider: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_CODE_LENGTH:
        raise DeviceAuthorizationError(
            f"'{provider}' answered the device authorization request without a usable "
            f"'{name}' (RFC 8628 3.2); check the provider's device_authorization_endpoint",
            reason=f"bad {name}",
        )
    if not value.isprintable():
        raise DeviceAuthorizationError(
            f"'{provider}' answered the device authorization request with a '{name}' "
            "holding control characters; refused",
            reason=f"bad {name}",
        )
    return value


def _seconds(data: dict[str, Any], name: str, provider: str, *, default: int | None) -> int:
    value = data.get(name, default)
    limit = MAX_INTERVAL if name == "interval" else MAX_EXPIRES_IN
    if isinstance(value, str) and value.isdigit():  # some servers send numbers as strings
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise DeviceAuthorizationError(
            f"'{provider}' answered the device authorization request with an unusable "
            f"'{name}' (a whole number of seconds, 1 to {limit}, is expected)",
            reason=f"bad {name}",
        )
    return value


def _page(data: dict[str, Any], name: str, provider: str, *, required: bool) -> str | None:
    """A page the user is sent to: absolute https (http only on a loopback host)."""
    from kstlib.auth._config.values import _FieldError, _url

    if not required and data.get(name) is None:
        return None
    value = _text(data, name, provider)
    try:
        return _url(name, value)
    except _FieldError as exc:
        raise DeviceAuthorizationError(
            f"'{provider}' answered the device authorization request with a {name} that "
            f"{exc.problem}; refused (the user would be sent there)",
            reason=f"bad {name}",
        ) from None


def parse_device_authorization(provider: str, data: object) -> DeviceAuthorization:
    """Check a device authorization response (RFC 8628 3.2) and build its object.

    ``verification_url`` (an early draft's name, still sent by some servers) is accepted
    when ``verification_uri`` is missing.

    Raises:
        DeviceAuthorizationError: a field is missing or unusable (the message names it).
    """
    if not isinstance(data, dict):
        raise DeviceAuthorizationError(
            f"'{provider}' answered the device authorization request with something other "
            "than a JSON object",
            reason="not a JSON object",
        )
    if "verification_uri" not in data and "verification_url" in data:
        data = {**data, "verification_uri": data["verification_url"]}
    device_code = _text(data, "device_code", provider)
    user_code = _text(data, "user_code", provider)
    verification_uri = _page(data, "verification_uri", provider, required=True) or ""
    complete = _page(data, "verification_uri_complete", provider, required=False)
    return DeviceAuthorization(
        device_code=device_code,
        user_code=user_code,
        verification_uri=verification_uri,
        verification_uri_complete=complete,
        expires_in=_seconds(data, "expires_in", provider, default=None),
        interval=_seconds(data, "interval", provider, default=DEFAULT_INTERVAL),
    )


class DevicePoll:
    """The state of one wait for a device authorization (shared by the sync and async loops)."""

    def __init__(
        self, provider: str, authorization: DeviceAuthorization, timeout: float | None
    ) -> None:
        if not isinstance(authorization, DeviceAuthorization):
            raise TypeError("authorization must come from start_device_authorization()")
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise ValueError("timeout must be a finite number of seconds >= 0, or None")
        self.provider = provider
        self.authorization = authorization
        self.interval = float(authorization.interval)
        self.stop_at = None if timeout is None else time.monotonic() + timeout
        self.polls = 0
        self._transient = 0

    def seconds_left(self) -> float:
        """Seconds until the wait ends (the codes expire, or the caller's timeout)."""
        end = self.authorization.expires_at
        if self.stop_at is not None:
            end = min(end, self.stop_at)
        return max(0.0, end - time.monotonic())

    def check(self) -> None:
        """Raise when the codes expired or the caller's timeout passed."""
        now = time.monotonic()
        if now >= self.authorization.expires_at:
            raise DeviceCodeExpiredError(
                f"The device code of '{self.provider}' expired before the login was approved "
                f"({self.authorization.expires_in} s); start the device login again",
                reason="expired",
            )
        if self.stop_at is not None and now >= self.stop_at:
            raise DeviceAuthorizationError(
                f"The device login to '{self.provider}' was not approved within the timeout; "
                "the code stays valid until it expires: poll again or start again",
                reason="timeout",
            )

    def next_wait(self) -> float:
        """Seconds to wait before the next token request (raises when nothing is left)."""
        self.check()
        return min(self.interval, self.seconds_left())

    def failed(self, exc: TokenExchangeError) -> None:
        """A token request was refused: return to poll again, or raise the typed error."""
        code = exc.error_code
        self.polls += 1
        if code in ("authorization_pending", "use_dpop_nonce"):
            self._transient = 0
            return
        if code == "slow_down":
            self._transient = 0
            asked = (exc.details or {}).get("interval")
            self.interval = max(self.interval + SLOW_DOWN_STEP, float(asked or 0))
            _log.info(
                "'%s' asked to slow down: polling every %g s now", self.provider, self.interval
            )
            return
        if code == "access_denied":
            raise DeviceAuthorizationDeniedError(
                f"The device login to '{self.provider}' was denied (access_denied); "
                "nothing was stored",
                reason="access denied",
                error_code=code,
                error_description=_description(exc),
            ) from None
        if code == "expired_token":
            raise DeviceCodeExpiredError(
                f"The device code of '{self.provider}' expired before the login was approved "
                "(expired_token); start the device login again",
                reason="expired",
                error_code=code,
                error_description=_description(exc),
            ) from None
        transient = code in (None, "server_error", "temporarily_unavailable")
        if exc.retryable and transient and self._transient < MAX_TRANSIENT_FAILURES:
            self._transient += 1
            _log.warning(
                "Polling '%s' failed (%s); trying again in %g s",
                self.provider,
                exc.reason,
                self.interval,
            )
            return
        raise DeviceAuthorizationError(
            f"The device login to '{self.provider}' failed: {exc.reason}",
            reason=exc.reason,
            error_code=code,
            error_description=_description(exc),
        ) from exc


def _description(exc: TokenExchangeError) -> str | None:
    text = (exc.details or {}).get("error_description")
    return redact_text(text) if isinstance(text, str) else None
