"""``kstlib auth login --device``: the device authorization grant (RFC 8628) in a terminal.

The address and the code are always printed on stdout (a browser may open too, but the
user of an SSH session reads them here); on a terminal wide enough, a QR code of the
address with the code filled in is drawn on stderr, then a spinner shows the time left.
Ctrl-C ends the wait at once: nothing is stored, the exit status is 130.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from typing import TYPE_CHECKING, Final, Protocol

import typer

from kstlib.cli.output import err_console, one_line

if TYPE_CHECKING:
    from rich.status import Status

    from kstlib.auth._device import DeviceAuthorization
    from kstlib.auth.models import Token
    from kstlib.auth.providers.oauth2 import OAuth2Provider

__all__ = ["DEVICE_HINT", "device_login", "headless_ssh", "qr_code", "suggest_device"]

#: What ``login`` says when the browser login cannot work here.
DEVICE_HINT: Final = (
    "'kstlib auth login --device' logs in with a code typed on another device (phone, laptop)"
)
#: Blank modules around the QR code (the standard asks for 4; 2 scans well on a terminal).
_QR_BORDER: Final = 2


class _Notice(Protocol):
    quiet: bool

    def __call__(self, message: str, *, style: str | None = None) -> None: ...


def headless_ssh() -> bool:
    """True in an SSH session without a display (no browser can open for the user here)."""
    env = os.environ
    over_ssh = any(env.get(name) for name in ("SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"))
    display = any(env.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY"))
    return over_ssh and not display


def _terminal_columns() -> int:
    """Columns of the terminal on stderr (``COLUMNS`` wins, as for Rich); 0 when unknown."""
    configured = os.environ.get("COLUMNS", "")
    if configured.isdigit():
        return int(configured)
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0


def qr_code(url: str, columns: int) -> str | None:
    """``url`` as a QR code drawn with half blocks, or None when it needs more than ``columns``."""
    import segno

    qr = segno.make(url, error="l", micro=False)
    width, _ = qr.symbol_size(border=_QR_BORDER)
    if width > columns:
        return None
    out = io.StringIO()
    qr.terminal(out=out, compact=True, border=_QR_BORDER)
    return out.getvalue()


def _show_qr(url: str, notice: _Notice) -> None:
    """Draw the QR code on stderr when it is a terminal that can show it."""
    stream = sys.stderr
    if notice.quiet or not stream.isatty():
        return
    drawing = qr_code(url, _terminal_columns())
    if drawing is None:
        return
    try:
        drawing.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return  # a terminal without the block characters
    notice("Or scan this QR code with your phone:")
    stream.write(drawing)
    stream.flush()


def _open_quietly(url: str) -> None:
    """Open ``url`` in a graphical browser from a daemon thread (never waited for)."""

    def run() -> None:
        from kstlib.auth.callback import open_in_browser

        with contextlib.suppress(Exception):  # the address and code are printed anyway
            open_in_browser(url)

    threading.Thread(target=run, name="kstlib-browser", daemon=True).start()


def _left(seconds: float) -> str:
    whole = int(seconds + 0.999)
    return f"{whole // 60}:{whole % 60:02d}"


class _Waiting:
    """The spinner on stderr while the device login waits (none under ``--quiet``)."""

    def __init__(self, notice: _Notice) -> None:
        self.spinner: Status | None = None
        if not notice.quiet:
            self.spinner = err_console().status("Waiting for the approval…")
            self.spinner.start()

    def on_tick(self, left: float) -> None:
        if self.spinner is not None:
            self.spinner.update(f"Waiting for the approval… {_left(left)} left (Ctrl-C to cancel)")

    def close(self) -> None:
        if self.spinner is not None:
            self.spinner.stop()
            self.spinner = None


def _show(name: str, authorization: DeviceAuthorization, notice: _Notice) -> None:
    notice(
        f"To log in to {name}, open this address on any device with a browser and enter "
        f"the code (valid {_left(authorization.expires_in)}):"
    )
    typer.echo(one_line(authorization.verification_uri))
    typer.echo(f"Code: {one_line(authorization.user_code)}")
    if authorization.verification_uri_complete:
        _show_qr(authorization.verification_uri_complete, notice)


def device_login(
    provider: OAuth2Provider,
    timeout: float | None,
    *,
    no_browser: bool,
    notice: _Notice,
) -> Token:
    """Start a device authorization, show it, wait for the approval; return the stored token."""
    authorization = provider.start_device_authorization()
    _show(provider.name, authorization, notice)
    if not no_browser and not headless_ssh():
        _open_quietly(authorization.verification_uri_complete or authorization.verification_uri)
    waiting = _Waiting(notice)
    try:
        return provider.poll_device_authorization(
            authorization, timeout=timeout, on_tick=waiting.on_tick
        )
    finally:
        waiting.close()


def suggest_device(notice: _Notice) -> None:
    """Say, before a browser login, that a device login suits a headless SSH session."""
    if headless_ssh():
        notice(f"This looks like an SSH session without a display: {DEVICE_HINT}.", style="yellow")
