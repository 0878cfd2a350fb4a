"""The command line with the grants for services (issue 13): ``token`` for a
client-credentials provider with no prior login, ``login`` refused, ``introspect``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kstlib.cli.app import reset_logging
from tests import loopback_http
from tests.idp_support import CONFIDENTIAL, SERVICE, SERVICE_SCOPES, IdP
from tests.integration.test_cli import CLI, provider_settings


def service_settings(idp: IdP, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "type": "oidc",
        "flow": "client_credentials",
        "issuer": idp.issuer,
        "client_id": SERVICE.client_id,
        "client_secret": SERVICE.client_secret,
        "scopes": list(SERVICE_SCOPES),
    }
    settings.update(extra)
    return settings


@pytest.fixture
def cli(tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch) -> Iterator[CLI]:
    c = CLI(tmp_path, idp, monkeypatch)
    c.write(
        {"svc": service_settings(idp), "conf": provider_settings(idp, CONFIDENTIAL)}, default="svc"
    )
    yield c
    reset_logging()


def test_token_works_with_no_prior_login(cli: CLI, idp: IdP) -> None:
    idp.reset_stats()
    first = cli.run("auth", "token", "svc")  # the real entry point: fast path, then full CLI
    assert first.returncode == 0, first.stderr
    stored = cli.stored("svc")
    assert stored is not None and first.stdout.strip() == stored.access_token
    assert idp.stats()["token:client_credentials:200"] == 1
    again = cli.run("auth", "token")  # fresh and stored: the fast path prints it, no request
    assert again.returncode == 0 and again.stdout.strip() == stored.access_token
    as_json = cli.invoke("auth", "token", "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["scope"] == list(SERVICE_SCOPES)
    assert idp.stats()["token:client_credentials:200"] == 1


def test_login_is_refused_with_a_clear_error(cli: CLI) -> None:
    result = cli.invoke("auth", "login", "svc", "--no-browser")
    assert result.exit_code == 2
    assert "uses flow client_credentials" in result.stderr
    assert "kstlib auth token svc" in result.stderr
    assert cli.stored("svc") is None
    assert cli.invoke("auth", "token").exit_code == 0
    again = cli.invoke("auth", "login", "svc")  # a stored token changes nothing
    assert again.exit_code == 2 and "uses flow client_credentials" in again.stderr


def test_introspect_the_stored_token(cli: CLI, idp: IdP) -> None:
    assert cli.invoke("auth", "token").exit_code == 0
    result = cli.invoke("auth", "introspect", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["active"] is True and info["client_id"] == SERVICE.client_id
    table = cli.invoke("auth", "introspect", "svc")
    assert table.exit_code == 0 and "active" in table.stdout and "true" in table.stdout
    stored = cli.stored("svc")
    assert stored is not None and stored.access_token not in table.output
    assert cli.invoke("auth", "logout", "svc").exit_code == 0  # revokes it at the IdP
    assert idp.introspect(stored.access_token)["active"] is False


def test_introspect_an_inactive_token_exits_1(cli: CLI, idp: IdP) -> None:
    assert cli.invoke("auth", "token").exit_code == 0
    stored = cli.stored("svc")
    assert stored is not None
    httpx_revoke(idp, stored.access_token)
    result = cli.invoke("auth", "introspect", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"active": False}
    assert "not active" in result.stderr


def test_introspect_without_a_stored_token(cli: CLI) -> None:
    result = cli.invoke("auth", "introspect", "conf")
    assert result.exit_code == 1
    assert "Not logged in to 'conf'" in result.stderr


def httpx_revoke(idp: IdP, token: str) -> None:
    import httpx

    data = {"token": token}
    auth = SERVICE.token_auth(data)
    response = loopback_http.post(
        idp.revocation_endpoint, data=data, auth=auth or httpx.USE_CLIENT_DEFAULT
    )
    assert response.status_code == 200
