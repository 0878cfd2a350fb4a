"""Token storage backends: memory, files, SOPS files, Redis, the OS keyring, and the registry.

Backends are found by name in a registry (:func:`find_token_storage`): the built-in
ones, those added with :func:`register_token_storage`, and those of installed
distributions in the ``kstlib.auth.storage`` entry point group (loaded lazily). Each
declares what ``auth.storage.<name>`` accepts as :class:`StorageSetting` values.

Every storage keeps one token per provider name and offers a per-provider
lock (:class:`StorageLock`) that serialises refreshes across threads, tasks
and, for the file-backed storages, processes. File and SOPS storage are
POSIX-only (``flock``, ``O_NOFOLLOW``).

Importing this package loads nothing but the standard library: each name is imported
from its module at first use (PEP 562), so ``kstlib auth token``'s fast path, which
reads one token file through :mod:`kstlib.auth.token._atomic` and
:mod:`kstlib.auth.token._document`, does not load the Redis, SOPS and keyring backends.
``platformdirs`` is imported when the default directory is first needed.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported: this package is on the CLI's fast path
if TYPE_CHECKING:
    from typing import Any

if TYPE_CHECKING:
    from kstlib.auth.token._settings import (
        StorageSetting,
        parse_bool,
        parse_number,
        parse_path,
        parse_string_list,
        parse_text,
    )
    from kstlib.auth.token.base import AbstractTokenStorage
    from kstlib.auth.token.factory import (
        ENTRY_POINT_GROUP,
        StorageBackend,
        StorageFactory,
        find_token_storage,
        get_token_storage,
        register_token_storage,
        registered_token_storages,
    )
    from kstlib.auth.token.file import FileTokenStorage, default_token_directory
    from kstlib.auth.token.keyring_storage import KeyringTokenStorage
    from kstlib.auth.token.lock import DEFAULT_LOCK_TIMEOUT, StorageLock
    from kstlib.auth.token.memory import MemoryTokenStorage
    from kstlib.auth.token.redis_storage import RedisTokenStorage
    from kstlib.auth.token.sops import SOPSTokenStorage

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "AbstractTokenStorage",
    "FileTokenStorage",
    "KeyringTokenStorage",
    "MemoryTokenStorage",
    "RedisTokenStorage",
    "SOPSTokenStorage",
    "StorageBackend",
    "StorageFactory",
    "StorageLock",
    "StorageSetting",
    "default_token_directory",
    "find_token_storage",
    "get_token_storage",
    "parse_bool",
    "parse_number",
    "parse_path",
    "parse_string_list",
    "parse_text",
    "register_token_storage",
    "registered_token_storages",
]

#: name -> module of every public name (imported at first use).
_LOCATIONS: dict[str, str] = {
    "StorageSetting": "kstlib.auth.token._settings",
    "parse_bool": "kstlib.auth.token._settings",
    "parse_number": "kstlib.auth.token._settings",
    "parse_path": "kstlib.auth.token._settings",
    "parse_string_list": "kstlib.auth.token._settings",
    "parse_text": "kstlib.auth.token._settings",
    "AbstractTokenStorage": "kstlib.auth.token.base",
    "ENTRY_POINT_GROUP": "kstlib.auth.token.factory",
    "StorageBackend": "kstlib.auth.token.factory",
    "StorageFactory": "kstlib.auth.token.factory",
    "find_token_storage": "kstlib.auth.token.factory",
    "get_token_storage": "kstlib.auth.token.factory",
    "register_token_storage": "kstlib.auth.token.factory",
    "registered_token_storages": "kstlib.auth.token.factory",
    "FileTokenStorage": "kstlib.auth.token.file",
    "default_token_directory": "kstlib.auth.token.file",
    "KeyringTokenStorage": "kstlib.auth.token.keyring_storage",
    "DEFAULT_LOCK_TIMEOUT": "kstlib.auth.token.lock",
    "StorageLock": "kstlib.auth.token.lock",
    "MemoryTokenStorage": "kstlib.auth.token.memory",
    "RedisTokenStorage": "kstlib.auth.token.redis_storage",
    "SOPSTokenStorage": "kstlib.auth.token.sops",
}


def __getattr__(name: str) -> Any:
    from kstlib._lazy import load

    return load(__name__, _LOCATIONS, globals(), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
