"""The demo of ``./scripts/demo``: its journey against the session IdP, and the real script."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.demo import run_demo
from tests.idp_support import IdP

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["providers", "preflight", "login", "status", "whoami", "refresh", "check", "logout",
         "status"]  # fmt: skip


def test_demo_journey_shows_every_step_and_no_secret(idp: IdP, tmp_path: Path) -> None:
    shown: list[str] = []
    report = run_demo(idp, tmp_path, echo=shown.append)
    text = "\n".join(shown)
    assert [step.title for step in report.steps] == STEPS
    assert [step.returncode for step in report.steps] == [0] * 8 + [1]  # logged out at the end
    for expected in (
        "$ kstlib auth providers",
        "✓ demo is ready",
        "Logged in to demo as alice",
        '"sub": "alice"',  # the protected API, through AuthSession
        "refresh token rotated: True",
        "VALID ID token",
        "Revoked the tokens of demo",
        "demo: not logged in: no token is stored",
        "active=False",
        "not logged in",
    ):
        assert expected in text
    # nothing shown holds a secret: two access tokens, their refresh and ID tokens, code, state
    assert len(report.observed_secrets) >= 6
    for secret in report.observed_secrets:
        assert secret not in text


@pytest.mark.slow
def test_scripts_demo_runs_and_leaves_nothing_running() -> None:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "demo")],
        cwd=ROOT,
        env={**os.environ, "KSTLIB_SKIP_SETUP": "1"},  # the test command ran it already
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Demo finished in" in proc.stdout
    assert "nothing is left running" in proc.stdout
    issuer = re.search(r"runs at http://127\.0\.0\.1:(\d+)", proc.stdout)
    assert issuer is not None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", int(issuer[1])), 2):
        pass  # the demo's IdP is gone
