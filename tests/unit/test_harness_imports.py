"""The IdP harness (tests/idp_support.py and what it imports) never imports kstlib.

The bench drives it from the venv of kstlib 3.8.2 (bench/peer_old.py: the old package has
none of this project's modules), and ./scripts/check-dist from the built wheel's venv: a
harness that imported this project's internals failed there (the bench's login section did,
once, with ModuleNotFoundError: kstlib.auth._http).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_idp_harness_imports_without_kstlib() -> None:
    code = (
        "import sys\n"
        "sys.modules['kstlib'] = None  # any import of kstlib now fails\n"
        "import tests.idp_support, tests.loopback_http, tests.device_flow\n"
        "print('imported')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported"
