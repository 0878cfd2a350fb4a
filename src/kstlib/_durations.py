"""Durations in words for people (one formatter for the library's logs and the CLI)."""

from __future__ import annotations

__all__ = ["span"]


def span(seconds: float) -> str:
    """``45 s``, ``12 min``, ``1 h 40 min``, ``3 days`` (absolute value, rounded down)."""
    total = int(abs(seconds))
    if total < 60:
        return f"{total} s"
    minutes = total // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"
