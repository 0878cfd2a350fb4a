"""Preflight checks the client cheaply against the real IdP (#16 item 7): an unknown
client_id and a wrong client secret fail; after a failure the dependent steps are skipped;
a network error is the discovery's failure, not the configuration's."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from kstlib.auth import OAuth2Provider
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.models import PreflightReport, PreflightStatus
from kstlib.auth.token import MemoryTokenStorage
from tests.flows import make_oidc
from tests.idp_support import CONFIDENTIAL, CONFIDENTIAL_POST, PUBLIC, IdP
from tests.integration.test_cli import CLI, KSTLIB, provider_settings
from tests.jwks_server import JWKSServer, Route


def _steps(report: PreflightReport) -> dict[str, PreflightStatus]:
    return {r.step: r.status for r in report.results}


def _messages(report: PreflightReport) -> dict[str, str]:
    return {r.step: r.message for r in report.results}


@pytest.mark.parametrize("client", [CONFIDENTIAL, CONFIDENTIAL_POST, PUBLIC])
def test_a_good_client_is_ready(idp: IdP, client: object) -> None:
    with make_oidc(idp, client) as provider:  # type: ignore[arg-type]
        report = provider.preflight()
    steps = _steps(report)
    assert report.success, [r.to_dict() for r in report.results]
    assert steps["client_id"] is PreflightStatus.SUCCESS
    assert steps["client_auth"] is PreflightStatus.SUCCESS
    assert "invalid_grant, as expected" in _messages(report)["client_auth"]


def test_an_unknown_client_id_fails(idp: IdP) -> None:
    with make_oidc(idp, PUBLIC, client_id="no-such-client") as provider:
        report = provider.preflight()
    assert not report.success
    steps, messages = _steps(report), _messages(report)
    assert steps["config"] is PreflightStatus.SUCCESS
    assert steps["client_id"] is PreflightStatus.FAILURE
    assert "refused client 'no-such-client'" in messages["client_id"]
    assert "invalid_client" in messages["client_id"]


def test_a_wrong_client_secret_fails(idp: IdP) -> None:
    with make_oidc(idp, CONFIDENTIAL, client_secret="not-the-secret") as provider:
        report = provider.preflight()
    assert not report.success
    steps, messages = _steps(report), _messages(report)
    assert steps["client_id"] is PreflightStatus.SUCCESS  # the id is right
    assert steps["client_auth"] is PreflightStatus.FAILURE
    assert "invalid_client" in messages["client_auth"]
    assert "not-the-secret" not in json.dumps(report.to_dict())


def test_an_unreachable_issuer_fails_discovery_and_skips_the_rest(idp: IdP) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with make_oidc(idp, CONFIDENTIAL, issuer=dead) as provider:
        report = provider.preflight()
    steps, messages = _steps(report), _messages(report)
    assert steps["config"] is PreflightStatus.SUCCESS  # a network error is not a config error
    assert steps["discovery"] is PreflightStatus.FAILURE
    dependent = [s for s in steps if s not in ("config", "discovery")]
    assert dependent and all(steps[s] is PreflightStatus.SKIPPED for s in dependent)
    assert all(messages[s] == "skipped: discovery failed" for s in dependent)


def test_the_cli_verdict_counts_skipped_steps(
    tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = CLI(tmp_path, idp, monkeypatch)
    cli.write({"conf": provider_settings(idp, CONFIDENTIAL, client_secret="wrong")})
    proc = subprocess.run(
        [*KSTLIB, "auth", "preflight", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    by_step = {r["step"]: r["status"] for r in report["results"]}
    assert by_step["client_auth"] == "failure" and by_step["client_id"] == "success"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    cli.write({"conf": provider_settings(idp, CONFIDENTIAL, issuer=dead)})
    proc = subprocess.run(
        [*KSTLIB, "auth", "preflight"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 1
    assert "discovery failed, 6 dependent step(s) skipped" in " ".join(proc.stdout.split())


def test_unauthorized_client_means_authenticated_but_not_allowed_the_grant(
    server: JWKSServer,
) -> None:
    """RFC 6749 5.2: unauthorized_client comes from an authenticated client (a local server:
    the test IdP allows the code grant to every login client)."""
    server.set_route("/authorize", Route(status=200, body=b"<html>login</html>"))
    server.set_route("/token", Route(status=400, body=b'{"error": "unauthorized_client"}'))
    config = AuthProviderConfig(
        client_id="svc",
        authorize_url=f"{server.base_url}/authorize",
        token_url=f"{server.base_url}/token",
        scopes=["read"],
    )
    with OAuth2Provider("svc", config, MemoryTokenStorage()) as provider:
        report = provider.preflight()
    result = next(r for r in report.results if r.step == "client_auth")
    assert result.status is PreflightStatus.WARNING
    assert "accepted" in result.message and "unauthorized_client" in result.message
    client_id = next(r for r in report.results if r.step == "client_id")
    assert client_id.status is PreflightStatus.SUCCESS
