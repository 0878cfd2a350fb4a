"""The documentation builds with warnings as errors, and it covers the whole public surface.

``./scripts/docs`` (Sphinx + MyST + autodoc) runs once per pytest run (shared by the xdist
workers: tests/once.py) into a temporary directory (a few seconds). Then: every public name
of ``kstlib.auth`` has an entry in the generated API reference, every ``kstlib auth``
command and option is described in ``docs/cli.md``, and every configuration key is in
``docs/configuration.md``. A new command, option or key therefore needs its documentation.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
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
from tests.once import once_per_run

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BUILD_TIMEOUT = 120  # seconds; a build takes about 5


@dataclasses.dataclass(frozen=True)
class Build:
    html: Path
    returncode: int
    output: str
    seconds: float


def _build_docs(out: Path) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run(
        [str(ROOT / "scripts" / "docs"), "-E", "-q"],
        cwd=ROOT,
        # the test command ran ./scripts/setup already (KSTLIB_SKIP_SETUP: see scripts/docs)
        env={**os.environ, "KSTLIB_DOCS_OUT": str(out / "html"), "KSTLIB_SKIP_SETUP": "1"},
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    return {
        "returncode": proc.returncode,
        "output": proc.stdout + proc.stderr,
        "seconds": time.monotonic() - started,
    }


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """One Sphinx build per run, shared by the xdist workers (tests/once.py)."""
    out, result = once_per_run(tmp_path_factory, "docs-build", _build_docs)
    return Build(out / "html", result["returncode"], result["output"], result["seconds"])


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


#: Modules whose ``__all__`` is public API: every class and function they export has an
#: entry in docs/api.md (constants and type aliases are described in prose where they matter).
PUBLIC_MODULES = (
    "kstlib.auth",
    "kstlib.auth.config",
    "kstlib.auth.token",
    "kstlib.auth.providers",
    "kstlib.auth.check",
    "kstlib.auth.callback",
    "kstlib.auth.models",
    "kstlib.auth.session",
    "kstlib.auth.redaction",
    "kstlib.auth.errors",
    "kstlib.config",
    "kstlib.secrets",
)


def _resolve(path: str) -> object | None:
    """The object a dotted documentation id names (None when it names nothing importable)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                return None
            obj = getattr(obj, attribute)
        return obj
    return None


def _api_ids(build: Build) -> set[str]:
    html = (build.html / "api.html").read_text(encoding="utf-8")
    return set(re.findall(r'id="(kstlib\.[\w.]+)"', html))


def _public_members(cls: type) -> list[str]:
    """Methods, properties and class attributes defined by kstlib code, and dataclass fields."""
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    for name in dir(cls):
        owner = next((base for base in cls.__mro__ if name in vars(base)), None)
        if owner is not None and owner.__module__.startswith("kstlib"):
            names.add(name)
    if issubclass(cls, enum.Enum):
        names -= set(cls.__members__)  # the members are listed by :undoc-members:
    return sorted(name for name in names if not name.startswith("_"))


def _described_in_docstring(cls: type, name: str) -> bool:
    """A field described in the class docstring's ``Args:``/``Attributes:`` section."""
    return re.search(rf"^\s+{re.escape(name)}( \(.*\))?:", cls.__doc__ or "", re.M) is not None


def test_api_reference_documents_every_public_member(build: Build) -> None:
    """Every public method, property and field of every class in docs/api.md has an entry
    (on the class itself or on a documented base class), and every class and function a
    public module exports is there: a new public method needs its documentation."""
    ids = _api_ids(build)
    by_object: dict[int, str] = {}
    classes: dict[type, list[str]] = {}
    for doc_id in sorted(ids):
        obj = _resolve(doc_id)
        if obj is None:
            continue
        by_object.setdefault(id(obj), doc_id)
        if inspect.isclass(obj):
            classes.setdefault(obj, []).append(doc_id)

    undocumented: list[str] = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if f"{module_name}.{name}" not in ids and id(obj) not in by_object:
                undocumented.append(f"{module_name}.{name}")

    for cls, class_ids in classes.items():
        for name in _public_members(cls):
            owners = [base for base in cls.__mro__ if hasattr(base, name) or base is cls]
            candidates = [f"{cid}.{name}" for base in owners for cid in classes.get(base, [])]
            if any(c in ids for c in candidates) or _described_in_docstring(cls, name):
                continue
            undocumented.append(f"{class_ids[0]}.{name}")
    assert not undocumented, f"public, but not in docs/api.md: {sorted(set(undocumented))}"


def test_the_request_hooks_are_documented(build: Build) -> None:
    ids = _api_ids(build)
    for hook in ("authorize_request", "wants_replay"):
        assert f"kstlib.auth.AbstractAuthProvider.{hook}" in ids, hook


def test_every_provider_config_field_is_described(build: Build) -> None:
    """AuthProviderConfig: each field has an entry with a sentence, not just a name."""
    html = (build.html / "api.html").read_text(encoding="utf-8")
    for field in dataclasses.fields(auth_config.AuthProviderConfig):
        anchor = f'id="kstlib.auth.AuthProviderConfig.{field.name}"'
        assert anchor in html, field.name
        entry = html[html.index(anchor) :]
        entry = entry[: entry.index("</dd>")]
        description = re.sub(r"<[^>]+>", "", entry[entry.index("<dd>") :]).strip()
        assert len(description.split()) >= 4, f"{field.name}: {description!r}"


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


def _css_rules(css: str) -> dict[str, str]:
    """``selector -> declarations`` of a flat stylesheet (comments removed)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    rules: dict[str, str] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        for selector in selectors.split(","):
            rules[" ".join(selector.split())] = rules.get(" ".join(selector.split()), "") + body
    return rules


def test_code_blocks_tables_and_images_stay_inside_the_content_column(build: Build) -> None:
    """docs/_static/kstlib.css is shipped and linked from every page; in it, code blocks and
    tables scroll sideways inside the column (``overflow-x: auto``), long words in table cells
    may break, and images are at most the column's width."""
    css = (build.html / "_static" / "kstlib.css").read_text(encoding="utf-8")
    rules = {sel: " ".join(body.split()) for sel, body in _css_rules(css).items()}

    def declares(selector_end: str, declaration: str) -> bool:
        return any(
            sel.endswith(selector_end) and declaration in body for sel, body in rules.items()
        )

    assert declares("pre", "overflow-x: auto;")
    assert declares("table.docutils", "overflow-x: auto;")
    assert declares("table.docutils", "max-width: 100%;")
    assert declares("table.docutils td", "overflow-wrap: anywhere;")
    assert declares("img", "max-width: 100%;")
    pages = [*build.html.glob("*.html"), *build.html.glob("idps/*.html")]
    assert len(pages) > 10
    for page in pages:
        assert "kstlib.css" in page.read_text(encoding="utf-8"), page.name
