"""The ``auth:`` and ``ssl:`` sections as typed settings with their defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kstlib.auth._config.values import (
    _MAX_CALLBACK_TIMEOUT,
    _bool,
    _FieldError,
    _int,
    _number,
    _optional_path,
    _optional_text,
    _port_range,
    _set,
    _str_list,
    _text,
)
from kstlib.auth.errors import ConfigurationError


@dataclass(frozen=True)
class SSLSettings:
    """The global ``ssl:`` section: the TLS defaults of every HTTP client."""

    verify: bool = True
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        _bool("verify", self.verify)
        _set(self, "ca_bundle", _optional_path("ca_bundle", self.ca_bundle))


@dataclass(frozen=True)
class CallbackServerSettings:
    """``auth.callback_server``: the loopback server receiving the login redirect."""

    host: str = "127.0.0.1"
    port: int = 8400
    port_range: tuple[int, int] | None = None
    timeout: float = 120.0

    def __post_init__(self) -> None:
        _text("host", self.host)
        _int("port", self.port, 0, 65535)
        _set(self, "port_range", _port_range(self.port_range))
        _set(
            self, "timeout", _number("timeout", self.timeout, 0, _MAX_CALLBACK_TIMEOUT, above=True)
        )


@dataclass(frozen=True)
class TraceSettings:
    """``auth.trace``: HTTP trace logging (always redacted)."""

    pretty: bool = True
    max_body_length: int = 10000
    extra_sensitive_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _bool("pretty", self.pretty)
        _int("max_body_length", self.max_body_length, 0, 100_000_000)
        keys = _str_list("extra_sensitive_keys", self.extra_sensitive_keys)
        _set(self, "extra_sensitive_keys", tuple(keys))


@dataclass(frozen=True)
class StatusSettings:
    """``auth.status``: thresholds of ``kstlib auth status``."""

    expiring_soon_threshold: int = 300

    def __post_init__(self) -> None:
        _int("expiring_soon_threshold", self.expiring_soon_threshold, 0, 30 * 86400)


@dataclass(frozen=True)
class BackendSettings:
    """``auth.storage.<backend>``: the declared settings of one backend, defaults filled in.

    Read a setting as an attribute (``settings.storage.sops.sops_binary``) or as a
    mapping (``values["sops_binary"]``); :meth:`as_options` gives the keyword arguments
    of the backend's factory.
    """

    backend: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"storage backend {self.backend!r} has no setting {name!r}")

    def as_options(self) -> dict[str, Any]:
        """The keyword arguments of the backend's factory (null values left out)."""
        return {key: value for key, value in self.values.items() if value is not None}


def _registered_backend_defaults() -> dict[str, BackendSettings]:
    """Default settings of every backend registered so far (entry points are not loaded)."""
    from kstlib.auth.token.factory import _REGISTRY

    return {
        name: BackendSettings(
            name, {setting.name: setting.default_value() for setting in backend.settings or ()}
        )
        for name, backend in list(_REGISTRY.items())
    }


@dataclass(frozen=True)
class StorageSettings:
    """``auth.storage``: the settings of each storage backend, as its registry entry declares.

    ``settings.storage.file.directory``, ``settings.storage.sops.age_recipients``: one
    :class:`BackendSettings` per backend known when the configuration was read (the
    built-in ones, registered ones, and entry-point backends the configuration names).
    """

    backends: Mapping[str, BackendSettings] = field(default_factory=_registered_backend_defaults)

    def __getattr__(self, name: str) -> BackendSettings:
        if name.startswith("__"):
            raise AttributeError(name)
        backends = self.__dict__.get("backends", {})
        if name in backends:
            return backends[name]  # type: ignore[no-any-return]
        raise AttributeError(f"no token storage backend named {name!r}")

    def options(self, backend: str) -> dict[str, Any]:
        """The factory keyword arguments of ``backend`` (none when it has no settings)."""
        found = self.backends.get(backend)
        return found.as_options() if found is not None else {}


@dataclass(frozen=True)
class AuthSettings:
    """The ``auth:`` section with its defaults.

    ``providers`` holds each provider's settings as written (secret references unresolved);
    build one with :func:`build_provider_config`.
    """

    default_provider: str | None = None
    token_storage: str = "file"
    discovery_ttl: int = 3600
    storage: StorageSettings = field(default_factory=StorageSettings)
    callback_server: CallbackServerSettings = field(default_factory=CallbackServerSettings)
    trace: TraceSettings = field(default_factory=TraceSettings)
    status: StatusSettings = field(default_factory=StatusSettings)
    providers: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _optional_text("default_provider", self.default_provider)
        _set(self, "token_storage", _storage_type("token_storage", self.token_storage))
        _int("discovery_ttl", self.discovery_ttl, 0, 30 * 86400)


def _storage_type(name: str, value: object) -> str:
    from kstlib.auth.token.factory import find_token_storage, registered_token_storages

    kind = _text(name, value).strip().lower()
    try:
        found = find_token_storage(kind)
    except ConfigurationError as exc:
        raise _FieldError(name, exc.message.rstrip(".")) from None
    if found is None:
        valid = registered_token_storages()
        raise _FieldError(name, f"unknown token storage {value!r}; valid: {', '.join(valid)}")
    return kind
