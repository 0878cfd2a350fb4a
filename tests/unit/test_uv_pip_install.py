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


def _real_uv(tmp_path: Path) -> Path:
    """The uv ./scripts/setup installed, else one installed under ``tmp_path`` (setup could not
    install it and used pip)."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", tmp_path / "uv", "uv"],
            check=True,
        )
        uv = tmp_path / "uv" / "bin" / "uv"
    return uv


def test_the_settings_reach_a_real_uv(pip_config: Path, tmp_path: Path) -> None:
    """uv itself (the one ./scripts/setup installed) is handed the options: a dry run resolves a
    project that exists only in the configured find-links directory (with no index: offline)."""
    uv = _real_uv(tmp_path)
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


def _build_env(*, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--build-env"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_build_env_gives_the_same_settings_as_uvs_variables(pip_config: Path) -> None:
    """For ``python -m build --installer uv`` (./scripts/check-dist), which runs uv itself."""
    pip_config.write_text(
        "[global]\n"
        "index-url = https://mirror.example/simple\n"
        "extra-index-url = file:///srv/a/simple\n    file:///srv/b/simple\n"
        "find-links = /srv/wheels-a\n    /srv/wheels-b\n"
        "constraint = /etc/constraints.txt\n"
        "trusted-host = mirror.example\n"
        "cert = /etc/ca.pem\n"
        "timeout = 60\n"
        "disable-pip-version-check = 1\n",
        encoding="utf-8",
    )
    proc = _build_env()
    assert proc.returncode == 0, proc.stderr
    assert dict(line.split("=", 1) for line in proc.stdout.splitlines()) == {
        "UV_INDEX_URL": "https://mirror.example/simple",
        "UV_EXTRA_INDEX_URL": "file:///srv/a/simple file:///srv/b/simple",
        "UV_FIND_LINKS": "/srv/wheels-a,/srv/wheels-b",
        "UV_CONSTRAINT": "/etc/constraints.txt",
        "UV_INSECURE_HOST": "mirror.example",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
        "SSL_CERT_FILE": "/etc/ca.pem",
        "UV_HTTP_TIMEOUT": "60",
    }


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("no-index = 1", "pip setting 'no-index' has no uv variable"),
        ("find-links = /srv/a,b", "pip setting 'find-links' has a value holding ','"),
        ("pre = 1", "pip setting 'pre' has no uv equivalent here"),
    ],
)
def test_build_env_exits_3_when_a_setting_has_no_variable(
    pip_config: Path, setting: str, why: str
) -> None:
    pip_config.write_text(f"[global]\n{setting}\n", encoding="utf-8")
    proc = _build_env()
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert f"{why}; build with pip instead" in proc.stderr


def test_the_build_variables_reach_a_real_uv(pip_config: Path, tmp_path: Path) -> None:
    """A real uv given only the printed variables resolves a project that exists only in the
    configured find-links directory; the configured index (an empty local one) keeps it
    offline."""
    uv = _real_uv(tmp_path)
    wheels, index = tmp_path / "wheels", tmp_path / "index"
    wheels.mkdir()
    index.mkdir()
    _probe_wheel(wheels)
    pip_config.write_text(
        f"[global]\nindex-url = {index.as_uri()}\nfind-links = {wheels}\n", encoding="utf-8"
    )
    printed = _build_env()
    assert printed.returncode == 0, printed.stderr
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "PIP_"))}
    environment.update(line.split("=", 1) for line in printed.stdout.splitlines())
    target = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", target], check=True)
    found = subprocess.run(
        [uv, "pip", "install", "--no-config", "--dry-run", "--python", target / "bin" / "python"]
        + ["kstlib-probe-pkg"],
        capture_output=True,
        text=True,
        check=False,
        env=environment,
    )
    assert found.returncode == 0, found.stderr
    assert "kstlib-probe-pkg==0.1.0" in found.stdout + found.stderr


@pytest.mark.parametrize("xdg", ["a-config", "z-config"])
def test_a_later_configuration_file_overrides_an_earlier_one(
    pip_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg: str
) -> None:
    """pip loads ~/.pip/pip.conf, then $XDG_CONFIG_HOME/pip/pip.conf: the same key in the same
    section is the later file's. ``pip config list`` prints files sorted by name, so with the
    XDG directory named before HOME (a-config) and after it (z-config) the winner is listed
    first in one case and last in the other."""
    monkeypatch.delenv("PIP_CONFIG_FILE")  # with it pip would skip the user's files
    home, config = tmp_path / "m-home", tmp_path / xdg
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    legacy, current = home / ".pip" / "pip.conf", config / "pip" / "pip.conf"
    for path, text in ((legacy, "cert = /legacy.pem\ntimeout = 5"), (current, "cert = /xdg.pem")):
        path.parent.mkdir(parents=True)
        path.write_text(f"[global]\n{text}\n", encoding="utf-8")
    settings = uv_pip_install.pip_settings()
    assert settings["cert"] == "/xdg.pem"
    assert settings["timeout"] == "5"  # only in the earlier file: kept
