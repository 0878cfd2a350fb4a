"""Issue 14 item 3: pushed authorization requests (RFC 9126) against the real oidc-provider.

``par: true`` pushes the request (client authenticated as at the token endpoint); the
authorization URL then carries only ``client_id`` and ``request_uri``. Without the setting
PAR is used when discovery says ``require_pushed_authorization_requests`` (the FAPI 2.0
instance). A ``request_uri`` that died before the browser got it ends the login with
:class:`PushedAuthorizationExpiredError`, nothing stored.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest

from kstlib.auth import PushedAuthorizationExpiredError
from kstlib.auth.errors import AuthorizationError
from tests.flows import make_oidc
from tests.idp_support import (
    CONFIDENTIAL,
    PRIVATE_KEY_JWT,
    PUBLIC,
    BrowserLoginError,
    IdP,
    OidcClient,
    browser_login,
    private_key_jwt_key,
)
from tests.integration.test_login import ANY_PORT, Browser


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.mark.parametrize("client", [CONFIDENTIAL, PUBLIC], ids=["secret", "public"])
def test_par_login_end_to_end(idp: IdP, client: OidcClient) -> None:
    provider = make_oidc(idp, client, par=True)
    url, state = provider.get_authorization_url()
    query = _query(url)
    assert set(query) == {"client_id", "request_uri"}
    assert query["client_id"] == [client.client_id]
    assert query["request_uri"][0].startswith("urn:ietf:params:oauth:request_uri:")
    idp.reset_stats()
    token = provider.exchange_code(browser_login(url), state)
    assert token.id_token and provider.token_storage.load("test") == token
    stats = idp.stats()
    assert stats.get("token:authorization_code:200") == 1
    assert provider.refresh().access_token != token.access_token


def test_par_through_login_and_the_loopback_server(idp: IdP) -> None:
    idp.reset_stats()
    provider = make_oidc(idp, redirect_uri=ANY_PORT, par=True)
    browser = Browser()
    with provider:
        token = provider.login(open_browser=False, timeout=30, on_url=browser.on_url)
    assert "Login complete" in browser.join().text
    [(url, _)] = browser.urls
    assert set(_query(url)) == {"client_id", "request_uri"}
    assert provider.token_storage.load("test") == token
    assert idp.stats().get("pushed_authorization_request:201") == 1


def test_par_is_automatic_when_discovery_requires_it(fapi_idp: IdP, idp: IdP) -> None:
    assert fapi_idp.discovery()["require_pushed_authorization_requests"] is True
    provider = make_oidc(fapi_idp, PRIVATE_KEY_JWT, client_key=private_key_jwt_key("pkjwt-p256"))
    assert provider.config.par is None
    url, state = provider.get_authorization_url()
    assert set(_query(url)) == {"client_id", "request_uri"}
    assert provider.exchange_code(browser_login(url), state).id_token
    # A server that does not require it gets the classic front-channel request.
    assert "require_pushed_authorization_requests" not in idp.discovery()
    plain, _ = make_oidc(idp).get_authorization_url()
    assert "request_uri" not in _query(plain) and "code_challenge" in _query(plain)


def test_par_false_on_a_server_that_requires_it_is_refused_by_the_server(fapi_idp: IdP) -> None:
    provider = make_oidc(
        fapi_idp, PRIVATE_KEY_JWT, client_key=private_key_jwt_key("pkjwt-p256"), par=False
    )
    url, state = provider.get_authorization_url()
    assert "request_uri" not in _query(url)
    with pytest.raises(AuthorizationError) as err:
        provider.exchange_code(browser_login(url), state)
    assert err.value.error_code == "invalid_request"
    assert provider.token_storage.load("test") is None


def test_a_request_uri_dead_before_the_browser_got_it(idp: IdP) -> None:
    """The IdP gives the pushed request 1 s; the URL reaches the browser later: the login
    stops with a typed error at once (no wait for a redirect that cannot come)."""
    provider = make_oidc(idp, redirect_uri=ANY_PORT, par=True)
    handed: list[str] = []

    def slow_hand_over(url: str, opened: bool) -> None:
        handed.append(url)
        time.sleep(1.5)

    idp.configure(par_ttl=1)
    try:
        with provider, pytest.raises(PushedAuthorizationExpiredError) as err:
            provider.login(open_browser=False, timeout=30, on_url=slow_hand_over)
    finally:
        idp.configure(par_ttl=60)
    assert err.value.error_code == "invalid_request_uri"
    assert isinstance(err.value, AuthorizationError)
    assert provider.token_storage.load("test") is None
    assert not provider._pending
    # The IdP agrees: that request_uri is dead.
    with pytest.raises(BrowserLoginError, match="invalid_request_uri"):
        browser_login(handed[0])


def test_a_redirect_saying_invalid_request_uri_is_the_typed_error(idp: IdP) -> None:
    provider = make_oidc(idp, par=True)
    _, state = provider.get_authorization_url()
    callback = f"{provider.config.redirect_uri}?error=invalid_request_uri&state={state}"
    with pytest.raises(PushedAuthorizationExpiredError):
        provider.exchange_code(callback, state)
    assert provider.token_storage.load("test") is None


def test_a_refused_push_is_an_authorization_error_naming_the_server_error(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL, client_secret="not-the-secret", par=True)
    with pytest.raises(AuthorizationError) as err:
        provider.get_authorization_url()
    assert err.value.error_code == "invalid_client"
    assert "Pushed authorization request" in str(err.value)
    assert not provider._pending
    assert "not-the-secret" not in str(err.value)


def test_the_configured_par_endpoint_without_discovery(idp: IdP) -> None:
    """OAuth2Provider (no discovery): the endpoint comes from the setting alone."""
    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.errors import ConfigurationError
    from kstlib.auth.providers.oauth2 import OAuth2Provider
    from kstlib.auth.token import MemoryTokenStorage

    discovered = idp.discovery()
    values = {
        "client_id": CONFIDENTIAL.client_id,
        "client_secret": CONFIDENTIAL.client_secret,
        "authorize_url": discovered["authorization_endpoint"],
        "token_url": discovered["token_endpoint"],
        "scopes": ["profile"],
        "par": True,
    }
    without = OAuth2Provider("plain", AuthProviderConfig(**values), MemoryTokenStorage())
    with pytest.raises(ConfigurationError) as err:
        without.get_authorization_url()
    assert err.value.key == "pushed_authorization_request_endpoint"
    values["pushed_authorization_request_endpoint"] = discovered[
        "pushed_authorization_request_endpoint"
    ]
    provider = OAuth2Provider("plain", AuthProviderConfig(**values), MemoryTokenStorage())
    idp.reset_stats()
    url, state = provider.get_authorization_url()
    assert set(_query(url)) == {"client_id", "request_uri"}
    assert provider.exchange_code(browser_login(url), state).access_token
    assert idp.stats().get("pushed_authorization_request:201") == 1


def test_alogin_pushes_too(idp: IdP) -> None:
    import asyncio

    provider = make_oidc(idp, redirect_uri=ANY_PORT, par=True)
    browser = Browser()

    async def main() -> None:
        await provider.alogin(open_browser=False, timeout=30, on_url=browser.on_url)

    with provider:
        asyncio.run(main())
    assert "Login complete" in browser.join().text
    [(url, _)] = browser.urls
    assert set(_query(url)) == {"client_id", "request_uri"}
    assert provider.token_storage.load("test") is not None
