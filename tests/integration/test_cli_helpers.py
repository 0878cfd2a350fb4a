"""kubectl and git credential helpers: the real console script, the real IdP, real kubectl/git.

``kstlib auth token --format kubectl`` (an ExecCredential with the ID token, the
version kubectl asks for, a login on demand that writes only to stderr) is run by
the real ``kubectl`` against a small local API server that records the bearer it
receives; ``kstlib auth git-credential`` is run by the real ``git credential fill``
in a throw-away HOME and global git config.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kstlib.auth.config import get_token_storage_for_provider
from kstlib.cli._fast import decode_jwt_unverified
from tests import loopback_http
from tests.idp_support import CONFIDENTIAL, IdP, browser_login
from tests.integration.test_cli import CLI, KSTLIB, finish
from tests.tls_support import JSONHandler, https_server, self_signed

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


def _exec_info(*, interactive: bool, api_version: str = V1) -> str:
    return json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": interactive}}
    )


def _run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KSTLIB, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        input=stdin,
    )


@pytest.fixture
def cli(tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch) -> CLI:
    monkeypatch.delenv("KUBERNETES_EXEC_INFO", raising=False)
    return CLI(tmp_path, idp, monkeypatch)


@pytest.fixture
def logged_in(cli: CLI) -> CLI:
    result, _ = cli.login()
    assert result.exit_code == 0, result.output
    return cli


# --------------------------------------------------------------------------- kubectl


def test_kubectl_credential_carries_the_id_token_for_the_client(logged_in: CLI) -> None:
    stored = logged_in.stored()
    assert stored is not None and stored.id_token
    env = {**os.environ, "KUBERNETES_EXEC_INFO": _exec_info(interactive=False)}
    proc = _run("auth", "token", "--format", "kubectl", env=env)
    assert proc.returncode == 0, proc.stderr
    credential = json.loads(proc.stdout)
    assert credential["apiVersion"] == V1 and credential["kind"] == "ExecCredential"
    assert credential["status"]["token"] == stored.id_token
    decoded = decode_jwt_unverified(stored.id_token)
    assert decoded is not None
    claims = decoded[1]
    assert claims["aud"] in (CONFIDENTIAL.client_id, [CONFIDENTIAL.client_id])
    expected = datetime.fromtimestamp(claims["exp"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert credential["status"]["expirationTimestamp"] == expected

    access = _run("auth", "token", "--format", "kubectl", "--access-token", env=env)
    assert access.returncode == 0, access.stderr
    assert json.loads(access.stdout)["status"]["token"] == stored.access_token

    beta = {**env, "KUBERNETES_EXEC_INFO": _exec_info(interactive=False, api_version=V1BETA1)}
    proc = _run("auth", "token", "--format", "kubectl", env=beta)
    assert json.loads(proc.stdout)["apiVersion"] == V1BETA1


def test_access_token_flag_needs_the_kubectl_format(logged_in: CLI) -> None:
    proc = _run("auth", "token", "--access-token")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "--access-token" in proc.stderr and "kubectl" in proc.stderr


def test_a_stale_id_token_is_renewed_by_a_refresh(logged_in: CLI) -> None:
    """The access token is fresh but the stored ID token expired: one refresh, a new one."""
    stored = logged_in.stored()
    assert stored is not None and stored.id_token
    header, payload, signature = stored.id_token.split(".")
    stale = decode_jwt_unverified(stored.id_token)
    assert stale is not None
    claims = {**stale[1], "exp": int(datetime.now(UTC).timestamp()) - 10}
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    stored.id_token = f"{header}.{forged_payload}.{signature}"
    get_token_storage_for_provider("conf").save("conf", stored)
    env = {**os.environ, "KUBERNETES_EXEC_INFO": _exec_info(interactive=False)}
    proc = _run("auth", "token", "--format", "kubectl", env=env)
    assert proc.returncode == 0, proc.stderr
    renewed = logged_in.stored()
    assert renewed is not None and renewed.refresh_token != stored.refresh_token
    assert json.loads(proc.stdout)["status"]["token"] == renewed.id_token != stored.id_token


def test_not_logged_in_and_not_interactive_fails_without_output(cli: CLI) -> None:
    env = {**os.environ, "KUBERNETES_EXEC_INFO": _exec_info(interactive=False)}
    proc = _run("auth", "token", "--format", "kubectl", env=env)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "Not logged in to 'conf'" in proc.stderr


def _fake_graphical_browser(directory: Path) -> tuple[Path, Path]:
    marker = directory / "browser.opened"
    script = directory / "my-browser"
    script.write_text(f'#!/bin/sh\necho "$1" > {marker}\n', encoding="utf-8")
    script.chmod(0o700)
    return script, marker


def _read_url_from_stderr(proc: subprocess.Popen[str]) -> tuple[str, list[str]]:
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("http"):
            return line.strip(), seen
    raise AssertionError(f"no URL on stderr: {seen}")


def test_interactive_kubectl_logs_in_on_demand_on_stderr_only(cli: CLI, tmp_path: Path) -> None:
    """Items 1 and 5: a browser opens, the URL is printed anyway, stdout is the credential."""
    script, marker = _fake_graphical_browser(tmp_path)
    env = {**os.environ, "KUBERNETES_EXEC_INFO": _exec_info(interactive=True)}
    env["BROWSER"] = str(script)
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(
        [*KSTLIB, "auth", "token", "--format", "kubectl"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url, before = _read_url_from_stderr(proc)
    assert any("Opened your browser" in line for line in before), before
    assert loopback_http.get(browser_login(url), timeout=10).status_code == 200
    code, out, err = finish(proc)
    assert code == 0, err
    assert marker.read_text(encoding="utf-8").strip() == url  # the browser was opened too
    stored = cli.stored()
    assert stored is not None
    assert json.loads(out)["status"]["token"] == stored.id_token  # stdout: the credential only


class _APIServer(JSONHandler):
    """A stand-in Kubernetes API server: answers /version and records the bearer."""

    seen: list[str | None]

    def do_GET(self) -> None:
        bearer = self.headers.get("Authorization")
        self.seen.append(bearer)
        if bearer is None:
            body = {"kind": "Status", "code": 401, "reason": "Unauthorized"}
            self.send_json(401, json.dumps(body).encode())
        else:
            body = {"major": "1", "minor": "30", "gitVersion": "v1.30.0"}
            self.send_json(200, json.dumps(body).encode())


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str | None]]]:
    """A TLS stand-in API server (kubectl runs exec plugins for TLS clusters only)."""
    seen: list[str | None] = []
    cert, key = self_signed(tmp_path)
    handler = type("Handler", (_APIServer,), {"seen": seen})
    with https_server(handler, cert, key) as url:
        yield url, cert, seen


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: corp
    cluster:
      server: {server}
      certificate-authority: {ca}
users:
  - name: corp-oidc
    user:
      exec:
        apiVersion: client.authentication.k8s.io/v1
        command: {kstlib}
        args: [auth, token, conf, --format, kubectl]
        interactiveMode: IfAvailable
        provideClusterInfo: false
contexts:
  - name: corp
    context: {{cluster: corp, user: corp-oidc}}
current-context: corp
"""


def test_real_kubectl_sends_the_id_token(
    logged_in: CLI, tmp_path: Path, api_server: tuple[str, Path, list[str | None]]
) -> None:
    """The kubeconfig of docs/cli.md, used by the real kubectl."""
    server, ca, seen = api_server
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        KUBECONFIG.format(server=server, ca=ca, kstlib=KSTLIB[0]), encoding="utf-8"
    )
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
    proc = subprocess.run(
        ["kubectl", "get", "--raw", "/version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["gitVersion"] == "v1.30.0"
    stored = logged_in.stored()
    assert stored is not None
    assert f"Bearer {stored.id_token}" in seen


# --------------------------------------------------------------------------- git


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    """A throw-away HOME and global git config; no system config, no terminal prompt."""
    home = tmp_path / "git-home"
    home.mkdir()
    return {
        **os.environ,
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
    }


def _git(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        input=stdin,
    )


def _helper(env: dict[str, str], scope: str, *options: str) -> None:
    command = " ".join(["!" + KSTLIB[0], "auth", "git-credential", "conf", *options])
    proc = _git(env, "config", "--global", f"credential.{scope}.helper", command)
    assert proc.returncode == 0, proc.stderr


def _fill(env: dict[str, str], url: str) -> subprocess.CompletedProcess[str]:
    return _git(env, "credential", "fill", stdin=f"url={url}\n\n")


def _answer(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_git_credential_fill_gets_the_access_token(logged_in: CLI, git_env: dict[str, str]) -> None:
    _helper(git_env, "https://git.example.test")
    proc = _fill(git_env, "https://git.example.test/group/repo.git")
    assert proc.returncode == 0, proc.stderr
    stored = logged_in.stored()
    assert stored is not None and stored.expires_at is not None
    answer = _answer(proc.stdout)
    assert answer["username"] == "oauth2"
    assert answer["password"] == stored.access_token
    assert answer["host"] == "git.example.test" and answer["protocol"] == "https"


def test_git_credential_username_and_host_options(logged_in: CLI, git_env: dict[str, str]) -> None:
    _helper(git_env, "https://git.example.test", "--username", "x-token", "--host", "other.test")
    proc = _fill(git_env, "https://git.example.test/repo.git")
    assert proc.returncode != 0  # not our host: no answer, git has nothing to fill in
    assert "oauth2" not in proc.stdout and "password=" not in proc.stdout
    _helper(git_env, "https://other.test", "--username", "x-token", "--host", "other.test")
    proc = _fill(git_env, "https://other.test/repo.git")
    assert proc.returncode == 0, proc.stderr
    assert _answer(proc.stdout)["username"] == "x-token"


def test_git_credential_never_answers_plain_http(logged_in: CLI, git_env: dict[str, str]) -> None:
    _helper(git_env, "http://git.example.test")
    proc = _fill(git_env, "http://git.example.test/repo.git")
    stored = logged_in.stored()
    assert stored is not None
    assert stored.access_token not in proc.stdout + proc.stderr


def test_git_credential_not_logged_in(cli: CLI, git_env: dict[str, str]) -> None:
    _helper(git_env, "https://git.example.test")
    proc = _fill(git_env, "https://git.example.test/repo.git")
    assert proc.returncode != 0
    assert "password=" not in proc.stdout
    direct = _run(
        "auth", "git-credential", "conf", "get", stdin="protocol=https\nhost=git.example.test\n\n"
    )
    assert direct.returncode == 1 and direct.stdout == ""
    assert "Not logged in to 'conf'" in direct.stderr


def test_git_credential_store_and_erase_keep_the_stored_token(
    logged_in: CLI, git_env: dict[str, str]
) -> None:
    before = logged_in.stored()
    assert before is not None
    _helper(git_env, "https://git.example.test")
    request = "protocol=https\nhost=git.example.test\nusername=oauth2\n"
    request += f"password={before.access_token}\n\n"
    for action in ("approve", "reject"):  # git runs the helper's store, then erase
        proc = _git(git_env, "credential", action, stdin=request)
        assert proc.returncode == 0, proc.stderr
    assert logged_in.stored() == before
    proc = _fill(git_env, "https://git.example.test/repo.git")
    assert _answer(proc.stdout)["password"] == before.access_token


# --------------------------------------------------------------------------- the login URL


@pytest.mark.parametrize("name", ["w3m", "lynx", "links", "elinks", "www-browser"])
def test_login_never_starts_a_console_browser_found_on_path(
    cli: CLI, tmp_path: Path, name: str
) -> None:
    """Item 5: on a server (no display) webbrowser picks a text browser from PATH; the login
    does not start it and prints the URL (alone on stdout) for the user to open elsewhere."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "started"
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\necho "$1" > {marker}\n', encoding="utf-8")
    script.chmod(0o700)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for variable in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(variable, None)
    proc = subprocess.Popen(
        [*KSTLIB, "auth", "login", "pub", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith(cli.idp.issuer)
    assert loopback_http.get(browser_login(url), timeout=10).status_code == 200
    code, _, err = finish(proc)
    assert code == 0, err
    assert "Open this URL in a browser" in err
    assert not marker.exists()


def test_login_prints_the_url_even_when_a_browser_opened(cli: CLI, tmp_path: Path) -> None:
    script, marker = _fake_graphical_browser(tmp_path)
    env = {**os.environ, "BROWSER": str(script)}
    proc = subprocess.Popen(
        [*KSTLIB, "auth", "login", "pub", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url, before = _read_url_from_stderr(proc)
    assert any("Opened your browser" in line for line in before)
    assert loopback_http.get(browser_login(url), timeout=10).status_code == 200
    code, out, err = finish(proc)
    assert code == 0, err
    assert out == ""  # stdout stays clean: the URL went to stderr
    assert marker.read_text(encoding="utf-8").strip() == url


def test_without_exec_info_a_terminal_on_stdin_means_interactive(cli: CLI, tmp_path: Path) -> None:
    """Run by hand (no KUBERNETES_EXEC_INFO) from a real pseudo-terminal: log in on demand;
    from a pipe: fail without a login (nobody could finish it)."""
    import pty

    piped = _run("auth", "token", "--format", "kubectl", stdin="")
    assert piped.returncode == 1 and piped.stdout == ""
    assert "Not logged in to 'conf'" in piped.stderr

    script, _ = _fake_graphical_browser(tmp_path)
    env = {**os.environ, "BROWSER": str(script)}
    env.pop("KUBERNETES_EXEC_INFO", None)
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*KSTLIB, "auth", "token", "--format", "kubectl"],
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        os.close(follower)
        url, _ = _read_url_from_stderr(proc)
        assert loopback_http.get(browser_login(url), timeout=10).status_code == 200
        code, out, err = finish(proc)
    finally:
        os.close(leader)
    assert code == 0, err
    stored = cli.stored()
    assert stored is not None
    assert json.loads(out)["status"]["token"] == stored.id_token


def test_git_credential_refreshes_a_stale_token_once(
    logged_in: CLI, git_env: dict[str, str], idp: IdP
) -> None:
    """A token inside the refresh skew: the full command line renews it (single-flight
    through provider.acquire) and git gets the new one."""
    from tests.integration.test_session import stale

    before = logged_in.stored()
    assert before is not None
    get_token_storage_for_provider("conf").save("conf", stale(before))
    idp.reset_stats()
    _helper(git_env, "https://git.example.test")
    proc = _fill(git_env, "https://git.example.test/repo.git")
    assert proc.returncode == 0, proc.stderr
    after = logged_in.stored()
    assert after is not None and after.access_token != before.access_token
    assert _answer(proc.stdout)["password"] == after.access_token
    assert idp.stats().get("token:refresh_token", 0) == 1
