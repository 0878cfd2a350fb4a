"""Checks of single configuration values: each returns the normalised value or raises
:class:`FieldError` naming the field (relocated to its file and key by the caller)."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

from kstlib._redaction import redact_url
from kstlib.auth._clientauth import (
    CLIENT_ASSERTION_ALGORITHMS,
    CLIENT_AUTH_METHODS,
    CLIENT_AUTH_REQUIREMENTS,
    HMAC_ASSERTION_ALGORITHMS,
)
from kstlib.auth._names import ALLOWED_ALGORITHMS, ENDPOINT_ALIASES, ENDPOINT_FIELDS
from kstlib.auth._net import is_loopback_host
from kstlib.auth.errors import ConfigurationError

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
        "request",  # issue 14: JAR and PAR set these
        "request_uri",
    }
)
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: ID token algorithms a provider may be restricted to (asymmetric only).
JWS_ALGORITHMS: Final = tuple(sorted(ALLOWED_ALGORITHMS))
#: Client authentication methods, from the registry of kstlib.auth._clientauth.
TOKEN_ENDPOINT_AUTH_METHODS: Final = tuple(sorted(CLIENT_AUTH_METHODS))
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
DEFAULT_REDIRECT_URI: Final = "http://127.0.0.1:8400/callback"
#: Scopes of a provider built from the configuration file when it sets none.
DEFAULT_CONFIG_SCOPES: Final = ("openid", "profile", "email")

_MAX_CALLBACK_TIMEOUT = 600
_ENDPOINT_FIELDS = ("issuer", *ENDPOINT_FIELDS)
_ENDPOINT_ALIASES = ENDPOINT_ALIASES
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


def _auth_method(value: object, client_secret: str | None, client_key: object = None) -> str | None:
    method = _optional_text("token_endpoint_auth_method", value)
    if method is None:
        return None
    if method not in CLIENT_AUTH_METHODS:  # the live registry (custom methods included)
        raise _FieldError(
            "token_endpoint_auth_method",
            f"unknown method {method!r}; valid: {', '.join(sorted(CLIENT_AUTH_METHODS))}",
        )
    needed = CLIENT_AUTH_REQUIREMENTS[method]
    present = {"client_secret": client_secret, "client_key": client_key}
    if needed is not None and present[needed] is None:
        raise _FieldError("token_endpoint_auth_method", f"{method} needs a {needed}")
    return method


def _client_key(value: object) -> str | dict[str, Any] | None:
    """A private key: PEM text, a JWK (mapping or JSON text), a reference or an absolute path.

    Only the shape is checked here (no ``cryptography`` at configuration time); the key is
    parsed when the provider first authenticates, with an error naming ``client_key``.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value) or not isinstance(value.get("kty"), str):
            raise _FieldError("client_key", "a JWK mapping needs a 'kty' and string keys")
        return copy.deepcopy(dict(value))
    if not isinstance(value, str):
        raise _FieldError(
            "client_key",
            f"expected PEM text, a JWK, a file:// or sops:// reference, got {_kind(value)}",
        )
    return _text("client_key", value)


def _assertion_alg(value: object, method: str | None) -> str | None:
    alg = _optional_text("client_assertion_alg", value)
    if alg is None:
        return None
    valid = ", ".join(sorted(CLIENT_ASSERTION_ALGORITHMS))
    if alg not in CLIENT_ASSERTION_ALGORITHMS:
        refused = "is never used" if alg.lower() == "none" else "is not supported"
        raise _FieldError("client_assertion_alg", f"{alg!r} {refused}; valid: {valid}")
    hmac_alg = alg in HMAC_ASSERTION_ALGORITHMS
    if method == "client_secret_jwt" and not hmac_alg:
        raise _FieldError(
            "client_assertion_alg", f"client_secret_jwt signs with HS256/384/512, not {alg}"
        )
    if method == "private_key_jwt" and hmac_alg:
        raise _FieldError(
            "client_assertion_alg",
            f"private_key_jwt signs with the private key, not {alg} (use client_secret_jwt)",
        )
    return alg


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


# --- issue 14 ---------------------------------------------------------------------------

#: Security profiles a provider may name in ``profile``.
PROFILES: Final = ("fapi2",)


def _resources(value: object) -> list[str]:
    """RFC 8707 resource indicators: one absolute URI or a list, without fragment."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else _str_list("resource", value)
    resources: list[str] = []
    for item in items:
        text = _text("resource", item)
        try:
            parts = urlsplit(text)
        except ValueError:
            raise _FieldError("resource", f"{redact_url(text)!r} is not a valid URI") from None
        if not parts.scheme or any(char.isspace() for char in text):
            raise _FieldError(
                "resource", f"{redact_url(text)!r} is not an absolute URI (RFC 8707 2)"
            )
        if parts.fragment or "#" in text:
            raise _FieldError("resource", "a resource indicator must not have a fragment")
        if text not in resources:
            resources.append(text)
    return resources


def _profile(value: object) -> str | None:
    profile = _optional_text("profile", value)
    if profile is not None and profile not in PROFILES:
        raise _FieldError("profile", f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    return profile


# --- end issue 14 ------------------------------------------------------------------------


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


# -- grants for services (issue 13) --------------------------------------------------------

#: The values of a provider's ``flow`` (``-`` and ``_`` alike, any case).
FLOWS: Final = ("authorization_code", "client_credentials", "token_exchange")
#: Flows that get tokens without a user at a browser (no authorization endpoint, no redirect).
SERVICE_FLOWS: Final = frozenset({"client_credentials", "token_exchange"})


def _flow(value: object) -> str:
    if value is None:
        return "authorization_code"
    if isinstance(value, str):
        spelled = value.strip().lower().replace("-", "_")
        if spelled in FLOWS:
            return spelled
    got = f"unknown flow {value!r}" if isinstance(value, str) else f"got {_kind(value)}"
    raise _FieldError("flow", f"{got}; valid flows: {', '.join(FLOWS)}")
