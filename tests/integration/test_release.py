"""Release engineering: one version, the console script's --version, the name guard.

The built artifact itself is checked by ./scripts/check-dist (run by ./scripts/test): build,
twine check, sdist rebuild, the wheel in a fresh venv with the demo's journey, and the wheel
next to the unrelated PyPI project ``kstlib``.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import kstlib

ROOT = Path(__file__).resolve().parents[2]
KSTLIB = str(Path(sys.executable).parent / "kstlib")


def test_one_version_everywhere() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]  # dynamic: read from kstlib.__version__
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kstlib.__version__"}
    assert importlib.metadata.version("kstlib-auth") == kstlib.__version__
    result = subprocess.run(
        [KSTLIB, "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == f"kstlib-auth {kstlib.__version__}\n"


def test_kstlib_alone_prints_help_and_exits_0() -> None:
    result = subprocess.run([KSTLIB], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert "Usage: kstlib" in result.stdout and "auth" in result.stdout


def test_license_changelog_and_contributing_are_there() -> None:
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    assert "./scripts/test" in contributing and "docs/extending.md" in contributing


def test_importing_next_to_the_other_kstlib_fails_loudly(tmp_path: Path) -> None:
    """Both distributions install the package ``kstlib``; mixed files must never run."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "kstlib").symlink_to(Path(kstlib.__file__).parent, target_is_directory=True)
    (site / "kstlib-3.8.2.dist-info").mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "import kstlib.auth"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "The unrelated PyPI project 'kstlib' (3.8.2)" in result.stderr
    (site / "kstlib-3.8.2.dist-info").rmdir()
    ok = subprocess.run(
        [sys.executable, "-c", "import kstlib.auth"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert ok.returncode == 0, ok.stderr
