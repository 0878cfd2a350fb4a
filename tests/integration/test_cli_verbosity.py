"""What ``-v``, ``-vv`` and ``-vvv`` add on stderr (the real ``kstlib`` script, the real IdP).

* nothing: no log line at all;
* ``-v``: which configuration files were loaded, which endpoints were contacted (method,
  URL, status), and why the token was or was not renewed;
* ``-vv``: the same, plus debug lines naming their logger (the token file written...), and
  the traceback of an error;
* ``-vvv``: the full HTTP trace, redacted (no token, no client secret).

Every line is ``<level>: ...`` (the one message style).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kstlib.auth.models import Token
from kstlib.auth.token import FileTokenStorage
from tests.flows import login, make_oidc
from tests.idp_support import CONFIDENTIAL, REDIRECT_URI, SCOPES, IdP

KSTLIB = str(Path(sys.executable).with_name("kstlib"))
LINE_RE = re.compile(r"^(error|warning|info|debug|trace): ")


class Setup:
    def __init__(self, tmp_path: Path, idp: IdP) -> None:
        self.tokens = tmp_path / "tokens"
        self.config = tmp_path / "kstlib.conf.yml"
        provider = {
            "type": "oidc",
            "issuer": idp.issuer,
            "client_id": CONFIDENTIAL.client_id,
            "client_secret": CONFIDENTIAL.client_secret,
            "redirect_uri": REDIRECT_URI,
            "scopes": list(SCOPES),
        }
        auth = {
            "storage": {"file": {"directory": str(self.tokens)}},
            "providers": {"corp": provider},
        }
        self.config.write_text(yaml.safe_dump({"auth": auth}))
        self.storage = FileTokenStorage(self.tokens)
        with make_oidc(idp, CONFIDENTIAL, name="corp", storage=self.storage) as provider_:
            self.token = login(provider_)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KSTLIB, *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "KSTLIB_CONFIG": str(self.config)},
            check=False,
        )
        if "-vvv" not in args:  # (a trace's JSON bodies span several lines)
            for line in result.stderr.splitlines():
                assert LINE_RE.match(line), line
        return result

    def secrets(self) -> list[str]:
        stored = self.storage.load("corp")
        assert stored is not None and CONFIDENTIAL.client_secret is not None
        found = [CONFIDENTIAL.client_secret, self.token.access_token, stored.access_token]
        for token in (self.token, stored):
            found += [t for t in (token.refresh_token, token.id_token) if t]
        return found


@pytest.fixture
def setup(tmp_path: Path, idp: IdP) -> Setup:
    return Setup(tmp_path, idp)


def levels(stderr: str) -> set[str]:
    return {m.group(1) for line in stderr.splitlines() if (m := LINE_RE.match(line))}


def test_without_v_nothing_is_logged(setup: Setup) -> None:
    result = setup.run("auth", "token", "corp", "--refresh")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_v_says_which_files_were_loaded_and_why_the_token_was_not_refreshed(
    setup: Setup,
) -> None:
    result = setup.run("-v", "auth", "token", "corp")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == setup.token.access_token
    assert f"info: Loaded configuration file {setup.config}\n" in result.stderr
    assert "(packaged defaults)" not in result.stderr  # -vv: not the user's own file
    assert re.search(
        r"^info: Token of 'corp' is fresh \(expires in \d+ (s|min); refresh due in .+\): "
        r"not refreshing$",
        result.stderr,
        re.MULTILINE,
    ), result.stderr
    assert levels(result.stderr) == {"info"}
    assert " -> HTTP " not in result.stderr  # a fresh token: no call


def test_v_says_which_endpoints_were_contacted_and_why_the_token_was_renewed(
    setup: Setup,
) -> None:
    result = setup.run("-v", "auth", "token", "corp", "--refresh")
    assert result.returncode == 0, result.stderr
    stderr = result.stderr
    assert "info: Token of 'corp': renewal asked for (expires in" in stderr
    assert re.search(r"^info: GET \S+/\.well-known/openid-configuration -> HTTP 200 ", stderr, re.M)
    assert re.search(r"^info: POST \S+/token -> HTTP 200 \(\d+ bytes, \d+ ms\)$", stderr, re.M)
    assert re.search(r"^info: Renewed the token of 'corp' \(new token expires in ", stderr, re.M)
    assert levels(stderr) == {"info"}
    for secret in setup.secrets():
        assert secret not in stderr


def test_v_says_why_an_expired_token_cannot_be_renewed(setup: Setup) -> None:
    setup.storage.save(
        "corp",
        Token(
            access_token="expired-access-token",
            expires_at=datetime.now(UTC) - timedelta(hours=1, minutes=40),
        ),
    )
    result = setup.run("-v", "auth", "token", "corp")
    assert result.returncode == 1
    assert re.search(
        r"^info: Token of 'corp' expired 1 h (39|40) min ago and cannot be renewed: "
        r"no refresh token$",
        result.stderr,
        re.MULTILINE,
    ), result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: The token of 'corp' has expired")


def test_vv_adds_debug_lines_naming_their_logger(setup: Setup) -> None:
    result = setup.run("-vv", "auth", "token", "corp", "--refresh")
    assert result.returncode == 0, result.stderr
    assert {"info", "debug"} <= levels(result.stderr)
    assert "trace" not in levels(result.stderr)
    assert re.search(
        r"^debug: kstlib\.auth\.token: Saved token of provider 'corp'", result.stderr, re.M
    )
    assert re.search(
        r"^debug: kstlib\.config: Loaded configuration file \S+ \(packaged defaults\)$",
        result.stderr,
        re.M,
    )
    assert re.search(r"^info: kstlib\.auth\._http: POST \S+/token -> HTTP 200", result.stderr, re.M)
    for secret in setup.secrets():
        assert secret not in result.stderr


def test_vvv_is_the_full_redacted_trace(setup: Setup) -> None:
    result = setup.run("-vvv", "auth", "token", "corp", "--refresh")
    assert result.returncode == 0, result.stderr
    stderr = result.stderr
    assert re.search(r"^trace: kstlib\.auth\._http: --> POST \S+/token headers=", stderr, re.M)
    assert re.search(r"^trace: kstlib\.auth\._http: <-- 200 POST \S+/token", stderr, re.M)
    assert "[REDACTED]" in stderr
    for secret in setup.secrets():
        assert secret not in stderr
