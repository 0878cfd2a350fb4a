"""private_key_jwt and client_secret_jwt (RFC 7523) proven against the real oidc-provider.

The test IdP registers ``kstlib-private-key-jwt`` with the public halves of the keys in
``tests/idp/test-client-keys.json`` and ``kstlib-client-secret-jwt`` with a 64+ byte
secret, and accepts every RS/PS/ES/HS algorithm and EdDSA for client assertions. Each
test drives a real login (browser), then refreshes, revokes or calls ``token_request``
authenticated by a signed assertion: the IdP verifies the signature, ``iss``/``sub``,
``aud``, ``exp`` and refuses a replayed ``jti``.
"""

from __future__ import annotations

from typing import Any

import pytest

from kstlib.auth import Token
from kstlib.auth._jose import decode_jws
from kstlib.auth._signing import load_signing_key
from kstlib.auth.errors import ConfigurationError, TokenExchangeError, TokenRefreshError
from kstlib.auth.providers.oidc import OIDCProvider
from tests import jwt_factory as f
from tests.flows import login, make_oidc
from tests.idp_support import CLIENT_SECRET_JWT, PRIVATE_KEY_JWT, IdP, private_key_jwt_key
from tests.unit.test_signing import private_jwk


def _pkjwt(idp: IdP, kid: str = "pkjwt-rsa", **overrides: Any) -> OIDCProvider:
    return make_oidc(
        idp,
        PRIVATE_KEY_JWT,
        token_endpoint_auth_method="private_key_jwt",
        client_key=private_key_jwt_key(kid),
        **overrides,
    )


def _csjwt(idp: IdP, **overrides: Any) -> OIDCProvider:
    return make_oidc(
        idp, CLIENT_SECRET_JWT, token_endpoint_auth_method="client_secret_jwt", **overrides
    )


KEY_ALGS = [
    ("pkjwt-rsa", "RS256"),
    ("pkjwt-rsa", "RS384"),
    ("pkjwt-rsa", "PS256"),
    ("pkjwt-rsa", "PS512"),
    ("pkjwt-p256", "ES256"),
    ("pkjwt-p384", "ES384"),
    ("pkjwt-p521", "ES512"),
    ("pkjwt-ed25519", "EdDSA"),
]


@pytest.mark.parametrize(("kid", "alg"), KEY_ALGS, ids=[f"{k}-{a}" for k, a in KEY_ALGS])
def test_private_key_jwt_logs_in_and_refreshes(idp: IdP, kid: str, alg: str) -> None:
    idp.reset_stats()
    provider = _pkjwt(idp, kid, client_assertion_alg=alg)
    token = login(provider)
    refreshed = provider.refresh()
    assert refreshed.access_token != token.access_token
    assert provider.get_token(auto_refresh=False) == refreshed
    stats = idp.stats()
    assert stats.get("token:authorization_code:200") == 1
    assert stats.get("token:refresh_token:200") == 1


def test_private_key_jwt_key_from_a_pem_file_reference(idp: IdP, tmp_path: Any) -> None:
    """The key as a PEM file named by file:// (the kid configured beside it)."""
    from cryptography.hazmat.primitives import serialization

    signing = load_signing_key(private_key_jwt_key("pkjwt-p256"))
    pem = signing._private.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "client.pem").write_bytes(pem)
    provider = make_oidc(
        idp,
        PRIVATE_KEY_JWT,
        token_endpoint_auth_method="private_key_jwt",
        client_key=f"file://{tmp_path / 'client.pem'}",
        client_key_id="pkjwt-p256",
    )
    login(provider)
    assert provider.refresh().access_token


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_client_secret_jwt_logs_in_and_refreshes_through_token_request(idp: IdP, alg: str) -> None:
    provider = _csjwt(idp, client_assertion_alg=alg)
    token = login(provider)
    assert token.refresh_token is not None
    fresh = provider.token_request("refresh_token", refresh_token=token.refresh_token)
    assert isinstance(fresh, Token) and fresh.access_token != token.access_token
    assert fresh.id_token is not None  # verified before it was returned
    # token_request returns, it does not store: the stored token is still the login's.
    assert provider.get_token(auto_refresh=False) == token


def test_a_key_the_idp_does_not_know_is_refused_as_invalid_client(idp: IdP) -> None:
    provider = _pkjwt(idp)
    token = login(provider)
    stranger = f.rsa_key(kid="pkjwt-rsa", slot=21)  # right kid, wrong key
    impostor = make_oidc(
        idp,
        PRIVATE_KEY_JWT,
        storage=provider.token_storage,
        token_endpoint_auth_method="private_key_jwt",
        client_key=private_jwk(stranger),
    )
    with pytest.raises(TokenRefreshError) as err:
        impostor.refresh()
    assert err.value.error_code == "invalid_client"
    assert err.value.retryable is False
    assert provider.get_token(auto_refresh=False) == token  # nothing stored


def test_private_key_jwt_revokes_through_the_revocation_endpoint(idp: IdP) -> None:
    """The assertion's aud is the endpoint it is sent to: revocation accepts it."""
    provider = _pkjwt(idp, "pkjwt-p384")
    token = login(provider)
    idp.reset_stats()
    assert provider.revoke(token) is True
    assert idp.stats().get("revocation:200") == 2
    assert idp.introspect(token.access_token)["active"] is False


def test_every_request_carries_a_fresh_assertion(idp: IdP) -> None:
    """Unique jti, iss = sub = client_id, aud = the token endpoint, one-minute lifetime."""
    provider = _pkjwt(idp, "pkjwt-ed25519")
    auth = provider.client_authentication()
    endpoint = provider._require_endpoint("token_endpoint")
    seen = []
    for _ in range(3):
        data: dict[str, str] = {}
        auth.apply(data, {}, endpoint=endpoint)
        assert data["client_assertion_type"] == (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        )
        jws = decode_jws(data["client_assertion"])
        assert jws.header == {"alg": "EdDSA", "typ": "JWT", "kid": "pkjwt-ed25519"}
        claims = jws.payload
        assert claims["iss"] == claims["sub"] == PRIVATE_KEY_JWT.client_id
        assert claims["aud"] == endpoint
        assert claims["exp"] - claims["iat"] == 60
        seen.append(claims["jti"])
    assert len(set(seen)) == 3


def test_an_unusable_client_key_is_a_configuration_error_naming_it(idp: IdP) -> None:
    provider = make_oidc(
        idp,
        PRIVATE_KEY_JWT,
        token_endpoint_auth_method="private_key_jwt",
        client_key=f.rsa_key().public_pem.decode(),
    )
    with pytest.raises(ConfigurationError) as err:
        provider.token_request("client_credentials")
    assert err.value.key == "client_key"
    assert "not a private key" in str(err.value)


def test_client_secret_jwt_with_a_short_secret_names_the_fix(idp: IdP) -> None:
    provider = make_oidc(
        idp,
        CLIENT_SECRET_JWT,
        client_secret="short-secret",
        token_endpoint_auth_method="client_secret_jwt",
    )
    with pytest.raises(ConfigurationError, match="too short for HS256") as err:
        provider.token_request("client_credentials")
    assert err.value.key == "client_secret"


def test_the_idp_refuses_what_it_should(idp: IdP) -> None:
    """A refused grant maps to TokenExchangeError with the OAuth error code."""
    provider = _csjwt(idp)
    with pytest.raises(TokenExchangeError) as err:
        provider.token_request("refresh_token", refresh_token="not-a-refresh-token")
    assert err.value.error_code == "invalid_grant"
    assert err.value.retryable is False


def test_traces_show_neither_assertions_nor_secrets(
    idp: IdP, caplog: pytest.LogCaptureFixture
) -> None:
    """At TRACE level the token requests are logged, their assertions redacted."""
    from kstlib.auth.redaction import TRACE

    signed = _pkjwt(idp, "pkjwt-p256")
    shared = _csjwt(idp)
    with caplog.at_level(TRACE, logger="kstlib"):
        for provider in (signed, shared):
            token = login(provider)
            fresh = provider.refresh()
            provider.revoke(fresh)
    text = caplog.text
    assert "--> POST" in text and "client_assertion=[REDACTED]" in text
    assert "eyJ" not in text  # no JWT at all: assertions, ID tokens
    assert CLIENT_SECRET_JWT.client_secret not in text
    assert private_key_jwt_key("pkjwt-p256")["d"] not in text
    for value in (token.access_token, fresh.access_token, fresh.refresh_token or "-"):
        assert value not in text


@pytest.mark.parametrize("method", ["private_key_jwt", "client_secret_jwt"])
def test_introspection_authenticates_with_the_assertion(idp: IdP, method: str) -> None:
    provider = _pkjwt(idp, "pkjwt-p521") if method == "private_key_jwt" else _csjwt(idp)
    token = login(provider)
    idp.reset_stats()
    answer = provider.introspect(token.access_token, token_type_hint="access_token")
    assert answer["active"] is True
    assert answer["client_id"] == provider.config.client_id
    provider.revoke(token)
    assert provider.introspect(token.access_token)["active"] is False
    assert idp.stats().get("introspection:200") == 2
