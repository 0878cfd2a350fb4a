"""Token storage in the operating system's keyring (the ``keyring`` library).

One entry per provider: service ``service`` (default ``kstlib-auth``), user name = the
provider name, secret = the token document (the JSON of the file storage). Which keyring
holds it (macOS Keychain, Windows Credential Locker, a Secret Service such as GNOME Keyring
or KWallet, or a backend named by ``PYTHON_KEYRING_BACKEND`` / ``keyringrc.cfg``) is the
``keyring`` library's choice; kstlib's configuration does not pick one. The lock is the
file lock of the file storage (``<lock_directory>/.locks/<encoded name>.lock``), so the
processes of one machine refresh once.

``keyring`` is an optional dependency (``pip install 'kstlib-auth[keyring]'``), imported when
a storage is created. On a machine without a usable keyring (a headless server, a container)
every operation raises :class:`~kstlib.auth.errors.TokenStorageError` saying what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kstlib.auth.errors import ConfigurationError, TokenStorageError
from kstlib.auth.token._atomic import ensure_private_directory
from kstlib.auth.token._document import dump_document, parse_document
from kstlib.auth.token._naming import check_provider_name, encode_provider_name
from kstlib.auth.token._settings import StorageSetting, parse_path, parse_text
from kstlib.auth.token.base import AbstractTokenStorage
from kstlib.auth.token.file import default_token_directory
from kstlib.auth.token.lock import FileLock, StorageLock

if TYPE_CHECKING:
    from kstlib.auth.models import Token

__all__ = ["DEFAULT_KEYRING_SERVICE", "KeyringTokenStorage"]

DEFAULT_KEYRING_SERVICE = "kstlib-auth"

_NO_BACKEND_FIX = (
    "No usable keyring backend on this machine (typical of a headless server or a "
    "container). Either start one (a Secret Service such as gnome-keyring or KWallet in a "
    "desktop session), or install a file-backed backend and select it: pip install "
    "keyrings.alt, then export PYTHON_KEYRING_BACKEND=keyrings.alt.file.EncryptedKeyring; "
    "or use another token storage (token_storage: file, sops or redis)."
)


def _import_keyring() -> Any:
    try:
        import keyring
    except ImportError:
        raise ConfigurationError(
            "Token storage 'keyring' needs the keyring package: "
            "pip install 'kstlib-auth[keyring]'.",
            key="auth.token_storage",
        ) from None
    return keyring


class KeyringTokenStorage(AbstractTokenStorage):
    """Tokens in the OS keyring, one entry per provider; locks through a lock file.

    Args:
        service: The keyring service name of the entries.
        lock_directory: Where the ``.locks`` directory of the file lock lives (default: the
            default token directory).
    """

    backend_name = "keyring"
    storage_settings = (
        StorageSetting(
            "service", parse_text, default=DEFAULT_KEYRING_SERVICE, doc="keyring service name"
        ),
        StorageSetting(
            "lock_directory",
            parse_path,
            default_factory=default_token_directory,
            path=True,
            doc="directory of the lock files",
        ),
    )

    def __init__(
        self, service: str = DEFAULT_KEYRING_SERVICE, *, lock_directory: Path | str | None = None
    ) -> None:
        """Configure the storage (the keyring backend is looked up at first use)."""
        self._keyring = _import_keyring()
        self.service = service
        self.lock_directory = Path(
            default_token_directory() if lock_directory is None else lock_directory
        )

    def describe(self) -> str:
        """The keyring backend and service (no secret)."""
        return f"keyring service {self.service!r} ({self._backend_name()})"

    def _backend_name(self) -> str:
        try:
            backend = self._keyring.get_keyring()
        except Exception:
            return "no backend"
        return f"{type(backend).__module__}.{type(backend).__name__}"

    def _backend(self, provider_name: str) -> Any:
        backend = self._keyring.get_keyring()
        from keyring.backends import fail

        if isinstance(backend, fail.Keyring):
            raise TokenStorageError(_NO_BACKEND_FIX, provider=provider_name)
        return backend

    def _call(self, provider_name: str, action: str, method: str, *args: str) -> Any:
        check_provider_name(provider_name)
        backend = self._backend(provider_name)
        from keyring.errors import KeyringError, NoKeyringError, PasswordDeleteError

        try:
            return getattr(backend, method)(self.service, provider_name, *args)
        except NoKeyringError:
            raise TokenStorageError(_NO_BACKEND_FIX, provider=provider_name) from None
        except PasswordDeleteError:
            return False
        except (KeyringError, OSError) as exc:
            raise TokenStorageError(
                f"The keyring ({self._backend_name()}) failed while {action} the token of "
                f"provider '{provider_name}': {type(exc).__name__}. Unlock the keyring (or "
                "check its configuration) and retry.",
                provider=provider_name,
            ) from None

    def save(self, provider_name: str, token: Token) -> None:
        """Store the token document in the keyring."""
        document = dump_document(provider_name, token).decode("utf-8", "surrogatepass")
        self._call(provider_name, "saving", "set_password", document)

    def load(self, provider_name: str) -> Token | None:
        """The stored token (validated), or None."""
        text = self._call(provider_name, "loading", "get_password")
        if text is None:
            return None
        where = Path(f"keyring:{self.service}/{provider_name}")
        return parse_document(provider_name, str(text).encode("utf-8", "surrogatepass"), where)

    def delete(self, provider_name: str) -> bool:
        """Delete the entry; True if there was one."""
        if self._call(provider_name, "reading", "get_password") is None:
            return False
        return self._call(provider_name, "deleting", "delete_password") is not False

    def exists(self, provider_name: str) -> bool:
        """True if the keyring holds a token for the provider."""
        return self._call(provider_name, "reading", "get_password") is not None

    def create_lock(self, provider_name: str) -> StorageLock:
        """The file lock of the provider (shared by the processes of this machine)."""
        check_provider_name(provider_name)
        locks = self.lock_directory / ".locks"
        ensure_private_directory(self.lock_directory)
        return FileLock(locks / f"{encode_provider_name(provider_name)}.lock", provider_name)
