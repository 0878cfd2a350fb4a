"""Issue 14 item 1: the automatic choice of a client authentication method from the
server's ``token_endpoint_auth_methods_supported``, and the one retry with the issuer as
the assertion's ``aud`` (respx: a server that keeps refusing, which the real IdP never
does for a client it knows)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from kstlib.auth._clientauth import (
    ClientSecretBasic,
    ClientSecretJWT,
    ClientSecretPost,
    NoClientAuthentication,
    PrivateKeyJWT,
    select_client_authentication,
)
from kstlib.auth._jose import decode_jws
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import ConfigurationError, TokenExchangeError
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.token import MemoryTokenStorage
from tests import jwt_factory as f
from tests.unit.test_signing import private_jwk

KEY = {"kty": "EC"}
ALL = ["client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt"]


@pytest.mark.parametrize(
    ("secret", "key", "supported", "expected"),
    [
        ("s", None, ALL, ClientSecretBasic),
        ("s", None, ["client_secret_post", "client_secret_jwt"], ClientSecretPost),
        ("s", None, ["client_secret_jwt", "private_key_jwt"], ClientSecretJWT),
        (None, KEY, ALL, PrivateKeyJWT),
        ("s", KEY, ["client_secret_post"], ClientSecretPost),  # the key is not usable there
        ("s", KEY, ["private_key_jwt", "client_secret_basic"], PrivateKeyJWT),
        (None, None, ["private_key_jwt"], NoClientAuthentication),
        ("s", None, [], ClientSecretBasic),
    ],
)
def test_the_best_advertised_method_for_the_credentials(
    secret: str | None, key: Any, supported: list[str], expected: type
) -> None:
    auth = select_client_authentication("app", secret, client_key=key, server_supported=supported)
    assert type(auth) is expected


def test_no_advertised_method_fits_the_credentials() -> None:
    with pytest.raises(ConfigurationError) as err:
        select_client_authentication(
            "app", None, client_key=KEY, server_supported=["client_secret_basic"],
            provider_name="corp",
        )  # fmt: skip
    assert err.value.key == "token_endpoint_auth_method"
    message = str(err.value)
    assert "client_secret_basic" in message and "client_key" in message
    assert "private_key_jwt" in message


ISSUER = "https://idp.example.com"
TOKEN_URL = f"{ISSUER}/token"


def _provider(**overrides: Any) -> OAuth2Provider:
    values: dict[str, Any] = {
        "client_id": "app",
        "issuer": ISSUER,
        "authorize_url": f"{ISSUER}/auth",
        "token_url": TOKEN_URL,
        "token_endpoint_auth_method": "private_key_jwt",
        "client_key": private_jwk(f.ec_key("P-256", kid="k1")),
    }
    values.update(overrides)
    return OAuth2Provider("corp", AuthProviderConfig(**values), MemoryTokenStorage())


REFUSED = httpx.Response(401, json={"error": "invalid_client", "error_description": "no"})


def _sent(route: respx.Route) -> list[dict[str, list[str]]]:
    return [parse_qs(call.request.content.decode()) for call in route.calls]


def test_a_refused_assertion_is_retried_once_with_the_issuer_then_reported() -> None:
    with respx.mock(assert_all_called=True) as mock, _provider() as provider:
        route = mock.post(TOKEN_URL).mock(return_value=REFUSED)
        with pytest.raises(TokenExchangeError) as err:
            provider.token_request("client_credentials")
    assert err.value.error_code == "invalid_client"
    forms = _sent(route)
    assert len(forms) == 2  # one retry, never more
    claims = [decode_jws(form["client_assertion"][0]).payload for form in forms]
    assert [c["aud"] for c in claims] == [TOKEN_URL, ISSUER]
    assert claims[0]["jti"] != claims[1]["jti"]


def test_once_the_issuer_was_accepted_it_is_the_audience_from_then_on() -> None:
    ok = httpx.Response(200, json={"access_token": "at", "token_type": "Bearer"})
    with respx.mock as mock, _provider() as provider:
        route = mock.post(TOKEN_URL).mock(side_effect=[REFUSED, ok, ok])
        provider.token_request("client_credentials")
        provider.token_request("client_credentials")
    auds = [decode_jws(form["client_assertion"][0]).payload["aud"] for form in _sent(route)]
    assert auds == [TOKEN_URL, ISSUER, ISSUER]


def test_a_refused_secret_is_not_retried() -> None:
    with (
        respx.mock as mock,
        _provider(
            token_endpoint_auth_method="client_secret_basic", client_secret="s", client_key=None
        ) as provider,
    ):
        route = mock.post(TOKEN_URL).mock(return_value=REFUSED)
        with pytest.raises(TokenExchangeError):
            provider.token_request("client_credentials")
    assert route.call_count == 1


def test_another_error_is_not_retried() -> None:
    answer = httpx.Response(400, json={"error": "invalid_grant"})
    with respx.mock as mock, _provider() as provider:
        route = mock.post(TOKEN_URL).mock(return_value=answer)
        with pytest.raises(TokenExchangeError):
            provider.token_request("client_credentials")
    assert route.call_count == 1


# --- hostile answers of a PAR endpoint (the real IdP never sends them) ---------------

PAR_URL = f"{ISSUER}/par"


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"expires_in": 60}, "no usable request_uri"),
        ({"request_uri": "urn:x y", "expires_in": 60}, "no usable request_uri"),
        ({"request_uri": "u" * 3000, "expires_in": 60}, "no usable request_uri"),
        ({"request_uri": "urn:ok"}, "expires_in"),
        ({"request_uri": "urn:ok", "expires_in": True}, "expires_in"),
        ({"request_uri": "urn:ok", "expires_in": 0}, "expires_in"),
        ({"request_uri": "urn:ok", "expires_in": 86400}, "expires_in"),
    ],
)
def test_a_malformed_par_answer_is_refused_and_nothing_is_pending(
    answer: dict[str, Any], problem: str
) -> None:
    from kstlib.auth.errors import AuthorizationError

    provider = _provider(par=True, pushed_authorization_request_endpoint=PAR_URL)
    with respx.mock as mock, provider:
        mock.post(PAR_URL).mock(return_value=httpx.Response(201, json=answer))
        with pytest.raises(AuthorizationError, match=problem) as err:
            provider.get_authorization_url()
    assert err.value.reason == "bad pushed response"
    assert not provider._pending


def test_a_par_endpoint_that_redirects_is_not_followed() -> None:
    from kstlib.auth.errors import AuthorizationError

    provider = _provider(par=True, pushed_authorization_request_endpoint=PAR_URL)
    with respx.mock as mock, provider:
        mock.post(PAR_URL).mock(
            return_value=httpx.Response(302, headers={"location": "https://evil.example/x"})
        )
        with pytest.raises(AuthorizationError, match="redirect"):
            provider.get_authorization_url()
    assert not provider._pending
