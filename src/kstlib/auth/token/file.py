"""Plain JSON file token storage and the default token directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kstlib.auth.token._directory import DirectoryTokenStorage
from kstlib.auth.token._document import dump_document, parse_document
from kstlib.auth.token._settings import StorageSetting, parse_path

if TYPE_CHECKING:
    from kstlib.auth.models import Token

__all__ = ["FileTokenStorage", "default_token_directory"]


def default_token_directory() -> Path:
    """The default token directory: ``<user config dir>/kstlib/auth/tokens``.

    ``~/.config/kstlib/auth/tokens`` on Linux; ``XDG_CONFIG_HOME`` and ``HOME``
    are read at each call.
    """
    import platformdirs

    return Path(platformdirs.user_config_dir("kstlib", appauthor=False)) / "auth" / "tokens"


class FileTokenStorage(DirectoryTokenStorage):
    """Plain JSON file token storage.

    One ``<encoded provider name>.json`` file per provider, mode ``0600`` in a
    ``0700`` directory, written atomically; a per-provider ``flock`` lock.

    Warning:
        Tokens are stored in plaintext. Use :class:`SOPSTokenStorage` where
        token confidentiality at rest matters.

    Args:
        directory: The token directory; :func:`default_token_directory` when None.
    """

    backend_name = "file"
    file_suffix = ".json"
    storage_settings = (
        StorageSetting(
            "directory",
            parse_path,
            default_factory=default_token_directory,
            path=True,
            doc="the token directory",
        ),
    )

    def __init__(self, directory: Path | str | None = None) -> None:
        """Initialize file storage (creates or tightens the directory)."""
        super().__init__(default_token_directory() if directory is None else directory)

    def _encode(self, provider_name: str, token: Token, path: Path) -> bytes:
        return dump_document(provider_name, token)

    def _decode(self, provider_name: str, data: bytes, path: Path) -> Token:
        return parse_document(provider_name, data, path)
