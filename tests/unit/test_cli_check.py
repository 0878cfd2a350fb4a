"""`kstlib auth check`: output, exit codes, stdin, JSON, provider resolution (real config file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from kstlib.cli.check import describe_time, register
from tests import jwt_factory as f
from tests.jwks_server import JWKSServer

pytestmark = pytest.mark.usefixtures("server")


@pytest.fixture
def app() -> typer.Typer:
    auth_app = typer.Typer()

    @auth_app.callback()
    def _auth() -> None:
        """Authentication commands."""

    register(auth_app)
    return auth_app


@pytest.fixture
def issuer_and_key(server: JWKSServer) -> tuple[str, f.TestKey]:
    key = f.rsa_key()
    key.x5c = f.self_signed_x5c(key, common_name="idp-signer")
    return server.set_issuer("/issuer", jwks=f.jwks(key)), key


def _run(app: typer.Typer, args: list[str], stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, ["check", *args], input=stdin, env={"COLUMNS": "200"})


def _secret_parts(token: str) -> list[str]:
    header, payload, signature = token.split(".")
    return [token, payload, signature]


# --------------------------------------------------------------------------- standalone


def test_valid_token_exit_0_and_rich_report(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey]
) -> None:
    issuer, key = issuer_and_key
    token = key.sign(f.claims(issuer))
    result = _run(
        app, ["--token", token, "--expected-issuer", issuer, "--expected-audience", "my-app"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "VALID ID token" in out
    assert out.count("✓") == 6
    assert key.spki_sha256 in out
    assert "CN=idp-signer" in out
    assert "expires in" in out
    assert "[REDACTED]" in out  # the nonce
    assert "n-0S6_WzA2Mj" not in out
    for part in _secret_parts(token):
        assert part not in out
    assert "BEGIN PUBLIC KEY" not in out


def test_verbose_adds_header_payload_discovery_and_pem(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey]
) -> None:
    issuer, key = issuer_and_key
    token = key.sign(f.claims(issuer))
    result = _run(app, ["--token", token, "--expected-issuer", issuer, "-v"])
    assert result.exit_code == 0, result.output
    assert "BEGIN PUBLIC KEY" in result.output
    assert "openid-configuration" in result.output
    assert '"alg": "RS256"' in result.output
    assert "n-0S6_WzA2Mj" not in result.output
    for part in _secret_parts(token):
        assert part not in result.output


def test_invalid_token_exit_1(app: typer.Typer, issuer_and_key: tuple[str, f.TestKey]) -> None:
    issuer, key = issuer_and_key
    token = key.sign(f.claims(issuer, aud="other"))
    result = _run(
        app, ["--token", token, "--expected-issuer", issuer, "--expected-audience", "my-app"]
    )
    assert result.exit_code == 1, result.output
    assert "INVALID ID token" in result.output
    assert "Validate claims failed" in result.output
    assert "✗" in result.output


def test_unpinned_issuer_is_flagged(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey]
) -> None:
    issuer, key = issuer_and_key
    token = key.sign(f.claims(issuer))
    result = _run(app, ["--token", token, "--allow-loopback-issuer"])
    assert result.exit_code == 0, result.output
    assert "VALID ID token (issuer not pinned)" in result.stdout
    assert "warning: issuer not pinned" in result.stderr
    as_json = _run(app, ["--token", token, "--allow-loopback-issuer", "--json"])
    assert json.loads(as_json.stdout)["valid"] is True  # stdout stays pure JSON
    assert "warning: issuer not pinned" in as_json.stderr


def test_unpinned_loopback_issuer_needs_the_opt_in(
    app: typer.Typer, server: JWKSServer, issuer_and_key: tuple[str, f.TestKey]
) -> None:
    issuer, key = issuer_and_key
    result = _run(app, ["--token", key.sign(f.claims(issuer))])
    assert result.exit_code == 1, result.output
    assert "Discover issuer failed" in result.stdout
    assert "loopback" in result.stdout
    assert "warning: issuer not pinned" in result.stderr  # said even when the check fails
    assert server.count() == 0


def test_garbage_token_exit_1_with_steps_not_run(app: typer.Typer) -> None:
    result = _run(app, ["--token", "garbage"])
    assert result.exit_code == 1
    assert "Decode structure failed" in result.output
    assert result.output.count("not run") == 5


def test_token_from_stdin(app: typer.Typer, issuer_and_key: tuple[str, f.TestKey]) -> None:
    issuer, key = issuer_and_key
    token = key.sign(f.claims(issuer))
    result = _run(app, ["--token", "-", "--expected-issuer", issuer], stdin=token + "\n")
    assert result.exit_code == 0, result.output
    result = _run(app, ["-", "--expected-issuer", issuer], stdin=token)
    assert result.exit_code == 0, result.output


def test_empty_stdin_is_a_usage_error(app: typer.Typer) -> None:
    result = _run(app, ["--token", "-"], stdin="   \n")
    assert result.exit_code == 2
    assert "no token on stdin" in result.output


def test_json_output(app: typer.Typer, issuer_and_key: tuple[str, f.TestKey]) -> None:
    issuer, key = issuer_and_key
    token = key.sign(f.claims(issuer))
    result = _run(app, ["--token", token, "--expected-issuer", issuer, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["valid"] is True
    assert data["key_fingerprint"] == key.spki_sha256
    assert [s["name"] for s in data["steps"]][-1] == "validate_claims"
    assert data["payload"]["nonce"] == "[REDACTED]"
    assert data["payload"]["sub"] == "user-123"
    for part in _secret_parts(token):
        assert part not in result.output


def test_json_output_of_invalid_token(app: typer.Typer) -> None:
    result = _run(app, ["--token", "a.b.c", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)  # the unpinned-issuer warning goes to stderr
    assert data["valid"] is False
    assert data["error"]


def test_access_token_flag(app: typer.Typer, issuer_and_key: tuple[str, f.TestKey]) -> None:
    issuer, key = issuer_and_key
    token = key.sign({"iss": issuer, "exp": f.claims(issuer)["exp"]}, header={"typ": "at+jwt"})
    result = _run(app, ["--token", token, "--access-token", "--expected-issuer", issuer])
    assert result.exit_code == 0, result.output
    assert "VALID access token" in result.output


def test_describe_time() -> None:
    assert describe_time(0, 60) == "1970-01-01 00:00:00 UTC, 1m 0s ago"
    assert describe_time(3600, 0, expiry=True) == "1970-01-01 01:00:00 UTC, expires in 1h 0m"
    assert describe_time(0, 5, expiry=True).endswith("expired 5s ago")
    assert describe_time(1e20, 0) == "not a valid time"


# --------------------------------------------------------------------------- with a provider


def _write_config(tmp_path: Path, issuer: str, **provider: Any) -> Path:
    tokens = tmp_path / "tokens"
    settings = {"issuer": issuer, "client_id": "my-app", **provider}
    lines = [
        "auth:",
        "  token_storage: file",
        "  storage:",
        "    file:",
        f"      directory: {tokens}",
        "  providers:",
        "    corp:",
        *[f"      {k}: {json.dumps(v)}" for k, v in settings.items()],
    ]
    (tmp_path / "kstlib.conf.yml").write_text("\n".join(lines) + "\n")
    os.environ["KSTLIB_CONFIG"] = str(tmp_path / "kstlib.conf.yml")  # restored by _isolated_home
    return tokens


def _store(access_token: str, id_token: str | None) -> None:
    from kstlib.auth.config import get_token_storage_for_provider
    from kstlib.auth.models import Token

    get_token_storage_for_provider("corp").save(
        "corp", Token(access_token=access_token, id_token=id_token)
    )


def test_provider_stored_id_token_pins_issuer_and_client_id(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey], tmp_path: Path
) -> None:
    issuer, key = issuer_and_key
    _write_config(tmp_path, issuer)
    _store("opaque-access-token", key.sign(f.claims(issuer)))
    result = _run(app, ["corp"])
    assert result.exit_code == 0, result.output
    assert (
        "is the expected issuer" in result.output or "matches the expected issuer" in result.output
    )
    assert "issuer not pinned" not in result.output
    data = json.loads(_run(app, ["corp", "--json"]).output)
    assert data["audience_match"] is True and data["issuer_match"] is True


def test_provider_default_is_resolved(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey], tmp_path: Path
) -> None:
    issuer, key = issuer_and_key
    _write_config(tmp_path, issuer)
    _store("opaque", key.sign(f.claims(issuer)))
    assert _run(app, []).exit_code == 0


def test_provider_audience_mismatch(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey], tmp_path: Path
) -> None:
    issuer, key = issuer_and_key
    _write_config(tmp_path, issuer)
    _store("opaque", key.sign(f.claims(issuer, aud="another-client")))
    result = _run(app, ["corp"])
    assert result.exit_code == 1
    assert "token audience does not include 'my-app'" in result.output


def test_provider_token_from_other_issuer(
    app: typer.Typer, server: JWKSServer, issuer_and_key: tuple[str, f.TestKey], tmp_path: Path
) -> None:
    issuer, key = issuer_and_key
    _write_config(tmp_path, issuer)
    token = key.sign(f.claims(server.url("/elsewhere")))
    result = _run(app, ["corp", "--token", token, "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["steps"][-1]["name"] == "discover_issuer"
    assert server.count() == 0


def test_provider_access_token(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey], tmp_path: Path
) -> None:
    issuer, key = issuer_and_key
    _write_config(tmp_path, issuer)
    access = key.sign({"iss": issuer, "exp": f.claims(issuer)["exp"], "aud": "api"})
    _store(access, None)
    result = _run(app, ["corp", "--access-token"])
    assert result.exit_code == 0, result.output
    assert "audience not checked" in result.output
    result = _run(app, ["corp"])  # no ID token stored
    assert result.exit_code == 2
    assert "no ID token" in result.output


def test_provider_without_stored_token(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey], tmp_path: Path
) -> None:
    _write_config(tmp_path, issuer_and_key[0])
    result = _run(app, ["corp"])
    assert result.exit_code == 2
    assert "kstlib auth login corp" in result.output


def test_unknown_provider(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey], tmp_path: Path
) -> None:
    _write_config(tmp_path, issuer_and_key[0])
    result = _run(app, ["nope", "--token", "a.b.c"])
    assert result.exit_code == 2
    assert "corp" in result.output


def test_no_token_and_no_provider(app: typer.Typer) -> None:
    result = _run(app, [])
    assert result.exit_code == 2
    assert result.output.startswith("error: ")


# --------------------------------------------------------------------------- untrusted text


def test_claim_names_are_text_not_markup(
    app: typer.Typer, issuer_and_key: tuple[str, f.TestKey]
) -> None:
    """A claim named ``[/x]`` crashed the command; markup in a name printed a fake line."""
    issuer, key = issuer_and_key
    fake = "[bold green]VALID ID token, signature verified[/bold green]"
    claims = f.claims(issuer, lifetime=-3600)  # expired: the verdict is INVALID
    claims.update({"[/x]": 1, fake: "[link=https://evil.example]click[/link]"})
    result = _run(app, ["--token", key.sign(claims), "--expected-issuer", issuer, "-v"])
    assert result.exit_code == 1, result.output
    assert "INVALID ID token" in result.output
    assert "[/x]" in result.output
    assert "[bold green]VALID ID token, signature verified[/bold green]" in result.output
    assert "[link=https://evil.example]click[/link]" in result.output


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_control_characters_never_reach_the_terminal(
    app: typer.Typer, server: JWKSServer, verbose: list[str]
) -> None:
    key = f.rsa_key(kid="k\x1b[2J\u009b")
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    claims = f.claims(
        issuer,
        name="\x1b]0;pwned\x07",
        **{"e\x1b[31mvil": "x", "rtl\u202etxt.exe": "y", "nl\r\nVALID": "z"},
    )
    result = _run(app, ["--token", key.sign(claims), "--expected-issuer", issuer, *verbose])
    assert result.exit_code == 0, result.output
    out = result.output
    for raw in ("\x1b", "\x07", "\u009b", "\u202e", "\r"):
        assert raw not in out
    assert "\\x1b]0;pwned\\x07" in out
    assert "rtl\\u202etxt.exe" in out
    assert "k\\x1b[2J\\x9b" in out  # the kid, in the key panel
