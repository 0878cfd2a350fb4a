"""The ``kstlib`` Typer application: global options, logging, and the ``auth`` group.

``-v``/``-vv``/``-vvv`` (on ``kstlib`` and/or ``kstlib auth``; they add up)
raise the ``kstlib`` loggers from WARNING to INFO, DEBUG and TRACE (5). Log
records go to stderr through a handler carrying
:class:`~kstlib.auth.redaction.RedactingFilter`, so they are always redacted.

Exit codes: 0 success, 1 authentication failure (any
:class:`~kstlib.auth.errors.AuthError` but a configuration error), 2 usage
or configuration error.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Final, TextIO

import typer

from kstlib.auth.redaction import TRACE, RedactingFilter
from kstlib.cli import auth as auth_commands
from kstlib.cli._help import (
    AUTH_EXAMPLES,
    ROOT_EXAMPLES,
    add_examples,
    answer_completion,
    completion_option,
    epilog,
    hide_flag_types,
    with_completion_shell,
)
from kstlib.cli.auth import EXIT_AUTH, EXIT_USAGE
from kstlib.cli.check import register as register_check
from kstlib.cli.config_cmd import register as register_config
from kstlib.cli.output import error_line, one_line
from kstlib.config import CONFIG_ENV_VAR

__all__ = [
    "EXIT_AUTH",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIState",
    "app",
    "auth_app",
    "configure_logging",
    "reset_logging",
    "run",
]

EXIT_OK: Final = 0

#: Log level for each count of ``-v``.
_LEVELS: Final = (logging.WARNING, logging.INFO, logging.DEBUG, TRACE)
#: The variable through which the shell asks for completions (Typer/Click protocol).
_COMPLETE_VAR: Final = "_KSTLIB_COMPLETE"

app = typer.Typer(
    name="kstlib",
    help="kstlib: config-driven OAuth2 / OpenID Connect from the terminal.",
    no_args_is_help=True,
    add_completion=False,  # ours take an optional shell name: completion_option
    pretty_exceptions_enable=False,
    epilog=epilog(ROOT_EXAMPLES),
)
auth_app = typer.Typer(
    help="Log in to identity providers and use their tokens.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    epilog=epilog(AUTH_EXAMPLES),
)

VerboseOption = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="More log output on stderr: -v info, -vv debug, -vvv HTTP traces (always redacted).",
        show_default=False,
    ),
]


class CLIState:  # (a plain class: creating a dataclass costs every command's start-up)
    """Options shared by every command of one invocation."""

    __slots__ = ("verbosity",)

    def __init__(self, verbosity: int = 0) -> None:
        self.verbosity = verbosity

    def __repr__(self) -> str:
        return f"CLIState(verbosity={self.verbosity})"


class _CLILogHandler(logging.StreamHandler[TextIO]):
    """The stderr handler installed by the command line (replaced on each invocation)."""


class _CLIFormatter(logging.Formatter):
    """``warning: ...``, ``info: ...``; under ``-vv`` also the logger (``debug: kstlib.x: ...``).

    The one message style of the command line: a lower-case level, a colon, the message
    (redacted by the handler's filter before it gets here).
    """

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        level = record.levelname.lower()
        if self.verbosity >= 2 and record.levelno < logging.WARNING:
            return f"{level}: {record.name}: {text}"
        return f"{level}: {text}"


def reset_logging() -> None:
    """Remove the command line's log handler and level from the ``kstlib`` logger."""
    logger = logging.getLogger("kstlib")
    for handler in [h for h in logger.handlers if isinstance(h, _CLILogHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


def configure_logging(verbosity: int) -> None:
    """Send ``kstlib`` log records at the level for ``verbosity`` to stderr, redacted."""
    reset_logging()
    logger = logging.getLogger("kstlib")
    handler = _CLILogHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(_CLIFormatter(verbosity))
    logger.addHandler(handler)
    logger.setLevel(_LEVELS[max(0, min(verbosity, len(_LEVELS) - 1))])


def _show_version(value: bool) -> None:
    if value:
        from kstlib import __version__

        typer.echo(f"kstlib-auth {__version__}")
        raise typer.Exit(EXIT_OK)


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Print the version (kstlib-auth X.Y.Z) and exit.",
    ),
]


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Use this configuration file instead of the search (like $KSTLIB_CONFIG).",
        show_default=False,
        dir_okay=False,
    ),
]


@app.callback()
def _root(  # noqa: PLR0917 - Typer passes every option by keyword
    ctx: typer.Context,
    verbose: VerboseOption = 0,
    version: VersionOption = False,
    config: ConfigOption = None,
    install_completion: Annotated[str | None, completion_option(install=True)] = None,
    show_completion: Annotated[str | None, completion_option(install=False)] = None,
) -> None:
    """kstlib: config-driven OAuth2 / OpenID Connect from the terminal."""
    ctx.obj = CLIState(verbosity=verbose)
    configure_logging(verbose)
    if config is not None:  # restored by run() when the command ends
        os.environ[CONFIG_ENV_VAR] = str(config.expanduser().absolute())


@auth_app.callback()
def _auth(ctx: typer.Context, verbose: VerboseOption = 0) -> None:
    """Log in to identity providers and use their tokens."""
    state = ctx.find_object(CLIState) or CLIState()
    state.verbosity += verbose
    ctx.obj = state
    configure_logging(state.verbosity)


auth_commands.register(auth_app)
register_check(auth_app)
register_config(auth_app)
add_examples(auth_app)
hide_flag_types()
app.add_typer(auth_app, name="auth")


# --------------------------------------------------------------------------- one command
# Typer builds the Click command of every registered command (signature, type hints,
# parameters) each time the application runs; a run that names its ``auth`` command
# builds that one only: the others would never be used.


def _is_verbose_flag(arg: str) -> bool:
    """``-v``, ``-vv``... or ``--verbose``: the counted option of ``kstlib`` and ``kstlib auth``."""
    return arg == "--verbose" or (len(arg) > 1 and arg[0] == "-" and set(arg[1:]) == {"v"})


def _named_command(args: Sequence[str]) -> str | None:
    """The ``auth`` command that ``args`` run, when they read ``[kstlib options] auth [-v]
    NAME ...`` with nothing but ``-v``/``--verbose`` and ``--config FILE`` before ``NAME``;
    else None (help of a group, ``--version``, completion, a misspelled name...)."""
    index = 0
    while index < len(args) and args[index] != "auth":
        arg = args[index]
        if arg == "--config":
            index += 2
        elif arg.startswith("--config=") or _is_verbose_flag(arg):
            index += 1
        else:
            return None
    index += 1
    while index < len(args) and _is_verbose_flag(args[index]):
        index += 1
    if index >= len(args):
        return None
    name = args[index]
    return name if any(info.name == name for info in auth_app.registered_commands) else None


def _application(args: Sequence[str]) -> typer.Typer:
    """``app``, or when ``args`` name an ``auth`` command, a copy of it whose ``auth`` group
    holds that command only (the same options, help and behaviour; ``app`` is not changed)."""
    name = _named_command(args)
    if name is None:
        return app
    group = copy.copy(auth_app)
    group.registered_commands = [i for i in auth_app.registered_commands if i.name == name]
    root = copy.copy(app)
    root.registered_groups = []
    for registered in app.registered_groups:
        info = copy.copy(registered)
        if info.typer_instance is auth_app:
            info.typer_instance = group
        root.registered_groups.append(info)
    return root


def _show_warning(  # noqa: PLR0917 - the signature of warnings.showwarning
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a warning (a configuration notice) as one ``warning:`` line on stderr."""
    print(f"warning: {one_line(str(message))}", file=sys.stderr)


def run(args: Sequence[str]) -> int:
    """Run the application on ``args``; return the exit status (usage errors on one line).

    ``kstlib`` alone prints the help and exits 0 (unless the shell is asking for
    completions: they come in the environment, with no arguments).
    """
    application = app
    if _COMPLETE_VAR in os.environ:
        answer_completion()
    elif not args:
        args = ["--help"]
    else:
        application = _application(args)
    shown_before, warnings.showwarning = warnings.showwarning, _show_warning
    config_before = os.environ.get(CONFIG_ENV_VAR)
    try:
        argv = with_completion_shell(list(args))
        result = application(args=argv, prog_name="kstlib", standalone_mode=False)
    except typer.Abort:
        error_line("aborted")
        return EXIT_AUTH
    except typer.TyperException as exc:
        return _usage_error(exc)
    finally:
        warnings.showwarning = shown_before
        if config_before is None:
            os.environ.pop(CONFIG_ENV_VAR, None)
        else:
            os.environ[CONFIG_ENV_VAR] = config_before
        reset_logging()
    return result if isinstance(result, int) else EXIT_OK


def _usage_error(exc: typer.TyperException) -> int:
    """Report a usage error as one line (a bare command group shows its help instead)."""
    message = exc.format_message().strip()
    if "\n" in message:  # a bare command group: the message is its help
        typer.echo(message, err=True)
    elif message:  # (an empty one: Typer printed the help already)
        ctx = getattr(exc, "ctx", None)
        path = getattr(ctx, "command_path", None)
        error_line(f"{message} (see '{path} --help')" if path else message)
    return int(getattr(exc, "exit_code", EXIT_USAGE))
