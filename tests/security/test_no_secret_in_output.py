"""No secret in any output: the whole journey against the real IdP, with every secret collected.

Two journeys, each with TRACE logging:

* the library: login (authorization URL, browser, code exchange), a replayed code,
  a forged state, refresh, AuthSession sync + async (and the 401 -> refresh -> replay
  path), TokenChecker, userinfo, revoke, logout, and the errors of a revoked session;
* the command line, each command run with ``-vvv``: ``login --manual`` (the redirect
  pasted on stdin), ``status``, ``token`` (plain, ``--refresh``, ``--format json``),
  ``whoami``, ``check``, ``preflight``, ``providers -v``, a login with a forged state,
  ``logout``, and ``token`` after logout.

Every secret value seen along the way is collected: access, refresh and ID tokens
(and the signature of each JWT), the authorization code, state, nonce, PKCE code
verifier, client secret and the HTTP Basic credential made from it. None may appear in
the captured logs, CLI stdout/stderr (except what ``token`` prints on purpose, and the
authorization URL that ``login --no-browser`` must show), the str/repr/traceback of any
exception raised, the repr of the objects involved, or any file written outside the
token storage directory (HOME, the working directory and TMPDIR all live in the test's
own directory).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from kstlib.auth import AuthSession, ProviderAuth
from kstlib.auth._discovery import MetadataCache
from kstlib.auth._http import HTTPTraceLogger
from kstlib.auth.callback import parse_pasted_redirect
from kstlib.auth.check import TokenChecker
from kstlib.auth.errors import AuthError
from kstlib.auth.models import Token
from kstlib.auth.redaction import TRACE
from kstlib.auth.token import FileTokenStorage
from tests import loopback_http
from tests.flows import make_oidc
from tests.idp_support import (
    CONFIDENTIAL,
    CONFIDENTIAL_CLIENT_ID,
    CONFIDENTIAL_CLIENT_SECRET,
    REDIRECT_URI,
    SCOPES,
    IdP,
    browser_login,
)

KSTLIB = [sys.executable, "-c", "from kstlib.cli import main; main()"]
SECRET_ENV = "KST_NO_SECRET_CLIENT_SECRET"
#: ``key=value`` / ``"key": "value"`` with a sensitive key and a value that is not redacted.
UNREDACTED_ASSIGNMENT = re.compile(
    r"(?<![\w-])(code|code_verifier|client_secret|refresh_token|access_token|id_token|state|"
    r"nonce)(=|[\"']\s*:\s*[\"'])(?=[A-Za-z0-9_~+/.-])",
)


# --------------------------------------------------------------------------- bookkeeping


@dataclass
class Secrets:
    """Every secret value seen, by label (values of 8+ characters: no accidental matches)."""

    values: dict[str, str] = field(default_factory=dict)

    def add(self, label: str, value: str | None) -> None:
        if not value:
            return
        assert len(value) >= 8, f"{label} is too short to be searched for reliably"
        self.values[label] = value
        parts = value.split(".")
        if len(parts) == 3 and value.startswith("eyJ"):
            self.values[label + ".signature"] = parts[2]

    def add_token(self, label: str, token: Token | None) -> None:
        assert token is not None, label
        self.add(label + ".access_token", token.access_token)
        self.add(label + ".refresh_token", token.refresh_token)
        self.add(label + ".id_token", token.id_token)

    def add_client(self, client_id: str, client_secret: str) -> None:
        self.add("client_secret", client_secret)
        basic = base64.b64encode(f"{quote(client_id)}:{quote(client_secret)}".encode()).decode()
        self.add("client_basic_credential", basic)

    def found_in(self, text: str) -> list[str]:
        return sorted(label for label, value in self.values.items() if value in text)


@dataclass
class Outputs:
    """Everything a user or an operator could see, by where it was seen."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    #: (where, value) pairs printed on purpose (the token command, the login URL).
    intended: list[tuple[str, str]] = field(default_factory=list)
    #: Texts that are logs: also checked for sensitive assignments with unknown values.
    logs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def add_repr(self, where: str, obj: object) -> None:
        self.add(f"repr({where})", repr(obj))
        self.add(f"str({where})", str(obj))

    def add_error(self, where: str, error: BaseException) -> None:
        """str, repr, details and the full printed traceback (with its chained causes)."""
        self.add(f"str(error: {where})", str(error))
        self.add(f"repr(error: {where})", repr(error))
        self.add(f"traceback(error: {where})", "".join(traceback.format_exception(error)))
        if isinstance(error, AuthError):
            self.add(f"details(error: {where})", repr(error.details))

    def expect_error(self, where: str, call: Callable[[], object]) -> BaseException:
        try:
            call()
        except Exception as error:
            self.add_error(where, error)
            return error
        raise AssertionError(f"{where}: expected an error")

    def leaks(self, secrets: Secrets) -> list[str]:
        found = []
        for where, text in self.texts:
            for intended_where, value in self.intended:
                if intended_where == where:
                    text = text.replace(value, "<intended>")
            found += [f"{label} in {where}" for label in secrets.found_in(text)]
        for where, text in self.logs:
            found += [
                f"unredacted {m.group(0)!r}... in {where}"
                for m in UNREDACTED_ASSIGNMENT.finditer(text)
            ]
        return found


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=TRACE)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # exceptions and stacks included

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def trace_logs() -> Iterator[_Capture]:
    """Every record of the ``kstlib`` loggers at TRACE level, formatted as a handler would."""
    logger = logging.getLogger("kstlib")
    capture = _Capture()
    previous = logger.level
    logger.addHandler(capture)
    logger.setLevel(TRACE)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(previous)


def files_outside(root: Path, excluded: list[Path], since: float) -> Iterator[tuple[Path, str]]:
    """Text of every regular file under ``root`` modified since ``since`` and not excluded."""
    for dirpath, _dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if any(here == e or e in here.parents for e in excluded):
            continue
        for name in filenames:
            path = here / name
            try:
                info = path.lstat()
                if not path.is_file() or info.st_mtime < since or info.st_size > 5_000_000:
                    continue
                yield path, path.read_bytes().decode("utf-8", "replace")
            except OSError:
                continue


def check_files(outputs: Outputs, tmp_path: Path, *excluded: Path, since: float) -> int:
    """Add every file written since ``since`` under this test's directory (HOME, cwd and
    the temp directory, see :func:`private_tmpdir`) to the outputs, except ``excluded``
    (the token storage). Returns the file count.
    """
    count = 0
    for path, text in files_outside(tmp_path, list(excluded), since):
        outputs.add(f"file {path}", text)
        count += 1
    return count


@pytest.fixture
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The system temp directory of this test and of the CLI it runs: inside ``tmp_path``,
    so a temp file written by the library is scanned like any other file."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


# --------------------------------------------------------------------------- library journey


def test_library_journey_leaks_no_secret(
    idp: IdP,
    tmp_path: Path,
    private_tmpdir: Path,
    trace_logs: _Capture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = time.time() - 1
    token_dir = tmp_path / "tokens"
    storage = FileTokenStorage(token_dir)
    provider = make_oidc(idp, CONFIDENTIAL, storage=storage, name="corp")
    secrets = Secrets()
    outputs = Outputs()
    secrets.add_client(CONFIDENTIAL_CLIENT_ID, CONFIDENTIAL_CLIENT_SECRET)

    # login, with every one-time secret collected before it is used
    url, state = provider.get_authorization_url()
    query = parse_qs(urlsplit(url).query)
    pending = provider._pending[state]
    secrets.add("state", state)
    secrets.add("nonce", query["nonce"][0])
    secrets.add("code_verifier", pending.code_verifier)
    outputs.add_repr("pending authorization", pending)
    callback = browser_login(url)
    secrets.add("authorization_code", parse_qs(urlsplit(callback).query)["code"][0])
    outputs.add_repr("callback result", parse_pasted_redirect(callback))
    login_token = provider.exchange_code(callback, state)
    secrets.add_token("login", login_token)
    outputs.add_repr("login token", login_token)

    # errors of a replayed callback, a replayed code and a forged state
    outputs.expect_error("replayed callback", lambda: provider.exchange_code(callback, state))
    _, state2 = provider.get_authorization_url()
    secrets.add("state2", state2)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    outputs.expect_error("replayed code", lambda: provider.exchange_code(code, state2))
    forged = callback.replace(f"state={quote(state)}", "state=forged-state-value")
    outputs.expect_error("forged state", lambda: provider.exchange_code(forged, state))

    # refresh
    refreshed = provider.refresh()
    secrets.add_token("refreshed", refreshed)

    # AuthSession: sync, async, and the 401 -> refresh -> replay path
    with AuthSession(provider) as session:
        assert session.get(idp.api_url("me")).status_code == 200
        outputs.add_repr("session", session)
        outputs.add_repr("provider auth", session.auth)

    async def calls() -> None:
        async with AuthSession(provider) as session:
            responses = await asyncio.gather(
                *(session.aget(idp.api_url(f"a{i}")) for i in range(5))
            )
            assert [r.status_code for r in responses] == [200] * 5

    asyncio.run(calls())
    current = storage.load("corp")
    assert current is not None
    bogus = replace(  # obtained a minute ago: a 401 on a just-obtained token renews nothing
        current,
        access_token="bogus-access-token-" + "x" * 20,
        issued_at=current.issued_at - timedelta(minutes=1),
    )
    secrets.add("bogus_access_token", bogus.access_token)
    provider.save_token(bogus)
    with loopback_http.client(auth=ProviderAuth(provider)) as client:
        assert client.get(idp.api_url("after-401")).status_code == 200
    replayed = storage.load("corp")
    secrets.add_token("after_401", replayed)
    assert replayed is not None and replayed.access_token != bogus.access_token

    # TokenChecker: a valid ID token, and a tampered one (a report, not an exception)
    with loopback_http.client(timeout=10) as http:
        checker = TokenChecker(
            http,
            expected_issuer=idp.issuer,
            expected_audience=CONFIDENTIAL_CLIENT_ID,
            tracer=HTTPTraceLogger("kstlib.auth.check.http"),
        )
        id_token = replayed.id_token or ""
        assert checker.check(id_token).valid
        head, payload, signature = id_token.split(".")
        tampered = f"{head}.{payload}.{signature[::-1]}"
        secrets.add("tampered_id_token", tampered)
        report = checker.check(tampered)
        assert not report.valid
        outputs.add("checker error", str(report.error))

    # userinfo, revoke, and what a revoked session then says
    assert provider.get_userinfo()["sub"] == "alice"
    assert provider.revoke() is True
    outputs.expect_error("refresh after revoke", provider.refresh)
    provider.clear_token()
    with AuthSession(provider) as session:
        outputs.expect_error("session after logout", lambda: session.get(idp.api_url("x")))

    # reprs of everything a user may print
    for where, obj in [
        ("provider", provider),
        ("config", provider.config),
        ("config.to_safe_dict", provider.config.to_safe_dict()),
        ("client authentication", provider.client_authentication()),
        ("storage", storage),
        ("refreshed token", refreshed),
        ("after_401 token", replayed),
        ("checker", checker),
    ]:
        outputs.add_repr(where, obj)

    outputs.add("kstlib logs (TRACE)", trace_logs.text)
    outputs.logs.append(("kstlib logs (TRACE)", trace_logs.text))
    outputs.add("caplog", caplog.text)
    assert "TRACE" in trace_logs.text and "--> POST" in trace_logs.text  # traces were on
    check_files(outputs, tmp_path, token_dir, since=started)
    leaks = outputs.leaks(secrets)
    assert not leaks, "\n".join(leaks)
    assert len(secrets.values) >= 20


# --------------------------------------------------------------------------- CLI journey


@dataclass
class CLIRun:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str


class CLI:
    """Runs ``kstlib`` in a subprocess (real stdout/stderr), from the test's directory."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env
        self.runs: list[CLIRun] = []

    def run(self, *args: str, stdin: str = "") -> CLIRun:
        proc = subprocess.run(
            [*KSTLIB, *args],
            cwd=self.cwd,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        run = CLIRun(list(args), proc.returncode, proc.stdout, proc.stderr)
        self.runs.append(run)
        return run

    def manual_login(self, *extra: str, tamper: Callable[[str], str] = lambda u: u) -> CLIRun:
        """``login --manual --no-browser``: read the URL, play the browser, paste the redirect."""
        args = ["-vvv", "auth", "login", "--manual", "--no-browser", *extra, "corp"]
        err_path = self.cwd / f"stderr-{len(self.runs)}.log"
        with open(err_path, "w+") as err:
            proc = subprocess.Popen(
                [*KSTLIB, *args],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http"), url
            callback = tamper(browser_login(url))
            out, _ = proc.communicate(callback + "\n", timeout=60)
            err.seek(0)
            stderr = err.read()
        err_path.unlink()
        run = CLIRun(args, proc.returncode, url + "\n" + out, stderr)
        self.runs.append(run)
        return run


def command_name(args: list[str]) -> str:
    """``kstlib -vvv auth token --refresh corp`` -> ``token --refresh`` (#n for repeats)."""
    return " ".join(a for a in args if a not in ("-vvv", "auth", "corp"))


CLI_CONFIG = """\
auth:
  default_provider: corp
  token_storage: file
  storage:
    file:
      directory: {token_dir}
  providers:
    corp:
      type: oidc
      issuer: {issuer}
      client_id: {client_id}
      client_secret: env://{secret_env}
      token_endpoint_auth_method: client_secret_basic
      redirect_uri: {redirect_uri}
      scopes: [{scopes}]
"""


def test_cli_journey_with_vvv_leaks_no_secret(
    idp: IdP, tmp_path: Path, private_tmpdir: Path
) -> None:
    started = time.time() - 1
    token_dir = tmp_path / "cli-tokens"
    (tmp_path / "kstlib.conf.yml").write_text(
        CLI_CONFIG.format(
            token_dir=token_dir,
            issuer=idp.issuer,
            client_id=CONFIDENTIAL_CLIENT_ID,
            secret_env=SECRET_ENV,
            redirect_uri=REDIRECT_URI,
            scopes=", ".join(SCOPES),
        )
    )
    env = {
        **os.environ,
        SECRET_ENV: CONFIDENTIAL_CLIENT_SECRET,
        "COLUMNS": "200",
        "KSTLIB_CONFIG": str(tmp_path / "kstlib.conf.yml"),
    }
    cli = CLI(tmp_path, env)
    secrets = Secrets()
    outputs = Outputs()
    secrets.add_client(CONFIDENTIAL_CLIENT_ID, CONFIDENTIAL_CLIENT_SECRET)
    pasted: list[str] = []

    def remember_callback(callback: str) -> str:
        pasted.append(callback)
        return callback

    def stored(label: str) -> Token:
        token = FileTokenStorage(token_dir).load("corp")
        secrets.add_token(label, token)
        assert token is not None
        return token

    login = cli.manual_login(tamper=remember_callback)
    assert login.returncode == 0, login.stderr
    login_url = login.stdout.splitlines()[0]
    query = parse_qs(urlsplit(login_url).query)
    secrets.add("cli_login.state", query["state"][0])
    secrets.add("cli_login.nonce", query["nonce"][0])
    secrets.add("cli_login.code", parse_qs(urlsplit(pasted[0]).query)["code"][0])
    # the login URL itself must be shown (--no-browser): its state and nonce are intended
    where = f"stdout of {command_name(login.args)}"
    outputs.intended += [(where, query["state"][0]), (where, query["nonce"][0])]
    first = stored("cli_login")

    token_run = cli.run("-vvv", "auth", "token", "corp")
    assert token_run.returncode == 0, token_run.stderr
    assert token_run.stdout.strip() == first.access_token
    outputs.intended.append((f"stdout of {command_name(token_run.args)}", first.access_token))

    refresh_run = cli.run("-vvv", "auth", "token", "--refresh", "corp")
    assert refresh_run.returncode == 0, refresh_run.stderr
    second = stored("cli_refreshed")
    assert refresh_run.stdout.strip() == second.access_token != first.access_token
    outputs.intended.append((f"stdout of {command_name(refresh_run.args)}", second.access_token))

    json_run = cli.run("-vvv", "auth", "token", "--format", "json", "corp")
    assert json_run.returncode == 0, json_run.stderr
    outputs.intended.append((f"stdout of {command_name(json_run.args)}", second.access_token))

    for args in (
        ["-vvv", "auth", "status", "corp"],
        ["-vvv", "auth", "status", "--json"],
        ["-vvv", "auth", "whoami", "corp"],
        ["-vvv", "auth", "check", "corp"],
        ["-vvv", "auth", "check", "-v", "corp"],
        ["-vvv", "auth", "check", "--json", "corp"],
        ["-vvv", "auth", "preflight", "corp"],
        ["-vvv", "auth", "providers", "-v"],
    ):
        run = cli.run(*args)
        assert run.returncode == 0, (args, run.stdout, run.stderr)

    # an error under -vvv prints a traceback: a pasted redirect of another login
    forged = cli.manual_login(
        "--force", tamper=lambda u: re.sub(r"state=[^&]+", "state=forged-state-value", u)
    )
    assert forged.returncode == 1 and "state" in forged.stderr
    assert stored("after_forged") == second  # nothing replaced

    logout = cli.run("-vvv", "auth", "logout", "corp")
    assert logout.returncode == 0, logout.stderr
    assert FileTokenStorage(token_dir).load("corp") is None
    after = cli.run("-vvv", "auth", "token", "corp")
    assert after.returncode == 1 and after.stdout == ""

    for run in cli.runs:
        name = command_name(run.args)
        outputs.add(f"stdout of {name}", run.stdout)
        outputs.add(f"stderr of {name}", run.stderr)
        outputs.logs.append((f"stderr of {name}", run.stderr))
    assert any("trace: " in run.stderr for run in cli.runs)  # -vvv really traced
    assert check_files(outputs, tmp_path, token_dir, since=started) >= 1  # the config file
    leaks = outputs.leaks(secrets)
    assert not leaks, "\n".join(leaks)


# --------------------------------------------------------------------------- configured headers


def test_configured_secret_header_is_not_traced(idp: IdP, trace_logs: _Capture) -> None:
    """A provider header named like a secret is masked in the config and in TRACE logs.

    (``redact_headers`` itself only knows the credential headers; the value is caught by
    the logger's final free-text pass, which sees ``'x-auth-token': '...'``.)
    """
    header_secret = "configured-header-secret-value"
    provider = make_oidc(
        idp, CONFIDENTIAL, cache=MetadataCache(), headers={"X-Auth-Token": header_secret}
    )
    assert header_secret not in repr(provider.config)
    provider.discover()
    assert "x-auth-token" in trace_logs.text.lower()
    assert header_secret not in trace_logs.text
