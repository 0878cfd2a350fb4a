"""Package attributes loaded on first use (PEP 562): one loader for every lazy package.

A package keeps a ``_LOCATIONS`` map (attribute name -> module that defines it) and a
two-line ``__getattr__`` that asks :func:`load`. Standard library only, no ``typing`` at
run time: the token fast path imports packages that use it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping
    from typing import Any


def load(
    package: str, locations: Mapping[str, str], namespace: MutableMapping[str, Any], name: str
) -> Any:
    """``name`` imported from the module ``locations`` names, then kept in ``namespace`` (the
    package's globals) so the next access does not come back here."""
    module = locations.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    namespace[name] = value
    return value
