"""Issue 14 item 5: resource indicators (RFC 8707) against the real oidc-provider.

``resource`` (one URI or a list) goes as repeated ``resource`` parameters on the
authorization request (front channel or pushed), the code exchange and every refresh. The
IdP records the parameters it parsed per route (``/__test__/resources``) and issues access
tokens whose audience is the resource (checked by introspection).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import ConfigurationError, TokenExchangeError
from tests.flows import login, make_oidc
from tests.idp_support import IdP

ONE = "https://rs.kstlib.test/one"
TWO = "https://rs.kstlib.test/two"


def test_one_resource_on_authorization_token_and_refresh(idp: IdP) -> None:
    provider = make_oidc(idp, resource=ONE)
    assert provider.config.resource == [ONE]
    url, _ = provider.get_authorization_url()
    assert parse_qs(urlsplit(url).query)["resource"] == [ONE]
    idp.reset_resources()
    token = login(provider)
    received = idp.received_resources()
    assert received["authorization"] == [ONE] and received["token"] == [ONE]
    assert idp.introspect(token.access_token)["aud"] == ONE
    idp.reset_resources()
    refreshed = provider.refresh()
    assert idp.received_resources() == {"token": [ONE]}
    assert idp.introspect(refreshed.access_token)["aud"] == ONE


@pytest.mark.parametrize("par", [False, True], ids=["front-channel", "pushed"])
def test_a_list_is_sent_as_repeated_parameters(idp: IdP, par: bool) -> None:
    provider = make_oidc(idp, resource=[ONE, TWO], par=par)
    idp.reset_resources()
    token = login(provider)
    received = idp.received_resources()
    first = "pushed_authorization_request" if par else "authorization"
    assert received[first] == [ONE, TWO]
    assert received["token"] == [ONE, TWO]
    assert idp.introspect(token.access_token)["aud"] == ONE  # the IdP's pick among several
    idp.reset_resources()
    provider.refresh()
    assert idp.received_resources()["token"] == [ONE, TWO]


def test_a_grant_naming_its_own_resource_keeps_it(idp: IdP) -> None:
    """token_request(resource=...) wins over the configured list; the IdP checks it
    against what the authorization granted (a resource never granted: invalid_target)."""
    provider = make_oidc(idp, resource=[ONE, TWO])
    token = login(provider)
    assert token.refresh_token is not None
    idp.reset_resources()
    narrowed = provider.token_request(
        "refresh_token", refresh_token=token.refresh_token, resource=TWO
    )
    assert idp.received_resources()["token"] == [TWO]
    assert idp.introspect(narrowed.access_token)["aud"] == TWO
    assert narrowed.refresh_token is not None
    with pytest.raises(TokenExchangeError) as err:
        provider.token_request(
            "refresh_token",
            refresh_token=narrowed.refresh_token,
            resource="https://rs.kstlib.test/never-granted",
        )
    assert err.value.error_code == "invalid_target"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("api", "not an absolute URI"),
        ("https://rs.example.com/a#frag", "fragment"),
        ([ONE, 3], "item 1"),
        ({"url": ONE}, "expected a list"),
    ],
)
def test_bad_resource_values_are_configuration_errors(value: object, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as err:
        AuthProviderConfig(client_id="app", issuer="https://idp.example.com", resource=value)
    assert err.value.key == "resource"


def test_duplicates_are_sent_once() -> None:
    config = AuthProviderConfig(
        client_id="app", issuer="https://idp.example.com", resource=[ONE, ONE, TWO]
    )
    assert config.resource == [ONE, TWO]
