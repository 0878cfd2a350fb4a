"""The loopback login of the command line under attack, end to end (real IdP, real CLI).

tests/unit/test_callback*.py cover the callback server request by request. This adds the
whole ``kstlib auth login`` flow: while the CLI waits for the browser, hostile requests
hit its callback server (a forged state with an attacker's code, another path, an error
meant to abort the login, a duplicated parameter, a foreign Host header, a non-UTF-8
query). None may complete or abort the login; the real redirect then completes it, only
the real code is ever sent to the token endpoint, and a replay of the real redirect
afterwards changes nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from kstlib.auth._jose import decode_jws
from kstlib.auth.token import FileTokenStorage
from tests import loopback_http
from tests.idp_support import (
    CONFIDENTIAL_CLIENT_ID,
    CONFIDENTIAL_CLIENT_SECRET,
    SCOPES,
    IdP,
    browser_login,
)

KSTLIB = [sys.executable, "-c", "from kstlib.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_get(port: int, target: bytes, host: bytes) -> int:
    """Send one raw GET (bytes as given) and return the status code (0: no answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        head = sock.recv(1024)
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def test_hostile_requests_during_a_cli_login_neither_complete_nor_abort_it(
    idp: IdP, tmp_path: Path
) -> None:
    port = free_port()
    token_dir = tmp_path / "tokens"
    (tmp_path / "kstlib.conf.yml").write_text(
        "auth:\n"
        "  token_storage: file\n"
        f"  storage: {{file: {{directory: {token_dir}}}}}\n"
        "  providers:\n"
        "    corp:\n"
        f"      issuer: {idp.issuer}\n"
        f"      client_id: {CONFIDENTIAL_CLIENT_ID}\n"
        "      client_secret: env://KST_CALLBACK_SECRET\n"
        "      token_endpoint_auth_method: client_secret_basic\n"
        f"      redirect_uri: http://127.0.0.1:{port}/callback\n"
        f"      scopes: [{', '.join(SCOPES)}]\n"
    )
    env = {
        **os.environ,
        "KST_CALLBACK_SECRET": CONFIDENTIAL_CLIENT_SECRET,
        "KSTLIB_CONFIG": str(tmp_path / "kstlib.conf.yml"),
    }
    idp.reset_stats()
    with open(tmp_path / "stderr.log", "w+") as err:
        proc = subprocess.Popen(
            [*KSTLIB, "auth", "login", "--no-browser", "--timeout", "60", "corp"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith(idp.issuer), url
            state = parse_qs(urlsplit(url).query)["state"][0]
            base = f"http://127.0.0.1:{port}"
            with loopback_http.client(timeout=5) as http:
                attacks = {
                    "forged state with attacker code": http.get(
                        f"{base}/callback", params={"code": "attacker-code", "state": "forged"}
                    ).status_code,
                    "no state": http.get(
                        f"{base}/callback", params={"code": "attacker-code"}
                    ).status_code,
                    "other path, real state": http.get(
                        f"{base}/evil/callback", params={"code": "attacker-code", "state": state}
                    ).status_code,
                    "error to abort, forged state": http.get(
                        f"{base}/callback", params={"error": "access_denied", "state": "forged"}
                    ).status_code,
                    "duplicated code": http.get(
                        f"{base}/callback?code=attacker-code&code=x&state={state}"
                    ).status_code,
                    "foreign Host": http.get(
                        f"{base}/callback",
                        params={"code": "attacker-code", "state": state},
                        headers={"Host": "evil.example"},
                    ).status_code,
                }
            attacks["non-UTF-8 query"] = raw_get(
                port, b"/callback?code=%ff%fe&state=" + state.encode(), f"127.0.0.1:{port}".encode()
            )
            assert proc.poll() is None, "the login ended on a hostile request"
            assert all(status in (400, 404) for status in attacks.values()), attacks
            callback = browser_login(url)
            with loopback_http.client(timeout=5) as http:
                assert http.get(callback).status_code == 200
            assert proc.wait(timeout=60) == 0, (tmp_path / "stderr.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    stats = idp.stats()
    assert stats.get("token:authorization_code", 0) == 1  # only the real code was exchanged
    token = FileTokenStorage(token_dir).load("corp")
    assert token is not None and token.id_token is not None
    assert decode_jws(token.id_token).payload["sub"] == "alice"
    # the redirect replayed after the login: the server is gone, nothing changes
    try:
        loopback_http.get(callback, timeout=2)
    except httpx.TransportError:
        pass
    assert FileTokenStorage(token_dir).load("corp") == token
