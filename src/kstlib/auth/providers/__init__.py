"""Identity providers: ``OAuth2Provider``, ``OIDCProvider`` and their base class."""

from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.providers.base import AbstractAuthProvider
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.providers.oidc import OIDCProvider

__all__ = ["AbstractAuthProvider", "AuthProviderConfig", "OAuth2Provider", "OIDCProvider"]
