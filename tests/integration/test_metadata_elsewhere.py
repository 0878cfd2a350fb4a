"""Endpoints a server lists only in its RFC 8414 metadata (issue 13, item 6).

A real local HTTP server (tests/jwks_server.py) publishes an issuer with a path: its
``openid-configuration`` lacks the revocation and introspection endpoints, which only
its ``/.well-known/oauth-authorization-server/<path>`` document (RFC 8414 section 3)
lists; they point at the real test IdP, so revocation and introspection really happen.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kstlib.auth._discovery import MetadataCache
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import ConfigurationError, DiscoveryError
from kstlib.auth.providers import OIDCProvider
from kstlib.auth.token import MemoryTokenStorage
from tests.idp_support import SERVICE, IdP
from tests.jwks_server import JWKSServer

OIDC_PATH = "/tenant/.well-known/openid-configuration"
OAUTH_PATH = "/.well-known/oauth-authorization-server/tenant"


def publish(server: JWKSServer, idp: IdP, *, oauth: dict[str, Any] | None = None) -> str:
    """The issuer ``<server>/tenant``: OIDC document without revocation/introspection;
    the RFC 8414 document (unless ``oauth`` is ``{}``: then none, 404) with them."""
    issuer = server.url("/tenant")
    server.set_json(
        OIDC_PATH,
        {
            "issuer": issuer,
            "token_endpoint": idp.token_endpoint,
            "jwks_uri": idp.jwks_uri,
            "response_types_supported": ["code"],
        },
    )
    document = {
        "issuer": issuer,
        "token_endpoint": idp.token_endpoint,
        "revocation_endpoint": idp.revocation_endpoint,
        "introspection_endpoint": idp.introspection_endpoint,
    }
    if oauth is None or oauth:
        server.set_json(OAUTH_PATH, {**document, **(oauth or {})})
    return issuer


def provider_for(issuer: str) -> OIDCProvider:
    config = AuthProviderConfig(
        client_id=SERVICE.client_id,
        client_secret=SERVICE.client_secret,
        issuer=issuer,
        flow="client_credentials",
        scopes=["api:read"],
        token_endpoint_auth_method="client_secret_basic",
    )
    return OIDCProvider("svc", config, MemoryTokenStorage(), metadata_cache=MetadataCache())


def test_revoke_and_introspect_use_the_rfc8414_document(server: JWKSServer, idp: IdP) -> None:
    provider = provider_for(publish(server, idp))
    token = provider.get_token()  # token endpoint from openid-configuration
    assert token is not None
    assert provider.introspect()["active"] is True
    assert asyncio.run(provider.aintrospect(token))["active"] is True
    assert provider.revoke() is True  # a real revocation at the IdP
    assert idp.introspect(token.access_token)["active"] is False
    assert provider.introspect(token.access_token)["active"] is False
    assert server.count(OAUTH_PATH) == 1  # consulted once, cached
    assert server.count(OIDC_PATH) == 1
    provider.close()


def test_missing_everywhere_names_the_endpoint_and_its_key(server: JWKSServer, idp: IdP) -> None:
    provider = provider_for(publish(server, idp, oauth={}))
    assert provider.get_token() is not None
    with pytest.raises(ConfigurationError, match="introspection_endpoint") as info:
        provider.introspect()
    assert info.value.key == "introspection_url" and "introspection_url" in str(info.value)
    with pytest.raises(ConfigurationError, match="introspection_url"):
        asyncio.run(provider.aintrospect())
    assert provider.revoke() is False
    assert server.count(OAUTH_PATH) == 1  # the 404 is cached too
    provider.close()


def test_another_issuer_in_the_rfc8414_document_is_refused(server: JWKSServer, idp: IdP) -> None:
    provider = provider_for(publish(server, idp, oauth={"issuer": idp.issuer}))
    with pytest.raises(DiscoveryError, match="names issuer"):
        provider.introspect("some-token")
    provider.close()


def test_an_insecure_endpoint_in_the_rfc8414_document_is_refused(
    server: JWKSServer, idp: IdP
) -> None:
    hostile = {"revocation_endpoint": "http://idp.example.com/revoke"}
    provider = provider_for(publish(server, idp, oauth=hostile))
    token = provider.get_token()
    assert token is not None
    with pytest.raises(DiscoveryError, match="revoke_url"):
        provider.revoke()
    assert idp.introspect(token.access_token)["active"] is True  # nothing was sent
    provider.close()


def test_a_configured_endpoint_wins(server: JWKSServer, idp: IdP) -> None:
    issuer = publish(server, idp, oauth={})
    config = AuthProviderConfig(
        client_id=SERVICE.client_id,
        client_secret=SERVICE.client_secret,
        issuer=issuer,
        flow="client_credentials",
        introspection_url=idp.introspection_endpoint,
        token_endpoint_auth_method="client_secret_basic",
    )
    provider = OIDCProvider("svc", config, MemoryTokenStorage(), metadata_cache=MetadataCache())
    assert provider.get_token() is not None
    assert provider.introspect()["active"] is True
    assert server.count(OAUTH_PATH) == 0
    provider.close()
