"""``./scripts/docs`` works on a fresh clone: it runs ``./scripts/setup`` before Sphinx.

A fresh clone has no ``.venv`` (hence no ``sphinx-build``): the script must set it up first,
as ``./scripts/demo`` and ``./scripts/test`` do. ``KSTLIB_SKIP_SETUP=1`` (set by the test
suite's docs build) is the only way to skip that step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "docs"


def _commands() -> list[str]:
    lines = SCRIPT.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_setup_runs_before_sphinx_unless_skipped() -> None:
    commands = _commands()
    setup = [i for i, c in enumerate(commands) if "./scripts/setup" in c]
    build = [i for i, c in enumerate(commands) if "sphinx-build" in c]
    assert len(setup) == 1 and len(build) == 1, commands
    assert setup[0] < build[0], "setup must come before the build"
    assert commands[setup[0]] == '[ "${KSTLIB_SKIP_SETUP:-0}" = 1 ] || ./scripts/setup'
    assert "-W" in commands[build[0]].split(), "warnings must stay errors"


def _run_copy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The script, copied into an empty tree (a clone with neither setup nor .venv)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(SCRIPT, tmp_path / "scripts" / "docs")
    return subprocess.run(
        [str(tmp_path / "scripts" / "docs")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
    )


def test_without_the_switch_setup_is_the_first_thing_it_runs(tmp_path: Path) -> None:
    result = _run_copy(tmp_path)
    assert result.returncode != 0
    assert "./scripts/setup" in result.stderr, result.stderr  # tried setup, not sphinx-build
    assert "sphinx-build" not in result.stderr


def test_the_switch_goes_straight_to_sphinx(tmp_path: Path) -> None:
    result = _run_copy(tmp_path, KSTLIB_SKIP_SETUP="1")
    assert result.returncode != 0
    assert ".venv/bin/sphinx-build" in result.stderr, result.stderr
    assert "./scripts/setup" not in result.stderr
