"""Reading sections of a loaded configuration, with errors and warnings naming the file."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kstlib.auth._config.settings import (
    AuthSettings,
    BackendSettings,
    CallbackServerSettings,
    SSLSettings,
    StatusSettings,
    StorageSettings,
    TraceSettings,
)
from kstlib.auth._config.values import (
    _AUTH_KEYS,
    _CALLBACK_KEYS,
    _SSL_KEYS,
    _STATUS_KEYS,
    _T,
    _TRACE_KEYS,
    _FieldError,
    _kind,
)
from kstlib.auth._net import is_loopback_host
from kstlib.auth.errors import ConfigurationError
from kstlib.config import ConfigSource, ConfigWarning, LoadedConfig, load_config

if TYPE_CHECKING:
    from kstlib.auth.token import StorageSetting


def _file_of(source: ConfigSource | None) -> str | None:
    return str(source.path) if source is not None and source.path is not None else None


def _absolute(text: str, base_dir: Path | None) -> str:
    """``text`` as a path, made absolute against ``base_dir`` (None: the current directory)."""
    path = Path(text).expanduser()
    return str(path if path.is_absolute() else (base_dir or Path.cwd()) / path)


@dataclass(frozen=True)
class _Section:
    """A mapping inside the loaded configuration, able to report problems with their file."""

    loaded: LoadedConfig
    path: tuple[str, ...]
    data: Mapping[Any, Any]
    provider: str | None = None

    @classmethod
    def at(cls, loaded: LoadedConfig, *path: str, provider: str | None = None) -> _Section:
        section = cls(loaded, path, {}, provider)
        value = loaded.get_path(*path)
        if value is None:
            return section
        if not isinstance(value, Mapping):
            raise section.error(None, f"expected a mapping, got {_kind(value)}")
        return dataclasses.replace(section, data=value)

    def child(self, key: str) -> _Section:
        return _Section.at(self.loaded, *self.path, key, provider=self.provider)

    def dotted(self, key: object = None) -> str:
        parts = self.path if key is None else (*self.path, key)
        return ".".join(str(part) for part in parts)

    def source(self, key: object = None) -> ConfigSource | None:
        keys = self.path if key is None else (*self.path, key)
        return self.loaded.source_of(*keys)

    def _where(self, key: object) -> tuple[str, str | None]:
        file = _file_of(self.source(key))
        return (f"{file}: " if file else "") + self.dotted(key), file

    def error(self, key: object, problem: str) -> ConfigurationError:
        where, file = self._where(key)
        return ConfigurationError(
            f"{where}: {problem}.", file=file, provider=self.provider, key=self.dotted(key)
        )

    def warn(self, key: object, problem: str) -> None:
        where, _ = self._where(key)
        warnings.warn(f"{where}: {problem}", ConfigWarning, stacklevel=3)

    def warn_unknown(self, known: Collection[str]) -> None:
        for key in self.data:
            if key not in known:
                import difflib  # suggestions only on a mistake (#16 item 4)

                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.warn(key, f"unknown key{hint}; ignored")

    def present(self, keys: Iterable[str]) -> dict[str, Any]:
        """The values set (not null) for ``keys``."""
        return {key: self.data[key] for key in keys if self.data.get(key) is not None}

    def paths(self, keys: Iterable[str]) -> dict[str, Any]:
        """Like :meth:`present`, relative file paths made relative to the file that set them."""
        values = self.present(keys)
        for key, value in values.items():
            if isinstance(value, str) and value:
                source = self.source(key)
                values[key] = _absolute(value, source.base_dir if source else None)
        return values

    def build(self, factory: Callable[..., _T], kwargs: Mapping[str, Any]) -> _T:
        """``factory(**kwargs)``, its field errors relocated to this section's file and keys."""
        try:
            return factory(**kwargs)
        except _FieldError as exc:
            raise self.error(exc.field, exc.problem) from None


def _load(config: Mapping[str, Any] | None) -> LoadedConfig:
    """The configuration to use: ``config`` when given (see the module doc), else the files."""
    if config is None:
        return load_config()
    if isinstance(config, LoadedConfig):
        return config
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"config= must be a mapping, got {_kind(config)}.")
    if "auth" in config or not any(key in _AUTH_KEYS for key in config):
        return LoadedConfig.from_mapping(config)
    return LoadedConfig.from_mapping({"auth": config}, label="auth mapping")


def _parse_plain(section: _Section, factory: Callable[..., _T], keys: Collection[str]) -> _T:
    section.warn_unknown(keys)
    return section.build(factory, section.present(keys))


def _parse_callback_server(section: _Section) -> CallbackServerSettings:
    settings = _parse_plain(section, CallbackServerSettings, _CALLBACK_KEYS)
    if not is_loopback_host(settings.host):
        section.warn(
            "host",
            "the callback server listens on a non-loopback interface: the authorization "
            "code it receives is reachable from the network",
        )
    return settings


def _parse_storage(section: _Section) -> StorageSettings:
    """``auth.storage``: each backend's section checked against what the backend declares."""
    from kstlib.auth._config.settings import _registered_backend_defaults
    from kstlib.auth.token.factory import find_token_storage, registered_token_storages

    backends = _registered_backend_defaults()
    unknown: list[str] = []
    for name in section.data:
        key = str(name)
        try:
            backend = find_token_storage(key) if key == key.strip().lower() else None
        except ConfigurationError as exc:
            raise section.error(name, exc.message.rstrip(".")) from None
        if backend is None:
            unknown.append(key)
            continue
        backends[key] = _parse_backend(section.child(key), key, backend.settings)
    if unknown:
        known = registered_token_storages()
        for key in unknown:
            import difflib  # suggestions only on a mistake (#16 item 4)

            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
            section.warn(key, f"unknown token storage backend{hint}; ignored")
    return StorageSettings(backends=backends)


def _parse_backend(
    section: _Section, name: str, declared: tuple[StorageSetting, ...] | None
) -> BackendSettings:
    """One backend's section: declared keys parsed (paths relative to their file), defaults."""
    if declared is None:  # the backend declares nothing: its section as written
        return BackendSettings(name, copy.deepcopy(dict(section.data)))
    by_name = {setting.name: setting for setting in declared}
    section.warn_unknown(by_name)
    written = {
        **section.present(s.name for s in declared if not s.path),
        **section.paths(s.name for s in declared if s.path),
    }
    values: dict[str, Any] = {}
    for setting in declared:
        if setting.name not in written:
            values[setting.name] = setting.default_value()
            continue
        try:
            values[setting.name] = setting.parse(written[setting.name])
        except (TypeError, ValueError) as exc:
            raise section.error(setting.name, str(exc)) from None
    return BackendSettings(name, values)


def _provider_names(loaded: LoadedConfig) -> list[str]:
    section = _Section.at(loaded, "auth", "providers")
    for name in section.data:
        if not isinstance(name, str) or not name.strip():
            raise section.error(None, f"provider names must be non-empty strings, got {name!r}")
    return list(section.data)


def _parse_auth(loaded: LoadedConfig) -> AuthSettings:
    section = _Section.at(loaded, "auth")
    section.warn_unknown(_AUTH_KEYS)
    names = _provider_names(loaded)
    providers = {name: copy.deepcopy(section.data["providers"][name]) for name in names}
    return section.build(
        AuthSettings,
        {
            **section.present(("default_provider", "token_storage", "discovery_ttl")),
            "storage": _parse_storage(section.child("storage")),
            "callback_server": _parse_callback_server(section.child("callback_server")),
            "trace": _parse_plain(section.child("trace"), TraceSettings, _TRACE_KEYS),
            "status": _parse_plain(section.child("status"), StatusSettings, _STATUS_KEYS),
            "providers": providers,
        },
    )


def _parse_ssl(loaded: LoadedConfig) -> SSLSettings:
    section = _Section.at(loaded, "ssl")
    section.warn_unknown(_SSL_KEYS)
    values = {**section.present(("verify",)), **section.paths(("ca_bundle",))}
    settings = section.build(SSLSettings, values)
    if settings.ca_bundle is not None and not Path(settings.ca_bundle).is_file():
        raise section.error("ca_bundle", f"CA bundle file {settings.ca_bundle} not found")
    return settings
