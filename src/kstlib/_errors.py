"""The root of kstlib's error tree, below :mod:`kstlib.config` and :mod:`kstlib.auth`.

:class:`AuthError` and :class:`ConfigurationError` live here so that the configuration loader
and the secret references can raise them without importing :mod:`kstlib.auth`; their public
home is :mod:`kstlib.auth.errors`, which re-exports these very classes. Importing it loads
nothing (the redaction functions are imported when an error is made).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = ["AuthError", "ConfigurationError"]


class AuthError(Exception):
    """Base class of every error raised by :mod:`kstlib.auth`.

    Args:
        message: What failed and what to do about it.
        details: Structured, non-secret context (redacted again on the way in).
    """

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        # imported here: this module is on the command line's fast path, which raises nothing
        from kstlib._redaction import redact_mapping, redact_urls

        message = redact_urls(message)  # an endpoint quoted in a message keeps no secret
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = redact_mapping(dict(details or {}))

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class ConfigurationError(AuthError):
    """The configuration is missing, malformed, or names something that cannot be resolved."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        provider: str | None = None,
        key: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.file = file
        self.provider = provider
        self.key = key


for _cls in (AuthError, ConfigurationError):
    _cls.__module__ = "kstlib.auth.errors"  # where users import them from
