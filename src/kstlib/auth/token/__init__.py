"""Token storage backends: memory, files, SOPS files, Redis, the OS keyring, and the registry.

Backends are found by name in a registry (:func:`find_token_storage`): the built-in
ones, those added with :func:`register_token_storage`, and those of installed
distributions in the ``kstlib.auth.storage`` entry point group (loaded lazily). Each
declares what ``auth.storage.<name>`` accepts as :class:`StorageSetting` values.

Every storage keeps one token per provider name and offers a per-provider
lock (:class:`StorageLock`) that serialises refreshes across threads, tasks
and, for the file-backed storages, processes. File and SOPS storage are
POSIX-only (``flock``, ``O_NOFOLLOW``).

Importing this package loads only the standard library and
:mod:`kstlib.auth.models`; ``platformdirs`` is imported when the default
directory is first needed.
"""

from __future__ import annotations

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
