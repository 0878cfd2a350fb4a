"""The ``kstlib auth`` commands: login, logout, status, token, whoami, providers, preflight,
introspect.

Every command resolves its provider the same way (the argument, else
``auth.default_provider``, else the only configured provider, else an error
listing the configured names), reads the configuration files once, and maps
errors onto exit codes: 1 for an authentication failure, 2 for a usage or
configuration error, each reported as one ``error:`` line on stderr (with a
traceback only under ``-vv``). Only ``token`` ever prints a token.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn, ParamSpec
from urllib.parse import urlencode

import typer

from kstlib.auth.errors import (
    AuthError,
    AuthorizationError,
    CallbackServerError,
    ConfigurationError,
    TokenExpiredError,
    TokenRefreshError,
    TokenStorageError,
)
from kstlib.auth.redaction import redact_mapping, redact_text, redact_urls
from kstlib.cli._fast import (
    decode_jwt_unverified,
    exec_info,
    format_token,
    git_answer,
    git_refusal,
    git_request,
    id_token_usable,
)
from kstlib.cli._help import complete_provider
from kstlib.cli.output import (
    Column,
    OutputFormat,
    OutputOption,
    chosen_output,
    echo_json,
    echo_tsv,
    err_console,
    error_line,
    format_duration,
    format_when,
    mask_secrets,
    one_line,
    out_console,
    print_facts,
    print_table,
    status_text,
    warning_line,
)

if TYPE_CHECKING:  # Rich is imported by the functions that render, not by --json or --version
    from rich.status import Status
    from rich.text import Text

    from kstlib.auth.callback import CallbackResult
    from kstlib.auth.models import PreflightReport, Token
    from kstlib.auth.providers.oauth2 import OAuth2Provider
    from kstlib.config import LoadedConfig

__all__ = ["EXIT_AUTH", "EXIT_INTERRUPTED", "EXIT_USAGE", "TokenFormat", "register"]

_P = ParamSpec("_P")

#: Exit status of an authentication failure (any AuthError but a ConfigurationError).
EXIT_AUTH: Final = 1
#: Exit status of a usage or configuration error.
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
#: Exit status when the reader of stdout went away (128 + SIGPIPE, as a shell reports it).
EXIT_BROKEN_PIPE: Final = 141

ProviderArg = Annotated[
    str | None,
    typer.Argument(
        help="Provider name (default: auth.default_provider, or the only configured one).",
        show_default=False,
        autocompletion=complete_provider,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class TokenFormat(StrEnum):
    """Output formats of ``kstlib auth token``."""

    RAW = "raw"
    HEADER = "header"
    JSON = "json"
    ENV = "env"
    KUBECTL = "kubectl"


# --------------------------------------------------------------------------- plumbing


def _verbose() -> bool:
    """True under ``-vv`` (debug): an error then comes with its traceback (``-v`` only informs)."""
    return logging.getLogger("kstlib").getEffectiveLevel() <= logging.DEBUG


def _fail(exc: BaseException, code: int) -> NoReturn:
    """Report ``exc`` on one line (traceback first under ``-vv``) and exit with ``code``."""
    if _verbose():
        trace = "".join(traceback.format_exception(exc))
        print(redact_text(trace), file=sys.stderr, end="")
    unexpected = not isinstance(exc, AuthError)
    message = f"unexpected {type(exc).__name__}: {exc}" if unexpected else str(exc)
    error_line(redact_text(message))
    raise typer.Exit(code)


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    try:
        target = sys.stdout.fileno()
    except (OSError, ValueError):  # not a file descriptor (a test runner's buffer)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, target)
    os.close(devnull)


def _handled(command: Callable[_P, None]) -> Callable[_P, None]:
    """Run ``command``, turning errors into one ``error:`` line and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except ConfigurationError as exc:
            _fail(exc, EXIT_USAGE)
        except KeyboardInterrupt:
            error_line("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:  # `kstlib auth status | head -1`: the reader has had enough
            _stdout_to_devnull()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except Exception as exc:  # AuthError and anything unexpected: exit 1, one line
            _fail(exc, EXIT_AUTH)

    return wrapper


def _load() -> LoadedConfig:
    from kstlib.config import load_config

    return load_config()


def _resolve(provider: str | None, loaded: LoadedConfig) -> str:
    from kstlib.auth.config import resolve_provider_name

    return resolve_provider_name(provider, config=loaded)


def _provider(name: str, loaded: LoadedConfig, **overrides: Any) -> OAuth2Provider:
    """Build the configured provider (every configured type is an :class:`OAuth2Provider`)."""
    from kstlib.auth.config import get_provider
    from kstlib.auth.providers.oauth2 import OAuth2Provider

    provider = get_provider(name, config=loaded, **overrides)
    if not isinstance(provider, OAuth2Provider):
        raise ConfigurationError(
            f"Provider '{name}' is a {type(provider).__name__}, which the command line "
            "does not support",
            provider=name,
        )
    return provider


def _id_claims(token: Token) -> dict[str, Any]:
    """The claims of the stored ID token (verified before it was stored; decoded only)."""
    decoded = decode_jwt_unverified(token.id_token) if token.id_token else None
    return decoded[1] if decoded else {}


def _subject(token: Token) -> str | None:
    """The ``sub`` of the stored ID token."""
    sub = _id_claims(token).get("sub")
    return sub if isinstance(sub, str) else None


def _user(token: Token) -> str | None:
    """Who the token is for, as a person reads it: the ID token's ``preferred_username``,
    else its ``email``, else its ``sub`` (an opaque GUID at Entra ID, Okta...)."""
    claims = _id_claims(token)
    for claim in ("preferred_username", "email", "sub"):
        value = claims.get(claim)
        if isinstance(value, str) and value.strip():
            return one_line(value)[:128]
    return None


class _Notice:
    """Progress messages on stderr, silenced by ``--quiet``."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, message: str, *, style: str | None = None) -> None:
        from rich.text import Text

        if not self.quiet:
            err_console().print(Text(message, style=style or ""))


# --------------------------------------------------------------------------- login


def _stored_valid_token(name: str, loaded: LoadedConfig) -> Token | None:
    """The stored token when its access token has not expired (an unusable file: None)."""
    from kstlib.auth.config import get_token_storage_for_provider

    try:
        token = get_token_storage_for_provider(name, config=loaded).load(name)
    except TokenStorageError as exc:
        logging.getLogger("kstlib.cli").warning("%s", exc)
        return None
    return token if token is not None and not token.is_expired else None


def _send_user_to(url: str, *, no_browser: bool, notice: _Notice) -> None:
    """Open ``url`` in the browser (never a console one) and show it in any case."""
    from kstlib.auth.callback import open_in_browser

    _show_url(url, not no_browser and open_in_browser(url), notice)


def _show_url(url: str, opened: bool, notice: _Notice, *, stdout: bool = True) -> None:
    """Show the authorization URL: alone on a stdout line when no browser opened (the user
    must open it), on stderr when one did (in case it is not the right one; not under
    ``--quiet``). ``stdout=False``: always stderr (stdout carries a credential protocol)."""
    if opened:
        if not notice.quiet:
            notice("Opened your browser to log in; if it did not open, open this URL:")
            typer.echo(url, err=True)
        return
    notice("Open this URL in a browser to log in:")
    typer.echo(url, err=not stdout)


class _LoginProgress:
    """What the terminal shows during :meth:`OAuth2Provider.login`: the URL, then a spinner."""

    def __init__(self, notice: _Notice, *, stdout: bool = True) -> None:
        self.notice = notice
        self.stdout = stdout
        self.spinner: Status | None = None

    def on_url(self, url: str, opened: bool) -> None:
        _show_url(url, opened, self.notice, stdout=self.stdout)
        if not self.notice.quiet:
            self.spinner = err_console().status("Waiting for the login in the browser…")
            self.spinner.start()

    def on_tick(self, left: float) -> None:
        if self.spinner is not None:
            self.spinner.update(
                f"Waiting for the login in the browser… {math.ceil(left)} s left (Ctrl-C to cancel)"
            )

    def close(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None


def _loopback_login(
    name: str,
    loaded: LoadedConfig,
    timeout: float | None,
    *,
    no_browser: bool,
    notice: _Notice,
    stdout: bool = True,
) -> Token:
    """Authorization code + PKCE through the loopback callback server (RFC 8252).

    ``stdout=False``: nothing at all on stdout (a credential plugin's stdout is its answer).
    """
    progress = _LoginProgress(notice, stdout=stdout)
    try:
        with _provider(name, loaded) as provider:
            return provider.login(
                open_browser=not no_browser,
                timeout=timeout,
                on_url=progress.on_url,
                on_tick=progress.on_tick,
            )
    except CallbackServerError as exc:  # device login (issue 13): suggest it on a timeout
        if exc.reason != "timeout":
            raise
        from kstlib.cli._device import DEVICE_HINT

        raise CallbackServerError(
            f"{exc.message}; no browser on this machine? {DEVICE_HINT}",
            reason=exc.reason,
            port=exc.port,
        ) from None
    finally:
        progress.close()


def _exchange(
    provider: OAuth2Provider, result: CallbackResult, redirect_uri: str, state: str
) -> Token:
    """Exchange the code of a pasted redirect, handing the provider the redirect itself.

    In that form the provider checks everything the redirect carries: the
    error, the state, and the ``iss`` of RFC 9207, which must be present
    when the server advertises ``authorization_response_iss_parameter_supported``.
    """
    result.raise_for_error()
    return provider.exchange_code(f"{redirect_uri}?{urlencode(result.raw_params)}", state)


def _read_pasted(redirect_uri: str) -> str:
    from rich.text import Text

    err_console().print(
        Text(
            f"After the login, your browser goes to {redirect_uri}?code=…: paste that whole "
            "address (or just the code) here and press Enter:"
        )
    )
    text = sys.stdin.readline().strip()
    if not text:
        raise AuthorizationError("Nothing was pasted; login cancelled", reason="no input")
    return text


def _manual_login(name: str, loaded: LoadedConfig, *, no_browser: bool) -> Token:
    """Authorization code + PKCE where the user pastes the redirect URL (or the code)."""
    from kstlib.auth._pkce import new_state
    from kstlib.auth.callback import parse_pasted_redirect

    with _provider(name, loaded) as provider:
        state = new_state()
        url, _ = provider.get_authorization_url(state=state)
        _send_user_to(url, no_browser=no_browser, notice=_Notice(quiet=False))
        result = parse_pasted_redirect(_read_pasted(provider.config.redirect_uri))
        if result.raw_params.keys() == {"code"}:  # a bare code: nothing else to check
            return provider.exchange_code(result.raise_for_error(), state)
        return _exchange(provider, result, provider.config.redirect_uri, state)


def _expiry_phrase(token: Token) -> str:
    if token.expires_at is None:
        return "expiry unknown"
    return f"expires {format_when(token.expires_at)}"


def _refuse_service_flow(name: str, loaded: LoadedConfig) -> None:
    """A provider whose flow has no user (client credentials, token exchange) has no login
    (checked on the written ``flow``; a bad value is reported when the provider is built)."""
    from kstlib.auth._config.values import SERVICE_FLOWS, _FieldError, _flow
    from kstlib.auth.config import get_provider_config
    from kstlib.auth.providers.oauth2 import no_user_error

    try:
        flow = _flow((get_provider_config(name, config=loaded) or {}).get("flow"))
    except _FieldError:
        return
    if flow in SERVICE_FLOWS:
        raise no_user_error(name, flow, "log in through the browser")


@_handled
def login(
    provider: ProviderArg = None,
    *,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the login URL instead of opening it.")
    ] = False,
    manual: Annotated[
        bool,
        typer.Option(
            "--manual",
            help="Paste the redirect address (or the code) instead of running a loopback server.",
        ),
    ] = False,
    device: Annotated[
        bool,
        typer.Option(
            "--device",
            help="Log in with a code typed on another device (RFC 8628 device authorization): "
            "for SSH sessions and machines without a browser.",
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            max=600,
            help="Seconds to wait for the browser (default: auth.callback_server.timeout), "
            "or with --device for the approval (default: until the code expires).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", "-f", help="Log in again even with a valid token.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only print errors (and the URL if needed).")
    ] = False,
) -> None:
    """Log in (authorization code + PKCE, or a device code with --device) and store the tokens."""
    if device and manual:
        error_line("--device and --manual cannot be combined")
        raise typer.Exit(EXIT_USAGE)
    loaded = _load()
    name = _resolve(provider, loaded)
    _refuse_service_flow(name, loaded)  # issue 13: before "already logged in"
    notice = _Notice(quiet)
    current = None if force else _stored_valid_token(name, loaded)
    if current is not None:
        notice(
            f"Already logged in to {name} ({_expiry_phrase(current)}); use --force to log in again."
        )
        return
    if device:  # device authorization grant (issue 13)
        from kstlib.cli._device import device_login

        with _provider(name, loaded) as device_provider:
            token = device_login(device_provider, timeout, no_browser=no_browser, notice=notice)
    elif manual:
        token = _manual_login(name, loaded, no_browser=no_browser)
    else:
        from kstlib.cli._device import suggest_device

        suggest_device(notice)
        token = _loopback_login(name, loaded, timeout, no_browser=no_browser, notice=notice)
    user = _user(token)
    who = f" as {user}" if user else ""
    notice(f"Logged in to {name}{who}; access token {_expiry_phrase(token)}.", style="green")


# --------------------------------------------------------------------------- logout


def _end_session_url(provider: OAuth2Provider, id_token_hint: str = "") -> str | None:
    """The RP-initiated logout URL, or None; without an ID token hint unless one is given
    (a URL with the hint goes to the browser only, never to the terminal)."""
    try:
        return provider.logout_url(id_token_hint=id_token_hint)
    except AuthError as exc:
        logging.getLogger("kstlib.cli").info("No logout URL: %s", exc)
        return None


def _revoke(provider: OAuth2Provider, token: Token | None) -> tuple[bool | None, AuthError | None]:
    """``(revoked, error)``: True/False as :meth:`revoke` says, None when there was no token."""
    if token is None:
        return None, None
    try:
        return provider.revoke(token), None
    except AuthError as exc:
        return None, exc


@_handled
def logout(
    provider: ProviderArg = None,
    *,
    revoke: Annotated[
        bool,
        typer.Option(
            "--revoke/--no-revoke", help="Revoke the tokens at the identity provider first."
        ),
    ] = True,
    open_browser: Annotated[
        bool,
        typer.Option("--open", help="Open the identity provider's logout page in the browser."),
    ] = False,
) -> None:
    """Revoke the tokens, remove them from storage, and show the provider's logout URL."""
    from rich.text import Text

    loaded = _load()
    name = _resolve(provider, loaded)
    console = err_console()
    with _provider(name, loaded) as prov:
        try:
            token = prov.token_storage.load(name)
        except TokenStorageError as exc:
            warning_line(str(exc))
            token = None
        revoked, failure = _revoke(prov, token) if revoke else (None, None)
        removed = prov.token_storage.delete(name)
        logout_url = _end_session_url(prov)
        # the browser gets the stored ID token as the hint (OIDC RP-Initiated Logout 2),
        # so the provider ends the session without asking; the printed URL has none
        hinted = _end_session_url(prov, token.id_token) if token and token.id_token else None
        storage = prov.token_storage.describe()
    if revoked:
        console.print(f"Revoked the tokens of {name} at the identity provider.")
    elif revoked is False:
        console.print(
            Text(
                f"{name} has no revocation endpoint (neither discovered nor set in "
                "'revoke_url'): the tokens stay valid until they expire.",
                style="yellow",
            )
        )
    if removed:
        console.print(Text(f"Removed the stored token of {name} ({storage})."))
    else:
        console.print(f"No token was stored for {name}.")
    if logout_url:
        from kstlib.auth.callback import open_in_browser

        if open_browser and open_in_browser(hinted or logout_url):
            console.print("Opened the identity provider's logout page.")
        else:
            console.print("To end your session at the identity provider too, open:")
            typer.echo(logout_url)
    if failure is not None:
        raise AuthError(f"{failure} (the local token was removed anyway)")


# --------------------------------------------------------------------------- status


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat() if when is not None else None


def _status_entry(name: str, loaded: LoadedConfig, soon: int) -> dict[str, Any]:
    """What ``status --json`` says about one provider (no network, no secret)."""
    from kstlib.auth.config import get_token_storage_for_provider
    from kstlib.auth.providers.base import marked_refused

    entry: dict[str, Any] = {
        "provider": name,
        "authenticated": False,
        "subject": None,
        "scopes": [],
        "token_type": None,
        "expires_at": None,
        "expires_in": None,
        "expiring_soon": False,
        "refreshable": False,
        "refresh_expires_at": None,
        "storage": None,
        "error": None,
        "user": None,
        "logged_in": False,
        "reason": "not logged in: no token is stored",
    }
    try:
        storage = get_token_storage_for_provider(name, config=loaded)
        entry["storage"] = storage.describe()
        token = storage.load(name)
    except AuthError as exc:
        entry["error"] = str(exc)
        entry["reason"] = "the stored token cannot be read"
        return entry
    if token is None:
        return entry
    entry.update(_session_state(token))
    expires_in = token.expires_in
    entry.update(
        authenticated=not token.is_expired,
        subject=_subject(token),
        user=_user(token),
        scopes=list(token.scope),
        token_type=str(getattr(token.token_type, "value", token.token_type)),
        expires_at=_iso(token.expires_at),
        expires_in=expires_in,
        expiring_soon=expires_in is not None and 0 <= expires_in < soon,
        refreshable=token.is_refreshable and not marked_refused(token),
        refresh_expires_at=_iso(token.refresh_expires_at),
    )
    return entry


def _session_state(token: Token) -> dict[str, Any]:
    """``logged_in`` (the access token is valid, or can be renewed without the user) and
    ``reason``: why not, or what happens next ("expired 1 h 40 min ago, no refresh token")."""
    from kstlib.auth.providers.base import marked_refused

    now = datetime.now(UTC)
    if not token.is_expired:
        return {"logged_in": True, "reason": None}
    ago = (
        f"expired {format_duration((now - token.expires_at).total_seconds())} ago"
        if token.expires_at is not None
        else "expired"
    )
    refresh_end = token.refresh_expires_at
    if not token.refresh_token:
        return {"logged_in": False, "reason": f"{ago}, no refresh token"}
    if marked_refused(token):
        return {"logged_in": False, "reason": f"{ago}, refresh token refused by the server"}
    if refresh_end is not None and refresh_end <= now:
        since = format_duration((now - refresh_end).total_seconds())
        return {"logged_in": False, "reason": f"{ago}, refresh token expired {since} ago"}
    return {"logged_in": True, "reason": f"{ago}; refreshed on next use"}


def _access_cell(entry: dict[str, Any]) -> Text:
    from rich.text import Text

    if entry["error"]:  # the error itself is a warning line under the table
        return Text("unreadable (see below)", style="red")
    if entry["token_type"] is None:
        return Text("not logged in", style="dim")
    if entry["expires_at"] is None:
        return Text("valid, expiry unknown" if entry["authenticated"] else "expired", style="")
    when = format_when(datetime.fromisoformat(entry["expires_at"]))
    if not entry["authenticated"]:
        style = "yellow" if entry["logged_in"] else "red"
        return Text(entry["reason"] or f"expired {when}", style=style)
    if entry["expiring_soon"]:
        return Text(f"expiring soon: {when}", style="yellow")
    return Text(f"valid, expires {when}", style="green")


def _refresh_cell(entry: dict[str, Any]) -> Text:
    from rich.text import Text

    if not entry["refreshable"]:
        return Text("none" if entry["token_type"] else "-", style="dim")
    if entry["refresh_expires_at"]:
        return Text(
            f"present, expires {format_when(datetime.fromisoformat(entry['refresh_expires_at']))}"
        )
    return Text("present")


#: The columns of ``status``; on a narrow terminal Storage goes first, then Scopes...
_STATUS_COLUMNS: Final = (
    Column("Provider"),
    Column("Subject", drop=2),
    Column("Scopes", drop=4),
    Column("Access token"),
    Column("Refresh token", drop=3),
    Column("Storage", drop=5),
)


def _status_rows(entries: list[dict[str, Any]]) -> list[list[Text]]:
    from rich.text import Text

    return [
        [
            Text(entry["provider"], style="bold"),
            Text(entry["user"] or entry["subject"] or "-"),
            Text(" ".join(entry["scopes"]) or "-"),
            _access_cell(entry),
            _refresh_cell(entry),
            Text(entry["storage"] or "-"),
        ]
        for entry in entries
    ]


@_handled
def status(
    provider: ProviderArg = None, *, as_json: JsonOption = False, output: OutputOption = None
) -> None:
    """Show who is logged in where, and when the tokens expire (all providers by default).

    --output json (or --json) prints a JSON list with one object per provider:
    provider, authenticated, subject, scopes, token_type, expires_at, expires_in,
    expiring_soon, refreshable, refresh_expires_at, storage, error, user
    (preferred_username, email or sub), logged_in (valid, or renewable without the
    user) and reason (why not); --output tsv prints the same fields, in that order, one
    provider a line. Exit 1 when a token could not be read (the reason is a warning line
    on stderr), or when the provider named is not logged in (with the reason); without a
    provider, when none is logged in.
    """
    fmt = chosen_output(output, as_json)
    from kstlib.auth.config import get_auth_settings, list_configured_providers

    loaded = _load()
    names = (
        [_resolve(provider, loaded)]
        if provider is not None
        else list_configured_providers(config=loaded)
    )
    soon = get_auth_settings(config=loaded).status.expiring_soon_threshold
    entries = [_status_entry(name, loaded, soon) for name in names]
    if fmt is OutputFormat.JSON:
        echo_json(entries)
    elif fmt is OutputFormat.TSV:
        echo_tsv(list(entry.values()) for entry in entries)
    elif not entries:
        err_console().print("No provider is configured (auth.providers).")
    else:
        print_table(_STATUS_COLUMNS, _status_rows(entries), title="Authentication status")
    for entry in entries:
        if entry["error"]:
            warning_line(f"{entry['provider']}: {entry['error']}")
    if any(entry["error"] for entry in entries):
        raise typer.Exit(EXIT_AUTH)
    if entries and not any(entry["logged_in"] for entry in entries):
        if fmt is not OutputFormat.JSON:  # the JSON document carries the reasons
            for entry in entries:
                warning_line(f"{entry['provider']}: {entry['reason']}")
        raise typer.Exit(EXIT_AUTH)


# --------------------------------------------------------------------------- token


def _output_format(chosen: TokenFormat | None, header: bool, as_json: bool) -> str:
    """The one output format asked for by ``--format``, ``--header`` and ``--json``."""
    asked = {f for f, on in (("header", header), ("json", as_json)) if on}
    if chosen is not None:
        asked.add(chosen.value)
    if len(asked) > 1:
        raise typer.BadParameter(
            f"choose one output format, not {' and '.join(sorted(asked))}",
            param_hint="'--format' / '--header' / '--json'",
        )
    return asked.pop() if asked else "raw"


def _current_token(provider: OAuth2Provider, *, force: bool) -> Token:
    """The access token to print, as the provider decides (renewed when forced or stale).

    Raises TokenExpiredError (not logged in, or expired and not renewable) or
    TokenRefreshError; both say what to run.
    """
    return provider.acquire(force=force).token


def _print_decoded(name: str, token: Token) -> None:
    decoded = decode_jwt_unverified(token.access_token)
    if decoded is None:
        err_console().print(f"The access token of {name} is opaque (not a JWT): nothing to decode.")
        return
    header, payload = decoded
    echo_json({"header": header, "payload": payload})


@_handled
def token(
    provider: ProviderArg = None,
    *,
    refresh: Annotated[bool, typer.Option("--refresh", help="Refresh the token first.")] = False,
    decode: Annotated[
        bool,
        typer.Option("--decode", help="Show the header and claims of a JWT access token."),
    ] = False,
    as_json: JsonOption = False,
    header: Annotated[
        bool, typer.Option("--header", help="Print 'Authorization: Bearer <token>'.")
    ] = False,
    output_format: Annotated[
        TokenFormat | None,
        typer.Option(
            "--format",
            help="raw (default), header, json, env (export lines), or kubectl "
            "(ExecCredential with the ID token; logs in on demand when interactive).",
            show_default=False,
        ),
    ] = None,
    access_token: Annotated[
        bool,
        typer.Option(
            "--access-token", help="With --format kubectl: the access token, not the ID token."
        ),
    ] = False,
) -> None:
    """Print the access token (refreshed first when needed)."""
    chosen = _output_format(output_format, header, as_json)
    if access_token and chosen != "kubectl":
        raise typer.BadParameter("only applies to --format kubectl", param_hint="'--access-token'")
    loaded = _load()
    name = _resolve(provider, loaded)
    if chosen == "kubectl" and not decode:
        typer.echo(_kubectl_credential(name, loaded, refresh=refresh, access_token=access_token))
        return
    with _provider(name, loaded) as prov:
        current = _current_token(prov, force=refresh)
    if decode:
        _print_decoded(name, current)
    else:
        typer.echo(format_token(current, chosen))


# --------------------------------------------------------------------------- kubectl (#16)


def _kube_token(provider: OAuth2Provider, *, force: bool, access_token: bool) -> Token:
    """The token for an ExecCredential: the access token as ``token`` gives it, or one whose
    ID token is still fresh (renewed once, single-flight, when it is not)."""
    current = provider.acquire(force=force).token
    skew = provider.config.refresh_skew
    if access_token or id_token_usable(current, skew):
        return current
    if provider.can_renew(current):  # the refresh answer of an OpenID provider has a new one
        current = provider.acquire(current, force=True).token
    if not id_token_usable(current, skew):
        name = provider.name
        raise TokenExpiredError(
            f"'{name}' has no valid ID token for kubectl (none was issued, or it expired and "
            f"the refresh gave no new one); run kstlib auth login {name}, or use --access-token"
        )
    return current


def _kubectl_credential(
    name: str, loaded: LoadedConfig, *, refresh: bool, access_token: bool
) -> str:
    """The ExecCredential of ``token --format kubectl``; logs in first when nothing valid is
    stored and the session is interactive (``KUBERNETES_EXEC_INFO``'s ``spec.interactive``,
    else whether stdin is a terminal). The login talks on stderr only."""
    info = exec_info()
    interactive = info.interactive if info.interactive is not None else sys.stdin.isatty()
    try:
        with _provider(name, loaded) as prov:
            current = _kube_token(prov, force=refresh, access_token=access_token)
    except (TokenExpiredError, TokenRefreshError) as exc:
        if not interactive or getattr(exc, "retryable", False):
            raise
        notice = _Notice(quiet=False)
        notice(f"{exc}; logging in for kubectl.")
        current = _loopback_login(name, loaded, None, no_browser=False, notice=notice, stdout=False)
        if not access_token and not id_token_usable(current, 0):
            raise TokenExpiredError(
                f"The login to '{name}' gave no ID token; use --access-token"
            ) from None
    return format_token(current, "kubectl", access_token=access_token, api_version=info.api_version)


# --------------------------------------------------------------------------- git credential (#16)


class GitAction(StrEnum):
    """Actions of git's credential-helper protocol."""

    GET = "get"
    STORE = "store"
    ERASE = "erase"


@_handled
def git_credential(
    provider: Annotated[str, typer.Argument(help="Provider whose access token git sends.")],
    action: Annotated[GitAction, typer.Argument(help="get, store or erase (given by git).")],
    *,
    username: Annotated[
        str,
        typer.Option("--username", help="User name sent with the token (GitLab: oauth2)."),
    ] = "oauth2",
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Only answer for this host (git's host[:port]); repeatable."),
    ] = None,
) -> None:
    """git credential helper: answer 'get' with the provider's access token.

    Set it with git config credential.https://git.example.com.helper
    '!kstlib auth git-credential corp'. 'get' prints username=<--username> and
    password=<access token> (refreshed when stale) for https requests only, and only
    for --host when given; 'store' keeps nothing and 'erase' forgets nothing (the stored
    token stays; use kstlib auth logout). Exit 1 when there is no usable token (git
    then asks its other helpers or the user).
    """
    request = git_request()
    if action is not GitAction.GET:
        return
    refusal = git_refusal(request, [h.lower() for h in host or ()])
    if refusal is not None:
        logging.getLogger("kstlib.cli").info("git-credential: no answer, %s", refusal)
        return
    loaded = _load()
    name = _resolve(provider, loaded)
    with _provider(name, loaded) as prov:
        current = prov.acquire().token
    sys.stdout.write(git_answer(current, username))


# --------------------------------------------------------------------------- whoami


@_handled
def whoami(
    provider: ProviderArg = None,
    *,
    as_json: JsonOption = False,
    raw: Annotated[bool, typer.Option("--raw", help="Same as --json.")] = False,
    output: OutputOption = None,
) -> None:
    """Show the user's claims from the provider's UserInfo endpoint.

    --output tsv prints one claim a line: the name, a tab, the value (lists
    space-separated, objects as compact JSON).
    """
    fmt = chosen_output(output, as_json or raw)
    loaded = _load()
    name = _resolve(provider, loaded)
    with _provider(name, loaded) as prov:
        info = prov.get_userinfo(prov.acquire().token)
    if fmt is OutputFormat.JSON:
        echo_json(info)
    elif fmt is OutputFormat.TSV:
        echo_tsv(sorted(info.items()))
    else:
        print_facts(sorted(info.items()), title=f"{name}: UserInfo")


# --------------------------------------------------------------------------- providers


def _provider_row(name: str, loaded: LoadedConfig, default: str | None) -> dict[str, Any]:
    """Facts about one configured provider; ``error`` set when it cannot be built."""
    from kstlib.auth.config import get_provider_type

    row: dict[str, Any] = {"name": name, "default": name == default, "error": None}
    try:
        row["type"] = get_provider_type(name, config=loaded)
        with _provider(name, loaded) as prov:
            row["issuer"] = redact_urls(prov.config.issuer or prov.config.authorize_url or "")
            row["discovery"] = getattr(prov, "discovery_mode", "none")
            row["storage"] = prov.token_storage.describe()
            row["settings"] = mask_secrets(prov.config.to_safe_dict())
    except AuthError as exc:
        row["error"] = str(exc)
    return row


#: The columns of ``providers``; on a narrow terminal Storage goes first, then Discovery...
_PROVIDER_COLUMNS: Final = (
    Column("Provider"),
    Column("Type", drop=1),
    Column("Issuer"),
    Column("Discovery", drop=2),
    Column("Storage", drop=3),
)
#: The fields of ``providers --output tsv``, in order.
_PROVIDER_FIELDS: Final = ("name", "default", "type", "issuer", "discovery", "storage", "error")


def _providers_rows(rows: list[dict[str, Any]]) -> list[list[Text]]:
    from rich.text import Text

    table: list[list[Text]] = []
    for row in rows:
        label = Text(row["name"] + (" (default)" if row["default"] else ""), style="bold")
        if row["error"]:  # the error itself is an error line under the table
            table.append([label, Text("invalid (see below)", style="red"), *[Text("")] * 3])
            continue
        table.append(
            [
                label,
                Text(str(row["type"])),
                Text(str(row["issuer"] or "-")),
                Text(str(row["discovery"])),
                Text(str(row["storage"])),
            ]
        )
    return table


def _provider_json(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row.get(key) for key in (*_PROVIDER_FIELDS, "settings")}


@_handled
def providers(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show every setting (secrets masked).")
    ] = False,
    *,
    as_json: JsonOption = False,
    output: OutputOption = None,
) -> None:
    """List the configured providers (exit 2 when one of them is invalid).

    --output json prints a list of objects (name, default, type, issuer,
    discovery, storage, error, settings with secrets masked); --output tsv the
    same fields but settings, in that order, one provider a line.
    """
    fmt = chosen_output(output, as_json)
    from kstlib.auth.config import get_default_provider_name, list_configured_providers

    loaded = _load()
    names = list_configured_providers(config=loaded)
    if not names and fmt is OutputFormat.TABLE:
        err_console().print("No provider is configured (auth.providers).")
        return
    default = get_default_provider_name(config=loaded)
    rows = [_provider_row(name, loaded, default) for name in names]
    if fmt is OutputFormat.JSON:
        echo_json([_provider_json(row) for row in rows])
    elif fmt is OutputFormat.TSV:
        echo_tsv([row.get(key) for key in _PROVIDER_FIELDS] for row in rows)
    else:
        print_table(_PROVIDER_COLUMNS, _providers_rows(rows), title="Configured providers")
        if verbose:
            for row in rows:
                if not row["error"]:
                    settings = {"type": row["type"], "storage": row["storage"], **row["settings"]}
                    print_facts(settings.items(), title=f"\n{row['name']}")
    for row in rows:
        if row["error"]:
            error_line(f"provider {row['name']} is invalid: {row['error']}")
    if any(row["error"] for row in rows):
        raise typer.Exit(EXIT_USAGE)


# --------------------------------------------------------------------------- preflight


_PREFLIGHT_COLUMNS: Final = (
    Column("Step", no_wrap=True),
    Column("Status", no_wrap=True),
    Column("Message"),
    Column("Duration", drop=1, no_wrap=True, justify="right"),
)


def _preflight_rows(report: PreflightReport) -> list[list[Text]]:
    from rich.text import Text

    return [
        [
            Text(result.step),
            status_text(result.status.value),
            Text(result.message),
            Text(f"{result.duration_ms:.0f} ms"),
        ]
        for result in report.results
    ]


def _verdict(report: PreflightReport) -> Text:
    from rich.text import Text

    failed = [r.step for r in report.results if r.status.value == "failure"]
    total = f"{len(report.results)} steps, {report.duration_ms:.0f} ms"
    if failed:
        # #16 item 7: steps that depend on a failed one are skipped, and counted apart
        skipped = sum(1 for r in report.results if r.message.startswith("skipped: "))
        also = f", {skipped} dependent step(s) skipped" if skipped else ""
        return Text(
            f"✗ {report.provider_name}: {', '.join(failed)} failed{also} ({total})", style="red"
        )
    return Text(f"✓ {report.provider_name} is ready ({total})", style="green")


@_handled
def preflight(
    provider: ProviderArg = None, *, as_json: JsonOption = False, output: OutputOption = None
) -> None:
    """Check configuration, discovery, keys and endpoints (exit 1 when a step fails).

    --output tsv prints one step a line: step, status, message, duration in ms.
    """
    fmt = chosen_output(output, as_json)
    loaded = _load()
    name = _resolve(provider, loaded)
    with _provider(name, loaded) as prov:
        report = prov.preflight()
    if fmt is OutputFormat.JSON:
        echo_json(report.to_dict())
    elif fmt is OutputFormat.TSV:
        echo_tsv((r.step, r.status.value, r.message, round(r.duration_ms)) for r in report.results)
    else:
        title = f"Preflight of {report.provider_name}"
        print_table(_PREFLIGHT_COLUMNS, _preflight_rows(report), title=title)
        out_console().print(_verdict(report))
    if not report.success:
        raise typer.Exit(EXIT_AUTH)


# --------------------------------------------------------------------------- introspect
# issue 13 (item 4): RFC 7662 introspection of the stored access token


#: Introspection fields holding times (seconds since the epoch), shown as dates in the table.
_INTROSPECTION_TIMES: Final = ("exp", "iat", "nbf")


def _introspection_rows(info: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in sorted(info.items(), key=lambda item: (item[0] != "active", item[0])):
        when = isinstance(value, int) and not isinstance(value, bool)
        shown = (
            format_when(datetime.fromtimestamp(value, UTC))
            if when and key in _INTROSPECTION_TIMES
            else value
        )
        rows.append((key, shown))
    return rows


@_handled
def introspect(
    provider: ProviderArg = None, *, as_json: JsonOption = False, output: OutputOption = None
) -> None:
    """Ask the identity provider about the stored access token (RFC 7662); exit 1 if inactive.

    --output tsv prints one field a line: the name, a tab, the value.
    """
    from rich.text import Text

    fmt = chosen_output(output, as_json)
    loaded = _load()
    name = _resolve(provider, loaded)
    with _provider(name, loaded) as prov:
        info = mask_secrets(redact_mapping(prov.introspect()))
    if fmt is OutputFormat.JSON:
        echo_json(info)
    elif fmt is OutputFormat.TSV:
        echo_tsv(sorted(info.items()))
    else:
        print_facts(_introspection_rows(info), title=f"{name}: introspection")
    if info.get("active") is not True:
        err_console().print(
            Text(
                f"The access token of {name} is not active at the identity provider.",
                style="yellow",
            )
        )
        raise typer.Exit(EXIT_AUTH)


# --------------------------------------------------------------------------- registration

_COMMANDS: Final[tuple[tuple[str, Callable[..., None]], ...]] = (
    ("login", login),
    ("logout", logout),
    ("status", status),
    ("token", token),
    ("whoami", whoami),
    ("providers", providers),
    ("preflight", preflight),
    ("introspect", introspect),  # issue 13
    ("git-credential", git_credential),
)


def register(auth_app: typer.Typer) -> None:
    """Add the auth commands to the ``kstlib auth`` Typer app."""
    for name, command in _COMMANDS:
        auth_app.command(name)(command)
