"""What a general ``kstlib`` command loads and builds at start-up (structure, not timing).

Every command used to import Rich, the token checker's renderers and Typer's Click objects
of all eleven ``auth`` commands, whatever it did. Now Rich is imported by the functions that
render, and a run naming its command builds that command only; the output is the same
(compared below with the whole application).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from kstlib.cli import app as cli_app
from kstlib.cli.app import _application, _named_command, app, auth_app, reset_logging, run
from tests.cli_probe import run_main

#: Modules no general command needs to start; each entry below allows what it uses.
HEAVY = (
    "rich",
    "pygments",
    "markdown_it",
    "typer.rich_utils",
    "yaml",
    "httpx",
    "httpcore",
    "cryptography",
    "asyncio",
    "kstlib.auth.check",
    "kstlib.auth.callback",
    "kstlib.auth.providers.oauth2",
    "kstlib.auth._jose",
    "kstlib.auth._discovery",
    "kstlib.cli._device",
)
#: What Typer's help renderer imports (Rich, and Markdown through it).
HELP = frozenset({"rich", "pygments", "markdown_it", "typer.rich_utils"})
#: cryptography's X.509 layer.
X509 = frozenset({"cryptography.x509", "cryptography.x509.name", "cryptography.x509.base"})
#: What building a provider imports (its HTTP client and JOSE layer).
PROVIDER = frozenset(
    {"httpx", "httpcore", "cryptography", "kstlib.auth.providers.oauth2", "kstlib.auth._jose"}
    | {"kstlib.auth._discovery"}
)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two providers on unreachable issuers, file storage, nothing stored (no network used)."""
    path = tmp_path / "kstlib.conf.yml"
    providers = {
        "corp": {"issuer": "https://idp.invalid", "client_id": "cli"},
        "pub": {"issuer": "https://idp2.invalid", "client_id": "pub"},
    }
    auth = {
        "token_storage": "file",
        "storage": {"file": {"directory": str(tmp_path / "tokens")}},
        "default_provider": "corp",
        "providers": providers,
    }
    path.write_text(yaml.safe_dump({"auth": auth}), encoding="utf-8")
    monkeypatch.setenv("KSTLIB_CONFIG", str(path))
    monkeypatch.setenv("COLUMNS", "200")
    return path


def _loaded_by(args: list[str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``kstlib.cli.main(args)`` in a fresh interpreter; the HEAVY modules it loaded."""
    return run_main(args, HEAVY)


@pytest.mark.parametrize(
    ("args", "allowed", "printed"),
    [
        (["--version"], frozenset(), "kstlib-auth "),
        (["auth", "status", "--json"], frozenset({"yaml"}), '"provider": "corp"'),
        (["auth", "status", "corp", "-o", "tsv"], frozenset({"yaml"}), "corp\tfalse"),
        (["auth", "providers", "-o", "json"], frozenset({"yaml"}) | PROVIDER, '"name": "pub"'),
        (["auth", "--help"], HELP, "providers"),
        (["auth", "status", "--help"], HELP, "--output"),
        (["auth", "check", "--help"], HELP, "--expected-issuer"),
    ],
)
def test_a_command_loads_only_what_it_uses(
    config: Path, args: list[str], allowed: frozenset[str], printed: str
) -> None:
    proc, loaded = _loaded_by(args)
    assert printed in proc.stdout, proc.stderr
    assert loaded <= allowed, f"kstlib {' '.join(args)} loaded {sorted(loaded - allowed)}"


def test_building_providers_does_not_load_the_x509_layer(config: Path) -> None:
    """cryptography's X.509 layer (~40 ms of CPU at import: its OID tables) is loaded only to
    describe a key's ``x5c`` certificate, not by every process that loads the JOSE layer."""
    proc, loaded = run_main(["auth", "providers", "-o", "json"], {"kstlib.auth._jose", *X509})
    assert '"name": "pub"' in proc.stdout, proc.stderr
    assert loaded == {"kstlib.auth._jose"}, loaded


def test_a_named_command_is_found_past_the_global_options() -> None:
    assert _named_command(["auth", "status"]) == "status"
    assert _named_command(["-vv", "auth", "-v", "token", "corp"]) == "token"
    assert _named_command(["--config", "auth", "auth", "--verbose", "login"]) == "login"
    assert _named_command(["--config=x.yml", "auth", "git-credential", "corp", "get"]) == (
        "git-credential"
    )
    for args in (
        [],
        ["auth"],
        ["auth", "--help"],
        ["auth", "-v"],
        ["--version", "auth", "status"],
        ["--show-completion", "auth", "status"],
        ["auth", "statu"],
        ["auth", "--", "status"],
        ["--config"],
        ["status"],
    ):
        assert _named_command(args) is None, args


def test_a_run_naming_its_command_builds_that_command_only() -> None:
    everything = [info.name for info in auth_app.registered_commands]
    assert len(everything) > 1
    assert _application(["auth", "--help"]) is app
    for name in everything:
        assert name is not None
        one = _application(["-v", "auth", name, "--help"])
        assert one is not app
        groups = [info.typer_instance for info in one.registered_groups]
        assert len(groups) == 1
        assert groups[0] is not None
        assert [info.name for info in groups[0].registered_commands] == [name]
    assert [info.name for info in auth_app.registered_commands] == everything  # unchanged
    assert [info.typer_instance for info in app.registered_groups] == [auth_app]


def _outcome(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = run(args)
    finally:
        reset_logging()
    out, err = capsys.readouterr()
    return code, out, err


def _cases() -> list[list[str]]:
    cases = [["auth", str(info.name), "--help"] for info in auth_app.registered_commands]
    return [
        *cases,
        ["auth", "status", "--json"],
        ["auth", "status", "--output", "xml"],
        ["auth", "status", "corp", "pub"],
        ["-v", "auth", "providers", "-o", "tsv"],
        ["auth", "token", "nosuch"],
        ["auth", "check", "--nosuch"],
        ["auth", "git-credential", "corp", "store"],
    ]


@pytest.mark.parametrize("args", _cases(), ids=" ".join)
def test_the_one_command_application_prints_what_the_whole_one_does(
    config: Path,
    args: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one = _outcome(args, capsys)
    monkeypatch.setattr(cli_app, "_application", lambda _args: app)
    whole = _outcome(args, capsys)
    assert one == whole
    assert one[1] or one[2]
