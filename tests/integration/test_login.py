"""``provider.login`` / ``alogin`` / ``logout_url``: the interactive login as a library call.

Real IdP, real loopback server; the user's browser is played by ``browser_login`` (the
IdP's login and consent forms) and a real HTTP GET of the redirect.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from kstlib.auth.config import get_provider
from kstlib.auth.errors import CallbackServerError, TokenExchangeError
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.token import MemoryTokenStorage
from tests import loopback_http
from tests.flows import make_oidc
from tests.idp_support import CONFIDENTIAL, POST_LOGOUT_REDIRECT_URI, IdP, browser_login

ANY_PORT = "http://127.0.0.1:0/callback"


class Browser:
    """Plays the user once the login hands over its URL: logs in, follows the redirect."""

    def __init__(self) -> None:
        self.urls: list[tuple[str, bool]] = []
        self.page: httpx.Response | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def on_url(self, url: str, opened: bool) -> None:
        self.urls.append((url, opened))
        self.thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.thread.start()

    def _run(self, url: str) -> None:
        try:
            callback = browser_login(url)
            self.page = loopback_http.get(callback, timeout=60)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self) -> httpx.Response:
        assert self.thread is not None
        self.thread.join(60)
        if self.error is not None:
            raise self.error
        assert self.page is not None
        return self.page


def test_login_stores_the_token_and_the_page_says_complete(idp: IdP) -> None:
    storage = MemoryTokenStorage()
    provider = make_oidc(idp, redirect_uri=ANY_PORT, storage=storage)
    browser = Browser()
    with provider:
        token = provider.login(open_browser=False, timeout=30, on_url=browser.on_url)
    page = browser.join()
    assert page.status_code == 200 and "Login complete" in page.text
    assert token.id_token and storage.load("test") == token
    [(url, opened)] = browser.urls
    assert opened is False
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    assert not query["redirect_uri"][0].startswith("http://127.0.0.1:0/")


def test_a_failed_exchange_shows_an_error_page_not_login_complete(idp: IdP) -> None:
    provider = make_oidc(idp, redirect_uri=ANY_PORT, client_secret="not-the-secret")
    browser = Browser()
    with provider, pytest.raises(TokenExchangeError):
        provider.login(open_browser=False, timeout=30, on_url=browser.on_url)
    page = browser.join()
    assert page.status_code == 500
    assert "Login failed" in page.text and "Login complete" not in page.text
    assert provider.token_storage.load("test") is None


def test_login_times_out_with_a_reason(idp: IdP) -> None:
    provider = make_oidc(idp, redirect_uri=ANY_PORT)
    with provider, pytest.raises(CallbackServerError) as info:
        provider.login(open_browser=False, timeout=0.5)
    assert info.value.reason == "timeout"


def test_alogin_leaves_the_event_loop_free(idp: IdP) -> None:
    provider = make_oidc(idp, redirect_uri=ANY_PORT)
    browser = Browser()

    async def main() -> tuple[Any, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        try:
            token = await provider.alogin(open_browser=False, timeout=30, on_url=browser.on_url)
        finally:
            done.set()
            await task
        return token, ticks

    with provider:
        token, ticks = asyncio.run(main())
    assert browser.join().status_code == 200
    assert token.access_token and ticks > 1


def test_cancelling_alogin_stops_the_loopback_server(idp: IdP) -> None:
    provider = make_oidc(idp, redirect_uri=ANY_PORT)
    ports: list[int] = []

    def remember(url: str, opened: bool) -> None:
        redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
        ports.append(urlsplit(redirect).port or 0)

    async def main() -> None:
        task = asyncio.create_task(
            provider.alogin(open_browser=False, timeout=300, on_url=remember)
        )
        while not ports:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with provider:
        asyncio.run(main())
    # Its socket is closed: this process listens on that port no more. (A connection attempt
    # would prove nothing: another test's server may get the same port number right away.)
    assert ports[0] not in _listening_ports_of_this_process()


def _listening_ports_of_this_process() -> set[int]:
    """TCP ports on which a socket of this process listens (Linux: /proc/net/tcp{,6})."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            next(lines)  # the header
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN, inode ours
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_listener_check_sees_a_listening_socket() -> None:
    """The check above is not blind: a socket listening here is found, then gone once closed."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert port in _listening_ports_of_this_process()
    assert port not in _listening_ports_of_this_process()


def test_login_takes_its_redirect_from_the_callback_server_settings(idp: IdP) -> None:
    """A provider without redirect_uri: auth.callback_server's host and port are used."""
    settings: dict[str, Any] = {
        "type": "oidc",
        "issuer": idp.issuer,
        "client_id": CONFIDENTIAL.client_id,
        "client_secret": CONFIDENTIAL.client_secret,
        "token_endpoint_auth_method": CONFIDENTIAL.token_endpoint_auth_method,
        "scopes": ["openid"],
    }
    config = {
        "auth": {
            "token_storage": "memory",
            "callback_server": {"host": "127.0.0.1", "port": 0, "timeout": 30},
            "providers": {"corp": settings},
        }
    }
    provider = get_provider("corp", config=config)
    assert isinstance(provider, OAuth2Provider)
    browser = Browser()
    with provider:
        provider.login(open_browser=False, on_url=browser.on_url)
    browser.join()
    redirect = parse_qs(urlsplit(browser.urls[0][0]).query)["redirect_uri"][0]
    assert redirect.startswith("http://127.0.0.1:") and urlsplit(redirect).port != 8400


def test_logout_url_hints_the_stored_id_token_by_default(idp: IdP) -> None:
    provider = make_oidc(
        idp, redirect_uri=ANY_PORT, post_logout_redirect_uri=POST_LOGOUT_REDIRECT_URI
    )
    browser = Browser()
    with provider:
        token = provider.login(open_browser=False, timeout=30, on_url=browser.on_url)
        browser.join()
        url = provider.logout_url(state="s-1")
        other = provider.logout_url(id_token_hint="explicit", post_logout_redirect_uri="x:/y")
        no_hint = provider.logout_url(id_token_hint="")
        assert asyncio.run(provider.alogout_url(state="s-1")) == provider.logout_url(state="s-1")
    assert url is not None and url.startswith(idp.end_session_endpoint + "?")
    query = parse_qs(urlsplit(url).query)
    assert query == {
        "client_id": [CONFIDENTIAL.client_id],
        "id_token_hint": [token.id_token],
        "post_logout_redirect_uri": [POST_LOGOUT_REDIRECT_URI],
        "state": ["s-1"],
    }
    assert other is not None
    other_query = parse_qs(urlsplit(other).query)
    assert other_query["id_token_hint"] == ["explicit"]
    assert other_query["post_logout_redirect_uri"] == ["x:/y"]
    assert no_hint is not None and "id_token_hint" not in no_hint
    page = loopback_http.get(url, timeout=10)  # the IdP accepts the hint: its logout confirmation
    assert page.status_code == 200


def test_logout_url_is_none_without_an_end_session_endpoint() -> None:
    from kstlib.auth.config import AuthProviderConfig

    config = AuthProviderConfig(
        client_id="app",
        authorize_url="https://idp.example/authorize",
        token_url="https://idp.example/token",
    )
    provider = OAuth2Provider("plain", config, MemoryTokenStorage())
    assert provider.logout_url() is None


# --------------------------------------------------------------------------- console browsers

_OPEN = textwrap.dedent(
    """
    import sys
    from kstlib.auth.callback import open_in_browser
    print(open_in_browser("http://127.0.0.1:9/login"))
    """
)


def _fake_browser(directory: Path, name: str) -> tuple[Path, Path]:
    marker = directory / f"{name}.opened"
    script = directory / name
    script.write_text(f'#!/bin/sh\necho "$1" > {marker}\n', encoding="utf-8")
    script.chmod(0o700)
    return script, marker


@pytest.mark.parametrize("name", ["w3m", "lynx", "links", "www-browser"])
def test_a_console_browser_is_never_started(tmp_path: Path, name: str) -> None:
    script, marker = _fake_browser(tmp_path, name)
    env = {**os.environ, "BROWSER": str(script)}
    env.pop("DISPLAY", None)
    out = subprocess.run(
        [sys.executable, "-c", _OPEN], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    assert not marker.exists()


def test_a_graphical_browser_is_started(tmp_path: Path) -> None:
    script, marker = _fake_browser(tmp_path, "my-browser")
    env = {**os.environ, "BROWSER": str(script)}
    out = subprocess.run(
        [sys.executable, "-c", _OPEN], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "True"
    assert marker.read_text(encoding="utf-8").strip() == "http://127.0.0.1:9/login"


def test_a_browser_command_that_returns_only_at_exit_does_not_stall_the_login(
    idp: IdP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some browser commands return when the browser exits; the login must not wait for it."""
    import webbrowser

    pages: list[httpx.Response] = []

    def blocking_open(url: str, *args: Any, **kwargs: Any) -> bool:
        pages.append(loopback_http.get(browser_login(url), timeout=60))  # the user, then the page
        return True

    monkeypatch.setattr(webbrowser, "open", blocking_open)
    provider = make_oidc(idp, redirect_uri=ANY_PORT)
    shown: list[bool] = []
    with provider:
        token = provider.login(timeout=30, on_url=lambda url, opened: shown.append(opened))
    assert token.access_token and shown == [True]
    for _ in range(200):  # the browser thread reads the page just after the login returned
        if pages:
            break
        time.sleep(0.05)
    assert pages[0].status_code == 200 and "Login complete" in pages[0].text
