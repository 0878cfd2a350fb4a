"""One verifying SSL context per CA source and process (kstlib.auth._http.shared_ssl_context).

Loading a CA bundle costs 25-40 ms of CPU; httpx pays it for every client it builds. The
clients of providers and sessions share one context per source instead. Sharing must not
weaken verification: against a real HTTPS server on 127.0.0.1 (a self-signed certificate),
a client trusting that certificate connects, one trusting certifi's bundle is refused, a
rotated bundle file is loaded again, and ``SSL_CERT_FILE`` is honoured as httpx does.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kstlib.auth import AuthSession
from kstlib.auth._http import build_http_client, shared_ssl_context, tls_verify
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.models import Token
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.token import MemoryTokenStorage
from tests.tls_support import JSONHandler, https_server, self_signed


class _Hello(JSONHandler):
    def do_GET(self) -> None:
        self.send_json(200, b'{"hello": "tls"}')


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    with https_server(_Hello, cert, key) as url:
        yield url, cert


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CA sources loaded from now on (the real ``ssl.create_default_context`` runs)."""
    seen: list[str] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        seen.append(str(kwargs.get("cafile") or kwargs.get("capath")))
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return seen


def _copy(source: Path, target: Path) -> str:
    target.write_bytes(source.read_bytes())
    return str(target)


def test_clients_of_one_bundle_share_one_context_and_verify(
    server: tuple[str, Path], tmp_path: Path, loads: list[str]
) -> None:
    url, cert = server
    bundle = _copy(cert, tmp_path / "ca.pem")
    for _ in range(5):
        with build_http_client(ssl_ca_bundle=bundle) as client:
            assert client.get(url).json() == {"hello": "tls"}
    assert loads == [bundle]  # loaded once for five clients
    assert tls_verify(True, bundle) is shared_ssl_context(bundle)


def test_the_default_source_still_refuses_an_unknown_certificate(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    url, _ = server
    for _ in range(2):  # the second client gets the shared context: it refuses as well
        with build_http_client() as client, pytest.raises(httpx.ConnectError) as caught:
            client.get(url)
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    context = shared_ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_rotated_bundle_is_loaded_again(
    server: tuple[str, Path], tmp_path: Path, loads: list[str]
) -> None:
    url, cert = server
    other, _ = self_signed(tmp_path / "other", name="another CA")
    bundle = tmp_path / "ca.pem"
    _copy(other, bundle)
    with build_http_client(ssl_ca_bundle=str(bundle)) as client, pytest.raises(httpx.ConnectError):
        client.get(url)
    before = shared_ssl_context(str(bundle))
    replacement = _copy(cert, tmp_path / "ca.pem.new")
    os.replace(replacement, bundle)  # how a CA bundle is rotated: a new file in its place
    with build_http_client(ssl_ca_bundle=str(bundle)) as client:
        assert client.get(url).status_code == 200
    assert shared_ssl_context(str(bundle)) is not before
    assert loads == [str(bundle), str(bundle)]


def test_ssl_cert_file_is_honoured_as_httpx_does(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, cert = server
    monkeypatch.setenv("SSL_CERT_FILE", _copy(cert, tmp_path / "env-ca.pem"))
    with build_http_client() as client:
        assert client.get(url).status_code == 200
    with httpx.Client() as plain:  # httpx's own verify=True agrees
        assert plain.get(url).status_code == 200


def test_verification_off_is_not_a_shared_context() -> None:
    assert tls_verify(False, None) is False
    assert tls_verify(False, "/no/such/bundle.pem") is False


def test_a_missing_bundle_fails_when_the_client_is_built(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        build_http_client(ssl_ca_bundle=str(tmp_path / "missing.pem"))


def test_providers_and_sessions_load_the_bundle_once(
    server: tuple[str, Path], tmp_path: Path, loads: list[str]
) -> None:
    url, cert = server
    bundle = _copy(cert, tmp_path / "ca.pem")
    config = AuthProviderConfig(
        client_id="tls",
        authorize_url="https://127.0.0.1:1/authorize",
        token_url="https://127.0.0.1:1/token",
        ssl_ca_bundle=bundle,
    )
    for index in range(3):
        provider = OAuth2Provider(f"tls{index}", config, MemoryTokenStorage())
        provider.save_token(Token.from_response({"access_token": "t", "expires_in": 3600}))
        assert provider.http_client is not None  # the provider's own client, built now
        with AuthSession(provider) as session:
            assert session.get(url).json() == {"hello": "tls"}
        provider.close()
    assert loads == [bundle]
