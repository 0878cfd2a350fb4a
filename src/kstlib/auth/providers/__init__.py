"""Identity providers: ``OAuth2Provider``, ``OIDCProvider``, their base class, and the client
authentication step they share (extend it with :func:`register_client_authentication`).

Names are imported at first use (PEP 562), so importing a provider module does not load the
configuration parts (:mod:`kstlib.auth.config`) until a call needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_LOCATIONS: dict[str, str] = {
    "AbstractAuthProvider": "kstlib.auth.providers.base",
    "AuthProviderConfig": "kstlib.auth.config",
    "ClientAuthentication": "kstlib.auth._clientauth",
    "OAuth2Provider": "kstlib.auth.providers.oauth2",
    "OIDCProvider": "kstlib.auth.providers.oidc",
    "register_client_authentication": "kstlib.auth._clientauth",
}


def __getattr__(name: str) -> Any:
    from kstlib._lazy import load

    return load(__name__, _LOCATIONS, globals(), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
