"""Token storage backends: memory, plain JSON files, SOPS-encrypted files.

Every storage keeps one token per provider name and offers a per-provider
lock (:class:`StorageLock`) that serialises refreshes across threads, tasks
and, for the file-backed storages, processes. File and SOPS storage are
POSIX-only (``flock``, ``O_NOFOLLOW``).

Importing this package loads only the standard library and
:mod:`kstlib.auth.models`; ``platformdirs`` is imported when the default
directory is first needed.
"""

from __future__ import annotations

from kstlib.auth.token.base import AbstractTokenStorage
from kstlib.auth.token.factory import (
    StorageFactory,
    get_token_storage,
    register_token_storage,
    registered_token_storages,
)
from kstlib.auth.token.file import FileTokenStorage, default_token_directory
from kstlib.auth.token.lock import DEFAULT_LOCK_TIMEOUT, StorageLock
from kstlib.auth.token.memory import MemoryTokenStorage
from kstlib.auth.token.sops import SOPSTokenStorage

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "AbstractTokenStorage",
    "FileTokenStorage",
    "MemoryTokenStorage",
    "SOPSTokenStorage",
    "StorageFactory",
    "StorageLock",
    "default_token_directory",
    "get_token_storage",
    "register_token_storage",
    "registered_token_storages",
]
