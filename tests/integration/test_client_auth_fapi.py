"""Issue 14 item 1 against the real oidc-provider: keys from PEM and JWK files, the
automatic choice of the method from discovery, and the issuer as the assertion's ``aud``
where the server wants it (oidc-provider's FAPI 2.0 profile refuses any other ``aud``:
the one retry is exercised by a real refusal)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kstlib.auth._signing import load_signing_key
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.providers.oidc import OIDCProvider
from tests.flows import login, make_oidc
from tests.idp_support import CONFIDENTIAL, PRIVATE_KEY_JWT, IdP, private_key_jwt_key


def _pem(kid: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = load_signing_key(private_key_jwt_key(kid))._private
    assert key is not None
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("form", ["pem-path", "jwk-path", "jwk-file-reference"])
def test_private_key_jwt_with_the_key_in_a_file(idp: IdP, tmp_path: Path, form: str) -> None:
    if form == "pem-path":
        path = tmp_path / "client.pem"
        path.write_bytes(_pem("pkjwt-rsa"))
        client_key, kid = str(path), "pkjwt-rsa"
    else:
        path = tmp_path / "client.jwk"
        path.write_text(json.dumps(private_key_jwt_key("pkjwt-ed25519")))
        client_key = str(path) if form == "jwk-path" else f"file://{path}"
        kid = None
    idp.reset_stats()
    provider = make_oidc(idp, PRIVATE_KEY_JWT, client_key=client_key, client_key_id=kid)
    token = login(provider)
    assert provider.refresh().access_token != token.access_token
    stats = idp.stats()
    assert stats.get("token:authorization_code:200") == 1
    assert stats.get("token:refresh_token:200") == 1


def test_without_a_method_the_best_the_server_advertises_is_used(idp: IdP) -> None:
    advertised = idp.discovery()["token_endpoint_auth_methods_supported"]
    assert "private_key_jwt" in advertised and "client_secret_basic" in advertised
    signed = make_oidc(idp, PRIVATE_KEY_JWT, client_key=private_key_jwt_key("pkjwt-p256"))
    assert signed.config.token_endpoint_auth_method is None
    assert signed.client_authentication().method == "private_key_jwt"
    login(signed)
    config = AuthProviderConfig(
        client_id=CONFIDENTIAL.client_id,
        client_secret=CONFIDENTIAL.client_secret,
        issuer=idp.issuer,
    )
    shared = OIDCProvider("shared", config, signed.token_storage)
    assert shared.client_authentication().method == "client_secret_basic"
    assert shared.introspect("not-a-token")["active"] is False


def test_a_server_wanting_the_issuer_as_aud_gets_it_after_one_refusal(fapi_idp: IdP) -> None:
    """oidc-provider in FAPI 2.0 mode refuses an assertion for the endpoint (invalid_client):
    one retry names the issuer, and from then on every assertion does."""
    provider = make_oidc(fapi_idp, PRIVATE_KEY_JWT, client_key=private_key_jwt_key("pkjwt-p256"))
    fapi_idp.reset_stats()
    assert provider.introspect("not-a-token")["active"] is False
    stats = fapi_idp.stats()
    assert stats.get("introspection:401") == 1 and stats.get("introspection:200") == 1
    token = login(provider)  # PAR (the server requires it) and the code exchange
    assert provider.revoke(token) is True
    stats = fapi_idp.stats()
    assert stats.get("introspection:401") == 1  # never refused again
    assert stats.get("pushed_authorization_request:201") == 1
    assert "pushed_authorization_request:401" not in stats
    assert stats.get("token:authorization_code:200") == 1 and "token:401" not in stats
    assert stats.get("revocation:200") == 2
