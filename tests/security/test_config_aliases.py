"""YAML aliases: bounded work for any configuration file.

Before the fix, 1.2 KB of nested aliases made ``kstlib auth status`` run past 20 s (merging
and secret resolution walk the configuration as a tree, expanding every shared node). Now the
expanded size is computed on the node graph, each node once, and a file whose aliases expand
past the budget is refused with a ConfigurationError naming it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kstlib.auth.config import build_provider_config
from kstlib.auth.errors import ConfigurationError
from kstlib.config import MAX_EXPANDED_NODES, load_config


def user_file(text: str) -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib" / "kstlib.conf.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def list_bomb(levels: int) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int) -> str:
    lines = ["m0: &m0 {p: [x, x, x, x]}"]
    lines += [
        f"m{i}: &m{i} {{q1: {{<<: *m{i - 1}}}, q2: {{<<: *m{i - 1}}}}}" for i in range(1, levels)
    ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text", [list_bomb(9), merge_bomb(40)], ids=["aliases", "merges"])
def test_alias_bombs_are_refused(text: str) -> None:
    path = user_file(text)
    with pytest.raises(ConfigurationError, match="aliases expand to more than") as err:
        load_config()
    assert err.value.file == str(path)


def test_alias_bomb_makes_the_cli_fail_fast_with_one_line() -> None:
    user_file(list_bomb(9))
    kstlib = str(Path(sys.executable).parent / "kstlib")
    result = subprocess.run(
        [kstlib, "auth", "status"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "aliases expand to more than" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ordinary_aliases_and_merge_keys_still_work() -> None:
    user_file(
        "x-base: &base\n"
        "  issuer: https://idp.example.com\n"
        "  scopes: [openid, email]\n"
        "auth:\n"
        "  providers:\n"
        "    corp:\n"
        "      <<: *base\n"
        "      client_id: corp-cli\n"
        "    corp-admin:\n"
        "      <<: *base\n"
        "      client_id: &admin corp-admin\n"
        "      extra: {authorize_params: {login_hint: *admin}}\n"
    )
    loaded = load_config()
    assert build_provider_config("corp", config=loaded).scopes == ["openid", "email"]
    admin = build_provider_config("corp-admin", config=loaded)
    assert admin.issuer == "https://idp.example.com"
    assert admin.extra["authorize_params"] == {"login_hint": "corp-admin"}


def test_a_large_file_without_aliases_is_not_limited_by_the_alias_budget() -> None:
    names = "\n".join(
        f"    p{i}: {{client_id: c{i}, issuer: https://i{i}.example}}" for i in range(2000)
    )
    user_file("auth:\n  providers:\n" + names + "\n")
    assert len(load_config()["auth"]["providers"]) == 2000
    assert MAX_EXPANDED_NODES > 2000 * 5
