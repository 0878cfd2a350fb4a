"""The front door of the real ``kstlib`` console script: help, version, shell completion.

Every command found in the application (so a command added later is covered too) has a
``--help`` with an example and without type noise on flags (``<bool>``) or raw
reStructuredText (double backquotes, ``:class:`` roles).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
import yaml

import kstlib
from kstlib.cli import main
from kstlib.cli.app import app

KSTLIB = str(Path(sys.executable).with_name("kstlib"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KSTLIB, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "100", **(env or {})},
        check=False,
    )


def command_paths() -> list[tuple[str, ...]]:
    """Every group and command of the application, as argument tuples."""
    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


def test_the_application_has_commands() -> None:
    paths = command_paths()
    for expected in ("status", "token", "providers", "config", "check"):
        assert ("auth", expected) in paths


def run_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[object, str, str]:
    """``kstlib.cli.main(args)`` in this process: the console script's code, without the
    process start-up (the output logic is the same; the tests of the real script below
    compare the two)."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    return exited.value.code, out, err


def _assert_help_without_noise(text: str) -> None:
    assert "Usage: kstlib" in text
    assert re.search(r"^\s*Example: kstlib |^\s*Example: .*\bkstlib ", text, re.MULTILINE), text
    assert "<bool>" not in text
    assert "``" not in text
    assert ":class:" not in text and ":func:" not in text and ":meth:" not in text
    assert "[default: 0]" not in text  # -v counts; its default says nothing


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "kstlib")
def test_every_help_has_an_example_and_no_noise(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_in_process(capsys, monkeypatch, *path, "--help")
    assert code == 0, err
    _assert_help_without_noise(out)


@pytest.mark.parametrize("path", [("auth",), ("auth", "token")], ids=" ".join)
def test_the_real_script_prints_the_same_help(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console script in a pipe prints, byte for byte, what the in-process call prints
    (``auth token`` has the fast path in front of the application)."""
    result = run(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    _assert_help_without_noise(result.stdout)
    assert (0, result.stdout, "") == run_in_process(capsys, monkeypatch, *path, "--help")


def test_kstlib_alone_prints_the_help_and_exits_0() -> None:
    result = run()
    assert result.returncode == 0
    assert "Usage: kstlib" in result.stdout
    assert "auth" in result.stdout
    assert result.stderr == ""


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout == f"kstlib-auth {kstlib.__version__}\n"


def test_show_completion_prints_a_bash_script_for_kstlib() -> None:
    result = run("--show-completion", "bash")
    assert result.returncode == 0, result.stderr
    assert "kstlib" in result.stdout
    assert "_KSTLIB_COMPLETE" in result.stdout
    assert "complete " in result.stdout  # the bash builtin that registers it


def test_show_completion_honours_the_shell_named() -> None:
    """From a bash, ``--show-completion zsh`` is the zsh script (Typer's flag ignored the name)."""
    result = subprocess.run(
        ["bash", "-c", f"'{KSTLIB}' --show-completion zsh"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#compdef kstlib")


def test_show_completion_alone_detects_the_running_shell() -> None:
    result = subprocess.run(
        ["bash", "-c", f"'{KSTLIB}' --show-completion"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "_kstlib_completion()" in result.stdout and "complete " in result.stdout


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = run("--show-completion", "nosh")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "unknown shell 'nosh'" in result.stderr


def test_the_completion_protocol_completes_commands() -> None:
    """What the installed script does on <Tab>: the shell's words in the environment, no args."""
    env = {"_KSTLIB_COMPLETE": "complete_bash", "COMP_WORDS": "kstlib auth st", "COMP_CWORD": "2"}
    result = run(env=env)
    assert result.returncode == 0, result.stderr
    assert "status" in result.stdout.split()
    assert "Usage" not in result.stdout  # not the help: the completions


def test_install_completion_writes_the_script_under_home(tmp_path: Path) -> None:
    result = run("--install-completion", "bash", env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "bash completion installed" in result.stdout
    installed = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "_KSTLIB_COMPLETE" in installed
    assert ".bashrc" in {p.name for p in tmp_path.iterdir()}


def test_the_completion_protocol_completes_provider_names(tmp_path: Path) -> None:
    config = tmp_path / "kstlib.conf.yml"
    providers = {
        name: {"issuer": f"https://{name}.idp.invalid", "client_id": f"{name}-cli"}
        for name in ("corporate", "contoso", "partner")
    }
    config.write_text(yaml.safe_dump({"auth": {"providers": providers}}))
    env = {"KSTLIB_CONFIG": str(config), "_KSTLIB_COMPLETE": "complete_bash", "COMP_CWORD": "3"}
    for words, expected in (
        ("kstlib auth token co", {"corporate", "contoso"}),
        ("kstlib auth status ", {"corporate", "contoso", "partner"}),
        ("kstlib auth config pa", {"partner"}),
    ):
        result = run(env={**env, "COMP_WORDS": words})
        assert result.returncode == 0, result.stderr
        assert set(result.stdout.split()) == expected, words
        assert result.stderr == ""


def test_completion_with_a_broken_configuration_is_silent(tmp_path: Path) -> None:
    config = tmp_path / "kstlib.conf.yml"
    config.write_text("auth: [not, a, mapping")
    env = {
        "KSTLIB_CONFIG": str(config),
        "_KSTLIB_COMPLETE": "complete_bash",
        "COMP_WORDS": "kstlib auth token ",
        "COMP_CWORD": "3",
    }
    result = run(env=env)
    assert result.returncode == 0
    assert result.stdout.strip() == "" and result.stderr == ""
