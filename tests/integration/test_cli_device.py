"""``kstlib auth login --device`` end to end: the real console script, the real IdP.

A pipe for the plain case (address and code on stdout, no QR code, no spinner); a real
pseudo-terminal for the QR code and the spinner (and a narrow one for no QR code); SIGINT to
the child for Ctrl-C. The user's side is played over HTTP by :mod:`tests.device_flow`.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import webbrowser
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from kstlib.auth.config import get_token_storage_for_provider
from kstlib.auth.models import Token
from kstlib.cli._device import qr_code
from kstlib.cli.app import app, reset_logging
from tests.device_flow import DEVICE, DEVICE_SHORT, approve_device, deny_device
from tests.idp_support import CONFIDENTIAL, IdP, OidcClient

KSTLIB = str(Path(sys.executable).with_name("kstlib"))
URL = re.compile(r"(http://127\.0\.0\.1:\d+/device)\s")
CODE = re.compile(r"Code: ([A-Z0-9-]+)")
QR_BLOCKS = ("▀", "▄")
WAIT = 60.0


def _provider(idp: IdP, client: OidcClient, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "type": "oidc",
        "issuer": idp.issuer,
        "client_id": client.client_id,
        "scopes": ["openid", "profile", "email", "offline_access"],
    }
    if client.client_secret is not None:
        settings["client_secret"] = client.client_secret
    settings.update(extra)
    return settings


class Env:
    """A throw-away configuration and the environment of a ``kstlib`` child process."""

    def __init__(self, tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch) -> None:
        self.idp = idp
        self.config = tmp_path / "kstlib.conf.yml"
        providers = {
            "dev": _provider(idp, DEVICE),
            "short": _provider(idp, DEVICE_SHORT),
            "code": _provider(idp, CONFIDENTIAL, redirect_uri="http://127.0.0.1:0/callback"),
            "plain": {
                "type": "oauth2",
                "client_id": "app",
                "authorize_url": f"{idp.issuer}/auth",
                "token_url": f"{idp.issuer}/token",
            },
        }
        auth = {
            "token_storage": "file",
            "storage": {"file": {"directory": str(tmp_path / "tokens")}},
            "default_provider": "dev",
            "providers": providers,
        }
        self.config.write_text(yaml.safe_dump({"auth": auth}), encoding="utf-8")
        monkeypatch.setenv("KSTLIB_CONFIG", str(self.config))
        for name in ("COLUMNS", "LINES", "SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"):
            monkeypatch.delenv(name, raising=False)
        self.monkeypatch = monkeypatch

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["TERM"] = "xterm-256color"
        return env

    def stored(self, name: str = "dev") -> Token | None:
        return get_token_storage_for_provider(name).load(name)

    def invoke(self, *args: str) -> Result:
        try:
            return CliRunner().invoke(app, list(args), catch_exceptions=False)
        finally:
            reset_logging()


@pytest.fixture
def env(tmp_path: Path, idp: IdP, monkeypatch: pytest.MonkeyPatch) -> Env:
    return Env(tmp_path, idp, monkeypatch)


class Terminal:
    """``kstlib`` on a real pseudo-terminal of ``columns`` x ``rows``; its output collected."""

    def __init__(self, args: list[str], env: dict[str, str], *, columns: int, rows: int = 50):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.proc = subprocess.Popen(
            [KSTLIB, *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO once the child closed the terminal
                break
            if not chunk:
                break
            self._chunks.append(chunk)

    @property
    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace").replace("\r\n", "\n")

    def wait_for(self, pattern: re.Pattern[str] | str) -> re.Match[str] | None:
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            found = compiled.search(self.text)
            if found or self.proc.poll() is not None:
                return found or compiled.search(self.text)
            time.sleep(0.05)
        return None

    def finish(self) -> int:
        try:
            code = self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(10)
        os.close(self._master)
        return code


def _codes(text: str) -> tuple[str, str]:
    url, code = URL.search(text), CODE.search(text)
    assert url and code, text
    return url.group(1), code.group(1)


# --------------------------------------------------------------------------- a pipe


def test_plain_device_login_through_a_pipe(env: Env) -> None:
    proc = subprocess.Popen(
        [KSTLIB, "auth", "login", "--device", "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env.child_env(),
    )
    assert proc.stdout is not None
    url, code = proc.stdout.readline().strip(), proc.stdout.readline().strip()
    assert URL.match(url + "\n") and CODE.fullmatch(code), (url, code)
    approve_device(url, code.removeprefix("Code: "))
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert "Logged in to dev as alice" in err
    assert "open this address on any device" in err
    assert not any(block in out + err for block in QR_BLOCKS)  # no QR code on a pipe
    assert "left (Ctrl-C" not in err  # nor a spinner
    stored = env.stored()
    assert stored is not None and stored.id_token


def test_quiet_denied_device_login_exits_1_and_stores_nothing(env: Env) -> None:
    proc = subprocess.Popen(
        [KSTLIB, "auth", "login", "dev", "--device", "--no-browser", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env.child_env(),
    )
    assert proc.stdout is not None
    url, code = proc.stdout.readline().strip(), proc.stdout.readline().strip()
    assert URL.match(url + "\n") and CODE.fullmatch(code), (url, code)  # even with --quiet
    deny_device(url, code.removeprefix("Code: "))
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 1
    assert err.strip().splitlines() == [
        "error: The device login to 'dev' was denied (access_denied); nothing was stored"
    ]
    assert env.stored() is None


def test_expired_device_code_exits_1(env: Env) -> None:
    done = subprocess.run(
        [KSTLIB, "auth", "login", "short", "--device", "--no-browser"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=env.child_env(),
        check=False,
    )
    assert done.returncode == 1
    assert "expired before the login was approved" in done.stderr
    assert env.stored("short") is None


# --------------------------------------------------------------------------- a terminal


def test_on_a_terminal_a_qr_code_and_a_spinner(env: Env) -> None:
    terminal = Terminal(["auth", "login", "--device", "--no-browser"], env.child_env(), columns=120)
    assert terminal.wait_for(CODE), terminal.text
    assert terminal.wait_for(r"\d+:\d\d left \(Ctrl-C to cancel\)"), terminal.text
    url, code = _codes(terminal.text)
    expected = qr_code(f"{url}?user_code={code}", 120)  # the complete URI, as drawn
    assert expected is not None
    approve_device(url, code)
    assert terminal.finish() == 0, terminal.text
    text = terminal.text
    assert "Or scan this QR code" in text
    for line in expected.splitlines():
        assert line in text
    assert "Logged in to dev as alice" in text
    assert env.stored() is not None


def test_a_narrow_terminal_gets_no_qr_code_and_ctrl_c_stores_nothing(env: Env) -> None:
    terminal = Terminal(["auth", "login", "--device", "--no-browser"], env.child_env(), columns=30)
    assert terminal.wait_for(CODE), terminal.text
    assert terminal.wait_for(r"left"), terminal.text  # polling
    url, code = _codes(terminal.text)
    os.kill(terminal.proc.pid, signal.SIGINT)
    assert terminal.finish() == 130, terminal.text
    assert "interrupted" in terminal.text
    assert not any(block in terminal.text for block in QR_BLOCKS)
    approve_device(url, code)  # approved after the client gave up: still nothing stored
    assert env.stored() is None


# --------------------------------------------------------------------------- in process


def test_the_address_and_code_are_printed_even_when_a_browser_opens(env: Env) -> None:
    opened: list[str] = []

    def browser(url: str, *args: Any, **kwargs: Any) -> bool:
        opened.append(url)
        threading.Thread(target=approve_device, args=(url,), daemon=True).start()
        return True

    env.monkeypatch.setattr(webbrowser, "open", browser)
    result = env.invoke("auth", "login", "--device")
    assert result.exit_code == 0, result.output
    url, code = _codes(result.stdout)
    assert opened == [f"{url}?user_code={code}"]
    assert env.stored() is not None


def test_a_provider_without_a_device_endpoint_exits_2_naming_the_setting(env: Env) -> None:
    result = env.invoke("auth", "login", "plain", "--device")
    assert result.exit_code == 2
    assert "device_authorization_endpoint" in result.stderr


def test_device_and_manual_do_not_combine(env: Env) -> None:
    result = env.invoke("auth", "login", "--device", "--manual")
    assert result.exit_code == 2
    assert "--device and --manual" in result.stderr


def test_login_suggests_device_over_ssh_without_a_display(env: Env) -> None:
    env.monkeypatch.setenv("SSH_CONNECTION", "192.0.2.1 50000 192.0.2.2 22")
    env.monkeypatch.delenv("DISPLAY", raising=False)
    env.monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = env.invoke("auth", "login", "code", "--no-browser", "--timeout", "1")
    assert result.exit_code == 1
    assert "SSH session without a display" in result.stderr
    assert "kstlib auth login --device" in result.stderr


def test_login_timeout_suggests_device(env: Env) -> None:
    env.monkeypatch.setenv("DISPLAY", ":0")
    result = env.invoke("auth", "login", "code", "--no-browser", "--timeout", "1")
    assert result.exit_code == 1
    assert "SSH session" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: No login redirect arrived")
    assert "kstlib auth login --device" in last
