"""``kstlib.auth.requests.ProviderAuth`` (requests) against the real IdP: its UserInfo
endpoint and its protected test API; the refreshes are counted at the IdP (#16 item 3)."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
import requests

from kstlib.auth._discovery import MetadataCache
from kstlib.auth.errors import InsecureDestinationError
from kstlib.auth.models import Token
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.requests import ProviderAuth
from kstlib.auth.token import MemoryTokenStorage
from tests.flows import login, make_oidc, provider_config
from tests.idp_support import CONFIDENTIAL, IdP
from tests.integration.test_session import refreshes, rejected, stale


@pytest.fixture
def provider(idp: IdP) -> OIDCProvider:
    p = make_oidc(idp, CONFIDENTIAL, storage=MemoryTokenStorage())
    login(p)
    return p


def test_userinfo_with_requests(idp: IdP, provider: OIDCProvider) -> None:
    response = requests.get(idp.userinfo_endpoint, auth=ProviderAuth(provider), timeout=10)
    assert response.status_code == 200
    assert response.json()["sub"] == "alice"
    assert response.history == []


def test_a_session_sends_the_token_to_every_method(idp: IdP, provider: OIDCProvider) -> None:
    with requests.Session() as session:
        session.auth = ProviderAuth(provider)
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            response = session.request(method, idp.api_url(f"m/{method}"), timeout=10)
            assert response.status_code == 200, method
            assert response.json()["sub"] == "alice"


def test_401_renews_once_and_replays_with_the_body(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(rejected(token, "revoked-or-unknown-access-token"))
    idp.reset_stats()
    response = requests.post(
        idp.api_url("x"), json={"a": 1}, auth=ProviderAuth(provider), timeout=10
    )
    assert response.status_code == 200 and response.json()["body"] == {"a": 1}
    assert [r.status_code for r in response.history] == [401]
    stats = idp.stats()
    assert stats["api:401"] == 1 and stats["api:200"] == 1 and refreshes(idp) == 1
    renewed = provider.token_storage.load("test")
    assert renewed is not None
    assert response.request.headers["Authorization"] == f"Bearer {renewed.access_token}"


def test_401_on_userinfo_is_replayed_with_a_renewed_token(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(rejected(token, "unknown-access-token"))
    idp.reset_stats()
    response = requests.get(idp.userinfo_endpoint, auth=ProviderAuth(provider), timeout=10)
    assert response.status_code == 200 and response.json()["sub"] == "alice"
    assert refreshes(idp) == 1


def test_a_streamed_body_is_not_replayed(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(rejected(token, "unknown-access-token"))
    idp.reset_stats()

    def body() -> object:
        yield b"chunk"

    response = requests.post(idp.api_url("s"), data=body(), auth=ProviderAuth(provider), timeout=10)
    assert response.status_code == 401
    assert refreshes(idp) == 0


def test_retry_on_401_disabled(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(rejected(token, "unknown-access-token"))
    auth = ProviderAuth(provider, retry_on_401=False)
    assert requests.get(idp.api_url("x"), auth=auth, timeout=10).status_code == 401


def test_16_threads_one_refresh(idp: IdP, provider: OIDCProvider) -> None:
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(stale(token))
    idp.reset_stats()
    auth = ProviderAuth(provider)
    barrier = threading.Barrier(16)
    codes: list[int] = []

    def worker(i: int) -> None:
        barrier.wait()
        codes.append(requests.get(idp.api_url(f"t/{i}"), auth=auth, timeout=30).status_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 16
    assert refreshes(idp) == 1


def test_plain_http_to_another_host_is_refused_before_sending(provider: OIDCProvider) -> None:
    with pytest.raises(InsecureDestinationError):
        requests.get("http://api.example.test/x", auth=ProviderAuth(provider), timeout=10)


def test_allowed_origins(idp: IdP, provider: OIDCProvider) -> None:
    auth = ProviderAuth(provider, allowed_origins=["https://api.example.test"])
    with pytest.raises(InsecureDestinationError):
        requests.get(idp.api_url("x"), auth=auth, timeout=10)


class _ProofProvider(OIDCProvider):
    """A provider with per-request proof that asks for one replay of its first request
    (as a DPoP nonce challenge does): the hooks are the provider's, not the adapter's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.proofs: list[str] = []
        self.challenged = False

    def authorize_request(self, request: httpx.Request, token: Token) -> None:
        self.proofs.append(request.url.path)
        request.headers["X-Proof"] = f"proof-{len(self.proofs)}"

    def wants_replay(self, request: httpx.Request, response: httpx.Response) -> bool:
        if self.challenged or response.status_code != 401:
            return False
        self.challenged = True
        return True


def test_the_providers_proof_and_replay_hooks_are_used(idp: IdP) -> None:
    provider = _ProofProvider(
        "test",
        provider_config(idp, CONFIDENTIAL),
        MemoryTokenStorage(),
        metadata_cache=MetadataCache(),
    )
    login(provider)
    token = provider.token_storage.load("test")
    assert token is not None
    provider.save_token(rejected(token, "unknown-access-token"))
    idp.reset_stats()
    response = requests.get(idp.api_url("p"), auth=ProviderAuth(provider), timeout=10)
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401, 401]  # challenge, then renewal
    assert len(provider.proofs) == 3 and response.request.headers["X-Proof"] == "proof-3"
    assert refreshes(idp) == 1
