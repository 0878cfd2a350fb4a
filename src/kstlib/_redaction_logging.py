"""The logging half of the one redaction path (:mod:`kstlib._redaction`): the filter that
redacts every record of a ``kstlib.*`` logger, and the loggers that carry it.

Imported at the first use of :func:`get_logger` or :class:`RedactingFilter` (through
:mod:`kstlib._redaction` or :mod:`kstlib.auth.redaction`), so that a process that logs
nothing (``kstlib auth token`` with a fresh token) does not load :mod:`logging`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from kstlib._redaction import TRACE, redact_mapping, redact_text

__all__ = ["RedactingFilter", "get_logger"]

logging.addLevelName(TRACE, "TRACE")


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the final message of every record it sees."""

    def __init__(self, extra_keys: Iterable[str] = ()) -> None:
        super().__init__()
        self.extra_keys = tuple(extra_keys)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_mapping(a, self.extra_keys) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = redact_mapping(record.args, self.extra_keys)
        message = record.getMessage()
        record.msg = redact_text(message, self.extra_keys)
        record.args = None
        return True


_ROOT = logging.getLogger("kstlib")
if not any(isinstance(f, RedactingFilter) for f in _ROOT.filters):
    _ROOT.addFilter(RedactingFilter())


def get_logger(name: str) -> logging.Logger:
    """A ``kstlib.*`` logger whose records are redacted.

    Filters on a parent logger do not run for child records, so the filter is
    attached to every logger handed out here.
    """
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
