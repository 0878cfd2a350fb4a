"""The documentation builds with warnings as errors, and it covers the whole public surface.

``./scripts/docs`` (Sphinx + MyST + autodoc) runs once per session into a temporary
directory (a few seconds). Then: every public name of ``kstlib.auth`` has an entry in the
generated API reference, every ``kstlib auth`` command and option is described in
``docs/cli.md``, and every configuration key is in ``docs/configuration.md``. A new
command, option or key therefore needs its documentation.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import typer.main

import kstlib.auth
from kstlib.auth import config as auth_config
from kstlib.auth._config.values import _SELECTOR_KEYS
from kstlib.auth._names import ENDPOINT_ALIASES
from kstlib.auth.token.factory import _BUILT_IN as _BUILT_IN_STORAGES
from kstlib.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BUILD_TIMEOUT = 120  # seconds; a build takes about 5


@dataclasses.dataclass(frozen=True)
class Build:
    html: Path
    returncode: int
    output: str
    seconds: float


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    out = tmp_path_factory.mktemp("docs") / "html"
    started = time.monotonic()
    proc = subprocess.run(
        [str(ROOT / "scripts" / "docs"), "-E", "-q"],
        cwd=ROOT,
        # the test command ran ./scripts/setup already (KSTLIB_SKIP_SETUP: see scripts/docs)
        env={**os.environ, "KSTLIB_DOCS_OUT": str(out), "KSTLIB_SKIP_SETUP": "1"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    return Build(out, proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)


def test_docs_build_without_warnings(build: Build) -> None:
    assert build.returncode == 0, f"./scripts/docs failed:\n{build.output}"
    assert "WARNING" not in build.output and "ERROR" not in build.output, build.output
    for page in [*DOCS.glob("*.md"), *DOCS.glob("idps/*.md")]:
        built = build.html / page.relative_to(DOCS).with_suffix(".html")
        assert built.is_file(), f"{page.relative_to(DOCS)} was not built"


def test_api_reference_covers_every_public_name(build: Build) -> None:
    html = (build.html / "api.html").read_text(encoding="utf-8")
    missing = [name for name in kstlib.auth.__all__ if f'id="kstlib.auth.{name}"' not in html]
    assert not missing, f"not in docs/api.md: {missing}"


def test_api_reference_is_generated_from_docstrings(build: Build) -> None:
    """The reference shows the docstrings of the code (autodoc), not a hand-written copy."""
    html = (build.html / "api.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", html)
    for obj in (kstlib.auth.AuthSession.aget, kstlib.auth.TokenChecker, kstlib.auth.get_provider):
        first_line = (obj.__doc__ or "").strip().splitlines()[0]
        words = " ".join(first_line.split()[:5]).replace("``", "")
        assert words in text, f"docstring of {obj.__qualname__} not rendered: {words!r}"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def _mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def test_cli_page_describes_every_command_and_option() -> None:
    cli_md = (DOCS / "cli.md").read_text(encoding="utf-8")
    root: Any = typer.main.get_command(app)  # a click group (Typer vendors click)
    auth: Any = root.commands["auth"]
    undocumented: list[str] = []
    for param in auth.params:
        undocumented += [f"kstlib auth {o}" for o in param.opts if not _mentions(cli_md, o)]
    for name, command in auth.commands.items():
        heading = f"## kstlib auth {name}\n"
        if heading not in cli_md:
            undocumented.append(f"command {name}")
            continue
        section = _section(cli_md, heading)
        for param in command.params:
            if param.param_type_name == "option":
                options = [*param.opts, *param.secondary_opts]
                undocumented += [f"{name} {o}" for o in options if not _mentions(section, o)]
    assert not undocumented, f"not described in docs/cli.md: {undocumented}"


def _configuration_keys() -> list[str]:
    """Every key kstlib.conf.yml accepts (dotted for the sections, bare for providers)."""
    keys = [f"ssl.{f.name}" for f in dataclasses.fields(auth_config.SSLSettings)]
    nested = {
        "callback_server": auth_config.CallbackServerSettings,
        "trace": auth_config.TraceSettings,
        "status": auth_config.StatusSettings,
    }
    for field in dataclasses.fields(auth_config.AuthSettings):
        if field.name not in ("storage", *nested):
            keys.append(f"auth.{field.name}")
    for prefix, settings in nested.items():
        keys += [f"auth.{prefix}.{f.name}" for f in dataclasses.fields(settings)]
    for name, backend in _BUILT_IN_STORAGES.items():  # what each built-in backend declares
        keys += [f"auth.storage.{name}.{setting.name}" for setting in backend.settings or ()]
    provider_keys = [f.name for f in dataclasses.fields(auth_config.AuthProviderConfig)]
    provider_keys += [*ENDPOINT_ALIASES, *_SELECTOR_KEYS]
    return ["trust.directories", *keys, *provider_keys]


def test_configuration_page_lists_every_key() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    missing = [key for key in _configuration_keys() if f"`{key}`" not in page]
    assert not missing, f"not in docs/configuration.md: {missing}"
