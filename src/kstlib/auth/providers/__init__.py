"""Identity providers: ``OAuth2Provider``, ``OIDCProvider``, their base class, and the client
authentication step they share (extend it with :func:`register_client_authentication`)."""

from kstlib.auth._clientauth import ClientAuthentication, register_client_authentication
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.providers.base import AbstractAuthProvider
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.providers.oidc import OIDCProvider

__all__ = [
    "AbstractAuthProvider",
    "AuthProviderConfig",
    "ClientAuthentication",
    "OAuth2Provider",
    "OIDCProvider",
    "register_client_authentication",
]
