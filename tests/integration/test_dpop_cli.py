"""``dpop: true`` from kstlib.conf.yml, through the real CLI, against the real IdP.

The whole journey at -vvv (login, status, whoami, providers, check, token --refresh,
logout): the stored token is DPoP-bound with its key in the 0600 token file, a refresh keeps
the key, a new login replaces it, and no output ever shows the private key or a token
(except the access token `token` prints on stdout, by design).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kstlib.auth.models import TokenType
from tests.idp_support import DPOP, IdP
from tests.integration.test_cli import CLI, provider_settings


@pytest.fixture
def cli(tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch) -> Iterator[CLI]:
    made = CLI(tmp_path, idp, monkeypatch)
    made.write({"bank": provider_settings(idp, DPOP, dpop=True, dpop_alg="ES256")}, default="bank")
    yield made


def test_dpop_from_the_config_file_through_the_cli(cli: CLI, idp: IdP) -> None:
    outputs: list[str] = []
    login, browser = cli.login("-q")
    assert login.exit_code == 0, login.output
    outputs.append(login.output)
    first = cli.stored("bank")
    assert first is not None and first.token_type == TokenType.DPOP
    assert first.dpop_key is not None
    private_d = first.dpop_key.to_dict()["jwk"]["d"]
    path = cli.tokens / "bank.json"
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["token"]["dpop_key"]["jwk"]["d"] == private_d
    assert idp.introspect(first.access_token)["cnf"]["jkt"] == first.dpop_key.thumbprint

    for args in (("status",), ("status", "--json"), ("whoami",), ("providers", "-v"), ("check",)):
        result = cli.invoke("-vvv", "auth", *args)
        assert result.exit_code == 0, (args, result.output)
        outputs.append(result.output)
    whoami = cli.invoke("auth", "whoami", "--json")  # UserInfo with the DPoP-bound token
    assert json.loads(whoami.stdout)["sub"] == "alice"

    refreshed = cli.invoke("-vvv", "auth", "token", "--refresh", "--format", "kubectl")
    assert refreshed.exit_code == 0, refreshed.output
    outputs.append(refreshed.stderr)  # stdout is the token, by design
    second = cli.stored("bank")
    assert second is not None and second.access_token != first.access_token
    assert second.dpop_key == first.dpop_key  # a refresh keeps the key

    again = cli.invoke("-vvv", "auth", "login", "--force")  # a new login: a new key
    browser.join()
    assert again.exit_code == 0, again.output
    outputs.append(again.output)
    third = cli.stored("bank")
    assert third is not None and third.dpop_key is not None
    assert third.dpop_key != first.dpop_key

    logout = cli.invoke("-vvv", "auth", "logout")
    assert logout.exit_code == 0, logout.output
    outputs.append(logout.output)
    assert cli.stored("bank") is None

    everything = "\n".join(outputs)
    assert "trace: " in everything
    secrets = {
        private_d,
        third.dpop_key.to_dict()["jwk"]["d"],
        first.access_token,
        second.access_token,
        third.access_token,
        first.refresh_token or "",
        DPOP.client_secret or "",
    }
    secrets.discard("")
    for secret in secrets:
        assert secret not in everything, f"a secret leaked ({secret[:6]}...)"
