"""``kstlib --config PATH`` and ``kstlib auth config``: which files, in which order, set what."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SECRET = "plain-secret-value-7d1f"
KSTLIB = str(Path(sys.executable).parent / "kstlib")


class Result:
    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.exit_code = done.returncode
        self.stdout = done.stdout
        self.stderr = done.stderr


def invoke(*args: str) -> Result:
    """Run the real console script (environment of the test: HOME, XDG, cwd isolated)."""
    return Result(
        subprocess.run([KSTLIB, *args], capture_output=True, text=True, timeout=60, check=False)
    )


def write(path: Path, data: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def user_file(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("CORP_SECRET", SECRET)
    providers = {
        "corp": {
            "issuer": "https://idp.corp.example",
            "client_id": "corp-cli",
            "client_secret": "env://CORP_SECRET",
        },
        "legacy": {"issuer": "https://legacy.example", "client_id": "l", "client_secret": SECRET},
    }
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib" / "kstlib.conf.yml"
    return write(path, {"auth": {"providers": providers}})


def test_auth_config_lists_files_in_order_and_who_set_each_key(
    user_file: Path, tmp_path: Path
) -> None:
    cwd_file = write(
        tmp_path / "kstlib.conf.yml",
        {"auth": {"providers": {"team": {"issuer": "https://team.example", "client_id": "t"}}}},
    )
    result = invoke("auth", "config", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    files = {row["path"]: row["status"] for row in report["files"]}
    assert files[str(user_file)] == "loaded"
    assert files[str(cwd_file)].startswith("loaded, untrusted")
    assert files[str(Path(os.environ["HOME"]) / "kstlib.conf.yml")] == "not found"
    assert list(files).index(str(user_file)) < list(files).index(str(cwd_file))
    corp = report["providers"]["corp"]
    assert corp["client_secret"] == {"value": "env://CORP_SECRET", "source": str(user_file)}
    assert report["providers"]["team"]["issuer"]["source"] == str(cwd_file)
    assert report["providers"]["legacy"]["client_secret"]["value"] == "***"
    assert SECRET not in result.stdout


def test_auth_config_shows_an_ignored_file_and_why(user_file: Path, tmp_path: Path) -> None:
    write(tmp_path / "kstlib.conf.yml", {"ssl": {"verify": False}})
    result = invoke("auth", "config")
    assert result.exit_code == 0
    assert "ignored: its directory is not trusted" in result.stdout
    assert "warning:" in result.stderr and "trust.directories" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_config_option_replaces_the_search(user_file: Path, tmp_path: Path) -> None:
    other = write(
        tmp_path / "elsewhere" / "mine.yml",
        {"auth": {"providers": {"solo": {"issuer": "https://solo.example", "client_id": "s"}}}},
    )
    result = invoke("--config", str(other), "auth", "config", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report["providers"]) == ["solo"]
    assert report["files"][-1]["path"] == str(other)
    assert "--config" in report["files"][-1]["status"]


def test_no_provider_error_names_the_files_loaded(tmp_path: Path) -> None:
    empty = write(tmp_path / "empty.yml", {"auth": {"providers": {}}})
    result = invoke("--config", str(empty), "auth", "token")
    assert result.exit_code == 2
    assert f"add one under auth.providers in {empty}" in result.stderr
    result = invoke("auth", "token")
    assert "no configuration file was found" in result.stderr
    assert str(Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib" / "kstlib.conf.yml") in result.stderr
