"""``kstlib auth status`` for scripts (exit 1 when not logged in, and why) and the user's name
(``preferred_username`` / ``email`` when the ``sub`` is an opaque GUID): the real console
script against the real IdP (#16 item 13)."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kstlib.auth.config import get_token_storage_for_provider
from kstlib.auth.models import Token
from tests import loopback_http
from tests.idp_support import IdP, browser_login
from tests.integration.test_cli import CLI, KSTLIB, finish, read_url

GUID = "6f1c2b9e-3d4a-4b8f-9e21-7c5d0a4b3e12"  # an opaque sub of the test IdP (name: carol)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KSTLIB, *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def cli(tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch) -> CLI:
    monkeypatch.setenv("COLUMNS", "250")
    return CLI(tmp_path, idp, monkeypatch)


def _save(name: str, *, expired_for: timedelta, refresh: bool) -> None:
    now = datetime.now(UTC)
    token = Token(
        access_token="status-test-access-token",
        expires_at=now - expired_for,
        issued_at=now - expired_for - timedelta(hours=1),
        refresh_token="status-test-refresh-token" if refresh else None,
    )
    get_token_storage_for_provider(name).save(name, token)


def test_status_of_a_provider_never_logged_in_exits_1(cli: CLI) -> None:
    proc = _run("auth", "status", "pub")
    assert proc.returncode == 1
    assert "pub: not logged in: no token is stored" in proc.stderr
    as_json = _run("auth", "status", "pub", "--json")
    assert as_json.returncode == 1
    [entry] = json.loads(as_json.stdout)
    assert entry["logged_in"] is False and entry["reason"] == "not logged in: no token is stored"


def test_status_says_since_when_and_why(cli: CLI) -> None:
    _save("conf", expired_for=timedelta(hours=1, minutes=40, seconds=20), refresh=False)
    proc = _run("auth", "status", "conf")
    assert proc.returncode == 1
    assert "conf: expired 1 h 40 min ago, no refresh token" in proc.stderr
    assert "expired 1 h 40 min ago, no refresh token" in proc.stdout  # the table says it too
    everything = _run("auth", "status")  # all providers: none is logged in
    assert everything.returncode == 1


def test_an_expired_but_renewable_token_is_still_logged_in(cli: CLI) -> None:
    _save("conf", expired_for=timedelta(minutes=5, seconds=10), refresh=True)
    proc = _run("auth", "status", "conf", "--json")
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)
    assert entry["authenticated"] is False and entry["logged_in"] is True
    assert entry["reason"] == "expired 5 min ago; refreshed on next use"


def test_status_exit_0_when_logged_in(cli: CLI) -> None:
    result, _ = cli.login()
    assert result.exit_code == 0, result.output
    proc = _run("auth", "status", "conf")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    mixed = _run("auth", "status")  # conf is logged in, pub is not: the listing is fine
    assert mixed.returncode == 0, mixed.stderr


def test_login_and_status_name_the_user_when_the_sub_is_a_guid(cli: CLI) -> None:
    proc = subprocess.Popen(
        [*KSTLIB, "auth", "login", "pub", "--no-browser", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    callback = browser_login(read_url(proc), username=GUID)
    assert loopback_http.get(callback, timeout=10).status_code == 200
    code, _, err = finish(proc)
    assert code == 0, err
    assert "Logged in to pub as carol;" in err
    assert GUID not in err
    status = _run("auth", "status", "pub", "--json")
    assert status.returncode == 0, status.stderr
    [entry] = json.loads(status.stdout)
    assert entry["subject"] == GUID and entry["user"] == "carol"
    table = _run("auth", "status", "pub")
    assert "carol" in table.stdout
