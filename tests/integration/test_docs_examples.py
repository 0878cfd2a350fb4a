"""Every code example of ``docs/*.md`` runs here, against the local real IdP.

What is run, per fenced block of a page (in page order):

* ```` ```python ````: executed. The blocks of one page run **in order, in one namespace**
  (a later block may use a name an earlier block of the same page defined, as a reader
  does); every page starts with a fresh namespace. A block must not raise.
* ```` ```console ````: every ``$ `` line is a shell command, run by ``bash`` (``set -euo
  pipefail``) with the venv's ``bin`` first on ``PATH``; it must exit 0. Other lines are
  sample output and are not compared. ``kstlib auth login --no-browser`` / ``--manual`` are
  driven like a user: the printed URL is opened in the headless browser, and the redirect is
  delivered to the loopback server (or pasted on stdin with ``--manual``).
* ```` ```yaml ````: parsed. A block whose top-level keys are ``auth``/``ssl`` is a
  ``kstlib.conf.yml``: it is written to a file, loaded with ``kstlib.config.load_config``, its
  settings parsed and every provider in it built and its storage opened, with
  ``ConfigWarning`` turned into an error (an unknown key in the docs fails the test). The
  secret references it names are made real first: ``env://NAME`` variables are set,
  ``file://`` files written, ``sops://`` files encrypted with a real age key; so are the
  ``ca_bundle`` / ``ssl_ca_bundle`` files it points to.
* Directive blocks (```` ```{...} ````) and ``text`` blocks are not code. A block whose info
  string contains ``no-run`` is skipped (for a block that truly cannot run; there is none).

Substitutions applied to every block (and to :data:`HARNESS_CONFIG`) before it is used:
``https://idp.example.com`` -> the local IdP's issuer, ``https://api.example.com`` -> its
protected test API (``{issuer}/__test__/api``), ``my-app`` -> a public client registered
there (:data:`tests.idp_support.PUBLIC_CLIENT_ID`).

The environment of each page: a fresh temporary directory as current directory and home
(``conftest._isolated_home``); :data:`HARNESS_CONFIG` written as ``./kstlib.conf.yml``; a
login to ``corporate`` before the first Python block of a page unless a console example of
the page already logged in (:func:`tests.flows.login`, tokens in the default file storage),
so session examples have a token; ``webbrowser.open`` (in process) and ``$BROWSER``
(for the CLI) replaced by a headless browser that logs in as ``alice`` at the IdP, consents
and follows the redirect; ``SOPS_AGE_RECIPIENTS`` / ``SOPS_AGE_KEY_FILE`` naming a real age
key pair.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import warnings
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from kstlib.auth import _discovery as discovery
from kstlib.auth.config import (
    ConfigWarning,
    build_provider_config,
    get_auth_settings,
    get_default_provider_name,
    get_provider,
    get_provider_type,
    get_ssl_settings,
    get_token_storage_for_provider,
    list_configured_providers,
)
from kstlib.config import load_config
from tests import loopback_http
from tests.device_flow import approve_device
from tests.flows import login
from tests.idp_support import PUBLIC_CLIENT_ID, IdP, browser_login
from tests.sops_support import AgeIdentity, sops_path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
VENV_BIN = Path(sys.executable).parent
COMMAND_TIMEOUT = 120

#: The ``kstlib.conf.yml`` every page runs against (after the substitutions). It is the
#: quick start's configuration, plus a callback port of 0 so parallel tests never collide.
HARNESS_CONFIG = """\
auth:
  default_provider: corporate
  callback_server:
    port: 0
  providers:
    corporate:
      issuer: https://idp.example.com
      client_id: my-app
      scopes: [openid, profile, email, offline_access]
    # issue 13 (docs/grants.md): a service (client credentials) and a downstream API
    # reached by token exchange from corporate's login; test-only client of the local IdP
    reporting:
      type: oauth2
      flow: client_credentials
      token_endpoint: https://idp.example.com/token
      introspection_endpoint: https://idp.example.com/token/introspection
      client_id: kstlib-service
      client_secret: kstlib-service-secret
      scopes: [api:read]
    downstream:
      flow: token_exchange
      subject_provider: corporate
      issuer: https://idp.example.com
      client_id: kstlib-service
      client_secret: kstlib-service-secret
      audience: https://orders.example.com
"""

#: What a page's namespace must hold once all its Python blocks ran (beyond "nothing raised").
EXPECTATIONS: dict[str, Callable[[dict[str, Any]], object]] = {
    "checker.md": lambda ns: ns["report"].valid and not ns["failed"].valid,
    "providers.md": lambda ns: ns["report"].success and ns["provider"].get_token() is None,
    "sessions.md": lambda ns: ns["statuses"].count(200) == len(ns["statuses"]) == 32,
    "storage.md": lambda ns: ns["sealed"].name == "corporate.sops.json",
}

_FENCE_RE = re.compile(r"^(?P<fence>`{3,})(?P<info>[^`]*)$")
_CONFIG_SECTIONS = frozenset({"auth", "ssl"})


# --------------------------------------------------------------------------- extraction


@dataclass(frozen=True)
class Block:
    """One fenced code block of a docs page."""

    page: str
    line: int  # 1-based line of the opening fence
    language: str
    info: str
    text: str

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        return "no-run" not in self.info.split()


def extract_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, in order (directives excluded)."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE_RE.match(lines[index])
        if match is None:
            index += 1
            continue
        fence, info, start = match["fence"], match["info"].strip(), index
        body: list[str] = []
        index += 1
        while index < len(lines) and lines[index].rstrip() != fence:
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        if info.startswith("{"):  # a MyST directive (toctree, eval-rst...), not an example
            continue
        language = info.split()[0] if info else ""
        blocks.append(Block(path.name, start + 1, language, info, "\n".join(body) + "\n"))
    return blocks


def pages_with_examples() -> list[Path]:
    return sorted(
        page
        for page in DOCS.glob("*.md")
        if any(b.language in ("python", "console", "yaml") for b in extract_blocks(page))
    )


def test_the_extractor_finds_the_examples() -> None:
    """A guard against a parser bug silently running nothing."""
    blocks = [b for page in DOCS.glob("*.md") for b in extract_blocks(page)]
    counts = {lang: sum(b.language == lang for b in blocks) for lang in ("python", "yaml")}
    assert counts["python"] >= 20, counts
    assert counts["yaml"] >= 5, counts
    assert sum(b.language == "console" for b in blocks) >= 5
    assert {"quickstart.md", "providers.md", "sessions.md", "checker.md", "cli.md"} <= {
        p.name for p in pages_with_examples()
    }
    assert not [b.where for b in blocks if not b.runs], "blocks marked no-run"
    unknown = {b.language for b in blocks} - {"python", "console", "yaml", "text", ""}
    assert not unknown, f"code blocks of a language the harness does not check: {unknown}"


# --------------------------------------------------------------------------- substitutions


@dataclass(frozen=True)
class Substitutions:
    issuer: str

    def apply(self, text: str) -> str:
        text = text.replace("https://idp.example.com", self.issuer)
        text = text.replace("https://api.example.com", f"{self.issuer}/__test__/api")
        return re.sub(r"(?<![\w-])my-app(?![\w-])", PUBLIC_CLIENT_ID, text)


# --------------------------------------------------------------------------- the browser


def play_browser(url: str) -> str:
    """Log in as alice at the IdP, consent, return the redirect URL (not yet requested)."""
    return browser_login(url, username="alice")


def _fake_webbrowser_open(url: str, new: int = 0, autoraise: bool = True) -> bool:
    """``webbrowser.open`` for the examples: log in and follow the redirect to the app (or,
    for a device verification page, approve the device login)."""
    if urlsplit(url).path == "/device":  # device authorization (RFC 8628; issue 13)
        approve_device(url)
        return True
    loopback_http.get(play_browser(url), timeout=10)
    return True


def write_browser_script(directory: Path) -> Path:
    """A ``$BROWSER`` program doing what :func:`_fake_webbrowser_open` does, for the CLI."""
    script = directory / "headless-browser"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import httpx\n"
        "from urllib.parse import urlsplit\n"
        "from tests.device_flow import approve_device\n"
        "from tests.idp_support import browser_login\n"
        "if urlsplit(sys.argv[1]).path == '/device':\n"  # a device login (issue 13)
        "    approve_device(sys.argv[1])\n"
        "else:\n"
        "    httpx.get(browser_login(sys.argv[1], username='alice'), timeout=10)\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script


# --------------------------------------------------------------------------- running blocks


@dataclass
class Page:
    """Everything one page's blocks run with."""

    name: str
    workdir: Path
    subs: Substitutions
    env: dict[str, str]
    monkeypatch: pytest.MonkeyPatch
    age: AgeIdentity
    namespace: dict[str, Any]

    def run(self, block: Block) -> None:
        text = self.subs.apply(block.text)
        runner = {
            "python": self.run_python,
            "console": self.run_console,
            "yaml": self.check_yaml,
        }.get(block.language)
        if runner is not None and block.runs:
            runner(block, text)

    # -- python ----------------------------------------------------------------------------

    def run_python(self, block: Block, text: str) -> None:
        ensure_logged_in()
        code = compile(text, f"<{block.where}>", "exec")
        try:
            exec(code, self.namespace)
        except Exception as exc:
            raise AssertionError(f"{block.where}: the example raised {exc!r}") from exc

    # -- console ---------------------------------------------------------------------------

    def run_console(self, block: Block, text: str) -> None:
        for command in console_commands(text):
            if re.match(r"kstlib auth login\b", command) and (
                "--no-browser" in command or "--manual" in command
            ):
                result = self.run_interactive_login(command)
            else:
                result = subprocess.run(
                    ["bash", "-c", f"set -euo pipefail\n{command}"],
                    cwd=self.workdir,
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=COMMAND_TIMEOUT,
                    check=False,
                )
            assert result.returncode == 0, (
                f"{block.where}: `{command}` exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )

    def run_interactive_login(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run a login that prints its URL; play the browser; deliver or paste the redirect."""
        stderr_path = self.workdir / "login-stderr.txt"
        with open(stderr_path, "w+", encoding="utf-8") as stderr:
            proc = subprocess.Popen(
                ["bash", "-c", command],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            assert proc.stdout is not None and proc.stdin is not None
            seen: list[str] = []
            try:
                for line in proc.stdout:
                    seen.append(line)
                    if line.startswith(("http://", "https://")):
                        redirect = play_browser(line.strip())
                        if "--manual" in command:
                            proc.stdin.write(redirect + "\n")
                            proc.stdin.flush()
                        else:
                            loopback_http.get(redirect, timeout=10)
                        break
                rest, _ = proc.communicate(timeout=COMMAND_TIMEOUT)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            stderr.seek(0)
            return subprocess.CompletedProcess(
                command, proc.returncode, "".join(seen) + rest, stderr.read()
            )

    # -- yaml ------------------------------------------------------------------------------

    def check_yaml(self, block: Block, text: str) -> None:
        data = yaml.safe_load(text)
        assert data is not None, f"{block.where}: empty YAML block"
        if not (isinstance(data, dict) and data and set(data) <= _CONFIG_SECTIONS):
            return  # another YAML document (a SOPS source, a kubeconfig): parsing is the check
        directory = self.workdir / f"yaml-{block.line}"
        directory.mkdir()
        self.materialise_references(text, data, directory)
        config_file = directory / "kstlib.conf.yml"
        config_file.write_text(text, encoding="utf-8")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", ConfigWarning)
                loaded = load_config(path=config_file)
                get_auth_settings(config=loaded)
                get_ssl_settings(config=loaded)
                get_default_provider_name(config=loaded)
                for name in list_configured_providers(config=loaded):
                    build_provider_config(name, config=loaded)
                    get_provider_type(name, config=loaded)
                    get_token_storage_for_provider(name, config=loaded)
        except Exception as exc:
            raise AssertionError(f"{block.where}: this configuration fails: {exc}") from exc

    def materialise_references(self, text: str, data: Any, directory: Path) -> None:
        """Make the secret references and CA bundle files of a config example exist."""
        for name in re.findall(r"env://([A-Za-z_][A-Za-z0-9_]*)", text):
            self.monkeypatch.setenv(name, f"docs-example-{name.lower()}")
        for relative in re.findall(r"file://(\S+)", text):
            write_file(directory / relative, "docs-example-secret\n")
        sops_documents: dict[str, dict[str, Any]] = {}
        for relative, key in re.findall(r"sops://([^#\s]+)#(\S+)", text):
            node = sops_documents.setdefault(relative, {})
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = "docs-example-secret"
        for relative, document in sops_documents.items():
            sops_encrypt(document, directory / relative, self.age.recipient)
        for bundle in find_values(data, ("ca_bundle", "ssl_ca_bundle")):
            write_file(directory / bundle, "# CA bundle placeholder\n")


def ensure_logged_in() -> None:
    """Log in to ``corporate`` (the reader did, with ``kstlib auth login``) unless a console
    example of the page already did, for real, through ``$BROWSER``."""
    token = get_token_storage_for_provider("corporate").load("corporate")
    if token is None or token.is_expired:
        with get_provider("corporate") as provider:
            login(provider)


def console_commands(text: str) -> list[str]:
    """The ``$ `` lines of a console block (a trailing ``\\`` continues a command)."""
    commands: list[str] = []
    pending: str | None = None
    for line in text.splitlines():
        if pending is not None:
            pending += "\n" + line
        elif line.startswith("$ "):
            pending = line[2:]
        else:
            continue
        if not pending.endswith("\\"):
            commands.append(pending)
            pending = None
    if pending is not None:
        commands.append(pending)
    return commands


def find_values(data: Any, keys: tuple[str, ...]) -> Iterator[str]:
    """Every string value stored under one of ``keys``, at any depth."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from find_values(value, keys)
    elif isinstance(data, list):
        for item in data:
            yield from find_values(item, keys)


def write_file(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def sops_encrypt(document: dict[str, Any], target: Path, recipient: str) -> None:
    """Write ``document`` to ``target`` (YAML) encrypted with the real sops to ``recipient``."""
    plain = target.with_name(target.name + ".plain")
    write_file(plain, yaml.safe_dump(document))
    try:
        encrypted = subprocess.run(
            [sops_path(), "--encrypt", "--age", recipient, "--input-type", "yaml"]
            + ["--output-type", "yaml", str(plain)],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    finally:
        plain.unlink()
    target.write_bytes(encrypted)


# --------------------------------------------------------------------------- the test


@contextlib.contextmanager
def kstlib_logging_restored() -> Iterator[None]:
    """Examples may change the ``kstlib`` logger; later tests must not notice."""
    logger = logging.getLogger("kstlib")
    level, handlers = logger.level, list(logger.handlers)
    try:
        yield
    finally:
        logger.setLevel(level)
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)


@pytest.mark.parametrize("page", pages_with_examples(), ids=lambda p: p.name)
def test_page_examples_run(
    page: Path,
    idp: IdP,
    age_identity: AgeIdentity,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workdir = Path.cwd()  # tmp_path, made the cwd (and HOME's parent) by conftest
    subs = Substitutions(idp.issuer)
    (workdir / "kstlib.conf.yml").write_text(subs.apply(HARNESS_CONFIG), encoding="utf-8")
    monkeypatch.setenv("SOPS_AGE_RECIPIENTS", age_identity.recipient)
    monkeypatch.setenv("KSTLIB_CONFIG", str(workdir / "kstlib.conf.yml"))
    monkeypatch.setattr(webbrowser, "open", _fake_webbrowser_open)
    monkeypatch.setattr(discovery, "_SHARED", {})  # a cold discovery cache, restored after
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "BROWSER": str(write_browser_script(tmp_path)),
        "COLUMNS": "120",
    }

    runner = Page(page.name, workdir, subs, env, monkeypatch, age_identity, {"__name__": "docs"})
    with kstlib_logging_restored():
        for block in extract_blocks(page):
            runner.run(block)

    expectation = EXPECTATIONS.get(page.name)
    if expectation is not None:
        assert expectation(runner.namespace), f"docs/{page.name}: unexpected final state"
