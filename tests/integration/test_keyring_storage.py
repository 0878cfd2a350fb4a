"""KeyringTokenStorage with a real file-backed keyring backend (keyrings.alt's
PlaintextKeyring, selected by a keyringrc.cfg in the test's own XDG config directory)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import keyring
import keyring.core
import pytest

from kstlib.auth import KeyringTokenStorage, Token
from kstlib.auth.errors import TokenStorageError
from kstlib.auth.token.lock import FileLock


def select_backend(name: str) -> None:
    """Write keyringrc.cfg where keyring looks (XDG_CONFIG_HOME, a temp dir) and reload it."""
    import os

    config = Path(os.environ["XDG_CONFIG_HOME"]) / "python_keyring"
    config.mkdir(parents=True, exist_ok=True)
    (config / "keyringrc.cfg").write_text(f"[backend]\ndefault-keyring={name}\n")
    keyring.core.init_backend()


@pytest.fixture
def file_keyring(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    import os

    previous = keyring.get_keyring()
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    select_backend("keyrings.alt.file.PlaintextKeyring")
    yield Path(os.environ["XDG_DATA_HOME"]) / "python_keyring" / "keyring_pass.cfg"
    keyring.set_keyring(previous)


def token(access: str = "at-1") -> Token:
    return Token(
        access_token=access,
        refresh_token="rt-1",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )


def test_save_load_delete_in_a_real_file_keyring(file_keyring: Path, tmp_path: Path) -> None:
    storage = KeyringTokenStorage(lock_directory=tmp_path / "locks")
    assert "PlaintextKeyring" in storage.describe()
    assert storage.load("corp") is None and not storage.exists("corp")
    storage.save("corp", token())
    assert file_keyring.is_file()  # the backend really wrote its file
    loaded = storage.load("corp")
    assert loaded is not None and loaded.access_token == "at-1" and storage.exists("corp")

    async def main() -> Token | None:
        await storage.asave("corp", token("at-2"))
        return await storage.aload("corp")

    again = asyncio.run(main())
    assert again is not None and again.access_token == "at-2"
    assert storage.delete("corp") is True
    assert storage.delete("corp") is False and storage.load("corp") is None


def test_the_lock_is_the_file_lock(file_keyring: Path, tmp_path: Path) -> None:
    storage = KeyringTokenStorage(lock_directory=tmp_path / "locks")
    handle = storage.create_lock("corp")
    assert isinstance(handle, FileLock) and handle.path.parent == tmp_path / "locks" / ".locks"
    with storage.lock("corp"):
        with pytest.raises(TokenStorageError, match="Timed out"):
            storage.create_lock("corp").acquire(0.1)


def test_config_token_storage_keyring(file_keyring: Path, tmp_path: Path) -> None:
    from kstlib.auth.config import get_token_storage_for_provider

    config = {
        "auth": {
            "token_storage": "keyring",
            "storage": {"keyring": {"service": "my-app", "lock_directory": str(tmp_path)}},
            "providers": {"corp": {"type": "oidc", "issuer": "https://idp.example"}},
        }
    }
    storage = get_token_storage_for_provider("corp", config=config)
    assert isinstance(storage, KeyringTokenStorage) and storage.service == "my-app"
    storage.save("corp", token())
    assert keyring.get_password("my-app", "corp") is not None


def test_no_keyring_backend_is_a_clear_error_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    previous = keyring.get_keyring()
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    select_backend("keyring.backends.fail.Keyring")  # what a headless machine gets
    try:
        storage = KeyringTokenStorage(lock_directory=tmp_path)
        for call in (lambda: storage.save("corp", token()), lambda: storage.load("corp")):
            with pytest.raises(TokenStorageError) as caught:
                call()
            message = str(caught.value)
            assert "keyrings.alt" in message and "PYTHON_KEYRING_BACKEND" in message
            assert "token_storage: file" in message
    finally:
        keyring.set_keyring(previous)
