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

import copy
import dataclasses
import difflib
import importlib
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast
from urllib.parse import urlsplit

from kstlib.auth._net import is_loopback_host
from kstlib.auth.errors import ConfigurationError
from kstlib.auth.redaction import (
    REDACTED,
    is_sensitive_key,
    redact_mapping,
    redact_text,
    redact_url,
)
from kstlib.config import ConfigSource, ConfigWarning, LoadedConfig, load_config
from kstlib.secrets import SopsCache, resolve_secrets

if TYPE_CHECKING:
    from kstlib.auth.providers.base import AbstractAuthProvider
    from kstlib.auth.token import AbstractTokenStorage

__all__ = [
    "DEFAULT_CONFIG_SCOPES",
    "DEFAULT_REDIRECT_URI",
    "JWS_ALGORITHMS",
    "PROVIDER_TYPES",
    "TOKEN_ENDPOINT_AUTH_METHODS",
    "TOKEN_STORAGE_TYPES",
    "AuthProviderConfig",
    "AuthSettings",
    "CallbackServerSettings",
    "ConfigWarning",
    "FileStorageSettings",
    "ProviderSetup",
    "ProviderType",
    "SSLSettings",
    "SopsStorageSettings",
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

_T = TypeVar("_T")

ProviderType = Literal["oidc", "oauth2"]
#: Accepted spellings of a provider ``type`` (compared lower-case, without ``-``/``_``).
PROVIDER_TYPES: Final[Mapping[str, ProviderType]] = {
    "oidc": "oidc",
    "openid": "oidc",
    "openidconnect": "oidc",
    "oauth2": "oauth2",
    "oauth": "oauth2",
}
#: Storage backends this release ships; others can be added with
#: ``kstlib.auth.token.register_token_storage`` before the config is read.
TOKEN_STORAGE_TYPES: Final = ("memory", "file", "sops")
#: Client authentication methods implemented by ``kstlib.auth.clientauth`` (a test keeps
#: them equal); private_key_jwt and client_secret_jwt come with RFC 7523 support.
TOKEN_ENDPOINT_AUTH_METHODS: Final = ("client_secret_basic", "client_secret_post", "none")
#: Signature algorithms an ID token may be checked against ("none" is never one of them).
#: ID token algorithms a provider may be restricted to: asymmetric only (HS* would
#: need the client secret as a verification key). Equal to kstlib.auth.jose's
#: ALLOWED_ALGORITHMS, written out to keep cryptography out of config imports
#: (a test keeps them equal).
JWS_ALGORITHMS: Final = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
DEFAULT_REDIRECT_URI: Final = "http://127.0.0.1:8400/callback"
#: Scopes of a provider built from the configuration file when it sets none.
DEFAULT_CONFIG_SCOPES: Final = ("openid", "profile", "email")

_MAX_CALLBACK_TIMEOUT = 600
_SECRET_METHODS = frozenset({"client_secret_basic", "client_secret_post"})
#: Authorization request parameters kstlib sets itself; ``extra.authorize_params`` cannot.
_RESERVED_AUTHORIZE_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    }
)
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: AuthProviderConfig fields holding an endpoint URL (the issuer aside).
ENDPOINT_FIELDS: Final = (
    "authorize_url",
    "token_url",
    "revoke_url",
    "userinfo_url",
    "jwks_uri",
    "end_session_endpoint",
    "introspection_url",
    "device_authorization_url",
)
_ENDPOINT_FIELDS = ("issuer", *ENDPOINT_FIELDS)
#: Config-file spellings of endpoint keys -> AuthProviderConfig field names.
_ENDPOINT_ALIASES: Final[Mapping[str, str]] = {
    "authorization_endpoint": "authorize_url",
    "token_endpoint": "token_url",
    "revocation_endpoint": "revoke_url",
    "userinfo_endpoint": "userinfo_url",
    "introspection_endpoint": "introspection_url",
    "device_authorization_endpoint": "device_authorization_url",
}
#: Provider keys that choose classes rather than configure them: read as written, not resolved.
_SELECTOR_KEYS = ("type", "token_storage")

_AUTH_KEYS = (
    "default_provider",
    "token_storage",
    "discovery_ttl",
    "storage",
    "callback_server",
    "trace",
    "status",
    "providers",
)
_CALLBACK_KEYS = ("host", "port", "port_range", "timeout")
_TRACE_KEYS = ("pretty", "max_body_length", "extra_sensitive_keys")
_STATUS_KEYS = ("expiring_soon_threshold",)
_SSL_KEYS = ("verify", "ca_bundle")
#: Storage backends whose ``auth.storage.<name>`` options are passed to the backend unchecked.
_PASS_THROUGH_BACKENDS = ("redis", "keyring")


# --------------------------------------------------------------------------- value checks


class _FieldError(ConfigurationError):
    """A bad value for one field; ``problem`` leaves the key out so it can be relocated."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}", key=name)
        self.field = name
        self.problem = problem


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _FieldError(name, f"expected true or false, got {_kind(value)}")
    return value


def _int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(name, f"expected an integer, got {_kind(value)}")
    if not low <= value <= high:
        raise _FieldError(name, f"must be between {low} and {high}, got {value}")
    return value


def _number(name: str, value: object, low: float, high: float, *, above: bool = False) -> float:
    """A finite number in ``[low, high]`` (``(low, high]`` when ``above``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _FieldError(name, f"expected a number, got {_kind(value)}")
    if not (low < value <= high if above else low <= value <= high):
        bound = f"greater than {low:g}" if above else f"at least {low:g}"
        raise _FieldError(name, f"must be {bound} and at most {high:g}, got {value}")
    return float(value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _FieldError(name, f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise _FieldError(name, "must not be empty")
    return value


def _optional_text(name: str, value: object) -> str | None:
    return None if value is None else _text(name, value)


def _optional_path(name: str, value: object) -> str | None:
    return _optional_text(name, os.fspath(value) if isinstance(value, os.PathLike) else value)


def _str_list(name: str, value: object, *, split: bool = False) -> list[str]:
    """A list of non-empty strings; with ``split``, a space-separated string is accepted."""
    if split and isinstance(value, str):
        return value.split()
    if not isinstance(value, list | tuple):
        accepted = "a list of strings" + (" or a space-separated string" if split else "")
        raise _FieldError(name, f"expected {accepted}, got {_kind(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _FieldError(name, f"item {index} must be a non-empty string, got {_kind(item)}")
    return list(value)


def _url(name: str, value: object, *, loopback_only: bool = False, issuer: bool = False) -> str:
    """An absolute http(s) URL; plain http only on loopback hosts."""
    text = _text(name, value)
    shown = redact_url(text)
    try:
        parts = urlsplit(text)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        raise _FieldError(name, f"is not a valid URL: {shown!r}") from None
    if any(char.isspace() for char in text) or parts.scheme not in ("http", "https") or not host:
        raise _FieldError(name, f"must be an absolute http(s) URL, got {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise _FieldError(name, "must not contain credentials (user:password@)")
    if parts.fragment or (issuer and parts.query):
        raise _FieldError(name, f"must not contain a {'fragment' if parts.fragment else 'query'}")
    loopback = is_loopback_host(host)
    if loopback_only and not loopback:
        raise _FieldError(
            name,
            f"must be a loopback URL (http://127.0.0.1, http://[::1] or http://localhost), "
            f"got {shown!r}; set server_side: true for a redirect to a web server",
        )
    if parts.scheme == "http" and not loopback:
        raise _FieldError(
            name, f"must use https (plain http is only allowed on loopback hosts), got {shown!r}"
        )
    return text


def _optional_url(name: str, value: object, *, issuer: bool = False) -> str | None:
    return None if value is None else _url(name, value, issuer=issuer)


def _scopes(value: object) -> list[str]:
    scopes = _str_list("scopes", value, split=True)
    for scope in scopes:
        if any(char.isspace() or char in '"\\' for char in scope):
            raise _FieldError("scopes", f"scope {scope!r} contains a space, quote or backslash")
    return list(dict.fromkeys(scopes))


def _headers(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _FieldError(
            "headers", f"expected a mapping of header names to values, got {_kind(value)}"
        )
    headers: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _HEADER_NAME_RE.match(name):
            raise _FieldError("headers", f"{name!r} is not a valid header name")
        if not isinstance(item, str):
            raise _FieldError(
                "headers", f"the value of {name!r} must be a string, got {_kind(item)}"
            )
        if "\r" in item or "\n" in item:
            raise _FieldError("headers", f"the value of {name!r} contains a line break")
        headers[name] = item
    return headers


def _authorize_params(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _FieldError("extra", f"authorize_params must be a mapping, got {_kind(value)}")
    params: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not name:
            raise _FieldError("extra", f"authorize_params has an invalid name {name!r}")
        if name in _RESERVED_AUTHORIZE_PARAMS:
            raise _FieldError("extra", f"authorize_params must not set {name!r}: kstlib sets it")
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise _FieldError(
                "extra", f"authorize_params.{name} must be a string, got {_kind(item)}"
            )
        params[name] = str(item)
    return params


def _extra(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise _FieldError("extra", f"expected a mapping with string keys, got {_kind(value)}")
    extra = copy.deepcopy(dict(value))
    if "authorize_params" in extra:
        extra["authorize_params"] = _authorize_params(extra["authorize_params"])
    return extra


def _auth_method(value: object, client_secret: str | None) -> str | None:
    method = _optional_text("token_endpoint_auth_method", value)
    if method is not None and method not in TOKEN_ENDPOINT_AUTH_METHODS:
        raise _FieldError(
            "token_endpoint_auth_method",
            f"unknown method {method!r}; valid: {', '.join(TOKEN_ENDPOINT_AUTH_METHODS)}",
        )
    if method in _SECRET_METHODS and client_secret is None:
        raise _FieldError("token_endpoint_auth_method", f"{method} needs a client_secret")
    return method


def _algorithms(value: object) -> list[str] | None:
    if value is None:
        return None
    algorithms = _str_list("id_token_signing_alg_values", value)
    if not algorithms:
        raise _FieldError("id_token_signing_alg_values", "must list at least one algorithm")
    for algorithm in algorithms:
        if algorithm not in JWS_ALGORITHMS:
            refused = "is never accepted" if algorithm.lower() == "none" else "is not supported"
            raise _FieldError(
                "id_token_signing_alg_values",
                f"{algorithm!r} {refused}; valid: {', '.join(JWS_ALGORITHMS)}",
            )
    return algorithms


def _port_range(value: object) -> tuple[int, int] | None:
    """``[first, last]`` or ``"first-last"``; None when unset."""
    if value is None:
        return None
    parts: object = value.split("-") if isinstance(value, str) else value
    if isinstance(parts, list | tuple) and len(parts) == 2:
        first, last = (int(p) if isinstance(p, str) and p.strip().isdigit() else p for p in parts)
        first, last = _int("port_range", first, 1, 65535), _int("port_range", last, 1, 65535)
        if first <= last:
            return first, last
    raise _FieldError("port_range", "expected [first, last] (or 'first-last') with first <= last")


def _set(instance: object, name: str, value: object) -> None:
    """Store a normalised value on a frozen dataclass instance (from ``__post_init__``)."""
    object.__setattr__(instance, name, value)


# --------------------------------------------------------------------------- provider config


@dataclass(frozen=True, repr=False)
class AuthProviderConfig:
    """Validated settings of one OAuth2/OIDC provider.

    Needs ``issuer`` (endpoints found by discovery) or both ``authorize_url`` and
    ``token_url``. URLs must be absolute https, or http on a loopback host; ``redirect_uri``
    must be a loopback URL unless ``server_side``. ``scopes`` also accepts a space-separated
    string. Frozen: derive a variant with :func:`dataclasses.replace`, which validates again.
    ``repr()`` never shows the client secret nor credential headers.

    Raises:
        ConfigurationError: A field has a wrong type or value; ``key`` names the field.
    """

    client_id: str
    client_secret: str | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None
    userinfo_url: str | None = None
    jwks_uri: str | None = None
    end_session_endpoint: str | None = None
    issuer: str | None = None
    scopes: list[str] = field(default_factory=lambda: ["openid"])
    redirect_uri: str = DEFAULT_REDIRECT_URI
    pkce: bool = True
    discovery_ttl: int = 3600
    headers: dict[str, str] = field(default_factory=dict)
    ssl_verify: bool = True
    ssl_ca_bundle: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    server_side: bool = False
    #: None: chosen by the provider (client_secret_basic with a secret, none without).
    token_endpoint_auth_method: str | None = None
    introspection_url: str | None = None
    device_authorization_url: str | None = None
    post_logout_redirect_uri: str | None = None
    #: Clock skew, in seconds, tolerated when checking ID token times.
    leeway: float = 60.0
    #: HTTP timeout, in seconds, of every request to the provider.
    timeout: float = 30.0
    max_retries: int = 2
    #: Seconds before expiry at which a token is refreshed.
    refresh_skew: float = 60.0
    #: Accepted ID token algorithms (None: what discovery advertises, within JWS_ALGORITHMS).
    id_token_signing_alg_values: list[str] | None = None

    def __post_init__(self) -> None:
        for name, value in _checked_provider_fields(self).items():
            _set(self, name, value)

    @property
    def is_public_client(self) -> bool:
        """True when the client has no secret (it then relies on PKCE)."""
        return self.client_secret is None

    def to_safe_dict(self) -> dict[str, Any]:
        """The fields as a dict that is safe to print or log (secrets replaced)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["client_secret"] = None if self.client_secret is None else REDACTED
        values["headers"] = {
            name: REDACTED if _is_secret_header(name) else redact_text(value)
            for name, value in self.headers.items()
        }
        values["extra"] = redact_mapping(self.extra)
        return values

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.to_safe_dict().items())
        return f"{type(self).__name__}({shown})"


def _is_secret_header(name: str) -> bool:
    return is_sensitive_key(name) or is_sensitive_key(name.replace("-", "_"))


def _checked_endpoints(cfg: AuthProviderConfig) -> dict[str, str | None]:
    urls = {
        name: _optional_url(name, getattr(cfg, name), issuer=name == "issuer")
        for name in _ENDPOINT_FIELDS
    }
    if urls["issuer"] is None and (urls["authorize_url"] is None or urls["token_url"] is None):
        raise _FieldError(
            "issuer",
            "set 'issuer' (endpoints found by discovery) or both 'authorize_url' "
            "and 'token_url' (authorization_endpoint, token_endpoint)",
        )
    return urls


def _checked_provider_fields(cfg: AuthProviderConfig) -> dict[str, Any]:
    """Every field of ``cfg`` checked and normalised, in declaration order."""
    client_secret = _optional_text("client_secret", cfg.client_secret)
    server_side = _bool("server_side", cfg.server_side)
    return {
        "client_id": _text("client_id", cfg.client_id),
        "client_secret": client_secret,
        **_checked_endpoints(cfg),
        "scopes": _scopes(cfg.scopes),
        "redirect_uri": _url("redirect_uri", cfg.redirect_uri, loopback_only=not server_side),
        "pkce": _bool("pkce", cfg.pkce),
        "discovery_ttl": _int("discovery_ttl", cfg.discovery_ttl, 0, 30 * 86400),
        "headers": _headers(cfg.headers),
        "ssl_verify": _bool("ssl_verify", cfg.ssl_verify),
        "ssl_ca_bundle": _optional_path("ssl_ca_bundle", cfg.ssl_ca_bundle),
        "extra": _extra(cfg.extra),
        "token_endpoint_auth_method": _auth_method(cfg.token_endpoint_auth_method, client_secret),
        "post_logout_redirect_uri": _optional_url(
            "post_logout_redirect_uri", cfg.post_logout_redirect_uri
        ),
        "leeway": _number("leeway", cfg.leeway, 0, 3600),
        "timeout": _number("timeout", cfg.timeout, 0, 3600, above=True),
        "max_retries": _int("max_retries", cfg.max_retries, 0, 10),
        "refresh_skew": _number("refresh_skew", cfg.refresh_skew, 0, 86400),
        "id_token_signing_alg_values": _algorithms(cfg.id_token_signing_alg_values),
    }


# --------------------------------------------------------------------------- auth settings


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


# --------------------------------------------------------------------------- sections


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
    section.warn_unknown((*TOKEN_STORAGE_TYPES, *_PASS_THROUGH_BACKENDS))
    section.child("memory").warn_unknown(())
    file_section, sops_section = section.child("file"), section.child("sops")
    file_section.warn_unknown(("directory",))
    sops_section.warn_unknown(("directory", "age_recipients", "sops_binary"))
    sops_values = {
        **sops_section.paths(("directory",)),
        **sops_section.present(("age_recipients", "sops_binary")),
    }
    backends = {
        name: dict(section.child(name).data)
        for name in _PASS_THROUGH_BACKENDS
        if name in section.data
    }
    return StorageSettings(
        file=file_section.build(FileStorageSettings, file_section.paths(("directory",))),
        sops=sops_section.build(SopsStorageSettings, sops_values),
        backends=backends,
    )


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


# --------------------------------------------------------------------------- providers


def _unknown_provider(names: list[str], name: str) -> ConfigurationError:
    if not names:
        return ConfigurationError(
            f"Unknown provider {name!r}: no provider is configured "
            "(add one under auth.providers in ~/.config/kstlib.conf.yml).",
            provider=name,
        )
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigurationError(
        f"Unknown provider {name!r}{hint}; configured providers: {', '.join(names)}.",
        provider=name,
    )


def _provider_section(loaded: LoadedConfig, name: str) -> _Section:
    names = _provider_names(loaded)
    if name not in names:
        raise _unknown_provider(names, name)
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
                close = difflib.get_close_matches(key, sorted(_PROVIDER_KEYS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.fail(key, f"unknown setting{hint}")
        provider_type, storage = self.provider_type(), self.storage_type()
        values = self._canonical(self._resolved_file_values())
        values.update(self._canonical(self._resolved_overrides()))
        try:
            self._complete(values, settings, ssl)
            config = AuthProviderConfig(**values)
        except _FieldError as exc:
            raise self.fail(exc.field, exc.problem) from None
        if not config.ssl_verify:
            self.section.warn("ssl_verify", "TLS certificate verification is disabled")
        return _BuiltProvider(config, provider_type, storage or settings.token_storage)

    def _resolved_file_values(self) -> dict[str, Any]:
        """The provider's known keys, secret references resolved against their own file."""
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
            )
        return values

    def _resolved_overrides(self) -> dict[str, Any]:
        """The overrides that configure the provider, secret references resolved."""
        settings = {k: v for k, v in self.overrides.items() if k not in _SELECTOR_KEYS}
        return resolve_secrets(
            settings, base_dir=None, what=f"override of provider {self.name!r}", provider=self.name
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
        values.setdefault("scopes", list(DEFAULT_CONFIG_SCOPES))
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


# --------------------------------------------------------------------------- public helpers


@dataclass(frozen=True)
class ProviderSetup:
    """Everything a provider class needs to build itself from the configuration.

    ``OAuth2Provider.from_config`` is ``setup = load_provider_setup(name, config=config,
    **overrides)`` then ``cls(setup.name, setup.config, setup.token_storage, ...)``.
    """

    name: str
    provider_type: ProviderType
    config: AuthProviderConfig
    token_storage: AbstractTokenStorage
    token_storage_type: str
    trace: TraceSettings
    callback_server: CallbackServerSettings
    status: StatusSettings
    source: str | None = None

    @property
    def ssl(self) -> SSLSettings:
        """The provider's effective TLS settings (its own, else the global ``ssl:`` section)."""
        return SSLSettings(verify=self.config.ssl_verify, ca_bundle=self.config.ssl_ca_bundle)


def get_auth_settings(*, config: Mapping[str, Any] | None = None) -> AuthSettings:
    """The ``auth:`` section with defaults filled in (providers left as written)."""
    return _parse_auth(_load(config))


def get_ssl_settings(*, config: Mapping[str, Any] | None = None) -> SSLSettings:
    """The global ``ssl:`` section with defaults filled in."""
    return _parse_ssl(_load(config))


def list_configured_providers(*, config: Mapping[str, Any] | None = None) -> list[str]:
    """Names under ``auth.providers``, in configuration order."""
    return _provider_names(_load(config))


def get_provider_config(
    provider_name: str, *, config: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """A copy of the provider's settings as written (secret references unresolved), or None."""
    loaded = _load(config)
    if provider_name not in _provider_names(loaded):
        return None
    section = _Section.at(loaded, "auth", "providers", provider_name, provider=provider_name)
    return copy.deepcopy(dict(section.data))


def get_provider_type(name: str, *, config: Mapping[str, Any] | None = None) -> ProviderType:
    """``"oidc"`` or ``"oauth2"``, from the provider's ``type`` (default oidc)."""
    return _ProviderBuilder(_load(config), name, {}).provider_type()


def _default_provider(loaded: LoadedConfig) -> str | None:
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
    return _default_provider(_load(config))


def _resolve_name(loaded: LoadedConfig, name: str | None) -> str:
    names = _provider_names(loaded)
    if name is not None:
        if name not in names:
            raise _unknown_provider(names, name)
        return name
    default = _default_provider(loaded)
    if default is not None:
        return default
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigurationError(
            "No provider is configured: add one under auth.providers in ~/.config/kstlib.conf.yml."
        )
    raise ConfigurationError(
        f"Several providers are configured ({', '.join(names)}): name one, "
        "or set auth.default_provider."
    )


def resolve_provider_name(name: str | None, *, config: Mapping[str, Any] | None = None) -> str:
    """The provider to use: ``name``, else ``auth.default_provider``, else the only one."""
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
    loaded = _load(config)
    return _build(loaded, _parse_auth(loaded), provider_name, overrides).config


def _build(
    loaded: LoadedConfig, settings: AuthSettings, name: str, overrides: Mapping[str, Any]
) -> _BuiltProvider:
    return _ProviderBuilder(loaded, name, overrides).build(settings, _parse_ssl(loaded))


def _open_storage(storage_type: str, storage: StorageSettings) -> AbstractTokenStorage:
    from kstlib.auth.token import get_token_storage

    if storage_type == "file":
        return get_token_storage("file", directory=storage.file.directory)
    if storage_type == "sops":
        recipients = list(storage.sops.age_recipients) or None
        return get_token_storage(
            "sops",
            directory=storage.sops.directory,
            age_recipients=recipients,
            sops_binary=storage.sops.sops_binary,
        )
    return get_token_storage(storage_type, **dict(storage.backends.get(storage_type, {})))


def get_token_storage_for_provider(
    name: str, *, config: Mapping[str, Any] | None = None
) -> AbstractTokenStorage:
    """The token storage of a provider: its ``token_storage``, else ``auth.token_storage``."""
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
    loaded = _load(config)
    resolved = _resolve_name(loaded, name)
    provider_type = _ProviderBuilder(loaded, resolved, overrides).provider_type()
    module_name, class_name = _PROVIDER_CLASSES[provider_type]
    provider_class = getattr(importlib.import_module(module_name), class_name)
    return cast(
        "AbstractAuthProvider", provider_class.from_config(resolved, config=loaded, **overrides)
    )
