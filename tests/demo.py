"""The demo behind ``./scripts/demo``: the whole kstlib.auth journey against a real local IdP.

``python -m tests.demo`` starts the test suite's OpenID provider (panva's
oidc-provider, see :mod:`tests.idp_support`) on 127.0.0.1, writes a
throw-away ``kstlib.conf.yml`` in a temporary directory, and runs the real
``kstlib`` command line in subprocesses: providers, preflight, login (code +
PKCE through the loopback callback server, the demo playing the user's
browser on the IdP's login and consent pages), status, whoami, a call to a
protected API through ``AuthSession``, a forced refresh, a cryptographic check
of the ID token, and logout with revocation (confirmed by the IdP's
introspection). Then it stops the IdP. No token is ever printed.

:func:`run_demo` takes a running IdP (``scripts/check-dist`` runs ``python -m tests.demo`` with
the installed wheel); ``tests/integration/test_demo.py`` runs ``./scripts/demo`` itself and
checks the journey's output (see :data:`REPORT_ENV`).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from tests.idp_support import (
    POST_LOGOUT_REDIRECT_URI,
    PUBLIC_CLIENT_ID,
    IdP,
    browser_login,
    start_idp,
)

__all__ = ["DemoReport", "main", "run_demo"]

PROVIDER = "demo"
USER = "alice"
#: Longest a CLI command of the demo may take (the login waits for the browser).
COMMAND_TIMEOUT = 60


@dataclass
class Step:
    """One command of the journey and what it printed."""

    title: str
    argv: list[str]
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""


@dataclass
class DemoReport:
    """What the demo did: every step, everything shown, and (for tests) the secrets it saw."""

    steps: list[Step] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    observed_secrets: set[str] = field(default_factory=set)
    seconds: float = 0.0


def _kstlib_command() -> list[str]:
    """The installed ``kstlib`` console script (the module entry point when there is none)."""
    script = Path(sys.executable).with_name("kstlib")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from kstlib.cli import main; main()"]


def free_loopback_port() -> int:
    """A port free on 127.0.0.1 right now (the loopback redirect URI of the demo)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(workdir: Path, issuer: str, port: int) -> Path:
    """The throw-away ``kstlib.conf.yml``: one public OIDC client, file storage in ``workdir``."""
    config = workdir / "kstlib.conf.yml"
    config.write_text(
        f"""# kstlib.conf.yml of the demo (KSTLIB_CONFIG points here)
auth:
  default_provider: {PROVIDER}
  token_storage: file
  storage:
    file:
      directory: {workdir / "tokens"}
  providers:
    {PROVIDER}:
      type: oidc
      issuer: {issuer}
      client_id: {PUBLIC_CLIENT_ID}          # a public client: PKCE, no secret
      scopes: [openid, profile, email, offline_access]
      redirect_uri: http://127.0.0.1:{port}/callback
      post_logout_redirect_uri: {POST_LOGOUT_REDIRECT_URI}
""",
        encoding="utf-8",
    )
    return config


class Journey:
    """Runs the CLI steps against one configuration and records them."""

    def __init__(self, idp: IdP, workdir: Path, echo: Callable[[str], None]) -> None:
        self.idp = idp
        self.workdir = workdir
        self.echo = echo
        self.report = DemoReport()
        self.kstlib = _kstlib_command()
        self.config = write_config(workdir, idp.issuer, free_loopback_port())
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "KSTLIB_CONFIG": str(self.config),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "COLUMNS": os.environ.get("COLUMNS", "110"),
        }

    # -- output ----------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.report.shown.append(text)
        self.echo(text)

    def section(self, number: int, title: str) -> None:
        self.say()
        self.say(f"── {number}. {title} " + "─" * max(3, 60 - len(title)))

    # -- commands --------------------------------------------------------------------------

    def run(self, title: str, *args: str, show: bool = True, check: bool = True) -> Step:
        """Run ``kstlib <args>`` and show the command.

        With ``show`` its output is shown, stderr merged into stdout in the order
        printed; without, stdout (which may hold a token) is kept apart, unshown.
        """
        step = Step(title, ["kstlib", *args])
        self.say(f"$ {shlex.join(step.argv)}")
        proc = subprocess.run(
            [*self.kstlib, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if show else subprocess.PIPE,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        step.returncode, step.stdout, step.stderr = proc.returncode, proc.stdout, proc.stderr or ""
        self.report.steps.append(step)
        shown = step.stdout if show else step.stderr
        if shown.strip():
            self.say(shown.rstrip("\n"))
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{shlex.join(step.argv)}` exited with {proc.returncode}")
        return step

    def login(self) -> Step:
        """``kstlib auth login --no-browser``; the demo plays the browser and the redirect."""
        args = ["auth", "login", "--no-browser", "--timeout", str(COMMAND_TIMEOUT)]
        step = Step("login", ["kstlib", *args])
        self.say(f"$ {shlex.join(step.argv)}")
        proc = subprocess.Popen(
            [*self.kstlib, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            before = self._until_authorization_url(proc)
            self._play_browser(before[-1])
            rest, _ = proc.communicate(timeout=COMMAND_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        step.returncode, step.stdout = proc.returncode, "".join(before) + rest
        self.report.steps.append(step)
        if rest.strip():
            self.say(rest.rstrip("\n"))
        if proc.returncode != 0:
            raise RuntimeError(f"`kstlib auth login` exited with {proc.returncode}")
        return step

    def _until_authorization_url(self, proc: subprocess.Popen[str]) -> list[str]:
        """Show the CLI's output up to the authorization URL; return the lines, URL last."""
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("http://", "https://")):
                self.say(f"{line.split('?', 1)[0]}?response_type=code&code_challenge=…&state=…")
                lines[-1] = line.strip()
                return lines
            self.say(line.rstrip("\n"))
        raise RuntimeError("`kstlib auth login` printed no authorization URL")

    def _play_browser(self, url: str) -> None:
        callback_url = browser_login(url, username=USER)
        redirect, _, query = callback_url.partition("?")
        self.say(
            f"  (demo browser: logged in as {USER!r} at the IdP, consented, "
            f"was redirected to {redirect})"
        )
        for name in ("code", "state"):
            value = httpx.QueryParams(query).get(name)
            if value:
                self.report.observed_secrets.add(value)
        response = httpx.get(callback_url, timeout=10)
        self.say(f"  (loopback server answered the browser: HTTP {response.status_code})")

    # -- library calls ---------------------------------------------------------------------

    def stored_token_secrets(self) -> dict[str, str]:
        """The token values in storage (collected for the no-leak assertions, never shown)."""
        from kstlib.auth.config import get_token_storage_for_provider
        from kstlib.config import load_config

        loaded = load_config(path=self.config)
        token = get_token_storage_for_provider(PROVIDER, config=loaded).load(PROVIDER)
        if token is None:
            return {}
        values = {
            "access_token": token.access_token,
            "refresh_token": token.refresh_token or "",
            "id_token": token.id_token or "",
        }
        self.report.observed_secrets.update(v for v in values.values() if v)
        return values

    def call_protected_api(self) -> None:
        """An ``AuthSession`` call, in this process, with the token the CLI stored."""
        from kstlib.auth import AuthSession, get_provider
        from kstlib.config import load_config

        url = self.idp.api_url("hello")
        code = (
            "provider = get_provider('demo')\n"
            "with AuthSession(provider) as session:\n"
            f"    session.get('{url}').json()"
        )
        self.say(">>> " + code.replace("\n", "\n... "))
        provider = get_provider(PROVIDER, config=load_config(path=self.config))
        with provider, AuthSession(provider) as session:
            response = session.get(url)
        body = response.json()
        self.say(json.dumps({k: body[k] for k in ("sub", "client_id", "scope", "path")}, indent=2))
        if response.status_code != 200:
            raise RuntimeError(f"the protected API answered {response.status_code}")

    def forced_refresh(self) -> None:
        from kstlib.auth.redaction import fingerprint

        before = self.stored_token_secrets()
        step = self.run("refresh", "auth", "token", "--refresh", "--format", "json", show=False)
        data = json.loads(step.stdout)
        self.report.observed_secrets.add(data["access_token"])
        after = self.stored_token_secrets()
        self.say(
            f"  (output not shown: it is the token) refreshed: access token "
            f"{fingerprint(before['access_token'])} -> {fingerprint(data['access_token'])}, "
            f"expires in {data['expires_in']} s; refresh token rotated: "
            f"{before['refresh_token'] != after['refresh_token']}"
        )

    def logout_and_verify(self) -> None:
        last = self.stored_token_secrets()
        self.run("logout", "auth", "logout")
        active = self.idp.introspect(last["access_token"]).get("active")
        self.say(f"  (the IdP's introspection of the old access token: active={active})")
        if active:
            raise RuntimeError("the access token is still active after logout")


def run_demo(idp: IdP, workdir: Path, *, echo: Callable[[str], None] = print) -> DemoReport:
    """Walk the whole journey against ``idp``; ``workdir`` holds the config and the tokens."""
    started = time.monotonic()
    journey = Journey(idp, workdir, echo)
    journey.say(f"kstlib.auth demo: a real OpenID provider runs at {idp.issuer}")
    journey.section(1, "the configuration (KSTLIB_CONFIG)")
    journey.say(journey.config.read_text(encoding="utf-8").rstrip())
    journey.section(2, "configured providers")
    journey.run("providers", "auth", "providers")
    journey.section(3, "preflight: discovery, keys, endpoints")
    journey.run("preflight", "auth", "preflight")
    journey.section(4, "login: authorization code + PKCE through the loopback server")
    journey.login()
    journey.stored_token_secrets()
    journey.section(5, "status (read from the token file by a new process)")
    journey.run("status", "auth", "status")
    journey.section(6, "whoami: the UserInfo endpoint")
    journey.run("whoami", "auth", "whoami")
    journey.section(7, "a protected API through AuthSession")
    journey.call_protected_api()
    journey.section(8, "forced refresh")
    journey.forced_refresh()
    journey.section(9, "check: a cryptographic proof of the ID token")
    journey.run("check", "auth", "check")
    journey.section(10, "logout: revocation at the IdP, local token removed")
    journey.logout_and_verify()
    # logged out: status exits 1 and says why, as a script tests it (#16 item 13)
    journey.run("status", "auth", "status", check=False)
    journey.report.seconds = time.monotonic() - started
    journey.say()
    journey.say(f"Demo finished in {journey.report.seconds:.1f} s.")
    return journey.report


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (from ./scripts/demo's trap) unwinds like Ctrl-C, so cleanups run."""
    raise SystemExit(128 + signum)


#: Set by tests/integration/test_demo.py only: where ``main`` writes what the test checks
#: beyond the output (each step's exit status, and the secrets the demo saw, which the test
#: then looks for in that output). A 0600 file in the test's own temporary directory.
REPORT_ENV = "KSTLIB_DEMO_TEST_REPORT"


def _write_report_for_tests(report: DemoReport) -> None:
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    data = {
        "steps": [[step.title, step.returncode] for step in report.steps],
        "observed_secrets": sorted(report.observed_secrets),
    }
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the IdP, run the demo, stop the IdP (whatever happens)."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="kstlib-demo-") as tmp:
        workdir = Path(tmp)
        print("Starting the local OpenID provider (tests/idp, 127.0.0.1)…", flush=True)
        idp = start_idp(workdir / "idp")
        try:
            report = run_demo(idp, workdir, echo=lambda text: print(text, flush=True))
            _write_report_for_tests(report)
        except (RuntimeError, OSError, httpx.HTTPError) as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            return 1
        finally:
            idp.close()
            print("The IdP is stopped; nothing is left running.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
