"""``kstlib auth config``: the files the configuration came from, and which file set what.

Shows every file the search considered, in order (lowest priority first), whether it was
loaded, loaded as untrusted (it may only add providers), ignored (and why), or absent; then,
for each provider, every key as written with the file that set it. Secret values are masked;
secret references (``env://``, ``sops://``, ``file://``) are shown, since they name where a
secret lives, not the secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from kstlib.auth.redaction import is_sensitive_key, redact_mapping, redact_urls
from kstlib.cli._help import complete_provider
from kstlib.cli.auth import _handled
from kstlib.cli.output import (
    Column,
    OutputFormat,
    OutputOption,
    chosen_output,
    echo_json,
    echo_tsv,
    mask_secrets,
    print_table,
)

if TYPE_CHECKING:
    from kstlib.config import LoadedConfig

__all__ = ["config_report", "register"]


def _file_rows(loaded: LoadedConfig) -> list[dict[str, Any]]:
    from kstlib.config import CONFIG_ENV_VAR, config_search_path, packaged_defaults_path

    sources = {source.path: source for source in loaded.sources if source.path is not None}
    ignored = {layer.path: layer.reason for layer in loaded.ignored}
    explicit = [s.path for s in loaded.sources if s.path not in (None, packaged_defaults_path())]
    searched = config_search_path()
    candidates = searched
    if explicit and not any(path in searched for path in explicit):
        candidates = [packaged_defaults_path(), *explicit]  # $KSTLIB_CONFIG / --config
    rows: list[dict[str, Any]] = []
    for path in candidates:
        source = sources.get(path)
        if source is not None:
            status = "loaded" if source.trusted else "loaded, untrusted (may only add providers)"
            rows.append({"path": str(path), "status": status, "trusted": source.trusted})
        elif path in ignored:
            reason = ignored[path].split(": ignored: ", 1)[-1]
            rows.append({"path": str(path), "status": f"ignored: {reason}", "trusted": False})
        else:
            status = "not found" if not path.exists() else "same file as above (loaded once)"
            rows.append({"path": str(path), "status": status, "trusted": None})
    if candidates is not searched:
        rows[-1]["status"] += f" (named by --config or ${CONFIG_ENV_VAR})"
    return rows


def _shown(key: str, value: Any) -> Any:
    """A provider value as written, secrets masked (a secret reference is shown)."""
    from kstlib.secrets import is_secret_reference

    if isinstance(value, str):
        if is_secret_reference(value):
            return value
        if is_sensitive_key(key):
            return "***"
        return redact_urls(value)
    return mask_secrets(redact_mapping({key: value})[key])


def config_report(loaded: LoadedConfig, provider: str | None = None) -> dict[str, Any]:
    """The data ``kstlib auth config`` shows (also its ``--json`` output)."""
    from kstlib.auth.config import get_provider_config, list_configured_providers

    names = list_configured_providers(config=loaded)
    if provider is not None:
        from kstlib.auth.config import resolve_provider_name

        names = [resolve_provider_name(provider, config=loaded)]
    providers: dict[str, dict[str, Any]] = {}
    for name in names:
        settings = get_provider_config(name, config=loaded) or {}
        providers[name] = {
            key: {
                "value": _shown(str(key), value),
                "source": str(loaded.source_of("auth", "providers", name, key) or "-"),
            }
            for key, value in settings.items()
        }
    return {"files": _file_rows(loaded), "providers": providers}


def _print_files(rows: list[dict[str, Any]]) -> None:
    from rich.text import Text

    styles = {True: "green", False: "yellow", None: "dim"}
    cells = [[Text(row["path"]), Text(row["status"], style=styles[row["trusted"]])] for row in rows]
    title = "Configuration files (lowest priority first)"
    print_table((Column("File"), Column("Status")), cells, title=title)


def _print_provider(name: str, keys: dict[str, dict[str, Any]]) -> None:
    from rich.text import Text

    cells = []
    for key, entry in keys.items():
        value = entry["value"]
        text = value if isinstance(value, str) else repr(value)
        cells.append([Text(key), Text(text), Text(entry["source"])])
    columns = (Column("Key", no_wrap=True), Column("Value"), Column("Set by"))
    print_table(columns, cells, title=f"\nProvider {name}")


def _tsv_records(report: dict[str, Any]) -> list[list[Any]]:
    """``file PATH STATUS`` lines, then ``key PROVIDER KEY VALUE SOURCE`` lines."""
    records: list[list[Any]] = [["file", row["path"], row["status"]] for row in report["files"]]
    for name, keys in report["providers"].items():
        for key, entry in keys.items():
            records.append(["key", name, key, entry["value"], entry["source"]])
    return records


@_handled
def config(
    provider: Annotated[
        str | None,
        typer.Argument(
            help="Show only this provider.", show_default=False, autocompletion=complete_provider
        ),
    ] = None,
    *,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    output: OutputOption = None,
) -> None:
    """Show the configuration files loaded, in order, and which file set each provider key.

    --output tsv prints "file", path, status lines, then "key", provider, key,
    value, file lines (tab-separated).

    Example: kstlib auth config corporate
    """
    from kstlib.config import load_config

    fmt = chosen_output(output, as_json)
    report = config_report(load_config(), provider)
    if fmt is OutputFormat.JSON:
        echo_json(report)
        return
    if fmt is OutputFormat.TSV:
        echo_tsv(_tsv_records(report))
        return
    _print_files(report["files"])
    for name, keys in report["providers"].items():
        _print_provider(name, keys)


def register(auth_app: typer.Typer) -> None:
    """Add ``config`` to the ``kstlib auth`` Typer app."""
    auth_app.command("config")(config)
