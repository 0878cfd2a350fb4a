"""Terminal output of the ``kstlib`` command line: consoles, errors, times, tables.

Every value that comes from outside (claims, server messages, file names) is
rendered as a :class:`rich.text.Text`, never parsed as Rich markup, and error
lines are stripped of control characters.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kstlib.auth.redaction import REDACTED

__all__ = [
    "MASK",
    "echo_json",
    "err_console",
    "error_line",
    "facts_table",
    "format_duration",
    "format_when",
    "mask_secrets",
    "one_line",
    "out_console",
    "status_text",
]

#: How a secret value is shown by ``providers -v``.
MASK: Final = "***"

_STATUS_STYLES: Final = {
    "success": ("✓", "green"),
    "failure": ("✗", "red"),
    "warning": ("!", "yellow"),
    "skipped": ("-", "dim"),
}


def out_console() -> Console:
    """A console on the current stdout (looked up at each call, for test runners)."""
    return Console(file=sys.stdout, highlight=False)


def err_console() -> Console:
    """A console on the current stderr (spinners, notices)."""
    return Console(file=sys.stderr, highlight=False)


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and other control characters become spaces."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def error_line(message: str) -> None:
    """Print ``error: <message>`` as one plain line on stderr."""
    typer.echo(f"error: {one_line(message)}", err=True)


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2 h 5 min``, ``3 days`` (absolute value, rounded down)."""
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


def format_when(when: datetime, *, now: datetime | None = None) -> str:
    """``in 12 min (2025-01-01 13:00:00 CET)`` or ``3 min ago (...)``, in local time."""
    current = now or datetime.now(UTC)
    delta = (when - current).total_seconds()
    relative = f"in {format_duration(delta)}" if delta >= 0 else f"{format_duration(delta)} ago"
    absolute = when.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"{relative} ({absolute})"


def mask_secrets(value: Any) -> Any:
    """``value`` with every redaction marker shown as :data:`MASK` (dicts and lists too)."""
    if isinstance(value, Mapping):
        return {key: mask_secrets(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str):
        return value.replace(REDACTED, MASK)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return " ".join(value) or "-"
    return json.dumps(value, ensure_ascii=False, default=str)


def facts_table(rows: Iterable[tuple[str, Any]], *, title: str | None = None) -> Table:
    """A two-column key/value table; values rendered as plain text."""
    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(Text(key), Text(_cell(value)))
    return table


def status_text(status: str) -> Text:
    """A coloured mark and word for a preflight status (``✓ success``)."""
    mark, style = _STATUS_STYLES.get(status, ("?", ""))
    return Text(f"{mark} {status}", style=style)
