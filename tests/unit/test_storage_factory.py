"""get_token_storage, the backend registry, package exports and import cost."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kstlib.auth.token as token_package
from kstlib.auth.errors import ConfigurationError
from kstlib.auth.models import Token
from kstlib.auth.token import (
    AbstractTokenStorage,
    FileTokenStorage,
    MemoryTokenStorage,
    SOPSTokenStorage,
    get_token_storage,
    register_token_storage,
)
from kstlib.auth.token import factory as factory_module

REQUIRED_EXPORTS = {
    "AbstractTokenStorage",
    "MemoryTokenStorage",
    "FileTokenStorage",
    "SOPSTokenStorage",
    "get_token_storage",
    "StorageLock",
    "default_token_directory",
}


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(factory_module._REGISTRY)
    try:
        yield
    finally:
        factory_module._REGISTRY.clear()
        factory_module._REGISTRY.update(saved)


def test_package_exports() -> None:
    assert REQUIRED_EXPORTS <= set(token_package.__all__)
    for name in token_package.__all__:
        assert getattr(token_package, name) is not None


def test_reachable_from_kstlib_auth() -> None:
    import kstlib.auth

    assert kstlib.auth.FileTokenStorage is FileTokenStorage
    assert kstlib.auth.get_token_storage is get_token_storage


def test_default_is_file_storage_in_default_directory(tmp_path: Path) -> None:
    storage = get_token_storage()
    assert isinstance(storage, FileTokenStorage)
    assert storage.directory == tmp_path / "home" / ".config" / "kstlib" / "auth" / "tokens"


def test_types_are_case_insensitive(tmp_path: Path) -> None:
    assert isinstance(get_token_storage(" Memory "), MemoryTokenStorage)
    file_storage = get_token_storage("FILE", directory=tmp_path / "t")
    assert isinstance(file_storage, FileTokenStorage)
    assert file_storage.directory == tmp_path / "t"


def test_sops_options_are_passed_through(tmp_path: Path) -> None:
    storage = get_token_storage(
        "sops", directory=str(tmp_path), sops_binary="my-sops", age_recipients=["age1x"]
    )
    assert isinstance(storage, SOPSTokenStorage)
    assert storage._sops_binary == "my-sops"
    assert storage._age_recipients == ("age1x",)


def test_sops_defaults_to_the_default_directory(tmp_path: Path) -> None:
    storage = get_token_storage("sops")
    assert isinstance(storage, SOPSTokenStorage)
    assert storage.directory == tmp_path / "home" / ".config" / "kstlib" / "auth" / "tokens"


def test_unknown_type_lists_valid_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        get_token_storage("vault")
    assert "'vault'" in str(info.value)
    assert "file, keyring, memory, redis, sops" in str(info.value)


def test_invalid_options_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no directory"):
        get_token_storage("memory", directory=tmp_path)
    with pytest.raises(ConfigurationError, match="Invalid options for token storage 'file'"):
        get_token_storage("file", directory=tmp_path, age_recipients=["x"])


def test_registered_backend_is_built(clean_registry: None) -> None:
    built: list[dict[str, Any]] = []

    def factory(*, directory: Path | str | None = None, **kwargs: Any) -> AbstractTokenStorage:
        built.append({"directory": directory, **kwargs})
        return MemoryTokenStorage()

    register_token_storage("Dynamo", factory)
    storage = get_token_storage("dynamo", url="dynamo://localhost")
    assert isinstance(storage, MemoryTokenStorage)
    assert built == [{"directory": None, "url": "dynamo://localhost"}]
    with pytest.raises(ConfigurationError, match="dynamo, file, keyring, memory, redis, sops"):
        get_token_storage("nope")


def test_registering_twice_needs_replace(clean_registry: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_token_storage("file", lambda **kwargs: MemoryTokenStorage())
    register_token_storage("file", lambda **kwargs: MemoryTokenStorage(), replace=True)
    assert isinstance(get_token_storage("file"), MemoryTokenStorage)
    with pytest.raises(ValueError, match="non-empty"):
        register_token_storage(" ", lambda **kwargs: MemoryTokenStorage())


def test_sensitive_token_on_file_storage(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path)
    storage.save("p", Token(access_token="secret"))
    with storage.sensitive_token("p") as token:
        assert token is not None and token.access_token == "secret"
    with storage.sensitive_token("missing") as token:
        assert token is None


def test_import_is_cheap() -> None:
    code = (
        "import json, sys, kstlib.auth.token\n"
        "heavy = ['httpx', 'cryptography', 'platformdirs', 'yaml', 'asyncio', 'redis', 'keyring']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []
