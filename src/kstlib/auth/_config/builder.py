"""Building one provider's :class:`AuthProviderConfig` from its section and code overrides."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kstlib.auth._config.loading import (
    _absolute,
    _file_of,
    _provider_names,
    _Section,
)
from kstlib.auth._config.provider import (
    AuthProviderConfig,
)
from kstlib.auth._config.settings import (
    AuthSettings,
    SSLSettings,
    _storage_type,
)
from kstlib.auth._config.values import (
    _ENDPOINT_ALIASES,
    _SELECTOR_KEYS,
    _T,
    DEFAULT_CONFIG_SCOPES,
    PROVIDER_TYPES,
    SERVICE_FLOWS,
    ProviderType,
    _FieldError,
    _flow,
    _kind,
)
from kstlib.auth.errors import ConfigurationError
from kstlib.config import LoadedConfig


def _where_to_configure(loaded: LoadedConfig) -> str:
    """Where a provider could be added: the files actually loaded, else the user's file."""
    from kstlib.config import packaged_defaults_path, user_config_home

    files = [
        source.label
        for source in loaded.sources
        if source.path is not None and source.path != packaged_defaults_path()
    ]
    if files:
        return f"add one under auth.providers in {', '.join(files)}"
    user_file = user_config_home() / "kstlib" / "kstlib.conf.yml"
    return (
        f"no configuration file was found: create {user_file} with an auth.providers "
        "section ('kstlib auth config' shows the files searched)"
    )


def _unknown_provider(names: list[str], name: str, loaded: LoadedConfig) -> ConfigurationError:
    if not names:
        return ConfigurationError(
            f"Unknown provider {name!r}: no provider is configured "
            f"({_where_to_configure(loaded)}).",
            provider=name,
        )
    import difflib  # suggestions only on a mistake (#16 item 4)

    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigurationError(
        f"Unknown provider {name!r}{hint}; configured providers: {', '.join(names)}.",
        provider=name,
    )


def _provider_section(loaded: LoadedConfig, name: str) -> _Section:
    names = _provider_names(loaded)
    if name not in names:
        raise _unknown_provider(names, name, loaded)
    return _Section.at(loaded, "auth", "providers", name, provider=name)


def _provider_type(raw: object) -> ProviderType:
    """The type named by a provider's ``type`` key (oidc when unset)."""
    if raw is None:
        return "oidc"
    kind = None
    if isinstance(raw, str):
        kind = PROVIDER_TYPES.get(raw.strip().lower().replace("-", "").replace("_", ""))
    if kind is None:
        got = f"unknown provider type {raw!r}" if isinstance(raw, str) else f"got {_kind(raw)}"
        raise _FieldError(
            "type", f"{got}; valid types: oidc (or openid, openidconnect), oauth2 (or oauth)"
        )
    return kind


def _provider_storage(raw: object) -> str | None:
    """The provider's own ``token_storage``, None when it uses ``auth.token_storage``."""
    return None if raw is None else _storage_type("token_storage", raw)


_PROVIDER_FIELDS = tuple(f.name for f in dataclasses.fields(AuthProviderConfig))
_PROVIDER_KEYS = frozenset((*_PROVIDER_FIELDS, *_ENDPOINT_ALIASES, *_SELECTOR_KEYS))


@dataclass(frozen=True)
class _BuiltProvider:
    config: AuthProviderConfig
    provider_type: ProviderType
    token_storage: str


class _ProviderBuilder:
    """Turns one provider's mapping (plus code overrides) into an :class:`AuthProviderConfig`."""

    def __init__(self, loaded: LoadedConfig, name: str, overrides: Mapping[str, Any]) -> None:
        self.loaded = loaded
        self.name = name
        self.section = _provider_section(loaded, name)
        self.overrides = {key: value for key, value in overrides.items() if value is not None}
        self.spelled: dict[str, str] = {}  # field name -> key as written

    def fail(self, key: str, problem: str) -> ConfigurationError:
        if key in self.overrides or self.spelled.get(key) in self.overrides:
            return ConfigurationError(
                f"Provider {self.name!r}: override {self.spelled.get(key, key)}: {problem}.",
                provider=self.name,
                key=key,
            )
        return self.section.error(self.spelled.get(key, key), problem)

    def _selector(self, key: str, parse: Callable[[object], _T]) -> _T:
        try:
            return parse(self.overrides.get(key, self.section.data.get(key)))
        except _FieldError as exc:
            raise self.fail(exc.field, exc.problem) from None

    def provider_type(self) -> ProviderType:
        """The ``type`` from the overrides, else from the file (oidc when unset)."""
        return self._selector("type", _provider_type)

    def storage_type(self) -> str | None:
        """The provider's own ``token_storage`` (overrides first), None when it has none."""
        return self._selector("token_storage", _provider_storage)

    def build(self, settings: AuthSettings, ssl: SSLSettings) -> _BuiltProvider:
        self.section.warn_unknown(_PROVIDER_KEYS)
        for key in self.overrides:
            if key not in _PROVIDER_KEYS:
                import difflib  # suggestions only on a mistake (#16 item 4)

                close = difflib.get_close_matches(key, sorted(_PROVIDER_KEYS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail(key, f"unknown setting{hint}")
        provider_type, storage = self.provider_type(), self.storage_type()
        sops_binary = settings.storage.sops.sops_binary
        values = self._canonical(self._resolved_file_values(sops_binary))
        values.update(self._canonical(self._resolved_overrides(sops_binary)))
        try:
            self._complete(values, settings, ssl)
            config = AuthProviderConfig(**values)
        except _FieldError as exc:
            raise self.fail(exc.field, exc.problem) from None
        if not config.ssl_verify:
            self.section.warn("ssl_verify", "TLS certificate verification is disabled")
        return _BuiltProvider(config, provider_type, storage or settings.token_storage)

    def _resolved_file_values(self, sops_binary: str) -> dict[str, Any]:
        """The provider's known keys, secret references resolved against their own file."""
        from kstlib.secrets import SopsCache, resolve_secrets  # when building (#16 item 4)

        cache: SopsCache = {}
        values: dict[str, Any] = {}
        for key, value in self.section.data.items():
            if key not in _PROVIDER_KEYS or key in _SELECTOR_KEYS or value is None:
                continue
            source = self.section.source(key)
            values |= resolve_secrets(
                {key: value},
                base_dir=source.base_dir if source else None,
                what=self.section.dotted(),
                source=_file_of(source),
                provider=self.name,
                cache=cache,
                sops_binary=sops_binary,
            )
        return values

    def _resolved_overrides(self, sops_binary: str) -> dict[str, Any]:
        """The overrides that configure the provider, secret references resolved."""
        from kstlib.secrets import resolve_secrets  # when building (#16 item 4)

        settings = {k: v for k, v in self.overrides.items() if k not in _SELECTOR_KEYS}
        return resolve_secrets(
            settings,
            base_dir=None,
            what=f"override of provider {self.name!r}",
            provider=self.name,
            sops_binary=sops_binary,
        )

    def _canonical(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Keys renamed to field names; two spellings of one endpoint must agree."""
        canonical: dict[str, Any] = {}
        for key, value in values.items():
            name = _ENDPOINT_ALIASES.get(key, key)
            if name in canonical and canonical[name] != value:
                raise self.fail(
                    name, f"conflicts with {key!r}: both spellings are set, differently"
                )
            canonical[name] = value
            self.spelled[name] = key
        return canonical

    def _complete(self, values: dict[str, Any], settings: AuthSettings, ssl: SSLSettings) -> None:
        """Fill in the defaults of a configured provider and check what the fields cannot."""
        if "client_id" not in values:
            raise _FieldError("client_id", "missing: every provider needs a client_id")
        # a service flow has no user: no OpenID scopes unless the provider lists some
        service = _flow(values.get("flow")) in SERVICE_FLOWS
        values.setdefault("scopes", [] if service else list(DEFAULT_CONFIG_SCOPES))
        values.setdefault("discovery_ttl", settings.discovery_ttl)
        values.setdefault("ssl_verify", ssl.verify)
        bundle = values.get("ssl_ca_bundle")
        if bundle is None:
            values["ssl_ca_bundle"] = ssl.ca_bundle
        elif isinstance(bundle, str | os.PathLike):
            from_file = "ssl_ca_bundle" not in self.overrides
            source = self.section.source("ssl_ca_bundle") if from_file else None
            path = _absolute(os.fspath(bundle), source.base_dir if source else None)
            if not Path(path).is_file():
                raise _FieldError("ssl_ca_bundle", f"CA bundle file {path} not found")
            values["ssl_ca_bundle"] = path
