"""The fast path of ``kstlib auth token`` / ``git-credential`` and the token output formats.

``kstlib auth token`` runs in shell prompts and as a kubectl credential plugin,
``kstlib auth git-credential`` as git's credential helper, on every call. When the
arguments are plain (``auth token [provider] [--format F | --header | --json]
[--access-token]``, ``auth git-credential <provider> get|store|erase``) and the
stored token is fresh (by the same staleness decision as the providers:
:func:`kstlib.auth._tokendata.refresh_due_in`, behind ``Token.is_stale``), it is
printed from here with the standard library, the configuration loader and
the token storage only: no Typer, no Rich, no httpx, no cryptography, no
network. Anything else returns None, and the caller runs the full command
line, which also reports every error; so this module never prints one.

With a configuration snapshot (:mod:`kstlib.cli._snapshot`) the token file is read
and checked into a :class:`~kstlib.auth._tokendata.StoredToken` and printed without
loading :mod:`json`, :mod:`re`, :mod:`typing`, :mod:`enum`, :mod:`dataclasses` or
:mod:`pathlib` (each costs a sizeable part of Python's own start-up, and this runs on
every kubectl and git call); :mod:`datetime` is the only module of note it loads.

The format functions are shared with the full ``token`` command, so both
paths print exactly the same bytes.
"""

from __future__ import annotations

import binascii
import os
import sys
from datetime import UTC, datetime

from kstlib import _fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, Final

    from kstlib.auth._tokendata import StoredToken
    from kstlib.auth.models import Token
    from kstlib.cli._snapshot import SnapshotEntry

    #: What the formats print: a Token, or a stored token read by the fast path.
    TokenLike = Token | StoredToken

__all__ = [
    "EXEC_CREDENTIAL_API_VERSION",
    "GIT_USERNAME",
    "TOKEN_FORMATS",
    "ExecInfo",
    "GitCredentialArgs",
    "TokenArgs",
    "decode_jwt_unverified",
    "exec_credential",
    "exec_info",
    "format_token",
    "git_answer",
    "git_refusal",
    "git_request",
    "id_token_usable",
    "parse_git_credential_args",
    "parse_token_args",
    "run_fast_path",
]

EXEC_CREDENTIAL_API_VERSION: Final = "client.authentication.k8s.io/v1"


def _scheme(token: TokenLike) -> str:
    value = token.token_type
    return str(getattr(value, "value", value))


def _expires_at(token: TokenLike) -> str | None:
    """RFC 3339 UTC time (``2025-01-01T12:00:00Z``) of the access token's expiry."""
    if token.expires_at is None:
        return None
    return _rfc3339(token.expires_at)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _raw(token: TokenLike) -> str:
    return token.access_token


def _header(token: TokenLike) -> str:
    return f"Authorization: {_scheme(token)} {token.access_token}"


def _json(token: TokenLike) -> str:
    document = {
        "access_token": token.access_token,
        "token_type": _scheme(token),
        "expires_at": _expires_at(token),
        "expires_in": token.expires_in,
        "scope": list(token.scope),
    }
    return _fastjson.dumps(document, indent=2)


def _env(token: TokenLike) -> str:
    """``export`` lines for ``eval "$(kstlib auth token --format env)"``."""
    import shlex

    lines = [
        f"export KSTLIB_ACCESS_TOKEN={shlex.quote(token.access_token)}",
        f"export KSTLIB_TOKEN_TYPE={shlex.quote(_scheme(token))}",
    ]
    expires = _expires_at(token)
    if expires is not None:
        lines.append(f"export KSTLIB_TOKEN_EXPIRES_AT={expires}")
    return "\n".join(lines)


def _kubectl(token: TokenLike) -> str:
    """The ExecCredential of ``token``'s access token (see :func:`exec_credential`)."""
    return exec_credential(token, access_token=True)


#: ExecCredential versions kubectl may ask for in ``KUBERNETES_EXEC_INFO`` (v1 otherwise).
EXEC_CREDENTIAL_API_VERSIONS: Final = frozenset(
    {EXEC_CREDENTIAL_API_VERSION, "client.authentication.k8s.io/v1beta1"}
)

# The argument records below are tuples with named fields, as named tuples are, written
# out so that the fast path imports neither typing (NamedTuple) nor collections.


class ExecInfo(tuple[str, bool | None]):
    """What kubectl says in ``KUBERNETES_EXEC_INFO``: ``(api_version, interactive)``, the
    ExecCredential version it reads and whether the session is interactive (None: not
    said, e.g. run by hand)."""

    __slots__ = ()

    def __new__(cls, api_version: str, interactive: bool | None) -> ExecInfo:
        return tuple.__new__(cls, (api_version, interactive))

    @property
    def api_version(self) -> str:
        """The ExecCredential ``apiVersion`` to answer with."""
        return self[0]

    @property
    def interactive(self) -> bool | None:
        """kubectl's ``spec.interactive`` (None: not said)."""
        return self[1]

    def __repr__(self) -> str:
        return f"ExecInfo(api_version={self[0]!r}, interactive={self[1]!r})"


def exec_info(environ: Mapping[str, str] | None = None) -> ExecInfo:
    """Read ``KUBERNETES_EXEC_INFO`` (set by kubectl for an exec credential plugin).

    An absent, malformed or unknown value gives the v1 ExecCredential and
    ``interactive=None``; only the two known apiVersions are echoed back.
    """
    raw = (os.environ if environ is None else environ).get("KUBERNETES_EXEC_INFO", "")
    try:
        document = _fastjson.loads(raw) if 0 < len(raw) <= 65536 else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return ExecInfo(EXEC_CREDENTIAL_API_VERSION, None)
    version = document.get("apiVersion")
    if version not in EXEC_CREDENTIAL_API_VERSIONS:
        version = EXEC_CREDENTIAL_API_VERSION
    spec = document.get("spec")
    interactive = spec.get("interactive") if isinstance(spec, dict) else None
    return ExecInfo(str(version), interactive if isinstance(interactive, bool) else None)


def id_token_expiry(token: TokenLike) -> tuple[datetime, datetime | None] | None:
    """``(exp, iat)`` of the stored ID token (decoded, not verified: it was verified before
    it was stored); None when there is no ID token or it has no usable ``exp``."""
    decoded = decode_jwt_unverified(token.id_token) if token.id_token else None
    if decoded is None:
        return None
    claims = decoded[1]
    times: list[datetime | None] = []
    for name in ("exp", "iat"):
        value = claims.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            times.append(None)
            continue
        try:
            times.append(datetime.fromtimestamp(value, UTC))
        except (OverflowError, OSError, ValueError):
            times.append(None)
    exp, iat = times
    return None if exp is None else (exp, iat)


def id_token_usable(token: TokenLike, skew: float) -> bool:
    """True when the ID token is present and not stale: the provider's skew, clamped to half
    the ID token's lifetime as for access tokens (:meth:`Token.effective_skew`)."""
    expiry = id_token_expiry(token)
    if expiry is None:
        return False
    exp, iat = expiry
    if iat is not None and iat < exp:
        skew = min(skew, (exp - iat).total_seconds() / 2)
    return (exp - datetime.now(UTC)).total_seconds() > skew


def exec_credential(
    token: TokenLike, *, access_token: bool = False, api_version: str = EXEC_CREDENTIAL_API_VERSION
) -> str:
    """A kubectl ExecCredential carrying the ID token (default) or the access token.

    The Kubernetes API server's OIDC authenticator checks an ID token whose audience is
    the client id, so the ID token is the default; ``expirationTimestamp`` is that
    token's own expiry (kubectl runs the plugin again after it).

    Raises:
        KeyError: the ID token is asked for and ``token`` has none.
    """
    if access_token:
        value, expires = token.access_token, _expires_at(token)
    else:
        expiry = id_token_expiry(token)
        if token.id_token is None or expiry is None:
            raise KeyError("id_token")
        value, expires = token.id_token, _rfc3339(expiry[0])
    status: dict[str, str] = {"token": value}
    if expires is not None:
        status["expirationTimestamp"] = expires
    document = {"apiVersion": api_version, "kind": "ExecCredential", "status": status}
    return _fastjson.dumps(document, indent=2)


_FORMATTERS: Final[dict[str, Callable[[TokenLike], str]]] = {
    "raw": _raw,
    "header": _header,
    "json": _json,
    "env": _env,
    "kubectl": _kubectl,
}
#: The values of ``kstlib auth token --format``.
TOKEN_FORMATS: Final = tuple(_FORMATTERS)


def format_token(
    token: TokenLike,
    output_format: str,
    *,
    access_token: bool = True,
    api_version: str = EXEC_CREDENTIAL_API_VERSION,
) -> str:
    """The text ``kstlib auth token --format <output_format>`` prints (without newline).

    ``access_token`` and ``api_version`` only apply to ``kubectl`` (see
    :func:`exec_credential`; the command line passes ``access_token=False`` unless
    ``--access-token`` is given).

    Raises:
        KeyError: ``output_format`` is not one of :data:`TOKEN_FORMATS`, or the
            ExecCredential should carry an ID token and there is none.
    """
    if output_format == "kubectl":
        return exec_credential(token, access_token=access_token, api_version=api_version)
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
        header, payload = (_fastjson.loads(_b64url_decode(part)) for part in parts[:2])
    except ValueError:  # binascii.Error, Unicode errors and JSONDecodeError are ValueErrors
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    return header, payload


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _b64url_decode(part: str) -> bytes:
    """``base64.urlsafe_b64decode`` of ``part`` with its padding restored (without loading
    :mod:`base64`, which loads :mod:`re`): the same bytes, or a ValueError."""
    data = (part + "=" * (-len(part) % 4)).encode("ascii")
    return binascii.a2b_base64(data.translate(_URLSAFE_TO_STANDARD))


class TokenArgs(tuple[str | None, str, bool]):
    """Plain ``auth token`` arguments: ``(provider, output_format, access_token)``."""

    __slots__ = ()

    def __new__(
        cls, provider: str | None, output_format: str, access_token: bool = False
    ) -> TokenArgs:
        return tuple.__new__(cls, (provider, output_format, access_token))

    @property
    def provider(self) -> str | None:
        """The provider named, None for the default one."""
        return self[0]

    @property
    def output_format(self) -> str:
        """One of :data:`TOKEN_FORMATS`."""
        return self[1]

    @property
    def access_token(self) -> bool:
        """``--access-token`` (kubectl: the access token, not the ID token)."""
        return self[2]

    def __repr__(self) -> str:
        provider, output_format, access_token = self
        return (
            f"TokenArgs(provider={provider!r}, output_format={output_format!r}, "
            f"access_token={access_token!r})"
        )


def parse_token_args(argv: Sequence[str]) -> TokenArgs | None:
    """The provider and format of plain ``auth token`` arguments; None for anything else.

    Accepted: ``auth token [provider] [--format F | --format=F] [--header] [--json]
    [--access-token]`` with at most one output choice (``--access-token`` only with
    ``--format kubectl``). Help, verbosity, ``--refresh``, ``--decode``, unknown options
    and conflicting choices all return None (the full command line handles them).
    """
    if len(argv) < 2 or argv[0] != "auth" or argv[1] != "token":
        return None
    provider: str | None = None
    chosen: set[str] = set()
    access = False
    rest = list(argv[2:])
    while rest:
        arg = rest.pop(0)
        if arg == "--header":
            chosen.add("header")
        elif arg == "--json":
            chosen.add("json")
        elif arg == "--access-token":
            access = True
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
    output_format = chosen.pop() if chosen else "raw"
    if access and output_format != "kubectl":
        return None  # the full command line says why
    return TokenArgs(provider, output_format, access)


# --------------------------------------------------------------------------- git credential

#: The user name sent with the token to git: what GitLab, Gitea/Forgejo and others accept
#: with an OAuth access token as the password (``--username`` chooses another).
GIT_USERNAME: Final = "oauth2"
#: Most bytes of a credential request read from git (the protocol sends a few short lines).
GIT_REQUEST_LIMIT: Final = 65536
GIT_ACTIONS: Final = ("get", "store", "erase")


class GitCredentialArgs(tuple[str, str, str, tuple[str, ...]]):
    """``auth git-credential <provider> <action> [--username U] [--host H]...``:
    ``(provider, action, username, hosts)``."""

    __slots__ = ()

    def __new__(
        cls, provider: str, action: str, username: str, hosts: tuple[str, ...]
    ) -> GitCredentialArgs:
        return tuple.__new__(cls, (provider, action, username, hosts))

    @property
    def provider(self) -> str:
        """The provider whose access token git sends."""
        return self[0]

    @property
    def action(self) -> str:
        """``get``, ``store`` or ``erase``."""
        return self[1]

    @property
    def username(self) -> str:
        """The user name sent with the token."""
        return self[2]

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts of ``--host`` (lower case; empty: any)."""
        return self[3]

    def __repr__(self) -> str:
        return (
            f"GitCredentialArgs(provider={self[0]!r}, action={self[1]!r}, "
            f"username={self[2]!r}, hosts={self[3]!r})"
        )


def parse_git_credential_args(argv: Sequence[str]) -> GitCredentialArgs | None:
    """The arguments of plain ``auth git-credential`` calls; None for anything else."""
    if len(argv) < 2 or argv[0] != "auth" or argv[1] != "git-credential":
        return None
    positional: list[str] = []
    username = GIT_USERNAME
    hosts: list[str] = []
    rest = list(argv[2:])
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--username", "--host") and (eq or rest):
            value = value if eq else rest.pop(0)
            if name == "--host":
                hosts.append(value.lower())
            else:
                username = value
        elif not arg.startswith("-"):
            positional.append(arg)
        else:
            return None
    if len(positional) != 2 or positional[1] not in GIT_ACTIONS or not username:
        return None
    return GitCredentialArgs(positional[0], positional[1], username, tuple(hosts))


_git_request: dict[str, str] | None = None


def git_request(stream: Any = None) -> dict[str, str]:
    """The credential request git wrote on stdin (``key=value`` lines up to a blank line).

    Read once per process (the fast path and the full command line share it); at most
    :data:`GIT_REQUEST_LIMIT` bytes; a repeated key keeps its last value, lines
    without ``=`` are ignored.
    """
    global _git_request  # noqa: PLW0603 - stdin can be read only once per process
    if _git_request is None:
        source = sys.stdin if stream is None else stream
        request: dict[str, str] = {}
        budget = GIT_REQUEST_LIMIT
        while budget > 0:
            line = source.readline(budget)
            budget -= len(line)
            line = line.rstrip("\r\n")
            if not line:
                break
            key, eq, value = line.partition("=")
            if eq:
                request[key] = value
        _git_request = request
    return _git_request


def git_refusal(request: Mapping[str, str], hosts: Sequence[str]) -> str | None:
    """Why the token must not be given for this request (None: it may).

    Only ``https`` (RFC 6750 5.3: a bearer token needs TLS), and only to one of
    ``hosts`` when the user listed some (``--host``).
    """
    protocol = request.get("protocol", "")
    host = request.get("host", "").lower()
    if protocol != "https":
        return f"protocol {protocol or '(none)'} is not https"
    if hosts and host not in hosts:
        return f"host {host or '(none)'} is not one of --host {', '.join(hosts)}"
    return None


def git_answer(token: TokenLike, username: str) -> str:
    """The helper's answer to ``get``: the user name and the access token as the password."""
    lines = [f"username={username}", f"password={token.access_token}"]
    if token.expires_at is not None:
        lines.append(f"password_expiry_utc={int(token.expires_at.timestamp())}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the fast path


def _usable(token: TokenLike, skew: float) -> tuple[TokenLike, float] | None:
    """``(token, skew)`` when the fast path may print ``token``: not stale by the providers'
    own decision (``is_stale``: :func:`kstlib.auth._tokendata.refresh_due_in`) and not
    bound to a DPoP key (the full command line checks the binding)."""
    if token.dpop_key is not None or _scheme(token) == "DPoP":
        return None
    return None if token.is_stale(skew) else (token, skew)


def _fresh_token(provider: str | None) -> tuple[TokenLike, float] | None:
    """The stored token of the resolved provider and its skew when it is usable; else None.

    Staleness is the providers' own decision (:meth:`Token.is_stale`, the skew clamped
    to half the token's lifetime) with the provider's ``refresh_skew`` checked by the
    configuration's own validator; an invalid value leaves the work to the full CLI.
    The decision of the full loader (provider, token file, skew) is recorded in the
    configuration snapshot (:mod:`kstlib.cli._snapshot`) when it may be, so that the next
    call with the same configuration reads the token file without parsing the YAML again.
    """
    from kstlib.cli import _snapshot

    sources, cwd_file = _config_sources()
    before = _snapshot.current_key(sources)  # a file changed during the load is never recorded
    resolved = _resolve(provider)
    if resolved is None:
        return None
    token, skew, name, token_path = resolved
    if token_path is not None:
        entry = _snapshot.SnapshotEntry(name, token_path, skew)
        _pending_record.append((provider, entry, sources, cwd_file, before))
    return _usable(token, skew)


def _config_sources() -> tuple[list[str], str | None]:
    """Every file the configuration search considers (missing ones included), and the
    working directory's file when the search includes it (see :func:`kstlib.config.load_config`)."""
    from kstlib.config import CONFIG_ENV_VAR, config_search_path, packaged_defaults_path

    explicit = os.environ.get(CONFIG_ENV_VAR, "")
    if explicit:
        from pathlib import Path

        files = [packaged_defaults_path(), Path(explicit).expanduser().absolute()]
        return [str(path) for path in files], None
    files = config_search_path()
    return [str(path) for path in files], str(files[-1])


def _fresh_from_snapshot(entry: SnapshotEntry) -> tuple[TokenLike, float] | None:
    """The token file named by a snapshot entry, read and checked as
    :meth:`FileTokenStorage.load <kstlib.auth.token.FileTokenStorage.load>` does (the same
    reader and document checks), into a :class:`~kstlib.auth._tokendata.StoredToken`."""
    from kstlib.auth.token._atomic import read_private_file
    from kstlib.auth.token._document import parse_stored

    data = read_private_file(entry.token_path, provider=entry.name)
    if data is None:
        return None
    return _usable(parse_stored(entry.name, data, entry.token_path), entry.skew)


def _resolve(provider: str | None) -> tuple[TokenLike, float, str, str | None] | None:
    """The full loader: ``(token, skew, provider name, token file)``, the token file None
    unless the storage is plain file storage; None when no token is stored."""
    from kstlib.auth._config.values import _number
    from kstlib.auth._tokendata import DEFAULT_REFRESH_SKEW
    from kstlib.auth.config import (
        get_provider_config,
        get_token_storage_for_provider,
        resolve_provider_name,
    )
    from kstlib.auth.token.file import FileTokenStorage
    from kstlib.config import load_config

    loaded = load_config()
    name = resolve_provider_name(provider, config=loaded)
    storage = get_token_storage_for_provider(name, config=loaded)
    token = storage.load(name)
    if token is None:
        return None
    configured = (get_provider_config(name, config=loaded) or {}).get("refresh_skew")
    skew = (
        DEFAULT_REFRESH_SKEW
        if configured is None
        else _number("refresh_skew", configured, 0, 86400)
    )
    token_path = None
    if type(storage) is FileTokenStorage:
        path = storage.token_path(name)
        token_path = str(path) if path.is_absolute() else None
    return token, skew, name, token_path


#: The decision of a full load, recorded by :func:`_quietly_fresh` once it raised no warning:
#: (provider argument, entry, sources, working directory's file, key taken before the load).
_pending_record: list[tuple[str | None, Any, list[str], str | None, dict[str, Any]]] = []


def _write_snapshot() -> None:
    """Record the pending decision (the full loader ran without error or warning)."""
    if not _pending_record:
        return
    from kstlib.cli import _snapshot

    while _pending_record:
        provider, entry, sources, cwd_file, before = _pending_record.pop()
        _snapshot.record(provider, entry, sources, cwd_file=cwd_file, expected_key=before)


def _quietly_fresh(provider: str | None) -> tuple[TokenLike, float] | None:
    """The usable stored token and its skew, from the snapshot's decision when it holds,
    else from :func:`_fresh_token`; None on any failure or warning (the full CLI reports
    those). Reading through the snapshot calls no code that warns, so only the full
    loader runs under :func:`warnings.catch_warnings`."""
    from kstlib.cli import _snapshot

    try:
        entry = _snapshot.lookup(provider)
        if entry is not None:
            return _fresh_from_snapshot(entry)
    except Exception:  # every failure is reported by the full command line
        return None
    return _quietly_loaded(provider)


def _quietly_loaded(provider: str | None) -> tuple[TokenLike, float] | None:
    """:func:`_fresh_token`, None on any failure or warning (the full CLI reports those)."""
    import warnings

    _pending_record.clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fresh = _fresh_token(provider)
    except Exception:  # every failure is reported by the full command line
        _pending_record.clear()
        return None
    # a ResourceWarning is the garbage collector's news about some other object of the
    # process (an unclosed socket), not a message about this command or its configuration
    caught = [w for w in caught if not issubclass(w.category, ResourceWarning)]
    if caught:
        _pending_record.clear()
        return None  # a warning (an ignored config file...) is the full CLI's
    import contextlib

    with contextlib.suppress(Exception):  # the snapshot is only an accelerator
        _write_snapshot()
    return fresh


def _fast_git_credential(args: GitCredentialArgs, write: Callable[[str], object]) -> int | None:
    request = git_request()
    if args.action != "get":
        return 0  # store and erase: nothing is kept or forgotten (see docs/cli.md)
    if git_refusal(request, args.hosts) is not None:
        return None  # the full command line says why under -v
    fresh = _quietly_fresh(args.provider)
    if fresh is None:
        return None
    write(git_answer(fresh[0], args.username))
    return 0


def run_fast_path(argv: Sequence[str], write: Callable[[str], object]) -> int | None:
    """Print a fresh stored token for plain ``auth token`` / ``auth git-credential`` arguments.

    Returns 0 once printed, or None (having printed nothing) when the arguments are not
    plain, the token is missing or stale, a warning was raised, or anything at all goes
    wrong: the full command line then does the work and reports errors and warnings.
    """
    git = parse_git_credential_args(argv)
    if git is not None:
        return _fast_git_credential(git, write)
    parsed = parse_token_args(argv)
    if parsed is None:
        return None
    fresh = _quietly_fresh(parsed.provider)
    if fresh is None:
        return None
    token, skew = fresh
    if parsed.output_format == "kubectl":
        if not parsed.access_token and not id_token_usable(token, skew):
            return None  # renewed (or logged in) by the full command line
        text = format_token(
            token, "kubectl", access_token=parsed.access_token, api_version=exec_info().api_version
        )
    else:
        text = format_token(token, parsed.output_format)
    write(text + "\n")
    return 0
