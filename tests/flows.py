"""Helpers to build providers against the test IdP and log in through it."""

from __future__ import annotations

from typing import Any

from kstlib.auth._discovery import MetadataCache
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.models import Token
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.token import AbstractTokenStorage, MemoryTokenStorage
from tests.idp_support import CONFIDENTIAL, REDIRECT_URI, SCOPES, IdP, OidcClient, browser_login


def provider_config(
    idp: IdP, client: OidcClient = CONFIDENTIAL, **overrides: Any
) -> AuthProviderConfig:
    values: dict[str, Any] = {
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "issuer": idp.issuer,
        "redirect_uri": REDIRECT_URI,
        "scopes": list(SCOPES),
    }
    if client.client_secret:
        values["token_endpoint_auth_method"] = client.token_endpoint_auth_method
    values.update(overrides)
    return AuthProviderConfig(**values)


def make_oidc(
    idp: IdP,
    client: OidcClient = CONFIDENTIAL,
    *,
    name: str = "test",
    storage: AbstractTokenStorage | None = None,
    cache: MetadataCache | None = None,
    **overrides: Any,
) -> OIDCProvider:
    """An OIDCProvider with its own metadata cache (tests stay independent)."""
    return OIDCProvider(
        name,
        provider_config(idp, client, **overrides),
        storage if storage is not None else MemoryTokenStorage(),
        metadata_cache=cache if cache is not None else MetadataCache(),
    )


def login(provider: OAuth2Provider, *, username: str = "alice") -> Token:
    """The whole code flow: authorization URL -> user's browser -> callback -> exchange."""
    url, state = provider.get_authorization_url()
    callback = browser_login(url, username=username)
    return provider.exchange_code(callback, state)
