"""DPoP (RFC 9449) end to end against the real oidc-provider (features.dPoP, nonces required).

The test IdP's client ``kstlib-dpop`` gets DPoP-bound access tokens only; every DPoP proof
must carry the server's nonce (``dpop_require_nonce``), so the first token request of a
provider is always answered ``use_dpop_nonce`` and retried once. The IdP's test API checks
the proof (signature, htm, htu, iat, jti, ath, nonce) and the token's ``jkt`` itself, and
refuses a DPoP-bound token sent as Bearer. respx only for what this server never answers: a
JWT access token without our cnf.jkt, a resource server's nonce loop (a server that ignores
DPoP and token-endpoint nonce errors: tests/security/test_dpop_hostile.py, a real server).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import respx

from kstlib.auth import (
    AuthSession,
    DPoPBindingError,
    DPoPNonceError,
    ProviderAuth,
    TokenExchangeError,
)
from kstlib.auth._dpop import DPOP_ALGORITHMS, DPoPKey
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.models import Token, TokenType
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.redaction import TRACE
from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage, SOPSTokenStorage
from tests import loopback_http
from tests.flows import login, make_oidc
from tests.idp_support import CONFIDENTIAL, DPOP, IdP
from tests.sops_support import AgeIdentity


def dpop_provider(idp: IdP, **overrides: object) -> OIDCProvider:
    return make_oidc(idp, DPOP, dpop=True, **overrides)


@pytest.fixture
def provider(idp: IdP) -> OIDCProvider:
    p = dpop_provider(idp)
    login(p)
    return p


def _token(p: OIDCProvider) -> Token:
    token = p.token_storage.load(p.name)
    assert token is not None and token.dpop_key is not None
    return token


# ------------------------------------------------------------------ login and binding


def test_login_gets_a_bound_token_after_one_nonce_retry(idp: IdP) -> None:
    p = dpop_provider(idp)
    idp.reset_stats()
    token = login(p)
    assert token.token_type == TokenType.DPOP
    assert token.dpop_key is not None and token.dpop_key.alg == "ES256"
    assert _token(p).dpop_key == token.dpop_key  # stored with the token
    # the server bound it to our key: introspection says so (cnf.jkt, RFC 9449 6.2)
    answer = p.introspect(token.access_token, token_type_hint="access_token")
    assert answer["active"] is True
    assert answer["token_type"] == "DPoP"
    assert answer["cnf"] == {"jkt": token.dpop_key.thumbprint}
    stats = idp.stats()
    # no nonce known yet: use_dpop_nonce once, then the retry with the nonce succeeds
    assert stats["token:authorization_code:400"] == 1
    assert stats["token:authorization_code:200"] == 1


@pytest.mark.parametrize("alg", DPOP_ALGORITHMS)
def test_every_dpop_alg_logs_in_and_calls_the_api(idp: IdP, alg: str) -> None:
    p = dpop_provider(idp, dpop_alg=alg)
    token = login(p)
    assert token.dpop_key is not None and token.dpop_key.alg == alg
    with AuthSession(p) as session:
        answer = session.get(idp.api_url("whoami"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["dpop_jkt"] == token.dpop_key.thumbprint


def test_a_new_login_makes_a_new_key_and_refresh_keeps_it(idp: IdP, provider: OIDCProvider) -> None:
    first = _token(provider)
    idp.reset_stats()
    refreshed = provider.acquire(force=True).token
    assert refreshed.access_token != first.access_token
    assert refreshed.dpop_key == first.dpop_key
    assert _token(provider).dpop_key == first.dpop_key
    assert idp.stats()["token:refresh_token:200"] == 1
    assert idp.stats().get("token:refresh_token:400", 0) == 0  # the nonce was known
    answer = provider.introspect(refreshed.access_token)
    assert answer["cnf"]["jkt"] == first.dpop_key.thumbprint  # type: ignore[union-attr]
    again = login(provider)
    assert again.dpop_key is not None and again.dpop_key != first.dpop_key
    assert provider.introspect(again.access_token)["cnf"]["jkt"] == again.dpop_key.thumbprint


# ------------------------------------------------------------------ resource requests


def test_session_calls_userinfo_and_the_protected_api(idp: IdP, provider: OIDCProvider) -> None:
    token = _token(provider)
    assert token.dpop_key is not None
    idp.reset_stats()
    assert provider.get_userinfo()["sub"] == "alice"
    with AuthSession(provider) as session:
        info = session.get(idp.userinfo_endpoint)
        assert info.status_code == 200, info.text
        assert info.json()["sub"] == "alice"
        api = session.post(idp.api_url("items?page=2"), json={"a": 1})
        assert api.status_code == 200, api.text
        body = api.json()
        assert body["dpop_jkt"] == token.dpop_key.thumbprint
        assert body["method"] == "POST" and body["query"] == {"page": "2"}
        assert api.request.headers["Authorization"] == f"DPoP {token.access_token}"
        assert "DPoP" in api.request.headers
    stats = idp.stats()
    assert stats["userinfo:200"] == 2 and stats["api:200"] == 1
    assert not any(key.startswith("api:401") for key in stats)


def test_async_session_and_async_refresh(idp: IdP, provider: OIDCProvider) -> None:
    before = _token(provider)

    async def main() -> list[int]:
        async with AuthSession(provider) as session:
            first = await session.aget(idp.api_url("one"))
            renewed = await provider.aacquire(force=True)
            assert renewed.token.dpop_key == before.dpop_key
            rest = await asyncio.gather(*(session.aget(idp.api_url(f"n{i}")) for i in range(20)))
            return [first.status_code, *(r.status_code for r in rest)]

    assert asyncio.run(main()) == [200] * 21
    assert _token(provider).access_token != before.access_token


def test_provider_auth_on_a_client_you_own(idp: IdP, provider: OIDCProvider) -> None:
    with loopback_http.client(auth=ProviderAuth(provider), timeout=10) as client:
        answer = client.delete(idp.api_url("items/7#frag"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["method"] == "DELETE"


def test_resource_server_nonce_challenge_is_answered_once(idp: IdP, provider: OIDCProvider) -> None:
    # a nonce the server no longer accepts (well formed): it challenges, we retry once
    provider._dpop_nonces.record(idp.issuer, "stale-nonce-from-yesterday")
    idp.reset_stats()
    with AuthSession(provider) as session:
        answer = session.get(idp.api_url("nonce"))
        assert answer.status_code == 200, answer.text
        stats = idp.stats()
        assert stats["api:401:use_dpop_nonce"] == 1 and stats["api:200"] == 1
        assert session.get(idp.api_url("again")).status_code == 200  # the new nonce is kept
    assert idp.stats()["api:200"] == 2
    assert idp.stats()["api:401:use_dpop_nonce"] == 1


def test_userinfo_nonce_challenge_is_answered_once(idp: IdP, provider: OIDCProvider) -> None:
    provider._dpop_nonces.record(idp.issuer, "stale-nonce-from-yesterday")
    idp.reset_stats()
    assert provider.get_userinfo()["sub"] == "alice"
    stats = idp.stats()
    assert stats["userinfo:401"] == 1 and stats["userinfo:200"] == 1


def test_the_api_really_checks_the_proof(idp: IdP, provider: OIDCProvider) -> None:
    """Our 200s mean something: the API refuses the token as Bearer, without a proof, with a
    proof of another key, and a replayed proof."""
    token = _token(provider)
    assert token.dpop_key is not None
    url = idp.api_url("strict")
    nonce = provider._dpop_nonces.get(url)
    as_bearer = loopback_http.get(url, headers={"Authorization": f"Bearer {token.access_token}"})
    assert as_bearer.status_code == 401
    no_proof = loopback_http.get(url, headers={"Authorization": f"DPoP {token.access_token}"})
    assert no_proof.status_code == 401
    other = DPoPKey.generate().proof("GET", url, access_token=token.access_token, nonce=nonce)
    foreign = loopback_http.get(
        url, headers={"Authorization": f"DPoP {token.access_token}", "DPoP": other}
    )
    assert foreign.status_code == 401
    ours = token.dpop_key.proof("GET", url, access_token=token.access_token, nonce=nonce)
    headers = {"Authorization": f"DPoP {token.access_token}", "DPoP": ours}
    assert loopback_http.get(url, headers=headers).status_code == 200
    assert loopback_http.get(url, headers=headers).status_code == 401  # jti replayed


def test_without_dpop_the_dpop_client_is_refused_not_downgraded(idp: IdP) -> None:
    """The server demands DPoP for this client: no proof, no token (and nothing stored)."""
    p = make_oidc(idp, DPOP)
    with pytest.raises(TokenExchangeError) as info:
        login(p)
    assert info.value.error_code == "invalid_grant"
    assert p.token_storage.load(p.name) is None


def test_a_bearer_client_is_unaffected(idp: IdP) -> None:
    p = make_oidc(idp, CONFIDENTIAL)
    token = login(p)
    assert token.token_type == TokenType.BEARER and token.dpop_key is None
    with AuthSession(p) as session:
        answer = session.get(idp.api_url("bearer"))
    assert answer.status_code == 200 and "DPoP" not in answer.request.headers


# ------------------------------------------------------------------ at rest, never shown


def test_key_persists_in_file_storage_and_is_never_shown(
    idp: IdP, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "tokens"
    with caplog.at_level(TRACE, logger="kstlib"):
        p = dpop_provider(idp, storage=FileTokenStorage(directory))
        token = login(p)
        assert token.dpop_key is not None
        private_d = token.dpop_key.to_dict()["jwk"]["d"]
        # another process (a new provider and storage) uses the stored key
        again = dpop_provider(idp, storage=FileTokenStorage(directory))
        with AuthSession(again) as session:
            answer = session.get(idp.api_url("from-file"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["dpop_jkt"] == token.dpop_key.thumbprint
        refreshed = again.acquire(force=True).token
    path = FileTokenStorage(directory).token_path(p.name)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    stored = json.loads(path.read_text())["token"]
    assert stored["dpop_key"]["jwk"]["d"] == private_d
    assert refreshed.dpop_key == token.dpop_key
    shown = " ".join(
        [caplog.text, repr(token), str(token), repr(p), repr(p.token_storage), repr(refreshed)]
    )
    assert "--> POST" in caplog.text  # the traces were on
    assert private_d not in shown
    for secret in (token.access_token, refreshed.access_token, token.refresh_token or "-"):
        assert secret not in shown
    assert "'dpop': '[REDACTED]'" in caplog.text  # the proofs were traced, redacted


def test_key_is_encrypted_in_sops_storage(
    idp: IdP, tmp_path: Path, age_identity: AgeIdentity
) -> None:
    storage = SOPSTokenStorage(tmp_path / "sops", age_recipients=[age_identity.recipient])
    p = dpop_provider(idp, storage=storage)
    token = login(p)
    assert token.dpop_key is not None
    private_d = token.dpop_key.to_dict()["jwk"]["d"]
    raw = storage.token_path(p.name).read_text()
    assert private_d not in raw and token.dpop_key.thumbprint not in raw
    loaded = storage.load(p.name)
    assert loaded is not None and loaded.dpop_key == token.dpop_key
    with AuthSession(p) as session:
        assert session.get(idp.api_url("sops")).status_code == 200


# ------------------------------------------------------------------ error paths (respx)

TOKEN_URL = "https://as.example/token"
API_URL = "https://rs.example/api"


def _offline_provider() -> OAuth2Provider:
    """A DPoP provider of a server that respx plays (for answers the real IdP never gives)."""
    config = AuthProviderConfig(
        client_id="c",
        client_secret="s",
        authorize_url="https://as.example/authorize",
        token_url=TOKEN_URL,
        dpop=True,
        scopes=["api"],
    )
    return OAuth2Provider("offline", config, MemoryTokenStorage())


def _claims(proof: str) -> dict[str, object]:
    segment = proof.split(".")[1]
    claims: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return claims


def _jwt(payload: dict[str, object]) -> str:
    def seg(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'RS256', 'typ': 'at+jwt'})}.{seg(payload)}.c2ln"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"access_token": _jwt({"sub": "x"}), "token_type": "DPoP"}, "no cnf.jkt"),
        ({"access_token": _jwt({"cnf": {"jkt": "other"}}), "token_type": "DPoP"}, "jkt mismatch"),
    ],
)
def test_an_unbound_token_is_refused_and_not_stored(answer: dict[str, object], reason: str) -> None:
    p = _offline_provider()
    url, state = p.get_authorization_url()
    assert "dpop_jkt=" in url
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(TOKEN_URL).mock(return_value=httpx.Response(200, json=answer))
        with pytest.raises(DPoPBindingError) as info:
            p.exchange_code("code", state)
    assert info.value.reason == reason
    assert "DPoP" in route.calls.last.request.headers
    assert p.token_storage.load(p.name) is None


def _challenge(nonce: str | None) -> httpx.Response:
    headers = {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"'}
    if nonce is not None:
        headers["DPoP-Nonce"] = nonce
    return httpx.Response(401, headers=headers)


@pytest.mark.parametrize("use_async", [False, True])
def test_resource_server_nonce_loop_and_malformed_nonce(use_async: bool) -> None:
    p = _offline_provider()
    p.save_token(
        Token(access_token="at", token_type="DPoP", dpop_key=DPoPKey.generate(), scope=["api"])
    )

    def call() -> httpx.Response:
        session = AuthSession(p)
        if use_async:

            async def run() -> httpx.Response:
                async with session:
                    return await session.aget(API_URL)

            return asyncio.run(run())
        with session:
            return session.get(API_URL)

    with respx.mock() as mock:
        route = mock.get(API_URL).mock(side_effect=[_challenge("n1"), _challenge("n2")])
        with pytest.raises(DPoPNonceError) as info:
            call()
        assert info.value.reason == "nonce loop" and route.call_count == 2
    with respx.mock() as mock:
        mock.get(API_URL).mock(side_effect=[_challenge("bad nonce")])
        with pytest.raises(DPoPNonceError) as info:
            call()
        assert info.value.reason == "malformed nonce"
    with respx.mock() as mock:
        route = mock.get(API_URL).mock(side_effect=[_challenge("n3"), httpx.Response(200)])
        assert call().status_code == 200
        sent = route.calls.last.request
        assert sent.headers["Authorization"] == "DPoP at"
        proof = _claims(sent.headers["DPoP"])
        assert proof["nonce"] == "n3" and proof["htu"] == API_URL and proof["htm"] == "GET"


def test_a_renewed_token_may_meet_a_nonce_challenge_too() -> None:
    """401 -> renewal -> replay challenged for a nonce: that is a new attempt, not a loop."""
    p = _offline_provider()
    key = DPoPKey.generate()
    old = Token(
        access_token="old",
        token_type="DPoP",
        refresh_token="rt",
        dpop_key=key,
        issued_at=datetime.now(UTC) - timedelta(minutes=5),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    p.save_token(old)
    invalid = httpx.Response(401, headers={"WWW-Authenticate": 'DPoP error="invalid_token"'})
    with respx.mock() as mock:
        mock.post(TOKEN_URL).mock(
            return_value=httpx.Response(
                200, json={"access_token": "new", "token_type": "DPoP", "expires_in": 3600}
            )
        )
        api = mock.get(API_URL).mock(
            side_effect=[_challenge("n1"), invalid, _challenge("n2"), httpx.Response(200)]
        )
        with AuthSession(p) as session:
            assert session.get(API_URL).status_code == 200
    sent = [call.request for call in api.calls]
    assert [r.headers["Authorization"] for r in sent] == [
        "DPoP old",
        "DPoP old",
        "DPoP new",
        "DPoP new",
    ]
    assert [_claims(r.headers["DPoP"]).get("nonce") for r in sent] == [None, "n1", "n1", "n2"]
    stored = p.token_storage.load(p.name)
    assert stored is not None and stored.access_token == "new" and stored.dpop_key == key


def test_async_resource_nonce_retry_against_the_real_api(idp: IdP, provider: OIDCProvider) -> None:
    provider._dpop_nonces.record(idp.issuer, "stale-nonce-from-yesterday")
    idp.reset_stats()

    async def main() -> int:
        async with AuthSession(provider) as session:
            return (await session.aget(idp.api_url("async-nonce"))).status_code

    assert asyncio.run(main()) == 200
    stats = idp.stats()
    assert stats["api:401:use_dpop_nonce"] == 1 and stats["api:200"] == 1


def test_device_grant_through_token_request_gets_a_bound_token(idp: IdP) -> None:
    """Any grant through token_request carries a proof: the device grant (RFC 8628) too."""
    from tests.device_flow import DEVICE, approve_device

    with make_oidc(idp, DEVICE, name="device-dpop", dpop=True) as p:
        authorization = p.start_device_authorization()
        approve_device(authorization.verification_uri, authorization.user_code)
        token = p.poll_device_authorization(authorization, timeout=60)
        assert token.token_type == TokenType.DPOP and token.dpop_key is not None
        assert p.introspect(token.access_token)["cnf"] == {"jkt": token.dpop_key.thumbprint}
        assert _token(p).dpop_key == token.dpop_key
        with AuthSession(p) as session:
            answer = session.get(idp.api_url("device"))
        assert answer.status_code == 200 and answer.json()["dpop_jkt"] == token.dpop_key.thumbprint


def test_a_server_that_needs_no_nonce_gets_one_token_request(idp: IdP) -> None:
    """Without a required nonce the first proof is accepted: no retry, still bound."""
    idp._test_call("POST", "config", {"dpop_require_nonce": False})
    try:
        p = dpop_provider(idp)
        idp.reset_stats()
        token = login(p)
        assert idp.stats()["token:authorization_code"] == 1
        assert token.dpop_key is not None
        assert p.introspect(token.access_token)["cnf"]["jkt"] == token.dpop_key.thumbprint
        with AuthSession(p) as session:
            assert session.get(idp.api_url("no-nonce")).status_code == 200
    finally:
        idp._test_call("POST", "config", {"dpop_require_nonce": True})
