"""A hostile working directory: ``./kstlib.conf.yml`` is input, never authority.

A user runs ``kstlib auth token`` in shell prompts and as a kubectl plugin, so ``cd`` into a
cloned repository must not let its ``kstlib.conf.yml`` run programs, read files, change TLS
trust or send the user's secrets and tokens elsewhere. Each test here failed on the code
before the trust rule (the working directory's file was merged last, with full power).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from kstlib.auth.config import build_provider_config, get_auth_settings, get_ssl_settings
from kstlib.auth.errors import ConfigurationError
from kstlib.config import ConfigWarning, load_config
from kstlib.secrets import MAX_SECRET_FILE_BYTES, resolve_secret

USER_PROVIDER = {
    "issuer": "https://idp.corp.example",
    "client_id": "corp-cli",
    "client_secret": "env://CORP_SECRET",
}


def write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def user_config(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's own config (~/.config/kstlib/kstlib.conf.yml): one provider, file storage."""
    monkeypatch.setenv("CORP_SECRET", "the-real-corp-secret")
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib" / "kstlib.conf.yml"
    return write(path, {"auth": {"providers": {"corp": dict(USER_PROVIDER)}}})


def hostile(tmp_path: Path, data: dict[str, Any]) -> Path:
    """A ``kstlib.conf.yml`` in the working directory (the tests run in ``tmp_path``)."""
    assert Path.cwd() == tmp_path
    return write(tmp_path / "kstlib.conf.yml", data)


def load_ignoring(expected_key: str) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_config()
    messages = [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]
    assert any(expected_key in m and "trust.directories" in m for m in messages), messages
    assert [layer.path.name for layer in loaded.ignored] == ["kstlib.conf.yml"]
    return loaded


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"auth": {"storage": {"sops": {"sops_binary": "/tmp/evil"}}}}, "auth.storage"),
        ({"auth": {"storage": {"file": {"directory": "/tmp/stolen"}}}}, "auth.storage"),
        ({"auth": {"token_storage": "memory"}}, "auth.token_storage"),
        # issue 15: a hostile directory may not send the tokens to its own Redis
        (
            {
                "auth": {
                    "token_storage": "redis",
                    "storage": {"redis": {"url": "redis://evil.example:6379/0"}},
                }
            },
            "auth.storage",
        ),
        (
            {"auth": {"providers": {"new": {"client_id": "x", "token_storage": "redis"}}}},
            "storage",
        ),
        ({"ssl": {"verify": False}}, "ssl"),
        ({"auth": {"providers": {"corp": {"token_url": "https://evil.example/t"}}}}, "corp"),
        ({"auth": {"providers": {"corp": {"issuer": "https://evil.example"}}}}, "corp"),
        ({"auth": {"providers": {"corp": None}}}, "auth.providers.corp"),
        ({"auth": {"providers": None}}, "auth.providers"),
        ({"auth": None}, "auth"),
        ({"trust": {"directories": ["*"]}}, "trust"),
        ({"auth": {"callback_server": {"host": "0.0.0.0"}}}, "auth.callback_server"),
        (
            {
                "auth": {
                    "providers": {"new": {"client_id": "x", "client_secret": "file://~/.ssh/k"}}
                }
            },
            "secret reference",
        ),
        (
            {"auth": {"providers": {"new": {"client_id": "x", "headers": {"X": "env://HOME"}}}}},
            "secret reference",
        ),
        ({"auth": {"providers": {"new": {"client_id": "x", "ssl_verify": False}}}}, "ssl_verify"),
        ({"auth": {"providers": {"new": {"client_id": "x", "token_storage": "file"}}}}, "storage"),
        ({"auth": {"providers": {"new": {"client_id": "x", "server_side": True}}}}, "server_side"),
    ],
)
def test_untrusted_directory_cannot_change_what_the_user_configured(
    tmp_path: Path, user_config: Path, data: dict[str, Any], key: str
) -> None:
    hostile(tmp_path, data)
    loaded = load_ignoring(key)
    assert [s.path for s in loaded.sources][-1] == user_config
    config = build_provider_config("corp", config=loaded)
    assert config.issuer == USER_PROVIDER["issuer"]
    assert config.token_url is None
    assert config.client_secret == "the-real-corp-secret"
    assert get_ssl_settings(config=loaded).verify is True
    settings = get_auth_settings(config=loaded)
    assert settings.storage.sops.sops_binary == "sops"
    assert settings.token_storage == "file"
    assert settings.callback_server.host == "127.0.0.1"


def test_untrusted_directory_may_add_a_provider_and_choose_the_default(
    tmp_path: Path, user_config: Path
) -> None:
    hostile(
        tmp_path,
        {
            "auth": {
                "default_provider": "team",
                "providers": {"team": {"issuer": "https://idp.team.example", "client_id": "t"}},
            }
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)
        loaded = load_config()
    assert loaded.ignored == ()
    assert loaded.sources[-1].path == tmp_path / "kstlib.conf.yml"
    assert loaded.sources[-1].trusted is False
    assert all(source.trusted for source in loaded.sources[:-1])
    assert build_provider_config("team", config=loaded).issuer == "https://idp.team.example"
    assert get_auth_settings(config=loaded).default_provider == "team"
    assert build_provider_config("corp", config=loaded).issuer == USER_PROVIDER["issuer"]


def test_a_directory_listed_in_trust_directories_configures_everything(
    tmp_path: Path, user_config: Path
) -> None:
    data = yaml.safe_load(user_config.read_text())
    data["trust"] = {"directories": [str(tmp_path)]}
    write(user_config, data)
    hostile(tmp_path, {"auth": {"providers": {"corp": {"issuer": "https://other.example"}}}})
    loaded = load_config()
    assert loaded.ignored == ()
    assert loaded.sources[-1].trusted is True
    assert build_provider_config("corp", config=loaded).issuer == "https://other.example"


def test_star_trusts_every_directory(tmp_path: Path, user_config: Path) -> None:
    data = yaml.safe_load(user_config.read_text())
    data["trust"] = {"directories": ["*"]}
    write(user_config, data)
    hostile(tmp_path, {"ssl": {"verify": False}})
    assert get_ssl_settings(config=load_config()).verify is False


def test_a_relative_trust_entry_trusts_nothing(tmp_path: Path, user_config: Path) -> None:
    data = yaml.safe_load(user_config.read_text())
    data["trust"] = {"directories": ["."]}
    write(user_config, data)
    hostile(tmp_path, {"ssl": {"verify": False}})
    load_ignoring("ssl")


def test_trust_directories_of_the_wrong_type_is_a_configuration_error(
    tmp_path: Path, user_config: Path
) -> None:
    data = yaml.safe_load(user_config.read_text())
    data["trust"] = {"directories": str(tmp_path)}
    write(user_config, data)
    hostile(tmp_path, {"ssl": {"verify": False}})
    with pytest.raises(ConfigurationError, match=r"trust\.directories must be a list") as err:
        load_config()
    assert err.value.file == str(user_config)


def test_an_explicit_file_in_the_working_directory_is_trusted(
    tmp_path: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = hostile(tmp_path, {"ssl": {"verify": False}, "auth": {"providers": {}}})
    monkeypatch.setenv("KSTLIB_CONFIG", str(path))
    loaded = load_config()
    assert loaded.ignored == () and loaded.sources[-1].trusted
    assert get_ssl_settings(config=loaded).verify is False


def test_a_world_writable_user_file_is_untrusted(tmp_path: Path) -> None:
    path = Path(os.environ["HOME"]) / "kstlib.conf.yml"
    write(path, {"auth": {"storage": {"sops": {"sops_binary": "/tmp/evil"}}}})
    path.chmod(0o666)
    loaded = load_ignoring("auth.storage")
    assert get_auth_settings(config=loaded).storage.sops.sops_binary == "sops"


def test_cli_in_a_hostile_directory_never_runs_its_program(
    tmp_path: Path, user_config: Path, age_identity: Any
) -> None:
    """The reported attack: ``sops_binary`` in ./kstlib.conf.yml, then ``kstlib auth status``."""
    data = yaml.safe_load(user_config.read_text())
    data["auth"]["token_storage"] = "sops"
    data["auth"]["storage"] = {"sops": {"age_recipients": [age_identity.recipient]}}
    write(user_config, data)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    evil.chmod(0o755)
    hostile(tmp_path, {"auth": {"storage": {"sops": {"sops_binary": str(evil)}}}})
    token_dir = Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib" / "auth" / "tokens"
    token_dir.mkdir(parents=True, mode=0o700)
    (token_dir / "corp.sops.json").write_text("{}")  # so that status decrypts something
    token_dir.joinpath("corp.sops.json").chmod(0o600)
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    for command in (["auth", "status", "corp"], ["auth", "token", "corp"]):
        result = subprocess.run(
            [str(Path(sys.executable).parent / "kstlib"), *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert not marker.exists(), result.stderr
        assert "ignored" in result.stderr and "trust.directories" in result.stderr


# --------------------------------------------------------------------------- file:// secrets


def resolve(value: str) -> str:
    return resolve_secret(value, base_dir=None, what="auth.providers.p.client_secret")


def test_file_secret_reads_a_regular_file_and_follows_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "secret.txt"
    target.write_text("s3cr3t\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert resolve(f"file://{link}") == "s3cr3t"


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_file_secret_refuses_devices(device: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="not a regular file"):
        resolve(f"file://{device}")
    assert time.monotonic() - started < 5


def test_file_secret_refuses_a_fifo_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            outcome.append(resolve(f"file://{fifo}"))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the thread before failing, so nothing leaks
        with open(fifo, "w"):
            pass
        worker.join(5)
        pytest.fail("resolving a file:// reference to a FIFO hung")
    assert isinstance(outcome[0], ConfigurationError)
    assert "not a regular file" in str(outcome[0])


def test_file_secret_refuses_a_large_file(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * (MAX_SECRET_FILE_BYTES + 1))
    with pytest.raises(ConfigurationError, match="too large"):
        resolve(f"file://{big}")
    exact = tmp_path / "exact"
    exact.write_bytes(b"y" * MAX_SECRET_FILE_BYTES)
    assert resolve(f"file://{exact}") == "y" * MAX_SECRET_FILE_BYTES
