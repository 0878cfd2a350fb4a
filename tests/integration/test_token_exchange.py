"""RFC 8693 token exchange against the real oidc-provider (issue 13, item 3).

The test IdP registers the grant with oidc-provider's ``registerGrantType``: the subject
token must be one of its live access tokens; the answer is an access token for the same
user with the requested audience.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kstlib.auth import AuthSession
from kstlib.auth._discovery import MetadataCache
from kstlib.auth.config import AuthProviderConfig, get_provider
from kstlib.auth.errors import (
    ConfigurationError,
    TokenExchangeError,
    TokenExpiredError,
    TokenRefreshError,
)
from kstlib.auth.models import AuthFlow, Token
from kstlib.auth.providers import OIDCProvider
from kstlib.auth.redaction import TRACE
from kstlib.auth.token import MemoryTokenStorage
from tests import loopback_http
from tests.flows import login, make_oidc
from tests.idp_support import CONFIDENTIAL, SERVICE, WRONG_ISSUED_TYPE_AUDIENCE, IdP

AUDIENCE = "https://downstream.example.test"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"


def exchanges(idp: IdP) -> int:
    return idp.stats().get("token:urn:ietf:params:oauth:grant-type:token-exchange", 0)


def service(idp: IdP, storage: MemoryTokenStorage | None = None, **overrides: Any) -> OIDCProvider:
    values: dict[str, Any] = {
        "client_id": SERVICE.client_id,
        "client_secret": SERVICE.client_secret,
        "issuer": idp.issuer,
        "token_endpoint_auth_method": "client_secret_basic",
        "scopes": [],
        "flow": "client_credentials",  # any service flow: no browser, no redirect
    }
    values.update(overrides)
    return OIDCProvider(
        "downstream",
        AuthProviderConfig(**values),
        storage if storage is not None else MemoryTokenStorage(),
        metadata_cache=MetadataCache(),
    )


@pytest.fixture
def user(idp: IdP) -> OIDCProvider:
    provider = make_oidc(idp, CONFIDENTIAL, name="user")
    login(provider, username="dora")
    return provider


def api_as(idp: IdP, token: Token) -> dict[str, Any]:
    response = loopback_http.get(
        idp.api_url("x"), headers={"Authorization": f"Bearer {token.access_token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def user_token(user: OIDCProvider) -> Token:
    token = user.token_storage.load("user")
    assert token is not None
    return token


def test_exchange_token_returns_a_token_not_stored(idp: IdP, user: OIDCProvider) -> None:
    svc = service(idp)
    idp.reset_stats()
    token = svc.exchange_token(user_token(user).access_token, audience=AUDIENCE)
    assert token.metadata["issued_token_type"] == ACCESS
    assert token.access_token != user_token(user).access_token
    assert svc.token_storage.load("downstream") is None
    body = api_as(idp, token)
    assert body["sub"] == "dora" and body["client_id"] == SERVICE.client_id
    assert body["aud"] == AUDIENCE
    assert exchanges(idp) == 1
    svc.close()


def test_async_exchange_and_store_as(idp: IdP, user: OIDCProvider) -> None:
    storage = MemoryTokenStorage()
    svc = service(idp, storage)
    token = asyncio.run(
        svc.aexchange_token(
            user_token(user).access_token,
            ACCESS,
            audience=AUDIENCE,
            requested_token_type=ACCESS,
            store_as="exchanged",
        )
    )
    assert storage.load("exchanged") == token and storage.load("downstream") is None
    assert api_as(idp, token)["sub"] == "dora"
    svc.close()


@pytest.mark.parametrize("use_async", [False, True])
def test_wrong_issued_token_type_is_refused_and_nothing_stored(
    idp: IdP, user: OIDCProvider, use_async: bool
) -> None:
    storage = MemoryTokenStorage()
    svc = service(idp, storage)
    subject = user_token(user).access_token
    with pytest.raises(TokenExchangeError, match="issued_token_type") as info:
        if use_async:
            asyncio.run(
                svc.aexchange_token(subject, audience=WRONG_ISSUED_TYPE_AUDIENCE, store_as="x")
            )
        else:
            svc.exchange_token(subject, audience=WRONG_ISSUED_TYPE_AUDIENCE, store_as="x")
    assert info.value.reason == "wrong issued_token_type"
    assert storage.load("x") is None and storage.load("downstream") is None
    svc.close()


def test_invalid_subject_token_is_refused(idp: IdP) -> None:
    svc = service(idp)
    with pytest.raises(TokenExchangeError) as info:
        svc.exchange_token("not-a-token-of-this-idp")
    assert info.value.error_code == "invalid_grant"
    svc.close()


def test_bad_arguments(idp: IdP) -> None:
    svc = service(idp)
    idp.reset_stats()
    with pytest.raises(ValueError, match="subject_token"):
        svc.exchange_token("")
    with pytest.raises(ValueError, match="audience"):
        svc.exchange_token("t", audience=" ")
    with pytest.raises(ValueError, match="go together"):
        svc.exchange_token("t", actor_token="a")
    assert exchanges(idp) == 0
    svc.close()


def expired(token: Token) -> Token:
    past = datetime.now(UTC) - timedelta(seconds=5)
    return replace(token, expires_at=past, issued_at=past - timedelta(hours=1))


def downstream(idp: IdP, user: OIDCProvider) -> OIDCProvider:
    svc = service(
        idp,
        flow="token_exchange",
        subject_provider="user",
        audience=AUDIENCE,
    )
    svc.subject_provider = user
    return svc


def test_flow_token_exchange_session_calls_the_api_as_the_user(
    idp: IdP, user: OIDCProvider
) -> None:
    svc = downstream(idp, user)
    assert svc.flow is AuthFlow.TOKEN_EXCHANGE
    idp.reset_stats()
    with AuthSession(svc) as session:
        bodies = [session.get(idp.api_url(f"d{i}")).json() for i in range(3)]
    assert {b["sub"] for b in bodies} == {"dora"} and {b["aud"] for b in bodies} == {AUDIENCE}
    assert exchanges(idp) == 1
    stored = svc.token_storage.load("downstream")
    assert stored is not None and stored.access_token != user_token(user).access_token
    svc.save_token(expired(stored))  # stale: exchanged again from the user's token
    with AuthSession(svc) as session:
        assert session.get(idp.api_url("again")).json()["sub"] == "dora"
    assert exchanges(idp) == 2
    svc.close()


def test_flow_token_exchange_async(idp: IdP, user: OIDCProvider) -> None:
    svc = downstream(idp, user)
    idp.reset_stats()

    async def main() -> list[str]:
        async with AuthSession(svc) as session:
            answers = await asyncio.gather(*(session.aget(idp.api_url("a")) for _ in range(10)))
        return [a.json()["sub"] for a in answers]

    assert asyncio.run(main()) == ["dora"] * 10
    assert exchanges(idp) == 1
    svc.close()


def test_flow_token_exchange_needs_the_user_logged_in(idp: IdP) -> None:
    user = make_oidc(idp, CONFIDENTIAL, name="user")  # never logged in
    svc = downstream(idp, user)
    with pytest.raises(TokenExpiredError, match="Not logged in to 'user'"):
        svc.acquire()
    assert svc.get_token() is None
    assert svc.token_storage.load("downstream") is None
    with pytest.raises(ConfigurationError, match="flow token_exchange"):
        svc.login()
    svc.close()


def test_flow_token_exchange_failure_is_typed(idp: IdP, user: OIDCProvider) -> None:
    svc = downstream(idp, user)
    user.save_token(replace(user_token(user), access_token="forged-access-token"))
    with pytest.raises(TokenRefreshError, match="token exchange of 'downstream'") as info:
        svc.acquire()
    assert info.value.error_code == "invalid_grant"
    assert svc.token_storage.load("downstream") is None
    svc.close()


def test_flow_token_exchange_from_the_configuration_file(idp: IdP) -> None:
    config = {
        "auth": {
            "token_storage": "memory",
            "providers": {
                "user": {
                    "issuer": idp.issuer,
                    "client_id": CONFIDENTIAL.client_id,
                    "client_secret": CONFIDENTIAL.client_secret,
                },
                "downstream": {
                    "flow": "token_exchange",
                    "subject_provider": "user",
                    "audience": AUDIENCE,
                    "issuer": idp.issuer,
                    "client_id": SERVICE.client_id,
                    "client_secret": SERVICE.client_secret,
                },
            },
        }
    }
    svc = get_provider("downstream", config=config)
    assert svc.subject_provider.name == "user"
    with pytest.raises(ConfigurationError, match="subject_provider"):
        AuthProviderConfig(
            client_id="c", client_secret="s", issuer=idp.issuer, flow="token_exchange"
        )
    with pytest.raises(ConfigurationError, match="only used with flow token_exchange"):
        AuthProviderConfig(client_id="c", issuer=idp.issuer, subject_provider="user")
    svc.close()


def test_no_token_in_the_trace(
    idp: IdP, user: OIDCProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """TRACE logs of an exchange and a client-credentials grant name no token."""
    logger = logging.getLogger("kstlib")
    before = logger.level
    logger.setLevel(TRACE)
    try:
        with caplog.at_level(TRACE, logger="kstlib"):
            svc = downstream(idp, user)
            exchanged = svc.get_token()
            service_token = service(idp, scopes=["api:read"]).get_token()
    finally:
        logger.setLevel(before)
    assert exchanged is not None and service_token is not None
    assert "--> POST" in caplog.text  # traces were on
    for secret in (
        exchanged.access_token,
        user_token(user).access_token,
        service_token.access_token,
        SERVICE.client_secret or "",
    ):
        assert secret not in caplog.text
    svc.close()
