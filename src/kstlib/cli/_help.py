"""What ``--help`` shows: an example under every command, and no type noise on flags.

The examples live here, one place for every command, and are attached as the
commands' epilogs when the application is assembled (a command whose help
already shows an example keeps its own). A flag takes no value, so its help
row shows no ``<bool>`` placeholder; a counted option (``-v``) no ``<int>``.
"""

from __future__ import annotations

from typing import Any, Final

import typer
import typer.core

__all__ = [
    "EXAMPLES",
    "add_examples",
    "answer_completion",
    "complete_provider",
    "completion_option",
    "hide_flag_types",
    "with_completion_shell",
]

#: Examples shown under each command's help, keyed by the command's name.
EXAMPLES: Final[dict[str, tuple[str, ...]]] = {
    "login": (
        "kstlib auth login corp",
        "kstlib auth login corp --no-browser",
        "kstlib auth login corp --device",
    ),
    "logout": ("kstlib auth logout corp",),
    "status": ("kstlib auth status", "kstlib auth status --output tsv | cut -f1,2"),
    "token": (
        'curl -H "$(kstlib auth token corp --header)" https://api.example.com/',
        "kstlib auth token corp --format kubectl",
    ),
    "git-credential": (
        "git config --global credential.https://git.example.com.helper "
        "'!kstlib auth git-credential corp'",
        "printf 'protocol=https\\nhost=git.example.com\\n' | kstlib auth git-credential corp get",
    ),
    "whoami": ("kstlib auth whoami corp", "kstlib auth whoami corp --output json"),
    "providers": ("kstlib auth providers", "kstlib auth providers --output json"),
    "preflight": ("kstlib auth preflight corp",),
    "check": ("kstlib auth check corp", "kstlib auth token corp | kstlib auth check -t -"),
    "config": ("kstlib auth config corp",),
    "introspect": ("kstlib auth introspect corp", "kstlib auth introspect corp --output json"),
}

ROOT_EXAMPLES: Final = ("kstlib auth login corp", "kstlib -v auth status")
AUTH_EXAMPLES: Final = ("kstlib auth status", "kstlib auth token corp --header")


def epilog(examples: tuple[str, ...]) -> str:
    """The epilog text for ``examples``: one ``Example:`` line each."""
    return "\n".join(f"Example: {line}" for line in examples)


def add_examples(group: typer.Typer) -> None:
    """Give each command of ``group`` its example (commands showing one already keep theirs)."""
    for info in group.registered_commands:
        name = str(info.name or getattr(info.callback, "__name__", ""))
        examples = EXAMPLES.get(name)
        own = (info.help or "") + (getattr(info.callback, "__doc__", None) or "")
        if examples and info.epilog is None and "Example" not in own:
            info.epilog = epilog(examples)


def hide_flag_types() -> None:
    """Show no ``<bool>`` / ``<int>`` type for flags and counters in the help (Typer >= 0.20).

    Typer prints the value type of every option in its help table, also for
    options that take no value; this wraps its one method that names the type.
    """
    core: Any = getattr(typer, "core", None)
    option = getattr(core, "TyperOption", None)
    original = getattr(option, "display_type_rich", None)
    if option is None or original is None or getattr(original, "_kstlib", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        result: str | None = original(self, ctx)
        return result

    display_type_rich._kstlib = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


def complete_provider(incomplete: str) -> list[str]:
    """Shell completion of a provider argument: the configured names starting with it.

    Runs inside the user's shell on <Tab>: it prints nothing but the names, never a
    warning or an error (a broken configuration completes nothing).
    """
    import warnings

    try:
        from kstlib.auth.config import list_configured_providers
        from kstlib.config import load_config

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            names = list_configured_providers(config=load_config())
    except Exception:  # completion must stay silent
        return []
    return [name for name in names if name.startswith(incomplete)]


#: The value of a completion option given without a shell name: detect the shell.
_DETECT: Final = "detect"
#: The shells Typer writes completion scripts for.
SHELLS: Final = ("bash", "zsh", "fish", "powershell", "pwsh")


def _completion_callback(install: bool) -> Any:
    """The eager callback of ``--install-completion`` / ``--show-completion`` [SHELL].

    A shell name given is used as is; without one (the option alone), the shell running
    ``kstlib`` is detected (Typer's own detection). Either way Typer writes the script.
    """

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> None:
        if value is None or ctx.resilient_parsing:
            return
        if value != _DETECT and value not in SHELLS:
            raise typer.BadParameter(
                f"unknown shell {value!r}; choose one of {', '.join(SHELLS)}",
                param_hint=f"'{param.opts[0]}'",
            )
        from typer import completion

        chosen: str | bool = True if value == _DETECT else value  # True: Typer detects it
        if install:
            completion.install_callback(ctx, param, chosen)
        else:
            completion.show_callback(ctx, param, chosen)

    return callback


def completion_option(install: bool) -> Any:
    """``--install-completion [SHELL]`` or ``--show-completion [SHELL]`` (the shell optional).

    Typer's own options take no shell name when it can detect the shell (a name after
    them is ignored, so ``--show-completion bash`` in zsh printed the zsh script).
    """
    action = "Install" if install else "Print"
    what = "completion for SHELL" if install else "the completion script for SHELL"
    return typer.Option(
        "--install-completion" if install else "--show-completion",
        metavar="[SHELL]",
        is_eager=True,
        expose_value=False,
        callback=_completion_callback(install),
        show_default=False,
        help=f"{action} {what} ({', '.join(SHELLS[:4])}; default: the current shell) and exit.",
    )


def with_completion_shell(args: list[str]) -> list[str]:
    """``args`` where a completion option given without a shell name gets the detect marker.

    The option parser has no optional values, so ``kstlib --show-completion`` alone is
    completed here to ``--show-completion detect``.
    """
    for index, arg in enumerate(args):
        if arg in ("--install-completion", "--show-completion"):
            following = args[index + 1] if index + 1 < len(args) else None
            if following is None or following.startswith("-"):
                return [*args[: index + 1], _DETECT, *args[index + 1 :]]
            return args
    return args


def answer_completion() -> None:
    """Register Typer's shell completion classes: the shell is asking for completions.

    (Typer does it when it adds its own completion options, which this application
    replaces with :func:`completion_option`.)
    """
    from typer._completion_classes import completion_init  # (no public name for it)

    completion_init()
