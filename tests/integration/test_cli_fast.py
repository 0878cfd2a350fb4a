"""The fast path of ``kstlib auth token``: what it accepts, what it imports, what it prints."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kstlib.auth.models import Token
from kstlib.auth.token import FileTokenStorage
from kstlib.cli._fast import TOKEN_FORMATS, parse_token_args, run_fast_path
from kstlib.cli.app import app, reset_logging

HEAVY = ("typer", "rich", "httpx", "httpcore", "cryptography", "click")
ACCESS = "fast-path-access-token-value"


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileTokenStorage:
    """A config with one provider (unreachable issuer) and a fresh stored token."""
    tokens = tmp_path / "tokens"
    config = tmp_path / "kstlib.conf.yml"
    providers = {"corp": {"issuer": "https://idp.invalid", "client_id": "cli"}}
    auth = {"storage": {"file": {"directory": str(tokens)}}, "providers": providers}
    config.write_text(yaml.safe_dump({"auth": auth}))
    monkeypatch.setenv("KSTLIB_CONFIG", str(config))
    storage = FileTokenStorage(tokens)
    storage.save("corp", _token(timedelta(hours=1)))
    return storage


def _jwt(claims: dict[str, object]) -> str:
    """A compact JWS shape with ``claims`` (the fast path decodes a stored ID token only)."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def _token(lifetime: timedelta, *, id_lifetime: timedelta | None = None) -> Token:
    """A 1 h token with ``lifetime`` left (the skew is clamped to half a token's lifetime),
    with a 1 h ID token that has ``id_lifetime`` left (default: the same)."""
    expires_at = datetime.now(UTC) + lifetime
    id_exp = datetime.now(UTC) + (lifetime if id_lifetime is None else id_lifetime)
    id_token = _jwt(
        {"sub": "alice", "exp": int(id_exp.timestamp()), "iat": int(id_exp.timestamp()) - 3600}
    )
    return Token(
        access_token=ACCESS,
        expires_at=expires_at,
        issued_at=expires_at - timedelta(hours=1),
        refresh_token="fast-path-refresh-token",
        scope=["openid", "email"],
        id_token=id_token,
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["auth", "token"], (None, "raw", False)),
        (["auth", "token", "corp"], ("corp", "raw", False)),
        (["auth", "token", "corp", "--format", "kubectl"], ("corp", "kubectl", False)),
        (["auth", "token", "--format", "kubectl", "--access-token"], (None, "kubectl", True)),
        (["auth", "token", "--access-token"], None),  # only with kubectl: the full CLI says so
        (["auth", "token", "--format=env", "corp"], ("corp", "env", False)),
        (["auth", "token", "--header"], (None, "header", False)),
        (["auth", "token", "--json"], (None, "json", False)),
        (["auth", "token", "--json", "--format", "json"], (None, "json", False)),
        (["auth", "token", "--header", "--json"], None),  # conflict: the full CLI reports it
        (["auth", "token", "--format", "xml"], None),
        (["auth", "token", "--format"], None),
        (["auth", "token", "--refresh"], None),
        (["auth", "token", "--decode"], None),
        (["auth", "token", "-v"], None),
        (["auth", "token", "--help"], None),
        (["auth", "token", "a", "b"], None),
        (["-v", "auth", "token"], None),
        (["auth", "status"], None),
        ([], None),
    ],
)
def test_parse_token_args(argv: list[str], expected: tuple[str | None, str, bool] | None) -> None:
    assert parse_token_args(argv) == expected


def test_fresh_token_is_printed_by_the_fast_path(stored: FileTokenStorage) -> None:
    written: list[str] = []
    assert run_fast_path(["auth", "token", "corp"], written.append) == 0
    assert written == [ACCESS + "\n"]


@pytest.mark.parametrize("lifetime", [timedelta(seconds=30), timedelta(seconds=-5)])
def test_stale_token_is_left_to_the_full_command(
    stored: FileTokenStorage, lifetime: timedelta
) -> None:
    stored.save("corp", _token(lifetime))  # inside the refresh skew, or expired
    written: list[str] = []
    assert run_fast_path(["auth", "token"], written.append) is None
    assert written == []


def test_a_fresh_30s_token_is_printed_by_the_fast_path(stored: FileTokenStorage) -> None:
    """Measured defect: a 30 s access token (skew 60 s) made every `auth token` a refresh."""
    expires_at = datetime.now(UTC) + timedelta(seconds=29)
    short = Token(
        access_token=ACCESS,
        expires_at=expires_at,
        issued_at=expires_at - timedelta(seconds=30),
        refresh_token="fast-path-refresh-token",
    )
    stored.save("corp", short)
    written: list[str] = []
    assert run_fast_path(["auth", "token"], written.append) == 0
    assert written == [ACCESS + "\n"]


def test_the_fast_path_uses_the_configured_refresh_skew(
    stored: FileTokenStorage, tmp_path: Path
) -> None:
    config = tmp_path / "kstlib.conf.yml"
    data = yaml.safe_load(config.read_text())
    data["auth"]["providers"]["corp"]["refresh_skew"] = 600
    config.write_text(yaml.safe_dump(data))
    stored.save("corp", _token(timedelta(seconds=300)))  # a 1 h token, 5 min left
    assert run_fast_path(["auth", "token"], print) is None  # stale with a 10 min skew
    data["auth"]["providers"]["corp"]["refresh_skew"] = "soon"  # invalid: the full CLI says so
    config.write_text(yaml.safe_dump(data))
    stored.save("corp", _token(timedelta(hours=1)))
    assert run_fast_path(["auth", "token"], print) is None


def test_missing_token_or_unknown_provider_is_left_to_the_full_command(
    stored: FileTokenStorage,
) -> None:
    stored.delete("corp")
    assert run_fast_path(["auth", "token"], print) is None
    assert run_fast_path(["auth", "token", "nope"], print) is None


@pytest.mark.parametrize("output_format", TOKEN_FORMATS)
def test_fast_and_full_paths_print_the_same(stored: FileTokenStorage, output_format: str) -> None:
    written: list[str] = []
    assert run_fast_path(["auth", "token", "--format", output_format], written.append) == 0
    try:
        full = CliRunner().invoke(app, ["auth", "token", "--format", output_format])
    finally:
        reset_logging()
    assert full.exit_code == 0, full.output
    fast = "".join(written)
    if output_format in ("json", "kubectl"):  # expires_in may tick between the two runs
        fast_doc, full_doc = json.loads(fast), json.loads(full.stdout)
        fast_doc.pop("expires_in", None)
        full_doc.pop("expires_in", None)
        assert fast_doc == full_doc
    else:
        assert fast == full.stdout


def _run_entry_point(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``kstlib.cli.main`` in a fresh interpreter; return it and the heavy modules loaded."""
    script = (
        "import atexit, sys\n"
        f"heavy = {HEAVY!r}\n"
        "atexit.register(lambda: sys.stderr.write('MODULES=' + ','.join(sorted("
        "{m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy})) + '\\n'))\n"
        "from kstlib.cli import main\n"
        f"main({list(args)!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("MODULES="))
    return proc, [m for m in line.removeprefix("MODULES=").split(",") if m]


@pytest.mark.parametrize(
    "args",
    [["--format", "raw"], ["--format", "kubectl"], ["--format", "kubectl", "--access-token"]],
)
def test_fast_path_imports_no_heavy_module(stored: FileTokenStorage, args: list[str]) -> None:
    proc, heavy = _run_entry_point("auth", "token", "corp", *args)
    assert proc.returncode == 0, proc.stderr
    token = stored.load("corp")
    assert token is not None
    assert (token.id_token if args == ["--format", "kubectl"] else ACCESS) in proc.stdout
    assert heavy == []


def test_full_path_is_taken_otherwise(stored: FileTokenStorage) -> None:
    """Sanity check of the probe: --decode needs the full command line (Typer, Rich)."""
    proc, heavy = _run_entry_point("auth", "token", "corp", "--decode")
    assert proc.returncode == 0, proc.stderr
    assert {"typer", "rich"} <= set(heavy)


def test_kubectl_exec_credential_from_the_console_script(stored: FileTokenStorage) -> None:
    kstlib = str(Path(sys.executable).with_name("kstlib"))
    proc = subprocess.run(
        [kstlib, "auth", "token", "--format", "kubectl"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    credential = json.loads(proc.stdout)
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
    assert credential["kind"] == "ExecCredential"
    assert credential["status"]["token"] == stored.load("corp").id_token  # type: ignore[union-attr]
    expires = datetime.strptime(credential["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(expires.replace(tzinfo=UTC) - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(
        minutes=1
    )
