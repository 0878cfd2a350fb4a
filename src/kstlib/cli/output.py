"""Terminal output of the ``kstlib`` command line: consoles, errors, times, tables.

Every value that comes from outside (claims, server messages, file names) is
rendered as a :class:`rich.text.Text`, never parsed as Rich markup, and error
lines are stripped of control characters.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, NamedTuple

import typer

from kstlib._durations import span as format_duration
from kstlib.auth.redaction import REDACTED

if TYPE_CHECKING:  # Rich is imported by the functions that render (not by --json, --version...)
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

__all__ = [
    "MASK",
    "Column",
    "OutputFormat",
    "OutputOption",
    "chosen_output",
    "echo_json",
    "echo_tsv",
    "err_console",
    "error_line",
    "facts_table",
    "format_duration",
    "format_when",
    "mask_secrets",
    "one_line",
    "out_console",
    "print_facts",
    "print_table",
    "status_text",
    "tsv_field",
    "warning_line",
]

#: How a secret value is shown by ``providers -v``.
MASK: Final = "***"

_STATUS_STYLES: Final = {
    "success": ("✓", "green"),
    "failure": ("✗", "red"),
    "warning": ("!", "yellow"),
    "skipped": ("-", "dim"),
}


def _console(file: Any) -> Console:
    from rich.console import Console

    console = Console(file=file, highlight=False)
    if not console.is_terminal:  # a pipe or a file: lines are not wrapped at 80 columns
        console.soft_wrap = True
    return console


def out_console() -> Console:
    """A console on the current stdout (looked up at each call, for test runners)."""
    return _console(sys.stdout)


def err_console() -> Console:
    """A console on the current stderr (spinners, notices); prose unwrapped in a pipe."""
    return _console(sys.stderr)


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and other control characters become spaces."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def error_line(message: str) -> None:
    """Print ``error: <message>`` as one plain line on stderr."""
    typer.echo(f"error: {one_line(message)}", err=True)


def warning_line(message: str) -> None:
    """Print ``warning: <message>`` as one plain line on stderr."""
    typer.echo(f"warning: {one_line(message)}", err=True)


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


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
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", show_header=False, box=None)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(Text(key), Text(_cell(value)))
    return table


def status_text(status: str) -> Text:
    """A coloured mark and word for a preflight status (``✓ success``)."""
    from rich.text import Text

    mark, style = _STATUS_STYLES.get(status, ("?", ""))
    return Text(f"{mark} {status}", style=style)


# --------------------------------------------------------------------------- listings


class OutputFormat(StrEnum):
    """The ``--output`` formats of the listing commands."""

    TABLE = "table"
    JSON = "json"
    TSV = "tsv"


OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        help="table (default), json, or tsv (tab-separated fields, one record a line, no header).",
        show_default=False,
        case_sensitive=False,
    ),
]


def chosen_output(output: OutputFormat | None, as_json: bool = False) -> OutputFormat:
    """The format asked for by ``--output`` and the older ``--json`` (the same as ``-o json``)."""
    if as_json and output not in (None, OutputFormat.JSON):
        raise typer.BadParameter(
            f"choose one output format, not --json and --output {output}",
            param_hint="'--output' / '--json'",
        )
    return OutputFormat.JSON if as_json else (output or OutputFormat.TABLE)


def tsv_field(value: Any) -> str:
    """One TSV field: None empty, booleans ``true``/``false``, lists space-separated, one line."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    elif not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    return one_line(value)


def echo_tsv(records: Iterable[Sequence[Any]]) -> None:
    """Print one tab-separated line per record on stdout (fields through :func:`tsv_field`)."""
    for record in records:
        typer.echo("\t".join(tsv_field(field) for field in record))


class Column(NamedTuple):  # (not a frozen dataclass: that costs every command's start-up)
    """A table column; ``drop`` > 0: hidden on a narrow terminal (the highest rank first)."""

    header: str
    drop: int = 0
    no_wrap: bool = False
    justify: Literal["left", "right"] = "left"


#: The width a table is rendered at in a pipe: its natural width, whatever it is.
_UNBOUNDED: Final = 100_000
#: Spaces (and tabs) at the end of a line, before any closing colour codes (compiled at its
#: first use by ``re``'s cache, not at start-up).
_TRAILING_SPACE: Final = r"[ \t]+((?:\x1b\[[0-9;]*m)*)$"


def _cell_range(column: Column, cells: Sequence[Text | str]) -> tuple[int, int]:
    """The narrowest a column can be without cutting a word (or its header), its natural width."""
    from rich.cells import cell_len
    from rich.text import Text

    texts = [column.header, *(cell.plain if isinstance(cell, Text) else cell for cell in cells)]
    lines = [line for text in texts for line in text.splitlines() or [""]]
    natural = max(cell_len(line) for line in lines)
    if column.no_wrap:
        return natural, natural
    longest_word = max((cell_len(w) for line in lines for w in line.split()), default=1)
    return max(longest_word, cell_len(column.header)), natural


def _fit(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Text | str]],
    keep: Sequence[int],
    width: int,
    *,
    boxed: bool,
) -> list[int | None] | None:
    """Column widths that fit ``width`` without cutting a word (None each: the natural ones).

    None when even the narrowest columns, side by side, do not fit. The room above the
    narrowest widths goes to each column in proportion to what it would still like.
    """
    ranges = [_cell_range(columns[i], [row[i] for row in rows]) for i in keep]
    room = width - 2 * len(keep) - (len(keep) + 1 if boxed else 0)  # padding, then borders
    narrowest = sum(low for low, _ in ranges)
    if sum(high for _, high in ranges) <= room:
        return [None] * len(keep)
    if narrowest > room:
        return None
    wants = [high - low for low, high in ranges]
    spare, total = room - narrowest, sum(wants)
    widths = [low + spare * want // total for (low, _), want in zip(ranges, wants, strict=True)]
    leftover = room - sum(widths)
    for index in sorted(range(len(keep)), key=lambda i: wants[i], reverse=True)[:leftover]:
        widths[index] += 1
    return list(widths)


def _build_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Text | str]],
    keep: Sequence[int],
    widths: Sequence[int | None],
    *,
    title: str | None,
    show_header: bool,
    boxed: bool,
) -> Table:
    from rich import box as rich_box
    from rich.table import Table

    table = Table(
        title=title,
        title_justify="left",
        show_header=show_header,
        box=rich_box.HEAVY_HEAD if boxed else None,
    )
    for index, width in zip(keep, widths, strict=True):
        column = columns[index]
        table.add_column(
            column.header,
            no_wrap=column.no_wrap,
            justify=column.justify,
            overflow="ellipsis" if column.no_wrap else "fold",
            width=width,
        )
    for row in rows:
        table.add_row(*(row[index] for index in keep))
    return table


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Text | str]],
    *,
    title: str | None = None,
    show_header: bool = True,
    boxed: bool = True,
    console: Console | None = None,
) -> None:
    """Print a table fit for where stdout goes, with no trailing spaces on its lines.

    On a terminal, the table takes at most the terminal's width and its cells wrap
    on whole words; when even the longest word of each column, side by side, does not
    fit, the columns of least value are left out, highest ``drop`` rank first (and if
    that is still not enough, the longest words are cut). In a pipe or a file, the
    table has its natural width: nothing is wrapped at 80 columns.
    """
    console = console or out_console()
    keep = list(range(len(columns)))
    widths: list[int | None] = [None] * len(keep)
    if console.is_terminal:
        ranks = sorted({c.drop for c in columns if c.drop > 0}, reverse=True)
        for rank in [0, *ranks]:
            keep = [i for i in keep if rank == 0 or columns[i].drop != rank]
            fitted = _fit(columns, rows, keep, console.width, boxed=boxed)
            widths = fitted or [None] * len(keep)
            if fitted is not None:
                break
    else:
        console.width = _UNBOUNDED
    table = _build_table(
        columns, rows, keep, widths, title=title, show_header=show_header, boxed=boxed
    )
    with console.capture() as capture:
        console.print(table, soft_wrap=False)
    console.file.write(re.sub(_TRAILING_SPACE, r"\1", capture.get(), flags=re.MULTILINE))
    console.file.flush()


def print_facts(rows: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
    """Print a key/value listing (values as plain text) through :func:`print_table`."""
    from rich.text import Text

    columns = (Column("Key", no_wrap=True), Column("Value"))
    cells = [[Text(key, style="bold"), Text(_cell(value))] for key, value in rows]
    print_table(columns, cells, title=title, show_header=False, boxed=False)
