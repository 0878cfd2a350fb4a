"""``flow: client_credentials`` against the real oidc-provider (issue 13, item 2).

A service gets its token without a browser, fetches a new one when stale, and many
callers (tasks, threads, processes) cause one token request at the IdP per expiry.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kstlib.auth import AuthSession
from kstlib.auth._discovery import MetadataCache
from kstlib.auth.config import AuthProviderConfig, get_provider
from kstlib.auth.errors import ConfigurationError, TokenExpiredError, TokenRefreshError
from kstlib.auth.models import AuthFlow, Token
from kstlib.auth.providers import OAuth2Provider, OIDCProvider
from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage
from tests import forked, shared_storage_worker
from tests.idp_support import SERVICE, SERVICE_SCOPES, IdP

ROOT = Path(__file__).resolve().parents[2]


def service_config(idp: IdP, **overrides: Any) -> AuthProviderConfig:
    values: dict[str, Any] = {
        "client_id": SERVICE.client_id,
        "client_secret": SERVICE.client_secret,
        "issuer": idp.issuer,
        "flow": "client_credentials",
        "scopes": list(SERVICE_SCOPES),
        "token_endpoint_auth_method": "client_secret_basic",
    }
    values.update(overrides)
    return AuthProviderConfig(**values)


def make_service(
    idp: IdP, kind: str = "oidc", *, storage: Any = None, **overrides: Any
) -> OAuth2Provider:
    storage = storage if storage is not None else MemoryTokenStorage()
    if kind == "oauth2":  # no discovery: the token endpoint alone is enough
        cfg = service_config(idp, issuer=None, token_url=idp.token_endpoint, **overrides)
        return OAuth2Provider("svc", cfg, storage)
    return OIDCProvider(
        "svc", service_config(idp, **overrides), storage, metadata_cache=MetadataCache()
    )


def grants(idp: IdP) -> int:
    return idp.stats().get("token:client_credentials", 0)


def expired(token: Token) -> Token:
    past = datetime.now(UTC) - timedelta(seconds=5)
    return replace(token, expires_at=past, issued_at=past - timedelta(hours=1))


@pytest.mark.parametrize("kind", ["oidc", "oauth2"])
def test_get_token_fetches_without_a_browser_then_reuses(idp: IdP, kind: str) -> None:
    with make_service(idp, kind) as provider:
        assert provider.flow is AuthFlow.CLIENT_CREDENTIALS
        assert provider.can_obtain()
        idp.reset_stats()
        token = provider.get_token()
        assert token is not None and token.refresh_token is None and token.id_token is None
        assert set(token.scope) == set(SERVICE_SCOPES)
        assert provider.token_storage.load("svc") == token
        assert provider.get_token() == token  # fresh: no second request
        assert grants(idp) == 1
        with AuthSession(provider) as session:
            body = session.get(idp.api_url("svc")).json()
        assert body["client_id"] == SERVICE.client_id and body["sub"] is None
        assert grants(idp) == 1
        assert idp.introspect(token.access_token)["active"] is True


def test_async_fetch_and_session(idp: IdP) -> None:
    provider = make_service(idp)

    async def main() -> list[int]:
        async with AuthSession(provider) as session:
            answers = await asyncio.gather(*(session.aget(idp.api_url(f"a{i}")) for i in range(20)))
        return [a.status_code for a in answers]

    idp.reset_stats()
    assert asyncio.run(main()) == [200] * 20
    assert grants(idp) == 1
    assert (asyncio.run(provider.aacquire())).token == provider.token_storage.load("svc")
    assert grants(idp) == 1
    provider.close()


def test_stale_token_is_fetched_again(idp: IdP) -> None:
    provider = make_service(idp)
    first = provider.get_token()
    assert first is not None and provider.can_renew(first)
    provider.save_token(expired(first))
    idp.reset_stats()
    second = provider.get_token()
    assert second is not None and second.access_token != first.access_token
    assert not second.is_expired and grants(idp) == 1
    provider.save_token(expired(second))
    third = asyncio.run(provider.aacquire()).token
    assert third.access_token != second.access_token and grants(idp) == 2
    provider.close()


def test_16_threads_storm_one_request(idp: IdP) -> None:
    provider = make_service(idp)
    provider.discover()
    idp.reset_stats()
    start = threading.Barrier(16)
    codes: list[int] = []

    def worker() -> None:
        start.wait()
        with AuthSession(provider) as session:
            codes.append(session.get(idp.api_url("t")).status_code)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 16 and grants(idp) == 1
    provider.close()


@pytest.mark.parametrize("start", ["nothing stored", "expired token stored"])
def test_4_processes_sharing_a_file_storage_one_request(
    idp: IdP, tmp_path: Path, start: str
) -> None:
    directory = tmp_path / "tokens"
    storage = FileTokenStorage(directory)  # created once, before the children race for it
    if start == "expired token stored":
        first = make_service(idp, storage=storage)
        token = first.get_token()
        assert token is not None
        storage.save("svc", expired(token))
        first.close()
    go = tmp_path / "go"
    idp.reset_stats()
    args = [idp.issuer, str(directory), str(go), idp.api_url("p"), SERVICE.client_secret or ""]
    procs = [
        forked.start(shared_storage_worker.client_credentials, *args, cwd=ROOT) for _ in range(4)
    ]
    for p in procs:  # processes forked with kstlib imported (tests/forked.py)
        assert p.stdout.readline().strip() == "ready"
    go.touch()
    outputs = [p.communicate(timeout=120) for p in procs]
    for (out, err), p in zip(outputs, procs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == "[200, 200, 200]"
    assert grants(idp) == 1
    stored = storage.load("svc")
    assert stored is not None and not stored.is_expired


def test_browser_login_is_refused_with_a_typed_error(idp: IdP) -> None:
    provider = make_service(idp)
    for attempt in (
        provider.login,
        provider.get_authorization_url,
        lambda: provider.exchange_code("code", "state"),
        lambda: asyncio.run(provider.alogin()),
        provider.start_device_authorization,
    ):
        with pytest.raises(ConfigurationError, match="flow client_credentials") as info:
            attempt()
        assert info.value.key == "flow"
    assert provider.token_storage.load("svc") is None
    provider.close()


@pytest.mark.parametrize("use_async", [False, True])
def test_refused_client_is_a_typed_error_and_nothing_is_stored(idp: IdP, use_async: bool) -> None:
    provider = make_service(idp, client_secret="wrong-secret")
    with pytest.raises(TokenRefreshError, match="client credentials grant of 'svc'") as info:
        if use_async:
            asyncio.run(provider.aacquire())
        else:
            provider.acquire()
    assert info.value.error_code == "invalid_client" and not info.value.retryable
    assert provider.token_storage.load("svc") is None
    provider.close()


def test_a_refused_grant_stands_for_a_pause(idp: IdP) -> None:
    """A misconfigured service does not send one token request per API call."""
    provider = make_service(idp, client_secret="wrong-secret")
    idp.reset_stats()
    for _ in range(3):
        with pytest.raises(TokenRefreshError, match="invalid_client"):
            provider.acquire()
    with pytest.raises(TokenRefreshError, match="invalid_client"):
        asyncio.run(provider.aacquire())
    assert grants(idp) == 1
    provider.close()


def test_auto_refresh_off_never_fetches(idp: IdP) -> None:
    provider = make_service(idp)
    idp.reset_stats()
    with pytest.raises(TokenExpiredError, match="kstlib auth token svc"):
        provider.acquire(auto_refresh=False)
    with pytest.raises(TokenExpiredError, match="No token is stored for 'svc' yet"):
        provider.introspect()
    assert provider.get_token(auto_refresh=False) is None and grants(idp) == 0
    provider.close()


def test_configuration_rules(idp: IdP) -> None:
    with pytest.raises(ConfigurationError, match="confidential client") as info:
        service_config(idp, client_secret=None, token_endpoint_auth_method=None)
    assert info.value.key == "flow"
    with pytest.raises(ConfigurationError, match="unknown flow") as info:
        service_config(idp, flow="implicit")
    assert info.value.key == "flow"
    with pytest.raises(ConfigurationError, match="token_url"):
        service_config(idp, issuer=None)
    assert service_config(idp, flow="Client-Credentials").flow == "client_credentials"


def test_from_the_configuration_file(idp: IdP) -> None:
    config = {
        "auth": {
            "token_storage": "memory",
            "providers": {
                "svc": {
                    "type": "oauth2",
                    "flow": "client_credentials",
                    "client_id": SERVICE.client_id,
                    "client_secret": SERVICE.client_secret,
                    "token_endpoint": idp.token_endpoint,
                }
            },
        }
    }
    provider = get_provider("svc", config=config)
    assert provider.config.scopes == []  # a service asks for no OpenID scope by default
    token = provider.get_token()
    assert token is not None and token.access_token
    provider.close()
