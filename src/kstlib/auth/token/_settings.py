"""What a storage backend accepts under ``auth.storage.<backend>`` in ``kstlib.conf.yml``.

A backend declares its settings as :class:`StorageSetting` values (on its class as
``storage_settings``, or when it is registered); the configuration loader validates the
section against that declaration (wrong types raise, unknown keys warn with the closest
known key), makes relative paths absolute against the file that set them, fills in the
defaults, and hands the values to the backend's factory as keyword arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "StorageSetting",
    "parse_bool",
    "parse_number",
    "parse_path",
    "parse_string_list",
    "parse_text",
]


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def parse_text(value: object) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"expected a non-empty string, got {_kind(value)}")
    return value.strip()


def parse_path(value: object) -> Path:
    """A path (``~`` expanded); the loader has already made a relative one absolute."""
    if isinstance(value, Path):
        return value.expanduser()
    return Path(parse_text(value)).expanduser()


def parse_string_list(value: object) -> tuple[str, ...]:
    """A list of strings, or one string of items separated by commas or spaces."""
    if isinstance(value, str):
        return tuple(value.replace(",", " ").split())
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"expected a list of strings, got {_kind(value)}")
    return tuple(item.strip() for item in value if item.strip())


def parse_number(value: object) -> float:
    """A positive, finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {_kind(value)}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a positive number, got {value!r}")
    return float(value)


def parse_bool(value: object) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {_kind(value)}")
    return value


@dataclass(frozen=True)
class StorageSetting:
    """One key of ``auth.storage.<backend>``.

    Args:
        name: The key, also the keyword argument of the backend's factory.
        parse: Turns the configured value into the argument; raises ``TypeError`` or
            ``ValueError`` with the problem (without the value, which may be sensitive)
            when it is wrong.
        default: The value when the key is absent or null (None: the factory's own default).
        default_factory: Computes the default instead (called at each configuration read).
        path: A relative path written in a file is relative to that file's directory.
        doc: One line for ``kstlib auth providers -v`` and the docs.
    """

    name: str
    parse: Callable[[object], Any] = parse_text
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    path: bool = False
    doc: str = ""

    def default_value(self) -> Any:
        """The value used when the configuration does not set this key."""
        return self.default_factory() if self.default_factory is not None else self.default
