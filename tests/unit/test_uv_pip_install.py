"""``scripts/uv-pip-install`` gives uv this machine's pip configuration, or refuses.

``./scripts/setup`` and ``./scripts/check-dist`` install with uv when they can: this script
reads pip's own merged view of its configuration (``pip config list``, real pip, here from
a configuration file and ``PIP_*`` variables made for the test) and turns each setting into
a uv option or variable. A setting it cannot pass makes it exit 3 before anything runs, and
the callers then install with pip.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "uv-pip-install"


def _load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("uv_pip_install", str(SCRIPT))
    spec = importlib.util.spec_from_loader("uv_pip_install", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


uv_pip_install = _load()


@pytest.fixture
def pip_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A pip configuration file of the test's own, read after the machine's (so it wins)."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    config = tmp_path / "pip.conf"
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    return config


def test_each_setting_of_real_pip_reaches_uv_with_pips_precedence(
    pip_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip_config.write_text(
        "[global]\n"
        "index-url = https://mirror.example/simple\n"
        "extra-index-url = file:///srv/a/simple\n    file:///srv/b/simple\n"
        "find-links = /srv/wheels-global\n"
        "constraint = /etc/constraints.txt\n"
        "cert = /etc/ca.pem\n"
        "disable-pip-version-check = 1\n"
        "[install]\n"
        "find-links = /srv/wheels-install\n"
        "[freeze]\n"
        "exclude = pip\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "180")
    monkeypatch.setenv("PIP_CERT", "/etc/ca-from-env.pem")
    settings = uv_pip_install.pip_settings()
    assert settings["find-links"] == "/srv/wheels-install"  # [install] over [global]
    assert settings["cert"] == "/etc/ca-from-env.pem"  # PIP_* over the files
    assert "exclude" not in settings  # another pip command's section

    options, environment = uv_pip_install.uv_command(settings)
    pairs = list(zip(options[::2], options[1::2], strict=True))
    assert ("--index-url", "https://mirror.example/simple") in pairs
    assert ("--extra-index-url", "file:///srv/a/simple") in pairs
    assert ("--extra-index-url", "file:///srv/b/simple") in pairs
    assert ("--find-links", "/srv/wheels-install") in pairs
    assert ("--find-links", "/srv/wheels-global") not in pairs
    assert ("--constraint", "/etc/constraints.txt") in pairs
    # pip picks the best version across all indexes; uv must be told to do the same
    assert ("--index-strategy", "unsafe-best-match") in pairs
    assert environment["SSL_CERT_FILE"] == "/etc/ca-from-env.pem"
    assert environment["UV_HTTP_TIMEOUT"] == "180"


def test_no_configuration_gives_uv_its_defaults(
    pip_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # pip then reads no file at all
    assert uv_pip_install.uv_command(uv_pip_install.pip_settings()) == ([], {})


@pytest.mark.parametrize("setting", ["only-binary = :all:", "require-hashes = 1", "pre = 1"])
def test_a_setting_uv_cannot_take_exits_3_before_running_anything(
    pip_config: Path, setting: str, tmp_path: Path
) -> None:
    pip_config.write_text(f"[global]\n{setting}\n", encoding="utf-8")
    marker = tmp_path / "ran"
    not_uv = tmp_path / "not-uv"  # would leave a mark if it were run
    not_uv.write_text(f"#!/bin/sh\ntouch {marker}\n", encoding="utf-8")
    not_uv.chmod(0o755)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(not_uv), sys.executable, "nothing"],
        capture_output=True,
        text=True,
        check=False,
    )
    key = setting.split(" = ")[0]
    assert proc.returncode == 3, proc.stderr
    assert f"pip setting {key!r} has no uv equivalent here; install with pip" in proc.stderr
    assert not marker.exists()


def _probe_wheel(directory: Path) -> None:
    """A wheel of a project that exists nowhere else: ``kstlib-probe-pkg`` 0.1.0, no code."""
    info = "kstlib_probe_pkg-0.1.0.dist-info"
    files = {
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: kstlib-probe-pkg\nVersion: 0.1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(directory / "kstlib_probe_pkg-0.1.0-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)


def test_the_settings_reach_a_real_uv(pip_config: Path, tmp_path: Path) -> None:
    """uv itself (the one ./scripts/setup installed) is handed the options: a dry run resolves a
    project that exists only in the configured find-links directory (with no index: offline)."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():  # setup could not install it (it then used pip): install it here
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", tmp_path / "uv", "uv"],
            check=True,
        )
        uv = tmp_path / "uv" / "bin" / "uv"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _probe_wheel(wheels)
    pip_config.write_text(f"[global]\nno-index = true\nfind-links = {wheels}\n", encoding="utf-8")
    target = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", target], check=True)
    command = [sys.executable, str(SCRIPT), str(uv), str(target / "bin" / "python")]
    found = subprocess.run(
        [*command, "--dry-run", "kstlib-probe-pkg"], capture_output=True, text=True, check=False
    )
    assert found.returncode == 0, found.stderr
    assert "kstlib-probe-pkg==0.1.0" in found.stdout + found.stderr
