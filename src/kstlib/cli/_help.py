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

__all__ = ["EXAMPLES", "add_examples", "hide_flag_types"]

#: Examples shown under each command's help, keyed by the command's name.
EXAMPLES: Final[dict[str, tuple[str, ...]]] = {
    "login": ("kstlib auth login corp", "kstlib auth login corp --no-browser"),
    "logout": ("kstlib auth logout corp",),
    "status": ("kstlib auth status", "kstlib auth status --output tsv | cut -f1,2"),
    "token": ('curl -H "$(kstlib auth token corp --header)" https://api.example.com/',),
    "whoami": ("kstlib auth whoami corp", "kstlib auth whoami corp --output json"),
    "providers": ("kstlib auth providers", "kstlib auth providers --output json"),
    "preflight": ("kstlib auth preflight corp",),
    "check": ("kstlib auth check corp", "kstlib auth token corp | kstlib auth check -t -"),
    "config": ("kstlib auth config corp",),
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
