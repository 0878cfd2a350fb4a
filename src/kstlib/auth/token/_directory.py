"""Common base of the storages that keep one file per provider in a private directory."""

from __future__ import annotations

import os
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from kstlib.auth.redaction import get_logger
from kstlib.auth.token._atomic import (
    check_ancestors,
    ensure_private_directory,
    read_private_file,
    remove_abandoned_temp_files,
    remove_file,
    write_private_file,
)
from kstlib.auth.token._naming import encode_provider_name
from kstlib.auth.token.base import AbstractTokenStorage
from kstlib.auth.token.lock import FileLock, StorageLock

if TYPE_CHECKING:
    from kstlib.auth.models import Token

__all__ = ["LOCK_DIRECTORY_NAME", "DirectoryTokenStorage"]

#: Sub-directory of the token directory holding the per-provider lock files.
LOCK_DIRECTORY_NAME = ".locks"

_logger = get_logger("kstlib.auth.token")


class DirectoryTokenStorage(AbstractTokenStorage):
    """One file per provider, ``<dir>/<encoded name><file_suffix>``, mode ``0600``.

    On construction the directory's ancestors are checked (none may let another
    user replace it), the directory is created (or tightened) to ``0700``, and
    temp files abandoned by crashed writers are removed. Every read checks the
    directory and the file again (owned by the current user). Writes are atomic;
    locks are ``flock`` on ``<dir>/.locks/<encoded name>.lock``. Subclasses
    define the file format with :meth:`_encode` and :meth:`_decode`.

    Args:
        directory: The token directory (``~`` is expanded, a relative path is
            made absolute against the current directory).
    """

    #: File name suffix of a token file (after the encoded provider name).
    file_suffix: ClassVar[str]

    def __init__(self, directory: Path | str) -> None:
        self._directory = Path(directory).expanduser().absolute()
        check_ancestors(self._directory)
        ensure_private_directory(self._directory)
        remove_abandoned_temp_files(self._directory)

    @property
    def directory(self) -> Path:
        """The token directory."""
        return self._directory

    def describe(self) -> str:
        """``<backend>:<directory>``."""
        return f"{self.backend_name}:{self._directory}"

    def token_path(self, provider_name: str) -> Path:
        """The file holding the token of ``provider_name``."""
        return self._directory / f"{encode_provider_name(provider_name)}{self.file_suffix}"

    def save(self, provider_name: str, token: Token) -> None:
        """Write the token atomically, ``0600``, replacing the previous one."""
        path = self.token_path(provider_name)
        payload = self._encode(provider_name, token, path)
        ensure_private_directory(self._directory)
        write_private_file(path, payload, provider=provider_name)
        _logger.debug("Saved token of provider %r to %s", provider_name, path)

    def load(self, provider_name: str) -> Token | None:
        """Read and validate the token; None if there is no token file."""
        path = self.token_path(provider_name)
        data = read_private_file(path, provider=provider_name)
        if data is None:
            return None
        return self._decode(provider_name, data, path)

    def delete(self, provider_name: str) -> bool:
        """Remove the token file; True if there was one."""
        path = self.token_path(provider_name)
        removed = remove_file(path, provider=provider_name)
        if removed:
            _logger.debug("Deleted token of provider %r (%s)", provider_name, path)
        return removed

    def exists(self, provider_name: str) -> bool:
        """True if something exists at the provider's token path (``load`` validates it)."""
        return os.path.lexists(self.token_path(provider_name))

    def create_lock(self, provider_name: str) -> StorageLock:
        """A new ``flock`` handle on the provider's lock file."""
        name = f"{encode_provider_name(provider_name)}.lock"
        return FileLock(self._directory / LOCK_DIRECTORY_NAME / name, provider_name)

    @abstractmethod
    def _encode(self, provider_name: str, token: Token, path: Path) -> bytes:
        """The bytes to store at ``path`` for ``token``."""

    @abstractmethod
    def _decode(self, provider_name: str, data: bytes, path: Path) -> Token:
        """The token stored as ``data`` at ``path``; TokenStorageError if unusable."""
