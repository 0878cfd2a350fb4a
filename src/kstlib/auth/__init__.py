"""Public API of ``kstlib.auth``.

Names are imported lazily (PEP 562): ``import kstlib.auth`` costs almost
nothing, and ``from kstlib.auth import AuthSession`` loads only what the
session needs. ``__all__`` lists the public names; nothing else is exported.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported: this package is on the CLI's fast path
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "AbstractAuthProvider",
    "AbstractTokenStorage",
    "AuthError",
    "AuthFlow",
    "AuthProviderConfig",
    "AuthSession",
    "AuthorizationError",
    "CallbackResult",
    "CallbackServer",
    "CallbackServerError",
    "ConfigurationError",
    "DeviceAuthorization",
    "DeviceAuthorizationDeniedError",
    "DeviceAuthorizationError",
    "DeviceCodeExpiredError",
    "DiscoveryError",
    "FileTokenStorage",
    "KeyringTokenStorage",  # issue 15
    "MemoryTokenStorage",
    "OAuth2Provider",
    "OIDCProvider",
    "PreflightReport",
    "PreflightResult",
    "PreflightStatus",
    "ProviderAuth",
    "PushedAuthorizationExpiredError",  # issue 14
    "RedisTokenStorage",  # issue 15
    "SOPSTokenStorage",
    "Token",
    "TokenCheckReport",
    "TokenChecker",
    "TokenError",
    "TokenExchangeError",
    "TokenExpiredError",
    "TokenRefreshError",
    "TokenStorageError",
    "TokenType",
    "TokenValidationError",
    "ValidationStep",
    "build_provider_config",
    "get_default_provider_name",
    "get_provider",
    "get_provider_config",
    "get_token_storage",
    "list_configured_providers",
]

_LOCATIONS: dict[str, str] = {
    "AbstractAuthProvider": "kstlib.auth.providers.base",
    "OAuth2Provider": "kstlib.auth.providers.oauth2",
    "OIDCProvider": "kstlib.auth.providers.oidc",
    "AbstractTokenStorage": "kstlib.auth.token",
    "MemoryTokenStorage": "kstlib.auth.token",
    "FileTokenStorage": "kstlib.auth.token",
    "SOPSTokenStorage": "kstlib.auth.token",
    "get_token_storage": "kstlib.auth.token",
    "AuthSession": "kstlib.auth.session",
    "ProviderAuth": "kstlib.auth.session",
    "TokenChecker": "kstlib.auth.check",
    "TokenCheckReport": "kstlib.auth.check",
    "ValidationStep": "kstlib.auth.check",
    "CallbackServer": "kstlib.auth.callback",
    "CallbackResult": "kstlib.auth.callback",
    "Token": "kstlib.auth.models",
    "TokenType": "kstlib.auth.models",
    "AuthFlow": "kstlib.auth.models",
    "PreflightReport": "kstlib.auth.models",
    "PreflightResult": "kstlib.auth.models",
    "PreflightStatus": "kstlib.auth.models",
    "AuthProviderConfig": "kstlib.auth.config",
    "build_provider_config": "kstlib.auth.config",
    "get_default_provider_name": "kstlib.auth.config",
    "get_provider": "kstlib.auth.config",
    "get_provider_config": "kstlib.auth.config",
    "list_configured_providers": "kstlib.auth.config",
    "AuthError": "kstlib.auth.errors",
    "AuthorizationError": "kstlib.auth.errors",
    "CallbackServerError": "kstlib.auth.errors",
    "ConfigurationError": "kstlib.auth.errors",
    "DiscoveryError": "kstlib.auth.errors",
    "TokenError": "kstlib.auth.errors",
    "TokenExchangeError": "kstlib.auth.errors",
    "TokenExpiredError": "kstlib.auth.errors",
    "TokenRefreshError": "kstlib.auth.errors",
    "TokenStorageError": "kstlib.auth.errors",
    "TokenValidationError": "kstlib.auth.errors",
    # device authorization grant (RFC 8628; issue #13 item 1)
    "DeviceAuthorization": "kstlib.auth._device",
    "DeviceAuthorizationError": "kstlib.auth.errors",
    "DeviceAuthorizationDeniedError": "kstlib.auth.errors",
    "DeviceCodeExpiredError": "kstlib.auth.errors",
    "PushedAuthorizationExpiredError": "kstlib.auth.errors",  # issue 14
    # --- issue 15: fleet storages ---
    "RedisTokenStorage": "kstlib.auth.token",
    "KeyringTokenStorage": "kstlib.auth.token",
    # --- end issue 15 ---
}

# -- DPoP (RFC 9449, issue 14 item 2) --------------------------------------------------
__all__ += ["DPoPBindingError", "DPoPError", "DPoPNonceError"]
_LOCATIONS.update(
    {
        "DPoPBindingError": "kstlib.auth.errors",
        "DPoPError": "kstlib.auth.errors",
        "DPoPNonceError": "kstlib.auth.errors",
    }
)
# -- end DPoP ----------------------------------------------------------------------------


def __getattr__(name: str) -> Any:
    from kstlib._lazy import load

    return load(__name__, _LOCATIONS, globals(), name)


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from kstlib.auth._device import DeviceAuthorization  # device authorization grant
    from kstlib.auth.callback import CallbackResult, CallbackServer
    from kstlib.auth.check import TokenChecker, TokenCheckReport, ValidationStep
    from kstlib.auth.config import (
        AuthProviderConfig,
        build_provider_config,
        get_default_provider_name,
        get_provider,
        get_provider_config,
        list_configured_providers,
    )
    from kstlib.auth.errors import (
        AuthError,
        AuthorizationError,
        CallbackServerError,
        ConfigurationError,
        DeviceAuthorizationDeniedError,
        DeviceAuthorizationError,
        DeviceCodeExpiredError,
        DiscoveryError,
        DPoPBindingError,
        DPoPError,
        DPoPNonceError,
        PushedAuthorizationExpiredError,  # issue 14
        TokenError,
        TokenExchangeError,
        TokenExpiredError,
        TokenRefreshError,
        TokenStorageError,
        TokenValidationError,
    )
    from kstlib.auth.models import (
        AuthFlow,
        PreflightReport,
        PreflightResult,
        PreflightStatus,
        Token,
        TokenType,
    )
    from kstlib.auth.providers.base import AbstractAuthProvider
    from kstlib.auth.providers.oauth2 import OAuth2Provider
    from kstlib.auth.providers.oidc import OIDCProvider
    from kstlib.auth.session import AuthSession, ProviderAuth
    from kstlib.auth.token import (  # issue 15
        AbstractTokenStorage,
        FileTokenStorage,
        KeyringTokenStorage,
        MemoryTokenStorage,
        RedisTokenStorage,
        SOPSTokenStorage,
        get_token_storage,
    )
