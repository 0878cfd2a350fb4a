"""One message style for the real ``kstlib`` script: ``error: ...`` / ``warning: ...`` on stderr,
no Markdown backquotes in terminal text, and redaction that removes secrets but not words.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import kstlib

KSTLIB = str(Path(sys.executable).with_name("kstlib"))
SRC = Path(kstlib.__file__).parent


@pytest.fixture
def config(tmp_path: Path) -> Path:
    tokens = tmp_path / "tokens"
    tokens.mkdir(mode=0o700)
    (tokens / "broken.json").write_text("{not json")
    (tokens / "broken.json").chmod(0o600)
    providers = {
        "corp": {
            "issuer": "https://corp.idp.invalid",
            "client_id": "corp-cli",
            "client_secret": "env://CORP_SECRET",
        },
        "broken": {"issuer": "https://broken.idp.invalid", "client_id": "broken-cli"},
        "plain": {"issuer": "https://plain.idp.invalid", "client_id": "plain-cli"},
    }
    path = tmp_path / "kstlib.conf.yml"
    auth = {"storage": {"file": {"directory": str(tokens)}}, "providers": providers}
    path.write_text(yaml.safe_dump({"auth": auth}))
    return path


def run(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CORP_SECRET"}
    return subprocess.run(
        [KSTLIB, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "KSTLIB_CONFIG": str(config)},
        check=False,
    )


def test_an_unset_env_reference_reads_as_a_sentence(config: Path) -> None:
    result = run(config, "auth", "token", "corp")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    assert "[REDACTED]" not in line
    assert (
        "client_secret: cannot resolve secret reference 'env://CORP_SECRET': "
        "environment variable CORP_SECRET is not set" in line
    )


FAILING = [
    ("auth", "token", "corp"),  # configuration error
    ("auth", "token", "plain"),  # not logged in
    ("auth", "token", "broken"),  # unusable token file
    ("auth", "status"),  # a warning under the table
    ("auth", "providers"),  # an invalid provider
    ("auth", "token", "nope"),  # unknown provider
    ("auth", "status", "--bogus"),  # usage error
    ("auth", "check"),  # nothing to check
    ("auth", "logout", "broken", "--no-revoke"),  # unreadable token, removed anyway
]


@pytest.mark.parametrize("args", FAILING, ids=" ".join)
def test_every_message_line_is_error_or_warning(config: Path, args: tuple[str, ...]) -> None:
    result = run(config, *args)
    messages = [line for line in result.stderr.splitlines() if line.strip()]
    assert messages, result
    for line in messages:
        if args[1] == "logout" and not line.startswith(("error: ", "warning: ")):
            continue  # logout also reports what it did, in sentences
        assert line.startswith(("error: ", "warning: ")), line
    assert "`" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_not_logged_in_names_the_command_without_backquotes(config: Path) -> None:
    result = run(config, "auth", "token", "plain")
    assert result.returncode == 1
    assert "run 'kstlib auth login plain'" in result.stderr


def _docstring_nodes(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.add(id(value))
    return found


def test_no_message_string_in_the_package_has_markdown_backquotes() -> None:
    """Error messages, notices, help: text for a terminal (docstrings are for Sphinx)."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "`" in node.value
                and id(node) not in docstrings
                and not node.value.startswith("^")  # a regular expression, not a message
            ):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value[:60]!r}")
    assert offenders == []
