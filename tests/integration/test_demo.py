"""The demo: ``./scripts/demo`` itself, run once (its own IdP, every step, no secret shown,
nothing left running). ``./scripts/check-dist`` runs the same journey with the installed wheel.

One run covers both what the script does (starts and stops its IdP, exits 0) and what the
journey shows: the demo writes each step's exit status and the secrets it saw to the file
named by ``tests.demo.REPORT_ENV``, and the test looks for those secrets in the output.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.demo import REPORT_ENV

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["providers", "preflight", "login", "status", "whoami", "refresh", "check", "logout",
         "status"]  # fmt: skip


@pytest.mark.slow
def test_scripts_demo_shows_every_step_no_secret_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    report_file = tmp_path / "demo-report.json"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "demo")],
        cwd=ROOT,
        # the test command ran ./scripts/setup already
        env={**os.environ, "KSTLIB_SKIP_SETUP": "1", REPORT_ENV: str(report_file)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "Demo finished in" in text
    assert "nothing is left running" in text
    report = json.loads(report_file.read_text(encoding="utf-8"))
    assert [title for title, _ in report["steps"]] == STEPS
    assert [code for _, code in report["steps"]] == [0] * 8 + [1]  # logged out at the end
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
    assert len(report["observed_secrets"]) >= 6
    for secret in report["observed_secrets"]:
        assert secret not in text
        assert secret not in proc.stderr
    issuer = re.search(r"runs at http://127\.0\.0\.1:(\d+)", text)
    assert issuer is not None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", int(issuer[1])), 2):
        pass  # the demo's IdP is gone
