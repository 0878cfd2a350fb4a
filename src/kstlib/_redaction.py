"""The one redaction path of kstlib (public face: :mod:`kstlib.auth.redaction`).

Everything that can reach a log line, a ``repr``, an error message or the
terminal goes through these functions: URLs (query strings and fragments),
form bodies, JSON bodies, header mappings and free text. A redacted value is
replaced by the constant :data:`REDACTED`, whatever its length, so not even
the size of a secret leaks.

The module is imported by nearly everything, so it imports only the standard
library and compiles its patterns once, at their first use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kstlib._redaction_logging import RedactingFilter, get_logger

__all__ = [
    "REDACTED",
    "SENSITIVE_HEADERS",
    "SENSITIVE_KEYS",
    "TRACE",
    "RedactingFilter",
    "fingerprint",
    "get_logger",
    "is_sensitive_key",
    "redact_body",
    "redact_headers",
    "redact_mapping",
    "redact_text",
    "redact_url",
    "redact_urls",
]

REDACTED = "[REDACTED]"

#: Custom log level below DEBUG used for HTTP traces (named "TRACE" once logging is set up).
TRACE = 5

#: Keys whose values are secrets wherever they appear (query, form, JSON, config).
SENSITIVE_KEYS: frozenset[str] = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "code",
        "code_verifier",
        "client_secret",
        "client_assertion",
        "assertion",
        "device_code",
        "user_code",
        "state",
        "nonce",
        "password",
        "secret",
        "subject_token",
        "actor_token",
        "logout_token",
        "id_token_hint",
        "private_key",
        "dpop",
        "dpop_key",
        "session_state",
        "authorization",
        "cookie",
        "set-cookie",
        "proxy-authorization",
        "api_key",
        "apikey",
    }
)

SENSITIVE_HEADERS: frozenset[str] = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "dpop", "x-api-key"}
)

# The patterns are compiled at their first use (:func:`_pattern`), not at import: nearly
# everything imports this module, including the command line's fast path, which redacts
# nothing when all goes well.
# A compact JWS/JWE (three or five base64url segments starting with a JSON header).
_JWT_SOURCE = r"eyJ[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*){2,4}"
# "Bearer xxx", "Basic xxx", "DPoP xxx" in free text or header dumps.
_SCHEME_SOURCE = r"\b(Bearer|Basic|DPoP|MAC)\s+([A-Za-z0-9._~+/=-]+)"
# key=value or "key": "value" pairs for sensitive keys, in free text.
_KEY_ALTERNATION = "|".join(sorted((re.escape(k) for k in SENSITIVE_KEYS), key=len, reverse=True))
# Keys secret by name, or by suffix (*_secret, *_token, *password), as in is_sensitive_key.
_SUFFIX_KEYS = r"[\w-]*(?:[_-]secret|[_-]token|password)"
# A key inside a dotted path or a URL ("auth.providers.x.client_secret: cannot resolve ...",
# "'env://CORP_SECRET': environment variable ...") names a field: what follows is prose, not
# its value, so only a key standing on its own starts a pair.
_KV_SOURCE = (
    r"(?P<key>(?<![\w./-])(?:" + _KEY_ALTERNATION + "|" + _SUFFIX_KEYS + r"))"
    r"(?P<sep>=|[\"']?\s*:\s*[\"']?)(?P<val>[^&\s\"',;}]+)"
)


#: Words of prose that follow a secret's name or an auth scheme in a message ("client_secret:
#: cannot resolve ...", "Basic with the id", "DPoP or MAC"): after ``key:`` + space, or after a
#: scheme, a value that is one of these (in lower case) is the sentence going on, not a
#: secret. A ``key=value`` pair or a quoted value is always redacted.
_PROSE = """
    a an the and or nor but not no none nothing is are was were be been being has have had
    do does did can cannot could must may might should will would shall of to in on at by
    for from with without into onto over under as if then than so that this these those
    it its their there here only also either neither each every all any some both which
    what when where why how who whom whose
    missing empty expected unexpected invalid unknown unusable unreadable unsupported
    required malformed refused rejected revoked expired present absent set unset given
    found ignored needed allowed forbidden wrong bad too see use run try
    token tokens proof proofs scheme schemes header headers provider providers draft
    auth authentication authorization credential credentials client server request
    response value values key keys reference references variable variables file files
"""
_PROSE_WORDS: frozenset[str] = frozenset(_PROSE.split())
#: A value that reads as a prose word: letters only, in lower case, then punctuation.
_WORD_SOURCE = r"([a-z]+)[.,;:)]*"
# An absolute URL inside free text (up to the first space, quote or bracket).
_URL_IN_TEXT_SOURCE = r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+"

#: name -> (source, flags) of every pattern of this module.
_PATTERN_SOURCES: dict[str, tuple[str, int]] = {
    "jwt": (_JWT_SOURCE, 0),
    "scheme": (_SCHEME_SOURCE, re.IGNORECASE),
    "kv": (_KV_SOURCE, re.IGNORECASE),
    "word": (_WORD_SOURCE, 0),
    "url": (_URL_IN_TEXT_SOURCE, 0),
}
_compiled: dict[str, re.Pattern[str]] = {}


def _pattern(name: str) -> re.Pattern[str]:
    """The compiled pattern ``name`` of :data:`_PATTERN_SOURCES`, compiled once, when first used."""
    pattern = _compiled.get(name)
    if pattern is None:
        source, flags = _PATTERN_SOURCES[name]
        pattern = _compiled[name] = re.compile(source, flags)
    return pattern


def _is_prose(value: str) -> bool:
    match = _pattern("word").fullmatch(value)
    return match is not None and match.group(1) in _PROSE_WORDS


def _redact_scheme(match: re.Match[str]) -> str:
    return match.group(0) if _is_prose(match.group(2)) else f"{match.group(1)} {REDACTED}"


def _redact_pair(match: re.Match[str]) -> str:
    sep = match.group("sep")
    spaced_colon = sep != "=" and sep.rstrip().endswith(":") and sep.endswith((" ", "\t"))
    if spaced_colon and _is_prose(match.group("val")):  # "client_secret: cannot resolve ..."
        return match.group(0)
    return f"{match.group('key')}{sep}{REDACTED}"


def is_sensitive_key(key: str, extra: Iterable[str] = ()) -> bool:
    """Return True when values stored under ``key`` are secrets."""
    lowered = key.lower()
    if lowered in SENSITIVE_KEYS or lowered in SENSITIVE_HEADERS:
        return True
    if any(lowered == e.lower() for e in extra):
        return True
    return lowered.replace("-", "_").endswith(("_secret", "_token", "password"))


def fingerprint(secret: str | bytes | None) -> str:
    """A short, non-reversible label for a secret: ``sha256:`` + 8 hex digits.

    Enough to tell two tokens apart in a repr or a status table; says nothing
    about the value or its length.
    """
    if not secret:
        return "none"
    import hashlib  # imported when used: the token fast path redacts nothing

    data = secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else secret
    return "sha256:" + hashlib.sha256(data).hexdigest()[:8]


def redact_mapping(data: Any, extra_keys: Iterable[str] = ()) -> Any:
    """Return a copy of ``data`` (dicts and lists, recursively) with secret values replaced."""
    extra = tuple(extra_keys)
    if isinstance(data, Mapping):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            if isinstance(key, str) and is_sensitive_key(key, extra) and value is not None:
                out[key] = REDACTED
            else:
                out[key] = redact_mapping(value, extra)
        return out
    if isinstance(data, list | tuple):
        return [redact_mapping(v, extra) for v in data]
    if isinstance(data, str):
        return redact_text(data, extra)
    return data


def redact_headers(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """Return a plain dict of headers with credential headers replaced."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for key, value in items:
        if is_sensitive_key(key):
            scheme = value.split(" ", 1)[0] if " " in value else ""
            out[key] = f"{scheme} {REDACTED}".strip()
        else:
            out[key] = redact_text(value)
    return out


def _redact_query(query: str, extra: tuple[str, ...]) -> str:
    if not query:
        return query
    from urllib.parse import parse_qsl, urlencode

    pairs = parse_qsl(query, keep_blank_values=True)
    if not pairs:
        return redact_text(query, extra)
    return urlencode(
        [(k, REDACTED if is_sensitive_key(k, extra) else redact_text(v, extra)) for k, v in pairs],
        safe="[]",
    )


def redact_url(url: str, extra_keys: Iterable[str] = ()) -> str:
    """Redact secret query/fragment parameters (and userinfo) of a URL."""
    from urllib.parse import urlsplit, urlunsplit  # imported when used, as hashlib

    extra = tuple(extra_keys)
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url, extra)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            _redact_query(parts.query, extra),
            _redact_query(parts.fragment, extra),
        )
    )


def redact_urls(text: str, extra_keys: Iterable[str] = ()) -> str:
    """``text`` with every URL in it passed through :func:`redact_url` (the prose untouched).

    For messages built by kstlib that may quote an endpoint (errors, preflight results,
    tables): a gateway URL such as ``https://gw/token?api_key=...`` loses its secrets.
    """
    if not text or "://" not in text:
        return text
    extra = tuple(extra_keys)
    return _pattern("url").sub(lambda m: redact_url(m.group(0), extra), text)


def redact_body(body: str | bytes, content_type: str = "", extra_keys: Iterable[str] = ()) -> str:
    """Redact a request/response body given its content type (JSON, form, or text)."""
    extra = tuple(extra_keys)
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    ctype = content_type.lower()
    stripped = text.lstrip()
    if "json" in ctype or stripped.startswith(("{", "[")):
        try:
            return json.dumps(redact_mapping(json.loads(text), extra))
        except ValueError:
            pass
    if "x-www-form-urlencoded" in ctype:
        return _redact_query(text, extra)
    return redact_text(text, extra)


def redact_text(text: str, extra_keys: Iterable[str] = ()) -> str:
    """Best-effort redaction of free text: JWTs, auth schemes and ``key=value`` secrets."""
    if not text:
        return text
    out = _pattern("jwt").sub(REDACTED, text)
    out = _pattern("scheme").sub(_redact_scheme, out)
    out = _pattern("kv").sub(_redact_pair, out)
    for key in extra_keys:
        out = re.sub(
            r"(\b" + re.escape(key) + r")(=|[\"']?\s*:\s*[\"']?)([^&\s\"',;}]+)",
            lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
            out,
            flags=re.IGNORECASE,
        )
    return out


def __getattr__(name: str) -> Any:
    """``RedactingFilter`` and ``get_logger`` live in :mod:`kstlib._redaction_logging`,
    imported at first use: loading :mod:`logging` costs more than the rest of this module,
    and the command line's fast path logs nothing."""
    if name in ("RedactingFilter", "get_logger"):
        from kstlib import _redaction_logging

        return getattr(_redaction_logging, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
