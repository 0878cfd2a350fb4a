"""The fast path of ``kstlib auth token`` and the token output formats.

``kstlib auth token`` runs in shell prompts and as a kubectl credential plugin,
on every call. When the arguments are plain (``auth token [provider]
[--format F | --header | --json]``) and the stored token is fresh (by the
same staleness decision as the providers: ``Token.is_stale``), it is
printed from here with the standard library, the configuration loader and
the token storage only: no Typer, no Rich, no httpx, no cryptography, no
network. Anything else returns None, and the caller runs the full command
line, which also reports every error; so this module never prints one.

The format functions are shared with the full ``token`` command, so both
paths print exactly the same bytes.
"""

from __future__ import annotations

import base64
import json
import shlex
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from kstlib.auth.models import Token

__all__ = [
    "EXEC_CREDENTIAL_API_VERSION",
    "TOKEN_FORMATS",
    "decode_jwt_unverified",
    "format_token",
    "parse_token_args",
    "run_fast_path",
]

EXEC_CREDENTIAL_API_VERSION: Final = "client.authentication.k8s.io/v1"


def _scheme(token: Token) -> str:
    value = token.token_type
    return str(getattr(value, "value", value))


def _expires_at(token: Token) -> str | None:
    """RFC 3339 UTC time (``2025-01-01T12:00:00Z``) of the access token's expiry."""
    if token.expires_at is None:
        return None
    return token.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _raw(token: Token) -> str:
    return token.access_token


def _header(token: Token) -> str:
    return f"Authorization: {_scheme(token)} {token.access_token}"


def _json(token: Token) -> str:
    document = {
        "access_token": token.access_token,
        "token_type": _scheme(token),
        "expires_at": _expires_at(token),
        "expires_in": token.expires_in,
        "scope": list(token.scope),
    }
    return json.dumps(document, indent=2)


def _env(token: Token) -> str:
    """``export`` lines for ``eval "$(kstlib auth token --format env)"``."""
    lines = [
        f"export KSTLIB_ACCESS_TOKEN={shlex.quote(token.access_token)}",
        f"export KSTLIB_TOKEN_TYPE={shlex.quote(_scheme(token))}",
    ]
    expires = _expires_at(token)
    if expires is not None:
        lines.append(f"export KSTLIB_TOKEN_EXPIRES_AT={expires}")
    return "\n".join(lines)


def _kubectl(token: Token) -> str:
    """A ``client.authentication.k8s.io/v1`` ExecCredential (kubectl exec plugin output)."""
    status: dict[str, str] = {"token": token.access_token}
    expires = _expires_at(token)
    if expires is not None:
        status["expirationTimestamp"] = expires
    document = {
        "apiVersion": EXEC_CREDENTIAL_API_VERSION,
        "kind": "ExecCredential",
        "status": status,
    }
    return json.dumps(document, indent=2)


_FORMATTERS: Final[dict[str, Callable[[Token], str]]] = {
    "raw": _raw,
    "header": _header,
    "json": _json,
    "env": _env,
    "kubectl": _kubectl,
}
#: The values of ``kstlib auth token --format``.
TOKEN_FORMATS: Final = tuple(_FORMATTERS)


def format_token(token: Token, output_format: str) -> str:
    """The text ``kstlib auth token --format <output_format>`` prints (without newline).

    Raises:
        KeyError: ``output_format`` is not one of :data:`TOKEN_FORMATS`.
    """
    return _FORMATTERS[output_format](token)


def decode_jwt_unverified(value: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(header, payload)`` of a compact JWS, NOT verified; None when it is not one.

    For display only (``status`` shows the subject of an ID token that was
    verified before it was stored; ``token --decode`` shows claims).
    """
    parts = value.split(".")
    if len(parts) != 3:
        return None
    try:
        header, payload = (
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
            for part in parts[:2]
        )
    except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    return header, payload


def parse_token_args(argv: Sequence[str]) -> tuple[str | None, str] | None:
    """``(provider, format)`` for plain ``auth token`` arguments; None for anything else.

    Accepted: ``auth token [provider] [--format F | --format=F] [--header] [--json]``
    with at most one output choice. Help, verbosity, ``--refresh``, ``--decode``,
    unknown options and conflicting choices all return None (the full command
    line handles them).
    """
    if len(argv) < 2 or argv[0] != "auth" or argv[1] != "token":
        return None
    provider: str | None = None
    chosen: set[str] = set()
    rest = list(argv[2:])
    while rest:
        arg = rest.pop(0)
        if arg == "--header":
            chosen.add("header")
        elif arg == "--json":
            chosen.add("json")
        elif arg == "--format" and rest:
            chosen.add(rest.pop(0))
        elif arg.startswith("--format="):
            chosen.add(arg.partition("=")[2])
        elif not arg.startswith("-") and provider is None:
            provider = arg
        else:
            return None
    if len(chosen) > 1 or not chosen <= set(TOKEN_FORMATS):
        return None
    return provider, chosen.pop() if chosen else "raw"


def _fresh_token(provider: str | None) -> Token | None:
    """The stored token of the resolved provider when it is not stale; else None.

    Staleness is the providers' own decision (:meth:`Token.is_stale`, the skew clamped
    to half the token's lifetime) with the provider's ``refresh_skew`` checked by the
    configuration's own validator; an invalid value leaves the work to the full CLI.
    """
    from kstlib.auth._config.values import _number
    from kstlib.auth.config import (
        get_provider_config,
        get_token_storage_for_provider,
        resolve_provider_name,
    )
    from kstlib.auth.models import DEFAULT_REFRESH_SKEW
    from kstlib.config import load_config

    loaded = load_config()
    name = resolve_provider_name(provider, config=loaded)
    token = get_token_storage_for_provider(name, config=loaded).load(name)
    if token is None:
        return None
    configured = (get_provider_config(name, config=loaded) or {}).get("refresh_skew")
    skew = (
        DEFAULT_REFRESH_SKEW
        if configured is None
        else _number("refresh_skew", configured, 0, 86400)
    )
    return None if token.is_stale(skew) else token


def run_fast_path(argv: Sequence[str], write: Callable[[str], object]) -> int | None:
    """Print a fresh stored token for plain ``auth token`` arguments and return 0.

    Returns None (having printed nothing) when the arguments are not plain,
    the token is missing or stale, a warning was raised, or anything at all goes
    wrong: the full command line then does the work and reports errors and warnings.
    """
    parsed = parse_token_args(argv)
    if parsed is None:
        return None
    provider, output_format = parsed
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            token = _fresh_token(provider)
    except Exception:  # every failure is reported by the full command line
        return None
    # a ResourceWarning is the garbage collector's news about some other object of the
    # process (an unclosed socket), not a message about this command or its configuration
    caught = [w for w in caught if not issubclass(w.category, ResourceWarning)]
    if token is None or caught:  # a warning (an ignored config file...) is the full CLI's to show
        return None
    write(format_token(token, output_format) + "\n")
    return 0
