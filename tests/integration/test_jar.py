"""Issue 14 item 4: signed request objects (RFC 9101) against the real oidc-provider.

``request_object: true`` signs the authorization request with ``client_key``: on the
front channel the URL carries ``client_id`` and ``request``; with PAR the signed request
is pushed and the URL carries ``client_id`` and ``request_uri``. The IdP verifies the
signature against the client's registered keys (a foreign key is refused).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from kstlib.auth._jose import SUPPORTED_ALGORITHMS, decode_jws, parse_jwk, verify_signature
from kstlib.auth._signing import load_signing_key
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import ConfigurationError
from tests import jwt_factory as f
from tests.flows import make_oidc
from tests.idp_support import (
    PRIVATE_KEY_JWT,
    BrowserLoginError,
    IdP,
    browser_login,
    private_key_jwt_key,
)
from tests.unit.test_signing import private_jwk


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.mark.parametrize(("kid", "alg"), [("pkjwt-rsa", "PS256"), ("pkjwt-p256", "ES256")])
def test_front_channel_request_object_login(idp: IdP, kid: str, alg: str) -> None:
    provider = make_oidc(
        idp,
        PRIVATE_KEY_JWT,
        client_key=private_key_jwt_key(kid),
        client_assertion_alg=alg,
        request_object=True,
        resource="https://rs.kstlib.test/jar",
    )
    url, state = provider.get_authorization_url()
    query = _query(url)
    assert set(query) == {"client_id", "request"}
    jws = decode_jws(query["request"][0])
    assert jws.header == {"alg": alg, "typ": "oauth-authz-req+jwt", "kid": kid}
    public = load_signing_key(private_key_jwt_key(kid)).public_jwk()
    verify_signature(jws, parse_jwk(public), allowed=SUPPORTED_ALGORITHMS)
    claims = jws.payload
    assert claims["iss"] == claims["client_id"] == PRIVATE_KEY_JWT.client_id
    assert claims["aud"] == idp.issuer
    assert claims["state"] == state and claims["nonce"] and claims["redirect_uri"]
    assert claims["code_challenge_method"] == "S256" and "code_verifier" not in claims
    assert claims["resource"] == ["https://rs.kstlib.test/jar"]
    assert claims["nbf"] <= claims["iat"] < claims["exp"] <= claims["nbf"] + 60
    token = provider.exchange_code(browser_login(url), state)
    assert token.id_token and provider.token_storage.load("test") == token


def test_request_object_pushed_with_par(idp: IdP) -> None:
    provider = make_oidc(
        idp, PRIVATE_KEY_JWT, client_key=private_key_jwt_key("pkjwt-ed25519"),
        request_object=True, par=True,
    )  # fmt: skip
    idp.reset_stats()
    url, state = provider.get_authorization_url()
    assert set(_query(url)) == {"client_id", "request_uri"}
    assert provider.exchange_code(browser_login(url), state).id_token
    stats = idp.stats()
    assert stats.get("pushed_authorization_request:201") == 1
    assert stats.get("token:authorization_code:200") == 1


def test_a_request_object_signed_by_a_foreign_key_is_refused_by_the_idp(idp: IdP) -> None:
    stranger = private_jwk(f.ec_key("P-256", kid="pkjwt-p256", slot=7))  # right kid, wrong key
    provider = make_oidc(idp, PRIVATE_KEY_JWT, client_key=stranger, request_object=True)
    url, _ = provider.get_authorization_url()
    # Unverified, its redirect_uri is not trusted: the IdP shows an error page.
    with pytest.raises(BrowserLoginError, match="invalid_request_object"):
        browser_login(url)
    assert provider.token_storage.load("test") is None


def test_a_request_object_needs_a_client_key() -> None:
    with pytest.raises(ConfigurationError) as err:
        AuthProviderConfig(client_id="app", issuer="https://idp.example.com", request_object=True)
    assert err.value.key == "request_object"
    assert "client_key" in str(err.value)


def test_traces_show_no_request_object(idp: IdP, caplog: pytest.LogCaptureFixture) -> None:
    from kstlib.auth.redaction import TRACE
    from tests.flows import login

    provider = make_oidc(
        idp, PRIVATE_KEY_JWT, client_key=private_key_jwt_key("pkjwt-p256"),
        request_object=True, par=True,
    )  # fmt: skip
    with caplog.at_level(TRACE, logger="kstlib"):
        login(provider)
    assert "--> POST" in caplog.text and "/request" in caplog.text
    assert "eyJ" not in caplog.text
    assert private_key_jwt_key("pkjwt-p256")["d"] not in caplog.text
