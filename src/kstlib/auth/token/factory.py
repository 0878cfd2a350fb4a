"""The registry of token storage backends: built-in, registered in code, or from entry points.

A backend is a name, a factory (usually the storage class) and the settings it declares
for ``auth.storage.<name>`` (:class:`~kstlib.auth.token.StorageSetting`). Three sources,
in this order of precedence:

1. the built-in backends: ``memory``, ``file``, ``sops``, ``redis``, ``keyring``;
2. :func:`register_token_storage` (code running before the configuration is read);
3. the ``kstlib.auth.storage`` entry point group of installed distributions, loaded
   lazily: only when a name is not found in 1-2, or when the backends are listed. An entry
   point names a :class:`StorageBackend`, or an :class:`AbstractTokenStorage` subclass
   (its ``storage_settings`` are its declaration). So ``import kstlib.auth`` and the
   ``kstlib auth token`` fast path never scan the installed distributions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kstlib.auth.errors import ConfigurationError
from kstlib.auth.redaction import get_logger
from kstlib.auth.token._settings import StorageSetting
from kstlib.auth.token.base import AbstractTokenStorage
from kstlib.auth.token.file import FileTokenStorage, default_token_directory
from kstlib.auth.token.keyring_storage import KeyringTokenStorage
from kstlib.auth.token.memory import MemoryTokenStorage
from kstlib.auth.token.redis_storage import RedisTokenStorage
from kstlib.auth.token.sops import SOPSTokenStorage

__all__ = [
    "ENTRY_POINT_GROUP",
    "StorageBackend",
    "StorageFactory",
    "find_token_storage",
    "get_token_storage",
    "register_token_storage",
    "registered_token_storages",
]

#: The entry point group third-party storage backends register in.
ENTRY_POINT_GROUP = "kstlib.auth.storage"

#: Builds a storage from keyword arguments (``directory`` when given, the declared settings).
StorageFactory = Callable[..., AbstractTokenStorage]

_log = get_logger("kstlib.auth.token")


@dataclass(frozen=True)
class StorageBackend:
    """A named storage backend: how to build it and what ``auth.storage.<name>`` accepts.

    Args:
        name: The ``token_storage`` value selecting it (lower case).
        factory: Called with the settings as keyword arguments.
        settings: The declared settings; None accepts the section as written, unchecked.
        origin: Where it comes from (``built-in``, ``code``, ``entry point <dist>``).
    """

    name: str
    factory: StorageFactory
    settings: tuple[StorageSetting, ...] | None = None
    origin: str = "code"

    @classmethod
    def from_class(cls, name: str, storage_class: type[AbstractTokenStorage]) -> StorageBackend:
        """A backend built by ``storage_class(**settings)``, declared by ``storage_settings``."""
        declared = storage_class.storage_settings
        return cls(name, storage_class, None if declared is None else tuple(declared))


def _memory(*, directory: Path | str | None = None, **kwargs: Any) -> AbstractTokenStorage:
    if directory is not None:
        raise ConfigurationError(
            "Memory token storage takes no directory; remove it or use 'file' or 'sops'.",
            key="auth.token_storage",
        )
    return MemoryTokenStorage(**kwargs)


def _sops(*, directory: Path | str | None = None, **kwargs: Any) -> AbstractTokenStorage:
    return SOPSTokenStorage(default_token_directory() if directory is None else directory, **kwargs)


_BUILT_IN: dict[str, StorageBackend] = {
    "memory": StorageBackend("memory", _memory, (), "built-in"),
    "file": StorageBackend("file", FileTokenStorage, FileTokenStorage.storage_settings, "built-in"),
    "sops": StorageBackend("sops", _sops, SOPSTokenStorage.storage_settings, "built-in"),
    # --- issue 15: fleet storages (their optional packages are imported when one is created)
    "redis": StorageBackend(
        "redis", RedisTokenStorage, RedisTokenStorage.storage_settings, "built-in"
    ),
    "keyring": StorageBackend(
        "keyring", KeyringTokenStorage, KeyringTokenStorage.storage_settings, "built-in"
    ),
    # --- end issue 15 ---
}
_REGISTRY: dict[str, StorageBackend] = dict(_BUILT_IN)
#: Entry points that could not be loaded: name -> why (reported when the name is used).
_BROKEN: dict[str, str] = {}
_entry_points_loaded = threading.Event()
_entry_points_lock = threading.Lock()


def _key(name: object) -> str:
    return name.strip().lower() if isinstance(name, str) else ""


def _load_entry_points() -> None:
    """Register the backends of the ``kstlib.auth.storage`` entry point group (once)."""
    if _entry_points_loaded.is_set():
        return
    with _entry_points_lock:
        if _entry_points_loaded.is_set():
            return
        from importlib.metadata import entry_points

        for entry in entry_points(group=ENTRY_POINT_GROUP):
            _register_entry_point(entry)
        _entry_points_loaded.set()


def _register_entry_point(entry: Any) -> None:
    key = _key(entry.name)
    dist = getattr(getattr(entry, "dist", None), "name", None) or "an installed distribution"
    origin = f"entry point of {dist}"
    if not key or key in _REGISTRY:
        if key:
            _log.warning(
                "Ignoring token storage %r from %s: the name is already taken", key, origin
            )
        return
    try:
        target = entry.load()
    except Exception as exc:  # a broken plugin must not break the other backends
        _BROKEN[key] = f"{origin} ({entry.value}) cannot be loaded: {type(exc).__name__}: {exc}"
        return
    if isinstance(target, StorageBackend):
        backend = StorageBackend(key, target.factory, target.settings, origin)
    elif isinstance(target, type) and issubclass(target, AbstractTokenStorage):
        backend = StorageBackend.from_class(key, target)
        backend = StorageBackend(key, backend.factory, backend.settings, origin)
    else:
        _BROKEN[key] = (
            f"{origin} ({entry.value}) names a {type(target).__name__}, not a StorageBackend "
            "nor an AbstractTokenStorage subclass"
        )
        return
    _REGISTRY[key] = backend


def find_token_storage(name: str) -> StorageBackend | None:
    """The backend named ``name`` (case-insensitive), loading entry points if needed.

    Raises:
        ConfigurationError: An entry point of that name exists but cannot be loaded.
    """
    key = _key(name)
    backend = _REGISTRY.get(key)
    if backend is None and not _entry_points_loaded.is_set():
        _load_entry_points()
        backend = _REGISTRY.get(key)
    if backend is None and key in _BROKEN:
        raise ConfigurationError(f"Token storage {key!r}: {_BROKEN[key]}", key="auth.token_storage")
    return backend


def registered_token_storages() -> tuple[str, ...]:
    """Names of every available storage backend (built-in, registered, entry points), sorted."""
    _load_entry_points()
    return tuple(sorted(_REGISTRY))


def register_token_storage(
    name: str,
    factory: StorageFactory,
    *,
    replace: bool = False,
    settings: Sequence[StorageSetting] | None = None,
) -> None:
    """Make ``get_token_storage(name, ...)`` call ``factory(**options)``.

    Args:
        name: The ``token_storage`` value that selects the backend.
        factory: A storage class or a function returning a storage.
        replace: Replace a backend already registered under ``name``.
        settings: What ``auth.storage.<name>`` accepts. By default the factory's
            ``storage_settings`` when it is a storage class, else nothing is checked
            and the section is passed as written.

    Raises:
        ValueError: If ``name`` is empty, or already registered and ``replace`` is false.
    """
    key = _key(name)
    if not key:
        raise ValueError("A token storage type needs a non-empty name")
    if key in _REGISTRY and not replace:
        raise ValueError(f"Token storage type {key!r} is already registered")
    declared: tuple[StorageSetting, ...] | None
    if settings is not None:
        declared = tuple(settings)
    elif isinstance(factory, type) and issubclass(factory, AbstractTokenStorage):
        found = factory.storage_settings
        declared = None if found is None else tuple(found)
    else:
        declared = None
    _REGISTRY[key] = StorageBackend(key, factory, declared, "code")
    _BROKEN.pop(key, None)


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
    backend = find_token_storage(storage_type) if isinstance(storage_type, str) else None
    if backend is None:
        raise ConfigurationError(
            f"Unknown token storage type {storage_type!r}; valid types: "
            f"{', '.join(registered_token_storages())}.",
            key="auth.token_storage",
        )
    options = dict(kwargs)
    if directory is not None:
        options["directory"] = directory
    try:
        return backend.factory(**options)
    except TypeError as exc:
        raise ConfigurationError(
            f"Invalid options for token storage '{backend.name}': {exc}.",
            key="auth.token_storage",
        ) from exc
