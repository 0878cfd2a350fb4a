"""Provider resolution, exit codes and error reporting of the command line (no IdP needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from kstlib.cli.app import app, reset_logging, run

KSTLIB = [str(Path(sys.executable).with_name("kstlib"))]
COMMANDS = ("login", "logout", "status", "token", "whoami", "check", "providers", "preflight")


def provider(name: str) -> dict[str, Any]:
    return {"issuer": f"https://{name}.idp.invalid", "client_id": f"{name}-cli"}


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kstlib.conf.yml"
    monkeypatch.setenv("KSTLIB_CONFIG", str(path))
    monkeypatch.setenv("COLUMNS", "250")
    write(path, {"alpha": provider("alpha"), "beta": provider("beta")})
    return path


def write(path: Path, providers: dict[str, Any], **auth: Any) -> None:
    storage = {"file": {"directory": str(path.parent / "tokens")}}
    path.write_text(yaml.safe_dump({"auth": {"storage": storage, "providers": providers, **auth}}))


def invoke(*args: str) -> Result:
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        reset_logging()


def test_help_lists_every_command() -> None:
    result = invoke("auth", "--help")
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_several_providers_without_default_is_an_error_listing_them(config: Path) -> None:
    result = invoke("auth", "token")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "alpha" in result.stderr and "beta" in result.stderr
    assert result.stderr.count("\n") == 1


def test_unknown_provider_is_an_error_listing_the_configured_ones(config: Path) -> None:
    result = invoke("auth", "status", "gamma")
    assert result.exit_code == 2
    assert "gamma" in result.stderr and "alpha, beta" in result.stderr


def test_default_provider_is_used(config: Path) -> None:
    write(config, {"alpha": provider("alpha"), "beta": provider("beta")}, default_provider="beta")
    result = invoke("auth", "status", "--json")
    assert result.exit_code == 1  # nobody is logged in (#16 item 13)
    assert [e["provider"] for e in json.loads(result.stdout)] == ["alpha", "beta"]
    assert "beta" in invoke("auth", "token").stderr  # "Not logged in to 'beta'"


def test_the_only_provider_is_used(config: Path) -> None:
    write(config, {"solo": provider("solo")})
    result = invoke("auth", "token")
    assert result.exit_code == 1  # resolved, but not logged in: an authentication failure
    assert "Not logged in to 'solo'" in result.stderr


def test_no_provider_configured(config: Path) -> None:
    write(config, {})
    assert invoke("auth", "token").exit_code == 2
    empty = invoke("auth", "status", "--json")
    assert empty.exit_code == 0 and empty.stdout.strip() == "[]"


def test_broken_configuration_exits_2_on_one_line(config: Path) -> None:
    config.write_text("auth: [this is: not valid\n")
    result = invoke("auth", "status")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert str(config) in result.stderr


def test_missing_configuration_file_exits_2(config: Path) -> None:
    config.unlink()
    assert invoke("auth", "providers").exit_code == 2


def test_not_logged_in_exits_1_without_traceback(config: Path) -> None:
    result = invoke("auth", "token", "alpha")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_verbose_shows_the_traceback(config: Path) -> None:
    informed = invoke("-v", "auth", "token", "alpha")  # -v says what happens, no traceback
    assert informed.exit_code == 1 and "Traceback" not in informed.stderr
    assert "info: No token is stored for 'alpha'" in informed.stderr
    result = invoke("-vv", "auth", "token", "alpha")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: Not logged in")


def test_usage_errors_exit_2_on_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (
        ["auth", "token", "--bogus"],
        ["auth", "token", "--format", "xml"],
        ["auth", "token", "--header", "--json"],
        ["auth", "login", "--timeout", "0"],
        ["auth", "nope"],
    ):
        assert run(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)


def test_run_returns_0_for_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["auth", "--help"]) == 0
    assert "preflight" in capsys.readouterr().out


def test_console_script_exit_codes(config: Path) -> None:
    def code(*args: str) -> int:
        return subprocess.run([*KSTLIB, *args], capture_output=True, timeout=60).returncode

    assert code("auth", "status") == 1  # nobody is logged in (#16 item 13)
    assert code("auth", "token", "alpha") == 1
    assert code("auth", "token") == 2
    assert code("auth", "token", "--bogus") == 2


def test_preflight_of_an_unreachable_provider_exits_1(config: Path) -> None:
    write(config, {"alpha": {"issuer": "http://127.0.0.1:9", "client_id": "c"}})
    result = invoke("auth", "preflight")
    assert result.exit_code == 1
    assert "failed" in result.stdout


def _store_token(config: Path, name: str) -> None:
    from datetime import UTC, datetime, timedelta

    from kstlib.auth.models import Token
    from kstlib.auth.token import FileTokenStorage

    token = Token(
        access_token="usage-access-token",
        refresh_token="usage-refresh-token",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    FileTokenStorage(config.parent / "tokens").save(name, token)


def test_logout_with_an_unreachable_idp_removes_the_token_and_exits_1(config: Path) -> None:
    write(config, {"alpha": {"issuer": "http://127.0.0.1:9", "client_id": "c"}})
    _store_token(config, "alpha")
    result = invoke("auth", "logout")
    assert result.exit_code == 1
    assert "the local token was removed anyway" in result.stderr
    assert "usage-access-token" not in result.output
    assert not (config.parent / "tokens" / "alpha.json").exists()
    assert invoke("auth", "logout", "--no-revoke").exit_code == 0  # nothing left to do


def test_unusable_token_file(config: Path) -> None:
    write(config, {"alpha": provider("alpha")})
    tokens = config.parent / "tokens"
    tokens.mkdir(mode=0o700, exist_ok=True)
    (tokens / "alpha.json").write_text("{not json")
    (tokens / "alpha.json").chmod(0o600)
    status = invoke("auth", "status", "--json")
    assert status.exit_code == 1
    entry = json.loads(status.stdout)[0]
    assert entry["authenticated"] is False and "unusable" in entry["error"]
    token = invoke("auth", "token")
    assert token.exit_code == 1 and "unusable" in token.stderr
