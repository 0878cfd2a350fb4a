"""``kstlib auth ...`` against the real test IdP: every command, exit codes, and no secret leak.

Two ways in: ``typer.testing.CliRunner`` on the Typer app (with ``webbrowser.open``
replaced by a fake browser that logs in at the IdP in a thread and then
delivers the redirect to the CLI's loopback server), and subprocesses of the
real ``kstlib`` console script (``--no-browser`` and ``--manual``, where the
test reads the printed URL and plays the browser itself).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import webbrowser
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from kstlib.auth.config import get_token_storage_for_provider
from kstlib.auth.models import Token
from kstlib.cli.app import app, reset_logging
from tests import loopback_http
from tests.idp_support import (
    CONFIDENTIAL,
    POST_LOGOUT_REDIRECT_URI,
    PUBLIC,
    IdP,
    OidcClient,
    browser_login,
)

KSTLIB = [str(Path(sys.executable).with_name("kstlib"))]
SCOPES = ["openid", "profile", "email", "offline_access"]
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


# --------------------------------------------------------------------------- helpers


def provider_settings(idp: IdP, client: OidcClient, **extra: Any) -> dict[str, Any]:
    """A provider of the test IdP; redirect port 0: the loopback server takes any free port."""
    settings: dict[str, Any] = {
        "type": "oidc",
        "issuer": idp.issuer,
        "client_id": client.client_id,
        "scopes": SCOPES,
        "redirect_uri": "http://127.0.0.1:0/callback",
        "post_logout_redirect_uri": POST_LOGOUT_REDIRECT_URI,
    }
    if client.client_secret is not None:
        settings["client_secret"] = client.client_secret
    settings.update(extra)
    return settings


class FakeBrowser:
    """Stands in for ``webbrowser.open``: logs in at the IdP in a thread, follows the redirect."""

    def __init__(self, *, consent: bool = True, tamper: Callable[[str], str] | None = None) -> None:
        self.consent = consent
        self.tamper = tamper  # rewrites the redirect URL before it is delivered
        self.opened: list[str] = []
        self.callbacks: list[str] = []
        self.responses: list[httpx.Response] = []
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    def open(self, url: str, *args: Any, **kwargs: Any) -> bool:
        self.opened.append(url)
        thread = threading.Thread(target=self._visit, args=(url,), daemon=True)
        thread.start()
        self._threads.append(thread)
        return True

    def _visit(self, url: str) -> None:
        try:
            callback = browser_login(url, consent=self.consent)
            if self.tamper is not None:
                callback = self.tamper(callback)
            self.callbacks.append(callback)
            self.responses.append(loopback_http.get(callback, timeout=10))
        except BaseException as exc:
            self.errors.append(exc)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(10)
        assert not self.errors, self.errors

    def secrets(self) -> set[str]:
        """The code and state values this browser saw."""
        found: set[str] = set()
        for callback in self.callbacks:
            query = parse_qs(urlsplit(callback).query)
            found.update(query.get("code", []) + query.get("state", []))
        return found


class CLI:
    """A throw-away configuration (KSTLIB_CONFIG) and ways to run ``kstlib`` against it."""

    def __init__(self, tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch) -> None:
        self.idp = idp
        self.tokens = tmp_path / "tokens"
        self.config = tmp_path / "kstlib.conf.yml"
        self.monkeypatch = monkeypatch
        self.runner = CliRunner()
        self.write(
            {"conf": provider_settings(idp, CONFIDENTIAL), "pub": provider_settings(idp, PUBLIC)},
            default="conf",
        )
        monkeypatch.setenv("KSTLIB_CONFIG", str(self.config))
        monkeypatch.setenv("COLUMNS", "250")  # tables on one line each

    def write(self, providers: dict[str, Any], *, default: str | None = None) -> None:
        auth: dict[str, Any] = {
            "token_storage": "file",
            "storage": {"file": {"directory": str(self.tokens)}},
            "providers": providers,
        }
        if default is not None:
            auth["default_provider"] = default
        self.config.write_text(yaml.safe_dump({"auth": auth}), encoding="utf-8")

    def invoke(self, *args: str, input: str | None = None) -> Result:
        try:
            return self.runner.invoke(app, list(args), input=input, catch_exceptions=False)
        finally:
            reset_logging()

    def browser(
        self, *, consent: bool = True, tamper: Callable[[str], str] | None = None
    ) -> FakeBrowser:
        browser = FakeBrowser(consent=consent, tamper=tamper)
        self.monkeypatch.setattr(webbrowser, "open", browser.open)
        return browser

    def login(self, *args: str) -> tuple[Result, FakeBrowser]:
        browser = self.browser()
        result = self.invoke("auth", "login", "--timeout", "30", *args)
        browser.join()
        return result, browser

    def stored(self, name: str = "conf") -> Token | None:
        return get_token_storage_for_provider(name).load(name)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*KSTLIB, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*KSTLIB, *args], capture_output=True, text=True, timeout=60, check=False
        )


@pytest.fixture
def cli(tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch) -> Iterator[CLI]:
    yield CLI(tmp_path, idp, monkeypatch)
    reset_logging()


@pytest.fixture
def logged_in(cli: CLI) -> CLI:
    result, _ = cli.login()
    assert result.exit_code == 0, result.output
    return cli


def read_url(proc: subprocess.Popen[str]) -> str:
    """The authorization URL the CLI prints alone on a stdout line."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("http"):
            return line.strip()
    raise AssertionError("no URL printed")


def finish(proc: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(stdin, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


# --------------------------------------------------------------------------- login


def test_login_through_the_loopback_server(cli: CLI) -> None:
    result, browser = cli.login()
    assert result.exit_code == 0, result.output
    assert "Logged in to conf as alice" in result.stderr
    assert [r.status_code for r in browser.responses] == [200]
    assert "Login complete" in browser.responses[0].text
    opened = parse_qs(urlsplit(browser.opened[0]).query)
    assert opened["code_challenge_method"] == ["S256"]
    assert opened["redirect_uri"][0].startswith("http://127.0.0.1:")
    assert not opened["redirect_uri"][0].startswith("http://127.0.0.1:0/")
    token = cli.stored()
    assert token is not None and token.id_token and token.refresh_token
    assert result.stdout == ""  # nothing on stdout: the browser was opened


def test_login_no_browser_prints_the_url_and_waits_for_the_redirect(cli: CLI) -> None:
    proc = cli.popen("auth", "login", "pub", "--no-browser")
    url = read_url(proc)
    callback = browser_login(url)
    assert loopback_http.get(callback, timeout=10).status_code == 200
    code, out, err = finish(proc)
    assert code == 0, err
    assert out == ""  # only the URL was printed on stdout (already read)
    assert "Logged in to pub as alice" in err
    assert cli.stored("pub") is not None


def test_login_with_a_fixed_port_from_the_redirect_uri(cli: CLI, idp: IdP) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cli.write(
        {
            "conf": provider_settings(
                idp, CONFIDENTIAL, redirect_uri=f"http://127.0.0.1:{port}/callback"
            )
        }
    )
    result, browser = cli.login()
    assert result.exit_code == 0, result.output
    assert browser.callbacks[0].startswith(f"http://127.0.0.1:{port}/callback?")


def test_login_when_already_logged_in_and_force(logged_in: CLI) -> None:
    before = logged_in.stored()
    result = logged_in.invoke("auth", "login")
    assert result.exit_code == 0
    assert "Already logged in to conf" in result.stderr
    result, _ = logged_in.login("--force", "-q")
    assert result.exit_code == 0
    assert result.stderr == ""  # -q
    after = logged_in.stored()
    assert before is not None and after is not None
    assert after.access_token != before.access_token


def test_login_refused_by_the_user_exits_1(cli: CLI) -> None:
    cli.browser(consent=False)
    result = cli.invoke("auth", "login")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: The authorization server refused the login")
    assert "access_denied" in result.stderr
    assert cli.stored() is None


def test_login_refuses_a_redirect_without_iss(cli: CLI) -> None:
    """RFC 9207: the IdP advertises the iss parameter, so a redirect without it is refused."""
    browser = cli.browser(tamper=lambda url: _with_param(url, "iss", None))
    result = cli.invoke("auth", "login", "--timeout", "30")
    browser.join()
    assert result.exit_code == 1
    assert "has no 'iss'" in result.stderr
    assert cli.stored() is None


def test_login_timeout_exits_1(cli: CLI) -> None:
    result = cli.invoke("auth", "login", "--no-browser", "--timeout", "1")
    assert result.exit_code == 1
    assert "No login redirect arrived" in result.stderr
    assert result.stdout.startswith("http://")  # the URL, for the user to open


def test_manual_login_with_the_full_redirect_url(cli: CLI) -> None:
    proc = cli.popen("auth", "login", "--manual", "--no-browser")
    callback = browser_login(read_url(proc))
    assert "iss=" in callback  # RFC 9207: checked by the exchange
    code, _, err = finish(proc, callback + "\n")
    assert code == 0, err
    assert "Logged in to conf as alice" in err
    assert cli.stored() is not None


def test_manual_login_with_a_percent_encoded_bare_code(cli: CLI) -> None:
    proc = cli.popen("auth", "login", "--manual", "--no-browser")
    callback = browser_login(read_url(proc))
    auth_code = parse_qs(urlsplit(callback).query)["code"][0]
    encoded = "".join(f"%{byte:02X}" for byte in auth_code.encode())  # every byte escaped
    code, _, err = finish(proc, encoded + "\n")
    assert code == 0, err
    assert cli.stored() is not None


def _with_param(url: str, name: str, value: str | None) -> str:
    """``url`` with the query parameter ``name`` replaced (removed when ``value`` is None)."""
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.pop(name)
    if value is not None:
        query[name] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("state", "forged-state", "state in the callback URL does not match"),
        ("iss", "https://evil.example", "another issuer"),
        ("iss", None, "has no 'iss'"),  # RFC 9207: advertised by the server, so required
    ],
)
def test_manual_login_refuses_a_tampered_redirect(
    cli: CLI, param: str, value: str | None, message: str
) -> None:
    proc = cli.popen("auth", "login", "--manual", "--no-browser")
    callback = _with_param(browser_login(read_url(proc)), param, value)
    code, _, err = finish(proc, callback + "\n")
    assert code == 1
    assert message in err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
    assert cli.stored() is None


def test_manual_login_with_nothing_pasted_exits_1(cli: CLI) -> None:
    result = cli.invoke("auth", "login", "--manual", "--no-browser", input="\n")
    assert result.exit_code == 1
    assert "Nothing was pasted" in result.stderr


# --------------------------------------------------------------------------- status


def test_status_table(logged_in: CLI) -> None:
    result = logged_in.invoke("auth", "status")
    assert result.exit_code == 0
    out = result.stdout
    for expected in (
        "conf",
        "pub",
        "alice",
        "openid",
        "valid, expires in",
        "not logged in",
        "file:",
    ):
        assert expected in out, out


def test_status_json_shape(logged_in: CLI) -> None:
    result = logged_in.invoke("auth", "status", "--json")
    assert result.exit_code == 0
    entries = json.loads(result.stdout)
    assert [e["provider"] for e in entries] == ["conf", "pub"]
    conf, pub = entries
    required = {"provider", "authenticated", "subject", "scopes", "expires_at", "expires_in",
                "refreshable", "storage"}  # fmt: skip
    assert required <= conf.keys() and required <= pub.keys()
    assert conf["authenticated"] is True and conf["subject"] == "alice"
    assert "openid" in conf["scopes"] and conf["refreshable"] is True
    assert 0 < conf["expires_in"] <= 3600 and conf["expires_at"].endswith("+00:00")
    assert conf["storage"].startswith("file:")
    assert pub["authenticated"] is False and pub["subject"] is None and pub["expires_in"] is None
    one = json.loads(logged_in.invoke("auth", "status", "pub", "--json").stdout)
    assert [e["provider"] for e in one] == ["pub"]


def test_status_says_expiring_soon(logged_in: CLI, idp: IdP) -> None:
    data = yaml.safe_load(logged_in.config.read_text())
    data["auth"]["status"] = {"expiring_soon_threshold": 86400}
    logged_in.config.write_text(yaml.safe_dump(data))
    entry = json.loads(logged_in.invoke("auth", "status", "--json").stdout)[0]
    assert entry["expiring_soon"] is True
    assert "expiring soon" in logged_in.invoke("auth", "status").stdout


# --------------------------------------------------------------------------- token


def test_token_in_every_format(logged_in: CLI) -> None:
    stored = logged_in.stored()
    assert stored is not None
    access = stored.access_token

    def out(*args: str) -> str:
        result = logged_in.invoke("auth", "token", *args)
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        return result.stdout

    assert out() == access + "\n"
    assert out("--format", "raw") == access + "\n"
    assert out("--header") == f"Authorization: Bearer {access}\n"
    assert out("--format", "header") == out("--header")
    as_json = json.loads(out("--json"))
    assert as_json["access_token"] == access and as_json["token_type"] == "Bearer"
    assert RFC3339_UTC.match(as_json["expires_at"]) and as_json["expires_in"] > 0
    # the same document, but ``expires_in`` counts down between the two commands
    same_format = json.loads(out("--format", "json"))
    assert 0 <= as_json["expires_in"] - same_format.pop("expires_in") <= 60
    assert same_format == {k: v for k, v in as_json.items() if k != "expires_in"}
    env = out("--format", "env")
    assert f"export KSTLIB_ACCESS_TOKEN={access}\n" in env
    kube = json.loads(out("--format", "kubectl"))
    assert kube["apiVersion"] == "client.authentication.k8s.io/v1"
    assert kube["kind"] == "ExecCredential"
    assert kube["status"]["token"] == logged_in.stored().id_token  # type: ignore[union-attr]
    assert RFC3339_UTC.match(kube["status"]["expirationTimestamp"])


def test_token_decode_of_an_opaque_token(logged_in: CLI) -> None:
    result = logged_in.invoke("auth", "token", "--decode")
    assert result.exit_code == 0
    assert "opaque" in result.stderr
    stored = logged_in.stored()
    assert stored is not None and stored.access_token not in result.output


def test_token_refresh_forces_a_new_token(logged_in: CLI, idp: IdP) -> None:
    before = logged_in.stored()
    assert before is not None
    idp.reset_stats()
    result = logged_in.invoke("auth", "token", "--refresh")
    assert result.exit_code == 0, result.output
    after = logged_in.stored()
    assert after is not None and after.access_token != before.access_token
    assert result.stdout == after.access_token + "\n"
    assert idp.stats().get("token:refresh_token:200") == 1


def test_token_when_not_logged_in_exits_1(cli: CLI) -> None:
    result = cli.invoke("auth", "token")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Not logged in to 'conf'" in result.stderr and "kstlib auth login conf" in result.stderr


def test_token_refreshes_a_stale_token_first(logged_in: CLI, idp: IdP) -> None:
    stored = logged_in.stored()
    assert stored is not None
    stored.expires_at = datetime.now(UTC) + timedelta(seconds=5)  # inside the refresh skew
    stored.issued_at = stored.expires_at - timedelta(hours=1)  # of a 1 h token (no clamping)
    get_token_storage_for_provider("conf").save("conf", stored)
    proc = logged_in.run("auth", "token")  # the real entry point: fast path declines, app refreshes
    assert proc.returncode == 0, proc.stderr
    fresh = logged_in.stored()
    assert fresh is not None and fresh.access_token != stored.access_token
    assert proc.stdout == fresh.access_token + "\n"


def test_token_with_a_refused_refresh_token_sends_it_once(logged_in: CLI, idp: IdP) -> None:
    """After invalid_grant the dead refresh token is marked in the stored token: later
    `auth token` runs (each a new process) never send it again; once the access token has
    expired, the error says to log in."""
    stored = logged_in.stored()
    assert stored is not None
    stored.refresh_token = "a-refresh-token-the-idp-refuses"
    stored.expires_at = datetime.now(UTC) + timedelta(seconds=30)  # inside the skew
    stored.issued_at = stored.expires_at - timedelta(hours=1)
    storage = get_token_storage_for_provider("conf")
    storage.save("conf", stored)
    idp.reset_stats()
    for _ in range(3):
        proc = logged_in.run("auth", "token")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == stored.access_token + "\n"
    assert idp.stats().get("token:refresh_token", 0) == 1
    marked = logged_in.stored()
    assert marked is not None
    entry = json.loads(logged_in.invoke("auth", "status", "conf", "--json").stdout)[0]
    assert entry["refreshable"] is False
    marked.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    storage.save("conf", marked)
    proc = logged_in.run("auth", "token")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "run 'kstlib auth login conf'" in proc.stderr
    assert idp.stats().get("token:refresh_token", 0) == 1


# ------------------------------------------------------------------ whoami, providers, preflight


def test_whoami(logged_in: CLI) -> None:
    table = logged_in.invoke("auth", "whoami")
    assert table.exit_code == 0 and "alice@example.test" in table.stdout
    for flag in ("--json", "--raw"):
        info = json.loads(logged_in.invoke("auth", "whoami", flag).stdout)
        assert info["sub"] == "alice"


def test_whoami_not_logged_in_exits_1(cli: CLI) -> None:
    assert cli.invoke("auth", "whoami").exit_code == 1


def test_providers_lists_and_masks_secrets(cli: CLI) -> None:
    plain = cli.invoke("auth", "providers")
    assert plain.exit_code == 0
    for expected in ("conf (default)", "pub", "oidc", "auto", cli.idp.issuer):
        assert expected in plain.stdout
    verbose = cli.invoke("auth", "providers", "-v")
    assert verbose.exit_code == 0
    assert "***" in verbose.stdout
    assert CONFIDENTIAL.client_secret is not None
    assert CONFIDENTIAL.client_secret not in verbose.output
    for setting in ("client_id", "redirect_uri", "scopes", "pkce", "discovery_ttl", "storage"):
        assert setting in verbose.stdout


def test_providers_with_an_invalid_provider_exits_2(cli: CLI, idp: IdP) -> None:
    cli.write({"conf": provider_settings(idp, CONFIDENTIAL), "bad": {"client_id": "x"}})
    result = cli.invoke("auth", "providers")
    assert result.exit_code == 2
    assert "invalid" in result.stdout and "conf" in result.stdout


def test_preflight_passes(cli: CLI) -> None:
    result = cli.invoke("auth", "preflight")
    assert result.exit_code == 0, result.output
    for expected in ("discovery", "jwks", "token_endpoint", "success", "ms", "is ready"):
        assert expected in result.stdout
    report = json.loads(cli.invoke("auth", "preflight", "--json").stdout)
    assert report["success"] is True


def test_preflight_fails_with_exit_1(cli: CLI, idp: IdP) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    cli.write({"conf": provider_settings(idp, CONFIDENTIAL, issuer=dead)})
    result = cli.invoke("auth", "preflight")
    assert result.exit_code == 1
    assert "failed" in result.stdout and "failure" in result.stdout


def test_check_is_wired_in(logged_in: CLI) -> None:
    result = logged_in.invoke("auth", "check")
    assert result.exit_code == 0, result.output
    assert "VALID" in result.stdout


# --------------------------------------------------------------------------- logout


def test_logout_revokes_and_removes_the_token(logged_in: CLI, idp: IdP) -> None:
    stored = logged_in.stored()
    assert stored is not None and stored.refresh_token and stored.id_token
    assert idp.introspect(stored.access_token)["active"] is True
    result = logged_in.invoke("auth", "logout")
    assert result.exit_code == 0, result.output
    assert "Revoked the tokens of conf" in result.stderr
    assert idp.introspect(stored.access_token)["active"] is False
    assert idp.introspect(stored.refresh_token)["active"] is False
    assert logged_in.stored() is None
    logout_url = result.stdout.strip()
    assert logout_url.startswith(idp.end_session_endpoint + "?")
    query = parse_qs(urlsplit(logout_url).query)
    assert query == {"client_id": [CONFIDENTIAL.client_id],
                     "post_logout_redirect_uri": [POST_LOGOUT_REDIRECT_URI]}  # fmt: skip
    assert stored.id_token not in result.output  # no id_token_hint in a printed URL


def test_logout_no_revoke_only_removes_the_local_token(logged_in: CLI, idp: IdP) -> None:
    stored = logged_in.stored()
    assert stored is not None
    result = logged_in.invoke("auth", "logout", "--no-revoke")
    assert result.exit_code == 0
    assert "Revoked" not in result.stderr
    assert logged_in.stored() is None
    assert idp.introspect(stored.access_token)["active"] is True


def test_logout_when_not_logged_in(cli: CLI) -> None:
    result = cli.invoke("auth", "logout")
    assert result.exit_code == 0
    assert "No token was stored for conf" in result.stderr


# --------------------------------------------------------------------------- secrets in output


def test_verbose_journey_leaks_no_secret(cli: CLI, idp: IdP) -> None:
    """-vvv (TRACE) on every command: no token, code, state or client secret in any output,
    except the access token printed by `token`, on its stdout, and the state inside the
    authorization URL shown to the user (#16 item 5: always shown, like `gh` or `az`)."""
    outputs: list[str] = []
    login, browser = cli.login("-q")
    outputs.append(login.output)
    login = cli.invoke("-vvv", "auth", "login", "--force")  # a second login, traced
    browser.join()  # the fake browser of cli.login is still installed: it answered this one too
    outputs.append(login.output)
    assert login.exit_code == 0, login.output
    assert "trace: " in login.stderr
    first = cli.stored()
    assert first is not None
    secrets = {first.access_token, first.refresh_token or "", first.id_token or ""}
    for args in (
        ("status",), ("status", "--json"), ("whoami",), ("providers", "-v"), ("preflight",),
        ("check",), ("token", "--decode"),
    ):  # fmt: skip
        result = cli.invoke("-vvv", "auth", *args)
        assert result.exit_code == 0, (args, result.output)
        outputs.append(result.output)
    refreshed = cli.invoke("-vvv", "auth", "token", "--refresh", "--format", "kubectl")
    assert refreshed.exit_code == 0
    outputs.append(refreshed.stderr)  # stdout is the token, by design
    second = cli.stored()
    assert second is not None
    secrets |= {second.access_token, second.refresh_token or "", second.id_token or ""}
    assert json.loads(refreshed.stdout)["status"]["token"] == second.id_token  # kubectl: ID token
    logout = cli.invoke("-vvv", "auth", "logout")
    assert logout.exit_code == 0
    outputs.append(logout.output)
    secrets |= browser.secrets()
    secrets.add(CONFIDENTIAL.client_secret or "")
    secrets.discard("")
    assert len(secrets) >= 8
    lines = "\n".join(outputs).splitlines()
    shown_urls = [line for line in lines if line.startswith(f"{idp.issuer}/auth?")]
    assert shown_urls  # the traced login showed its authorization URL
    for url in shown_urls:  # the URL the user opens carries its state, and nothing else secret
        query = parse_qs(urlsplit(url).query)
        assert set(query) <= {
            "client_id", "scope", "response_type", "redirect_uri", "state",
            "code_challenge", "code_challenge_method", "nonce", "prompt",
        }  # fmt: skip
        assert query["state"][0] in browser.secrets()
    everything = "\n".join(line for line in lines if line not in shown_urls)
    assert "trace: " in everything and "debug: " in everything
    for secret in secrets:
        assert secret not in everything, f"a secret leaked ({secret[:6]}...)"


def test_logout_open_sends_the_browser_to_the_logout_page(logged_in: CLI, idp: IdP) -> None:
    opened: list[str] = []

    def fake_open(url: str, *args: Any, **kwargs: Any) -> bool:
        opened.append(url)
        return True

    logged_in.monkeypatch.setattr(webbrowser, "open", fake_open)
    before = logged_in.stored()
    stored_id_token = before.id_token if before is not None else None
    result = logged_in.invoke("auth", "logout", "--open")
    assert result.exit_code == 0
    assert "Opened the identity provider's logout page" in result.stderr
    assert result.stdout == ""
    assert opened and opened[0].startswith(idp.end_session_endpoint + "?client_id=")
    # issue 13: the browser (only) gets the stored ID token as the hint
    assert parse_qs(urlsplit(opened[0]).query)["id_token_hint"] == [stored_id_token]
