"""``kstlib auth check``: prove a JWT with the issuer's keys and show the proof chain.

Exit codes: 0 the token is valid, 1 it is invalid, 2 the check could not run
(usage, configuration, no stored token), 3 the access token is opaque (not a JWT:
only its issuer can say whether it is valid, ``kstlib auth introspect``). The raw
token and its signature are never printed; claims are, with secret-like values
(``nonce``...) redacted.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Final, NamedTuple

import typer

from kstlib.auth.redaction import REDACTED, is_sensitive_key
from kstlib.cli.output import error_line

if TYPE_CHECKING:  # Rich is imported when a report is rendered, not when the command is defined
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from kstlib.auth.check import TokenCheckReport

__all__ = ["check_command", "register", "render_report", "report_as_json"]

EXIT_VALID: Final = 0
EXIT_INVALID: Final = 1
EXIT_ERROR: Final = 2
#: An opaque access token: nothing to verify locally (#16 item 8).
EXIT_OPAQUE: Final = 3
_TIME_CLAIMS: Final = ("exp", "iat", "nbf", "auth_time", "updated_at")
_STEP_TITLES: Final = {
    "decode_structure": "Decode structure",
    "discover_issuer": "Discover issuer",
    "fetch_jwks": "Fetch JWKS",
    "extract_public_key": "Extract public key",
    "verify_signature": "Verify signature",
    "validate_claims": "Validate claims",
}


#: C0/C1 controls, DEL, and the bidirectional overrides/isolates that reorder a line
#: (patterns compiled at their first use, by ``re``'s cache: not by every command's start-up).
_UNSAFE: Final = "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
_UNSAFE_BUT_NEWLINE: Final = (
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _safe_text(value: object, *, newlines: bool = False) -> str:
    """``value`` as text fit for a terminal: control characters shown as ``\\x1b`` escapes.

    Every string that comes from a token, a JWKS, a certificate or a server goes through
    here and then into a Rich ``Text`` (never parsed as markup).
    """
    return re.sub(_UNSAFE_BUT_NEWLINE if newlines else _UNSAFE, _escape, str(value))


def _text(value: object, style: str = "") -> Text:
    from rich.text import Text

    return Text(_safe_text(value), style=style)


_UNPINNED_WARNING: Final = (
    "warning: issuer not pinned: the token names its own issuer, so this check proves only "
    "that the token matches the keys that issuer publishes; pass --expected-issuer URL or a "
    "provider"
)


class _UsageError(Exception):
    """The check cannot run; the message tells the user what to do."""


class _Target(NamedTuple):  # (a frozen dataclass costs every command's start-up ~2 ms)
    """What to check and against what."""

    token: str
    token_type: str
    expected_issuer: str | None
    expected_audience: str | None
    #: Keyword arguments of ``build_http_client`` (TLS, headers, timeout).
    http: dict[str, Any]
    audience_note: str | None = None


def register(auth_app: typer.Typer) -> None:
    """Add the ``check`` command to the ``kstlib auth`` Typer app."""
    auth_app.command(
        "check",
        help="Verify a JWT cryptographically: issuer, keys, signature and claims.",
    )(check_command)


def check_command(
    provider: Annotated[
        str | None,
        typer.Argument(help="Provider whose issuer/client id pin the check (and whose token)."),
    ] = None,
    *,
    token: Annotated[
        str | None,
        typer.Option("--token", "-t", help="The JWT to check; '-' reads it from stdin."),
    ] = None,
    access_token: Annotated[
        bool, typer.Option("--access-token", help="Check the access token, not the ID token.")
    ] = False,
    expected_issuer: Annotated[
        str | None, typer.Option("--expected-issuer", help="Issuer the token must come from.")
    ] = None,
    expected_audience: Annotated[
        str | None, typer.Option("--expected-audience", help="Audience the token must name.")
    ] = None,
    allow_loopback_issuer: Annotated[
        bool,
        typer.Option(
            "--allow-loopback-issuer",
            help="Without a pinned issuer, also accept one on this machine (a development IdP).",
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show header, payload, discovery, PEM.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify a JWT cryptographically: issuer, keys, signature and claims."""
    try:
        target = _resolve_target(provider, token, access_token, expected_issuer, expected_audience)
    except _UsageError as exc:
        error_line(str(exc))
        raise typer.Exit(EXIT_ERROR) from None
    if target.token_type == "access_token" and _is_opaque(target.token):
        _report_opaque(provider, as_json)
        raise typer.Exit(EXIT_OPAQUE)
    from kstlib.auth._http import build_http_client
    from kstlib.auth.check import TokenChecker

    with build_http_client(**target.http) as client:
        checker = TokenChecker(
            client,
            expected_issuer=target.expected_issuer,
            expected_audience=target.expected_audience,
            allow_loopback_issuer=allow_loopback_issuer,
        )
        report = checker.check(target.token, token_type=target.token_type)
    unpinned = target.expected_issuer is None
    if unpinned:  # on stderr: it must be seen, and must not break --json
        typer.echo(_UNPINNED_WARNING, err=True)  # one line, never wrapped
    if as_json:
        typer.echo(json.dumps(report_as_json(report), indent=2, sort_keys=True))
    else:
        from rich.console import Console

        Console(highlight=False).print(
            render_report(report, verbose=verbose, note=target.audience_note, unpinned=unpinned)
        )
    raise typer.Exit(EXIT_VALID if report.valid else EXIT_INVALID)


# --------------------------------------------------------------------------- opaque (#16 item 8)


def _is_opaque(token: str) -> bool:
    """True when ``token`` is not a JWS (a random string, or an encrypted JWE)."""
    from kstlib.cli._fast import decode_jwt_unverified

    return decode_jwt_unverified(token) is None


def _report_opaque(provider: str | None, as_json: bool) -> None:
    """Say that an opaque access token cannot be checked here, and what can."""
    where = f" {provider}" if provider and provider != "-" else ""
    message = (
        "The access token is opaque (not a JWT): it has no signature or claims to verify "
        "here; only its issuer can say whether it is active. "
        f"Ask it with: kstlib auth introspect{where}"
    )
    if as_json:
        document = {
            "token_type": "access_token",
            "opaque": True,
            "valid": None,
            "message": message,
            "exit_code": EXIT_OPAQUE,
        }
        typer.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        from rich.console import Console

        Console(highlight=False).print(_text(message, style="yellow"))


# --------------------------------------------------------------------------- inputs


def _resolve_target(
    provider: str | None,
    token: str | None,
    access_token: bool,
    expected_issuer: str | None,
    expected_audience: str | None,
) -> _Target:
    token_type = "access_token" if access_token else "id_token"
    if provider == "-" and token is None:  # `kstlib auth check -`
        provider, token = None, "-"
    if token == "-":
        token = _read_stdin()
    if provider is None and token is not None:
        return _Target(token, token_type, expected_issuer, expected_audience, _default_http())
    return _provider_target(provider, token, token_type, expected_issuer, expected_audience)


def _read_stdin() -> str:
    text = sys.stdin.read().strip()
    if not text:
        raise _UsageError("no token on stdin")
    return text


def _provider_target(
    provider: str | None,
    token: str | None,
    token_type: str,
    expected_issuer: str | None,
    expected_audience: str | None,
) -> _Target:
    from kstlib.auth import config as auth_config
    from kstlib.auth.errors import AuthError

    try:
        name = auth_config.resolve_provider_name(provider)
        cfg = auth_config.build_provider_config(name)
        if token is None:
            token = _stored_token(name, token_type)
    except AuthError as exc:
        raise _UsageError(str(exc)) from None
    note = None
    if expected_audience is None and token_type == "id_token":
        expected_audience = cfg.client_id
    elif expected_audience is None:
        note = "access token audience not checked (it names the API, not the client)"
    http = {
        "headers": cfg.headers,
        "ssl_verify": cfg.ssl_verify,
        "ssl_ca_bundle": cfg.ssl_ca_bundle,
        "timeout": cfg.timeout,
    }
    return _Target(token, token_type, expected_issuer or cfg.issuer, expected_audience, http, note)


def _stored_token(provider: str, token_type: str) -> str:
    from kstlib.auth import config as auth_config

    stored = auth_config.get_token_storage_for_provider(provider).load(provider)
    if stored is None:
        raise _UsageError(
            f"no token stored for provider {provider!r}: run 'kstlib auth login {provider}' "
            "or pass --token"
        )
    value = stored.id_token if token_type == "id_token" else stored.access_token
    if not value:
        raise _UsageError(
            f"the stored token of {provider!r} has no ID token; use --access-token to check "
            "the access token"
        )
    return value


def _default_http() -> dict[str, Any]:
    """HTTP settings without a provider: the global ``ssl:`` section."""
    from kstlib.auth import config as auth_config
    from kstlib.auth.errors import AuthError

    try:
        ssl = auth_config.get_ssl_settings()
    except AuthError as exc:
        raise _UsageError(str(exc)) from None
    return {"ssl_verify": ssl.verify, "ssl_ca_bundle": ssl.ca_bundle}


# --------------------------------------------------------------------------- output


def _redacted_claims(claims: dict[str, Any]) -> dict[str, Any]:
    return {k: REDACTED if is_sensitive_key(k) and v is not None else v for k, v in claims.items()}


def report_as_json(report: TokenCheckReport) -> dict[str, Any]:
    """``report.to_dict()`` with secret-like claim values redacted."""
    data = report.to_dict()
    data["payload"] = _redacted_claims(data["payload"])
    return data


def render_report(
    report: TokenCheckReport,
    *,
    verbose: bool = False,
    note: str | None = None,
    unpinned: bool | None = None,
) -> Group:
    """The Rich rendering of a report: verdict, steps, key, certificate, claims.

    ``unpinned``: whether the check ran without an expected issuer (``None``: as far as
    the report shows it).
    """
    from rich.console import Group

    if unpinned is None:
        unpinned = _issuer_unpinned(report)
    parts: list[Any] = [_verdict_panel(report, note, unpinned), _steps_table(report)]
    if report.key_fingerprint:
        parts.append(_key_panel(report))
    if report.x509_info:
        parts.append(_x509_panel(report.x509_info))
    if report.payload:
        parts.append(_claims_table(report.payload))
    if verbose:
        parts.extend(_verbose_parts(report))
    return Group(*parts)


def _verdict_panel(report: TokenCheckReport, note: str | None, unpinned: bool) -> Panel:
    from rich.panel import Panel
    from rich.text import Text

    kind = "ID token" if report.token_type == "id_token" else "access token"
    if report.valid:
        text = Text(f"VALID {kind}", style="bold green")
        if unpinned:
            text.append(" (issuer not pinned)", style="bold yellow")
        text.append(f"\nsigned with {_safe_text(report.signature_algorithm)}", style="green")
    else:
        failed = report.failed_step
        where = _STEP_TITLES.get(failed.name, failed.name) if failed else "check"
        text = Text(f"INVALID {kind}", style="bold red")
        text.append(f"\n{_safe_text(where)} failed: {_safe_text(report.error)}", style="red")
    if unpinned:
        text.append(
            "\nissuer not pinned: the token chose it; pass --expected-issuer (or a provider)",
            style="yellow",
        )
    if note:
        text.append(f"\n{note}", style="yellow")
    return Panel(text, title="Token check", border_style="green" if report.valid else "red")


def _issuer_unpinned(report: TokenCheckReport) -> bool:
    return any(
        step.name == "discover_issuer" and step.details.get("issuer_pinned") is False
        for step in report.steps
    )


def _steps_table(report: TokenCheckReport) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(width=2)
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    done = {step.name for step in report.steps}
    for step in report.steps:
        mark = Text("✓", style="green") if step.passed else Text("✗", style="red")
        table.add_row(mark, _text(_STEP_TITLES.get(step.name, step.name)), _text(step.message))
    for name, title in _STEP_TITLES.items():
        if name not in done:
            table.add_row(
                Text("·", style="dim"), Text(title, style="dim"), Text("not run", style="dim")
            )
    return table


def _key_panel(report: TokenCheckReport) -> Panel:
    from rich.panel import Panel

    table = _facts_table(
        [
            ("type", f"{report.key_type} ({report.key_size_bits} bits)"),
            ("kid", str(report.key_id) if report.key_id is not None else "(none)"),
            ("algorithm", str(report.signature_algorithm)),
            ("SHA-256", str(report.key_fingerprint)),
            ("JWKS", str(report.jwks_uri)),
        ]
    )
    return Panel(table, title="Public key", border_style="cyan")


def _x509_panel(info: dict[str, Any]) -> Panel:
    from rich.panel import Panel

    if "error" in info:
        return Panel(_text(info["error"], style="yellow"), title="X.509 (x5c)")
    rows = [
        ("subject", str(info.get("subject"))),
        ("issuer", str(info.get("issuer"))),
        ("serial", str(info.get("serial"))),
        ("valid", f"{info.get('not_before')} → {info.get('not_after')}"),
        ("currently valid", "yes" if info.get("currently_valid") else "no"),
        ("matches JWK key", "yes" if info.get("matches_jwk") else "NO"),
    ]
    table = _facts_table(rows)
    return Panel(table, title="X.509 certificate (x5c, chain not validated)", border_style="cyan")


def _facts_table(rows: list[tuple[str, str]]) -> Table:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in rows:
        table.add_row(label, _text(value))
    return table


def _claims_table(payload: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(title="Claims", title_justify="left", show_lines=False)
    table.add_column("claim", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    now = time.time()
    for name, value in _redacted_claims(payload).items():
        table.add_row(_text(name), _text(_claim_text(name, value, now)))
    return table


def _claim_text(name: str, value: Any, now: float) -> str:
    if name in _TIME_CLAIMS and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value} ({describe_time(value, now, expiry=name == 'exp')})"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def describe_time(timestamp: float, now: float, *, expiry: bool = False) -> str:
    """``2025-01-01 12:00:00 UTC, expires in 1h 2m`` style text for a NumericDate."""
    from kstlib.auth.check import format_duration

    try:
        when = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "not a valid time"
    delta = timestamp - now
    if expiry:
        relative = (
            f"expires in {format_duration(delta)}"
            if delta >= 0
            else f"expired {format_duration(-delta)} ago"
        )
    else:
        relative = (
            f"in {format_duration(delta)}" if delta >= 0 else f"{format_duration(-delta)} ago"
        )
    return f"{when}, {relative}"


def _verbose_parts(report: TokenCheckReport) -> list[Any]:
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.text import Text

    parts: list[Any] = []
    sections = (
        ("Header", report.header),
        ("Payload", _redacted_claims(report.payload)),
        (f"Discovery document ({report.discovery_url})", report.discovery_data),
    )
    for title, data in sections:
        if data:
            text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
            syntax = Syntax(_safe_text(text, newlines=True), "json", word_wrap=True)
            parts.append(Panel(syntax, title=_text(title)))
    if report.public_key_pem:
        pem = _safe_text(report.public_key_pem.strip(), newlines=True)
        parts.append(Panel(Text(pem), title="Public key (PEM)"))
    return parts
