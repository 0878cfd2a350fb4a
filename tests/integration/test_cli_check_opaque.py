"""``kstlib auth check --access-token`` on the test IdP's opaque access token (#16 item 8):
not INVALID, but "opaque" with a pointer to ``kstlib auth introspect`` and exit status 3."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kstlib.cli.check import EXIT_INVALID, EXIT_OPAQUE
from tests.idp_support import IdP
from tests.integration.test_cli import CLI, KSTLIB


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KSTLIB, *args], capture_output=True, text=True, timeout=60, check=False, input=stdin
    )


@pytest.fixture
def logged_in(tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch) -> CLI:
    cli = CLI(tmp_path, idp, monkeypatch)
    result, _ = cli.login()
    assert result.exit_code == 0, result.output
    return cli


def test_an_opaque_access_token_is_reported_as_opaque(logged_in: CLI) -> None:
    stored = logged_in.stored()
    assert stored is not None and stored.access_token.count(".") != 2  # opaque at this IdP
    proc = _run("auth", "check", "conf", "--access-token")
    assert proc.returncode == EXIT_OPAQUE == 3
    text = " ".join(proc.stdout.split())
    assert "opaque (not a JWT)" in text and "kstlib auth introspect conf" in text
    assert "INVALID" not in proc.stdout
    assert stored.access_token not in proc.stdout + proc.stderr
    as_json = _run("auth", "check", "conf", "--access-token", "--json")
    assert as_json.returncode == EXIT_OPAQUE
    document = json.loads(as_json.stdout)
    assert document["opaque"] is True and document["valid"] is None
    piped = _run("auth", "check", "--access-token", "--token", "-", stdin=stored.access_token)
    assert piped.returncode == EXIT_OPAQUE
    assert "kstlib auth introspect" in piped.stdout


def test_an_opaque_id_token_is_still_invalid(logged_in: CLI) -> None:
    """An ID token must be a JWT: an opaque one is invalid, not "opaque"."""
    proc = _run("auth", "check", "conf", "--token", "not-a-jwt")
    assert proc.returncode == EXIT_INVALID
