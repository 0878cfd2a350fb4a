"""Build a token storage from its configured type name; a registry new backends join."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kstlib.auth.errors import ConfigurationError
from kstlib.auth.token.base import AbstractTokenStorage
from kstlib.auth.token.file import FileTokenStorage, default_token_directory
from kstlib.auth.token.memory import MemoryTokenStorage
from kstlib.auth.token.sops import SOPSTokenStorage

__all__ = [
    "StorageFactory",
    "get_token_storage",
    "register_token_storage",
    "registered_token_storages",
]

#: Builds a storage from ``directory`` (None for the default) and backend options.
StorageFactory = Callable[..., AbstractTokenStorage]


def _memory(*, directory: Path | str | None = None, **kwargs: Any) -> AbstractTokenStorage:
    if directory is not None:
        raise ConfigurationError(
            "Memory token storage takes no directory; remove it or use 'file' or 'sops'.",
            key="auth.token_storage",
        )
    return MemoryTokenStorage(**kwargs)


def _file(*, directory: Path | str | None = None, **kwargs: Any) -> AbstractTokenStorage:
    return FileTokenStorage(directory, **kwargs)


def _sops(*, directory: Path | str | None = None, **kwargs: Any) -> AbstractTokenStorage:
    return SOPSTokenStorage(default_token_directory() if directory is None else directory, **kwargs)


_REGISTRY: dict[str, StorageFactory] = {"memory": _memory, "file": _file, "sops": _sops}


def registered_token_storages() -> tuple[str, ...]:
    """Names of the storage backends available now (shipped and registered), sorted."""
    return tuple(sorted(_REGISTRY))


def register_token_storage(name: str, factory: StorageFactory, *, replace: bool = False) -> None:
    """Make ``get_token_storage(name, ...)`` call ``factory(directory=..., **kwargs)``.

    Raises:
        ValueError: If ``name`` is already registered and ``replace`` is false.
    """
    key = name.strip().lower()
    if not key:
        raise ValueError("A token storage type needs a non-empty name")
    if key in _REGISTRY and not replace:
        raise ValueError(f"Token storage type {key!r} is already registered")
    _REGISTRY[key] = factory


def get_token_storage(
    storage_type: str = "file", *, directory: Path | str | None = None, **kwargs: Any
) -> AbstractTokenStorage:
    """Create the storage named ``storage_type`` (case-insensitive).

    Args:
        storage_type: "memory", "file", "sops", or a registered type.
        directory: Token directory of file-backed storages (default:
            :func:`default_token_directory`).
        **kwargs: Backend options, e.g. ``age_recipients``, ``sops_binary``.

    Raises:
        ConfigurationError: If the type is unknown or an option is not accepted.
    """
    key = storage_type.strip().lower() if isinstance(storage_type, str) else ""
    factory = _REGISTRY.get(key)
    if factory is None:
        raise ConfigurationError(
            f"Unknown token storage type {storage_type!r}; valid types: "
            f"{', '.join(sorted(_REGISTRY))}.",
            key="auth.token_storage",
        )
    try:
        return factory(directory=directory, **kwargs)
    except TypeError as exc:
        raise ConfigurationError(
            f"Invalid options for token storage '{key}': {exc}.", key="auth.token_storage"
        ) from exc
