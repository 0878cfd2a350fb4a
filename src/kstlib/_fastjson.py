"""JSON for the command line's fast path, without importing :mod:`json`.

``import json`` loads :mod:`re` and compiles regular expressions, which costs more than
half of Python's own start-up; ``kstlib auth token`` runs on every kubectl and git call.
This module drives the standard library's own C accelerator (``_json``, the very scanner
and string encoder ``json`` uses) directly, for the common case only:

* :func:`loads` parses with ``json``'s default settings. Anything unusual (a byte order
  mark, UTF-16/32 input, invalid JSON, a non-CPython interpreter) is handed to
  :func:`json.loads` itself, so the result, or the error raised, is always exactly
  :func:`json.loads`'s.
* :func:`dumps` writes ``json.dumps(obj, indent=indent)`` for documents made of dicts with
  string keys, lists, strings, integers, booleans and None; anything else is handed to
  :func:`json.dumps`.

Standard library only (``_json`` and ``math``); :mod:`json` is imported only on those
fallbacks.
"""

from __future__ import annotations

import math

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["dumps", "loads"]

_WHITESPACE = " \t\n\r"  # json.decoder.WHITESPACE
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


class _Context:
    """What ``_json.make_scanner`` reads from a decoder: ``json.JSONDecoder()``'s defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": -math.inf, "Infinity": math.inf, "NaN": math.nan}.__getitem__


def _accelerator() -> tuple[Callable[[str, int], tuple[Any, int]], Callable[[str], str]] | None:
    """The C scanner (set up as ``json.JSONDecoder()``) and string encoder of ``_json``."""
    try:
        from _json import encode_basestring_ascii, make_scanner
    except ImportError:  # pragma: no cover - CPython always has the accelerator
        return None
    # make_scanner reads the decoder's attributes from any object (typeshed says a scanner)
    return make_scanner(_Context()), encode_basestring_ascii  # type: ignore[arg-type]


_ACCELERATOR = _accelerator()
_scan = None if _ACCELERATOR is None else _ACCELERATOR[0]
_encode_string = None if _ACCELERATOR is None else _ACCELERATOR[1]


def _fallback_loads(document: str | bytes) -> Any:
    import json

    return json.loads(document)


def loads(document: str | bytes) -> Any:
    """``json.loads(document)``: the same value, or the same exception."""
    if _scan is None:
        return _fallback_loads(document)
    if isinstance(document, bytes):
        # json.loads detects UTF-16/32 and BOMs (json.detect_encoding): leave those to it
        if document.startswith(_BOMS) or b"\x00" in document[:4]:
            return _fallback_loads(document)
        try:
            text = document.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return _fallback_loads(document)
    elif isinstance(document, str):
        text = document
    else:
        return _fallback_loads(document)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except (StopIteration, ValueError):
        return _fallback_loads(document)  # raises json's own JSONDecodeError
    if text[end:].strip(_WHITESPACE):
        return _fallback_loads(document)  # "Extra data"
    return value


def _fallback_dumps(value: Any, indent: int | None) -> str:
    import json

    return json.dumps(value, indent=indent)


class _Unsupported(Exception):
    pass


def dumps(value: Any, *, indent: int | None = None) -> str:
    """``json.dumps(value, indent=indent)`` (default separators, ``ensure_ascii``)."""
    if _encode_string is None:
        return _fallback_dumps(value, indent)
    parts: list[str] = []
    try:
        _encode(value, parts, None if indent is None else " " * indent, 0, set())
    except _Unsupported:
        return _fallback_dumps(value, indent)
    return "".join(parts)


def _encode(value: Any, parts: list[str], indent: str | None, level: int, seen: set[int]) -> None:
    assert _encode_string is not None  # noqa: S101 - checked by dumps
    kind = type(value)
    if kind is str:
        parts.append(_encode_string(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif kind is int:
        parts.append(int.__repr__(value))
    elif kind is dict or kind is list:
        if not value:
            parts.append("{}" if kind is dict else "[]")
            return
        if id(value) in seen:
            raise _Unsupported  # json.dumps says "Circular reference detected"
        seen.add(id(value))
        if indent is None:
            newline, item_separator = "", ", "
        else:
            newline = "\n" + indent * (level + 1)
            item_separator = "," + newline
        parts.append("{" if kind is dict else "[")
        parts.append(newline)
        first = True
        if kind is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise _Unsupported  # json.dumps converts or refuses other keys
                if not first:
                    parts.append(item_separator)
                first = False
                parts.append(_encode_string(key))
                parts.append(": ")
                _encode(item, parts, indent, level + 1, seen)
        else:
            for item in value:
                if not first:
                    parts.append(item_separator)
                first = False
                _encode(item, parts, indent, level + 1, seen)
        if indent is not None:
            parts.append("\n" + indent * level)
        parts.append("}" if kind is dict else "]")
        seen.discard(id(value))
    else:
        raise _Unsupported  # floats, subclasses, other objects: json.dumps decides
