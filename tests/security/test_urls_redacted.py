"""Secrets in endpoint query strings never reach a repr, a table, a preflight report or an error.

Some gateways put API keys in URLs (``token_url: https://gw/token?api_key=...``). Before this
fix the value appeared in the config repr, ``kstlib auth providers -v``, ``preflight`` output
and discovery error messages. The one redaction path (``kstlib._redaction.redact_url``) now
applies to every URL kstlib shows.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from kstlib.auth import OAuth2Provider
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import AuthError, DiscoveryError
from kstlib.auth.models import PreflightResult, PreflightStatus
from kstlib.auth.token import MemoryTokenStorage
from kstlib.cli.app import app, reset_logging
from tests.jwks_server import JWKSServer, Route

API_KEY = "gw-api-key-5f3a9c1d"


def gateway_config(base: str) -> AuthProviderConfig:
    return AuthProviderConfig(
        client_id="gw-client",
        authorize_url=f"{base}/authorize?api_key={API_KEY}",
        token_url=f"{base}/token?api_key={API_KEY}&tenant=t1",
        revoke_url=f"{base}/revoke?x_token={API_KEY}",
        scopes=["read"],
    )


def test_config_repr_and_safe_dict_hide_query_secrets() -> None:
    config = gateway_config("https://gw.example")
    shown = repr(config) + str(config.to_safe_dict())
    assert API_KEY not in shown
    assert "tenant=t1" in shown  # the rest of the URL stays readable
    assert config.token_url is not None and API_KEY in config.token_url  # the value is kept


def test_error_messages_hide_query_secrets() -> None:
    error = DiscoveryError(f"cannot fetch the JWKS at https://idp.example/jwks?api_key={API_KEY}")
    assert API_KEY not in str(error) and API_KEY not in repr(error)
    assert "https://idp.example/jwks?api_key=" in str(error)
    plain = AuthError("the state in the callback does not match; start again")
    assert str(plain) == "the state in the callback does not match; start again"


def test_preflight_results_hide_query_secrets() -> None:
    result = PreflightResult(
        "token_endpoint",
        PreflightStatus.SUCCESS,
        f"https://gw.example/token?api_key={API_KEY} reachable",
        details={"url": f"https://gw.example/token?api_key={API_KEY}"},
    )
    assert API_KEY not in str(result.to_dict())


def test_preflight_against_a_real_gateway_hides_query_secrets(server: JWKSServer) -> None:
    server.set_route("/authorize", Route(status=200, body=b"<html></html>"))
    server.set_route("/token", Route(status=400, body=b'{"error": "invalid_request"}'))
    config = gateway_config(server.base_url)
    with OAuth2Provider("gw", config, MemoryTokenStorage()) as provider:
        report = provider.preflight()
    assert server.count("/token") == 2  # the requests did go out (reach, then client_auth)
    assert API_KEY not in str(report.to_dict())


def test_discovery_error_from_a_real_server_hides_query_secrets(
    server: JWKSServer, client: httpx.Client
) -> None:
    from kstlib.auth._discovery import MetadataCache

    server.set_route("/jwks", Route(status=503))
    with pytest.raises(DiscoveryError) as err:
        MetadataCache(retry=_no_retry()).jwks(client, server.url(f"/jwks?api_key={API_KEY}"))
    assert API_KEY not in str(err.value)


def _no_retry():  # type: ignore[no-untyped-def]
    from kstlib.auth._http import RetryPolicy

    return RetryPolicy(max_retries=0)


def test_cli_providers_verbose_hides_query_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kstlib.conf.yml"
    provider = {
        "type": "oauth2",
        "client_id": "gw-client",
        "authorize_url": f"https://gw.example/authorize?api_key={API_KEY}",
        "token_url": f"https://gw.example/token?api_key={API_KEY}",
    }
    path.write_text(yaml.safe_dump({"auth": {"providers": {"gw": provider}}}))
    monkeypatch.setenv("KSTLIB_CONFIG", str(path))
    monkeypatch.setenv("COLUMNS", "250")
    try:
        result = CliRunner().invoke(app, ["auth", "providers", "-v"])
    finally:
        reset_logging()
    assert result.exit_code == 0, result.output
    assert "gw.example/token" in result.output
    assert API_KEY not in result.output
    assert os.environ["KSTLIB_CONFIG"] == str(path)
