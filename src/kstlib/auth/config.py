"""Typed configuration of ``kstlib.auth``: providers, token storage, callback server, tracing.

:class:`AuthProviderConfig` holds one provider's validated settings, :class:`AuthSettings`
the ``auth:`` section of ``kstlib.conf.yml`` with its defaults, :class:`SSLSettings` the
global ``ssl:`` section. The helpers read the configuration files (:mod:`kstlib.config`)
unless they are given ``config=``, which is used instead of the files:

- a :class:`~kstlib.config.LoadedConfig` (from :func:`kstlib.config.load_config`) keeps the
  provenance of its files, so errors still name them;
- a mapping with an ``auth`` key, or with none of the ``auth:`` keys at its top, is a whole
  configuration (``{"auth": {...}, "ssl": {...}}``);
- any other mapping is the ``auth:`` section itself (``{"providers": {...}}``).

Wrong types and values raise :class:`~kstlib.auth.errors.ConfigurationError` naming the file,
the dotted key and the provider; unknown keys emit a :class:`ConfigWarning` with the closest
known key. A provider is validated, and its secret references (``sops://``, ``env://``,
``file://``, see :mod:`kstlib.secrets`) resolved, only when it is built: a broken provider
never breaks the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kstlib.auth._config.builder import _BuiltProvider
    from kstlib.auth._config.provider import AuthProviderConfig
    from kstlib.auth._config.settings import (
        AuthSettings,
        BackendSettings,
        CallbackServerSettings,
        SSLSettings,
        StatusSettings,
        StorageSettings,
        TraceSettings,
    )
    from kstlib.auth._config.setup import ProviderSetup
    from kstlib.auth._config.values import (
        DEFAULT_CONFIG_SCOPES,
        DEFAULT_REDIRECT_URI,
        JWS_ALGORITHMS,
        PROVIDER_TYPES,
        TOKEN_ENDPOINT_AUTH_METHODS,
        ProviderType,
    )
    from kstlib.auth.providers.base import AbstractAuthProvider
    from kstlib.auth.token import AbstractTokenStorage
    from kstlib.config import ConfigWarning, LoadedConfig

__all__ = [
    "DEFAULT_CONFIG_SCOPES",
    "DEFAULT_REDIRECT_URI",
    "JWS_ALGORITHMS",
    "PROVIDER_TYPES",
    "TOKEN_ENDPOINT_AUTH_METHODS",
    "AuthProviderConfig",
    "AuthSettings",
    "BackendSettings",
    "CallbackServerSettings",
    "ConfigWarning",
    "ProviderSetup",
    "ProviderType",
    "SSLSettings",
    "StatusSettings",
    "StorageSettings",
    "TraceSettings",
    "build_provider_config",
    "get_auth_settings",
    "get_default_provider_name",
    "get_provider",
    "get_provider_config",
    "get_provider_type",
    "get_ssl_settings",
    "get_token_storage_for_provider",
    "list_configured_providers",
    "load_provider_setup",
    "resolve_provider_name",
]

#: The names defined in the parts of this module (:mod:`kstlib.auth._config`), imported at
#: first use (PEP 562): ``from kstlib.auth import get_provider`` does not build the settings
#: classes, and a call loads the parts it needs.
_LOCATIONS: dict[str, str] = {
    "AuthProviderConfig": "kstlib.auth._config.provider",
    "AuthSettings": "kstlib.auth._config.settings",
    "BackendSettings": "kstlib.auth._config.settings",
    "CallbackServerSettings": "kstlib.auth._config.settings",
    "SSLSettings": "kstlib.auth._config.settings",
    "StatusSettings": "kstlib.auth._config.settings",
    "StorageSettings": "kstlib.auth._config.settings",
    "TraceSettings": "kstlib.auth._config.settings",
    "DEFAULT_CONFIG_SCOPES": "kstlib.auth._config.values",
    "DEFAULT_REDIRECT_URI": "kstlib.auth._config.values",
    "JWS_ALGORITHMS": "kstlib.auth._config.values",
    "PROVIDER_TYPES": "kstlib.auth._config.values",
    "TOKEN_ENDPOINT_AUTH_METHODS": "kstlib.auth._config.values",
    "ProviderType": "kstlib.auth._config.values",
    "ConfigWarning": "kstlib.config",
    "ProviderSetup": "kstlib.auth._config.setup",
}


def __getattr__(name: str) -> Any:
    from kstlib._lazy import load

    return load(__name__, _LOCATIONS, globals(), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# --------------------------------------------------------------------------- public helpers


def get_auth_settings(*, config: Mapping[str, Any] | None = None) -> AuthSettings:
    """The ``auth:`` section with defaults filled in (providers left as written)."""
    from kstlib.auth._config.loading import _load, _parse_auth

    return _parse_auth(_load(config))


def get_ssl_settings(*, config: Mapping[str, Any] | None = None) -> SSLSettings:
    """The global ``ssl:`` section with defaults filled in."""
    from kstlib.auth._config.loading import _load, _parse_ssl

    return _parse_ssl(_load(config))


def list_configured_providers(*, config: Mapping[str, Any] | None = None) -> list[str]:
    """Names under ``auth.providers``, in configuration order."""
    from kstlib.auth._config.loading import _load, _provider_names

    return _provider_names(_load(config))


def get_provider_config(
    provider_name: str, *, config: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """A copy of the provider's settings as written (secret references unresolved), or None."""
    import copy

    from kstlib.auth._config.loading import _load, _provider_names, _Section

    loaded = _load(config)
    if provider_name not in _provider_names(loaded):
        return None
    section = _Section.at(loaded, "auth", "providers", provider_name, provider=provider_name)
    return copy.deepcopy(dict(section.data))


def get_provider_type(name: str, *, config: Mapping[str, Any] | None = None) -> ProviderType:
    """``"oidc"`` or ``"oauth2"``, from the provider's ``type`` (default oidc)."""
    from kstlib.auth._config.builder import _ProviderBuilder
    from kstlib.auth._config.loading import _load

    return _ProviderBuilder(_load(config), name, {}).provider_type()


def _default_provider(loaded: LoadedConfig) -> str | None:
    from kstlib.auth._config.loading import _parse_auth, _provider_names, _Section

    default = _parse_auth(loaded).default_provider
    names = _provider_names(loaded)
    if default is not None and default not in names:
        configured = ", ".join(names) or "none"
        raise _Section.at(loaded, "auth").error(
            "default_provider",
            f"names {default!r}, which is not configured (configured providers: {configured})",
        )
    return default


def get_default_provider_name(*, config: Mapping[str, Any] | None = None) -> str | None:
    """``auth.default_provider``, checked to name a configured provider; None when unset."""
    from kstlib.auth._config.loading import _load

    return _default_provider(_load(config))


def _resolve_name(loaded: LoadedConfig, name: str | None) -> str:
    from kstlib.auth._config.builder import _unknown_provider, _where_to_configure
    from kstlib.auth._config.loading import _provider_names
    from kstlib.auth.errors import ConfigurationError

    names = _provider_names(loaded)
    if name is not None:
        if name not in names:
            raise _unknown_provider(names, name, loaded)
        return name
    default = _default_provider(loaded)
    if default is not None:
        return default
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigurationError(f"No provider is configured: {_where_to_configure(loaded)}.")
    raise ConfigurationError(
        f"Several providers are configured ({', '.join(names)}): name one, "
        "or set auth.default_provider."
    )


def resolve_provider_name(name: str | None, *, config: Mapping[str, Any] | None = None) -> str:
    """The provider to use: ``name``, else ``auth.default_provider``, else the only one."""
    from kstlib.auth._config.loading import _load

    return _resolve_name(_load(config), name)


def build_provider_config(
    provider_name: str, *, config: Mapping[str, Any] | None = None, **overrides: Any
) -> AuthProviderConfig:
    """Build the validated config of a configured provider, secret references resolved.

    ``overrides`` use field names or config spellings (``token_endpoint``) and win over the
    file; a None override keeps the configured value. Defaults for a configured provider:
    scopes ``[openid, profile, email]``, ``discovery_ttl`` from ``auth.discovery_ttl``,
    ``ssl_verify``/``ssl_ca_bundle`` from the global ``ssl:`` section.

    Raises:
        ConfigurationError: Unknown provider (the message lists the configured ones), a
            wrong value, or an unresolvable secret reference.
    """
    from kstlib.auth._config.loading import _load, _parse_auth

    loaded = _load(config)
    return _build(loaded, _parse_auth(loaded), provider_name, overrides).config


def _build(
    loaded: LoadedConfig, settings: AuthSettings, name: str, overrides: Mapping[str, Any]
) -> _BuiltProvider:
    from kstlib.auth._config.builder import _ProviderBuilder
    from kstlib.auth._config.loading import _parse_ssl

    return _ProviderBuilder(loaded, name, overrides).build(settings, _parse_ssl(loaded))


def _open_storage(storage_type: str, storage: StorageSettings) -> AbstractTokenStorage:
    from kstlib.auth.token import get_token_storage

    return get_token_storage(storage_type, **storage.options(storage_type))


def get_token_storage_for_provider(
    name: str, *, config: Mapping[str, Any] | None = None
) -> AbstractTokenStorage:
    """The token storage of a provider: its ``token_storage``, else ``auth.token_storage``."""
    from kstlib.auth._config.builder import _ProviderBuilder
    from kstlib.auth._config.loading import _load, _parse_auth

    loaded = _load(config)
    settings = _parse_auth(loaded)
    storage_type = _ProviderBuilder(loaded, name, {}).storage_type() or settings.token_storage
    return _open_storage(storage_type, settings.storage)


def load_provider_setup(
    name: str | None, *, config: Mapping[str, Any] | None = None, **overrides: Any
) -> ProviderSetup:
    """Build a provider's config, open its token storage, and gather the settings it needs.

    ``name`` None picks the provider as :func:`resolve_provider_name` does. ``overrides`` are
    those of :func:`build_provider_config`, plus ``type`` and ``token_storage``.
    """
    from kstlib.auth._config.loading import _file_of, _load, _parse_auth
    from kstlib.auth._config.setup import ProviderSetup

    loaded = _load(config)
    settings = _parse_auth(loaded)
    resolved = _resolve_name(loaded, name)
    built = _build(loaded, settings, resolved, overrides)
    return ProviderSetup(
        name=resolved,
        provider_type=built.provider_type,
        config=built.config,
        token_storage=_open_storage(built.token_storage, settings.storage),
        token_storage_type=built.token_storage,
        trace=settings.trace,
        callback_server=settings.callback_server,
        status=settings.status,
        source=_file_of(loaded.source_of("auth", "providers", resolved)),
    )


#: Provider classes by type, imported on first use: (module, class name).
_PROVIDER_CLASSES: dict[str, tuple[str, str]] = {
    "oidc": ("kstlib.auth.providers.oidc", "OIDCProvider"),
    "oauth2": ("kstlib.auth.providers.oauth2", "OAuth2Provider"),
}


def get_provider(
    name: str | None = None, *, config: Mapping[str, Any] | None = None, **overrides: Any
) -> AbstractAuthProvider:
    """Build the provider named ``name`` (resolved as :func:`resolve_provider_name` does).

    The class follows the provider's ``type``: :class:`OIDCProvider` for oidc,
    :class:`OAuth2Provider` for oauth2; it is built with its ``from_config``.
    """
    from importlib import import_module

    from kstlib.auth._config.builder import _ProviderBuilder
    from kstlib.auth._config.loading import _load

    loaded = _load(config)
    resolved = _resolve_name(loaded, name)
    provider_type = _ProviderBuilder(loaded, resolved, overrides).provider_type()
    module_name, class_name = _PROVIDER_CLASSES[provider_type]
    provider_class = getattr(import_module(module_name), class_name)
    return cast(
        "AbstractAuthProvider", provider_class.from_config(resolved, config=loaded, **overrides)
    )
