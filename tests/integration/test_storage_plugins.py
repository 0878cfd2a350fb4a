"""Storage backends declare their settings; third-party ones arrive through entry points.

The plugin is a real installed distribution: ``tests/storage_plugin`` holds a package and
its ``.dist-info`` (with ``entry_points.txt`` in the ``kstlib.auth.storage`` group), put on
``sys.path`` of a subprocess, so ``importlib.metadata`` finds it like any installed one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from kstlib.auth.config import get_auth_settings, get_token_storage_for_provider
from kstlib.auth.errors import ConfigurationError
from kstlib.auth.token import (
    MemoryTokenStorage,
    StorageSetting,
    factory,
    parse_number,
    register_token_storage,
)
from kstlib.config import ConfigWarning

PLUGIN_SITE = Path(__file__).resolve().parents[1] / "storage_plugin"
KSTLIB = str(Path(sys.executable).with_name("kstlib"))
PROVIDER = {"issuer": "https://idp.example", "client_id": "app"}


def _config_file(directory: Path, storage: str, **sections: Any) -> Path:
    path = directory / "kstlib.conf.yml"
    auth = {"token_storage": storage, "storage": sections, "providers": {"corp": PROVIDER}}
    path.write_text(yaml.safe_dump({"auth": auth}), encoding="utf-8")
    return path


def _run(code: str, config: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_SITE), "KSTLIB_CONFIG": str(config)}
    command = [*argv] if argv else [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_an_entry_point_backend_is_built_from_its_declared_settings(tmp_path: Path) -> None:
    config = _config_file(
        tmp_path, "teststore", teststore={"label": "ours", "root": "data", "limit": 3}
    )
    out = _run(
        """
        import sys
        from kstlib.auth.config import get_token_storage_for_provider
        storage = get_token_storage_for_provider("corp")
        print(type(storage).__module__, storage.describe())
        """,
        config,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["kstlib_test_store", f"teststore:ours:{tmp_path / 'data'}:3"]


def test_entry_points_are_loaded_only_when_a_name_is_not_built_in(tmp_path: Path) -> None:
    config = _config_file(tmp_path, "file", file={"directory": "tokens"})
    out = _run(
        """
        import sys
        import kstlib.auth
        from kstlib.auth.config import get_token_storage_for_provider
        from kstlib.auth.token import factory
        get_token_storage_for_provider("corp").load("corp")
        print(factory._entry_points_loaded.is_set(), "kstlib_test_store" in sys.modules)
        from kstlib.auth.token import registered_token_storages
        print(" ".join(registered_token_storages()))
        print(factory._entry_points_loaded.is_set(), "kstlib_test_store" in sys.modules)
        """,
        config,
    )
    assert out.returncode == 0, out.stderr
    first, names, last = out.stdout.splitlines()
    assert first == "False False"  # the built-in path never scans the installed distributions
    assert names.split() == ["file", "keyring", "memory", "redis", "sops", "teststore"]
    assert last == "True True"


def test_the_cli_uses_an_entry_point_backend(tmp_path: Path) -> None:
    config = _config_file(tmp_path, "teststore", teststore={"label": "cli"})
    out = _run("", config, KSTLIB, "auth", "status", "corp", "--json")
    assert out.returncode == 0, out.stderr
    [entry] = json.loads(out.stdout)
    assert entry["storage"] == "teststore:cli:None:10"
    assert entry["authenticated"] is False


def test_a_plugin_setting_is_validated_with_its_file_and_key(tmp_path: Path) -> None:
    config = _config_file(tmp_path, "teststore", teststore={"limit": "many", "lable": "x"})
    out = _run(
        """
        from kstlib.auth.config import get_auth_settings
        get_auth_settings()
        """,
        config,
    )
    assert out.returncode != 0
    assert f"{config}: auth.storage.teststore.limit: expected a number, got str" in out.stderr
    assert "auth.storage.teststore.lable: unknown key (did you mean 'label'?)" in out.stderr


def test_a_broken_entry_point_names_its_distribution(tmp_path: Path) -> None:
    config = _config_file(tmp_path, "brokenstore")
    out = _run(
        """
        from kstlib.auth.config import get_auth_settings
        get_auth_settings()
        """,
        config,
    )
    assert out.returncode != 0
    assert "auth.token_storage" in out.stderr
    assert "entry point of kstlib-test-store" in out.stderr
    assert "cannot be loaded: ModuleNotFoundError" in out.stderr


def test_an_entry_point_cannot_take_a_built_in_name(tmp_path: Path) -> None:
    config = _config_file(tmp_path, "file", file={"directory": "tokens"})
    out = _run(
        """
        from kstlib.auth.token import registered_token_storages, get_token_storage
        registered_token_storages()
        print(type(get_token_storage("file", directory="t")).__name__)
        """,
        config,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "FileTokenStorage"
    assert "Ignoring token storage 'file' from entry point of kstlib-test-store" in out.stderr


# --------------------------------------------------------------------------- registered in code


@pytest.fixture
def registered() -> Any:
    yield register_token_storage
    for name in ("declared", "classy"):
        factory._REGISTRY.pop(name, None)


def test_a_backend_registered_in_code_declares_its_settings(
    registered: Any, tmp_path: Path
) -> None:
    built: list[dict[str, Any]] = []

    def make(**options: Any) -> MemoryTokenStorage:
        built.append(options)
        return MemoryTokenStorage()

    registered(
        "declared",
        make,
        settings=[StorageSetting("size", parse_number, default=1.0)],
    )
    config = {"auth": {"token_storage": "declared", "providers": {"corp": PROVIDER}}}
    get_token_storage_for_provider("corp", config=config)
    config["auth"]["storage"] = {"declared": {"size": 5}}
    get_token_storage_for_provider("corp", config=config)
    assert built == [{"size": 1.0}, {"size": 5.0}]
    config["auth"]["storage"] = {"declared": {"size": -1}}
    with pytest.raises(ConfigurationError, match=r"auth\.storage\.declared\.size: must be"):
        get_token_storage_for_provider("corp", config=config)


def test_a_storage_class_registered_in_code_brings_its_declaration(registered: Any) -> None:
    class Classy(MemoryTokenStorage):
        storage_settings = (StorageSetting("tag", default="t"),)

        def __init__(self, *, tag: str) -> None:
            super().__init__()
            self.tag = tag

    registered("classy", Classy)
    settings = get_auth_settings(config={"storage": {"classy": {"tag": "x"}}})
    assert settings.storage.classy.tag == "x"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        get_auth_settings(config={"storage": {"classy": {"tga": "x"}}})
    assert any(
        issubclass(w.category, ConfigWarning) and "did you mean 'tag'" in str(w.message)
        for w in caught
    )


def test_an_unknown_backend_section_warns_with_the_closest_name() -> None:
    with pytest.warns(ConfigWarning, match=r"auth\.storage\.sosp: unknown token storage .*'sops'"):
        get_auth_settings(config={"storage": {"sosp": {}}})
