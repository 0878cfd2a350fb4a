"""The one redaction path of kstlib: every log line, ``repr``, error message and terminal
line goes through these functions (implemented in :mod:`kstlib._redaction`, below both
:mod:`kstlib.config` and :mod:`kstlib.auth`, so that no module imports upward).
"""

from __future__ import annotations

from kstlib._redaction import (
    REDACTED,
    SENSITIVE_HEADERS,
    SENSITIVE_KEYS,
    TRACE,
    RedactingFilter,
    fingerprint,
    get_logger,
    is_sensitive_key,
    redact_body,
    redact_headers,
    redact_mapping,
    redact_text,
    redact_url,
    redact_urls,
)

__all__ = [
    "REDACTED",
    "SENSITIVE_HEADERS",
    "SENSITIVE_KEYS",
    "TRACE",
    "RedactingFilter",
    "fingerprint",
    "get_logger",
    "is_sensitive_key",
    "redact_body",
    "redact_headers",
    "redact_mapping",
    "redact_text",
    "redact_url",
    "redact_urls",
]
