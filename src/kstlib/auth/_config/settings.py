"""The ``auth:`` and ``ssl:`` sections as typed settings with their defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
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


def _default_token_directory() -> Path:
    """The token storages' own default directory (``~/.config/kstlib/auth/tokens`` on Linux)."""
    from kstlib.auth.token.file import default_token_directory

    return default_token_directory()


def _directory(name: str, value: object) -> Path:
    text = _optional_path(name, value)
    return _default_token_directory() if text is None else Path(text).expanduser()


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
class FileStorageSettings:
    """``auth.storage.file``."""

    directory: Path = field(default_factory=_default_token_directory)

    def __post_init__(self) -> None:
        _set(self, "directory", _directory("directory", self.directory))


@dataclass(frozen=True)
class SopsStorageSettings:
    """``auth.storage.sops``: where encrypted tokens go, and the age keys they are encrypted to."""

    directory: Path = field(default_factory=_default_token_directory)
    age_recipients: tuple[str, ...] = ()
    #: Name (looked up on PATH) or path of the sops executable.
    sops_binary: str = "sops"

    def __post_init__(self) -> None:
        _set(self, "directory", _directory("directory", self.directory))
        _set(self, "sops_binary", _text("sops_binary", self.sops_binary))
        recipients = self.age_recipients
        if isinstance(recipients, str):
            recipients = recipients.replace(",", " ").split()
        _set(self, "age_recipients", tuple(_str_list("age_recipients", recipients)))


@dataclass(frozen=True)
class StorageSettings:
    """``auth.storage``: per-backend options (``backends`` holds redis/keyring options as given)."""

    file: FileStorageSettings = field(default_factory=FileStorageSettings)
    sops: SopsStorageSettings = field(default_factory=SopsStorageSettings)
    backends: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


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
    from kstlib.auth.token import registered_token_storages

    kind = _text(name, value).strip().lower()
    valid = registered_token_storages()
    if kind not in valid:
        raise _FieldError(name, f"unknown token storage {value!r}; valid: {', '.join(valid)}")
    return kind
