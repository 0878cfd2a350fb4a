"""The configuration snapshot of the token fast path (:mod:`kstlib.cli._snapshot`).

Each test runs the real entry point in a fresh interpreter and tells a snapshot hit from a
full load by whether ``yaml`` was imported. The snapshot is written only when every source
file is older than the racy window: the configs are written ahead and aged together, so the
module waits that long once (per worker), not once per test.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kstlib.auth.models import Token
from kstlib.auth.token import FileTokenStorage
from kstlib.cli import _snapshot
from tests.cli_probe import run_main

FIRST = "snapshot-first-access-token"
SECOND = "snapshot-second-access-token"
GIT_REQUEST = "protocol=https\nhost=git.example.test\n\n"


def _token(access: str) -> Token:
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    return Token(
        access_token=access, expires_at=expires_at, issued_at=expires_at - timedelta(hours=1)
    )


def _write_config(path: Path, tokens: Path) -> None:
    providers = {"corp": {"issuer": "https://idp.invalid", "client_id": "cli"}}
    auth = {"storage": {"file": {"directory": str(tokens)}}, "providers": providers}
    path.write_text(yaml.safe_dump({"auth": {"default_provider": "corp", **auth}}))


def _wait_past_racy_window() -> None:
    time.sleep(_snapshot.RACY_WINDOW_NS / 1e9 + 0.2)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's snapshot in its own cache directory, whatever the environment says."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


class _AgedConfigs:
    """Configs (each with its token directory) written ahead and aged past the racy window
    together: the module waits for the window once instead of once per test."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._ready: list[Path] = []
        self._made = 0

    def _make(self, count: int) -> None:
        for _ in range(count):
            self._made += 1
            base = self._root / f"aged-{self._made}"
            config = base / "conf" / "kstlib.conf.yml"
            config.parent.mkdir(parents=True)
            _write_config(config, base / "tokens")
            FileTokenStorage(base / "tokens").save("corp", _token(FIRST))
            self._ready.append(config)
        _wait_past_racy_window()

    def take(self) -> Path:
        if not self._ready:
            self._make(16)  # more than the tests of this module: one wait per worker
        return self._ready.pop()


@pytest.fixture(scope="module")
def _aged_configs(tmp_path_factory: pytest.TempPathFactory) -> _AgedConfigs:
    return _AgedConfigs(tmp_path_factory.mktemp("snapshot-configs"))


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _aged_configs: _AgedConfigs) -> Path:
    """A config (named by KSTLIB_CONFIG) with a fresh token, older than the racy window."""
    config = _aged_configs.take()
    monkeypatch.setenv("KSTLIB_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    return config


def _run(*args: str, stdin: str | None = None) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run ``kstlib`` (its ``main``); return it and whether it parsed YAML (a full load)."""
    proc, loaded = run_main(list(args), ["yaml"], stdin=stdin)
    return proc, "yaml" in loaded


def _snapshot_file() -> Path:
    return Path(_snapshot.snapshot_path())


def test_recorded_private_then_used_without_parsing_yaml(setup: Path) -> None:
    first, parsed = _run("auth", "token")
    assert first.returncode == 0, first.stderr
    assert first.stdout == FIRST + "\n"
    assert parsed  # the first call loads the configuration
    path = _snapshot_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_uid == os.geteuid()
    document = json.loads(path.read_text())
    assert FIRST not in path.read_text()  # names, a path and a number: no token, no secret
    assert set(document["entries"]) == {"default"}

    for args, stdin, expected in (
        (("auth", "token"), None, FIRST + "\n"),
        (("auth", "token", "corp"), None, FIRST + "\n"),  # recorded on its first use
        (("auth", "token", "corp"), None, FIRST + "\n"),
        (("auth", "git-credential", "corp", "get"), GIT_REQUEST, None),
    ):
        proc, parsed = _run(*args, stdin=stdin)
        assert proc.returncode == 0, proc.stderr
        if expected is not None:
            assert proc.stdout == expected
        else:
            assert f"password={FIRST}\n" in proc.stdout
    assert not parsed
    assert set(json.loads(path.read_text())["entries"]) == {"default", "=corp"}


def test_a_changed_config_file_invalidates_it(setup: Path, tmp_path: Path) -> None:
    assert _run("auth", "token")[0].returncode == 0
    other = tmp_path / "other-tokens"
    FileTokenStorage(other).save("corp", _token(SECOND))
    _write_config(setup, other)  # same file, another token directory
    proc, parsed = _run("auth", "token")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == SECOND + "\n"
    assert parsed


def test_a_changed_environment_invalidates_it(
    setup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run("auth", "token")[0].returncode == 0
    assert not _run("auth", "token")[1]
    with monkeypatch.context() as patch:
        patch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "elsewhere"))
        proc, parsed = _run("auth", "token")
        assert proc.stdout == FIRST + "\n"
        assert parsed
    with monkeypatch.context() as patch:
        patch.delenv("KSTLIB_CONFIG")  # the search, which finds no provider here
        proc, parsed = _run("auth", "token")
        assert proc.returncode != 0
        assert FIRST not in proc.stdout
        assert parsed


def test_a_token_file_change_is_seen_on_a_hit(setup: Path) -> None:
    """The snapshot names the token file; the token itself is read and checked every time."""
    assert _run("auth", "token")[0].returncode == 0
    FileTokenStorage(setup.parent.parent / "tokens").save("corp", _token(SECOND))
    proc, parsed = _run("auth", "token")
    assert proc.stdout == SECOND + "\n"
    assert not parsed


@pytest.mark.parametrize("tamper", ["mode-0644", "symlink", "directory-0777", "garbage"])
def test_an_untrustworthy_snapshot_is_not_used(setup: Path, tmp_path: Path, tamper: str) -> None:
    assert _run("auth", "token")[0].returncode == 0
    path = _snapshot_file()
    if tamper == "mode-0644":
        path.chmod(0o644)
    elif tamper == "symlink":
        copy = tmp_path / "copy.json"
        copy.write_bytes(path.read_bytes())
        copy.chmod(0o600)
        path.unlink()
        path.symlink_to(copy)
    elif tamper == "directory-0777":
        path.parent.chmod(0o777)
    else:
        path.write_text("{not json")
    proc, parsed = _run("auth", "token")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == FIRST + "\n"  # the full loader answered
    assert parsed
    path.parent.chmod(0o700)


def test_a_snapshot_of_another_user_is_not_read(
    setup: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run("auth", "token")[0].returncode == 0
    path = str(_snapshot_file())
    assert _snapshot._read_snapshot(path) is not None
    monkeypatch.setattr(_snapshot, "_private_directory", lambda directory: True)
    monkeypatch.setattr(_snapshot.os, "geteuid", lambda: os.getuid() + 1)
    assert _snapshot._read_snapshot(path) is None


def test_a_tampered_entry_is_refused(setup: Path) -> None:
    assert _run("auth", "token")[0].returncode == 0
    path = _snapshot_file()
    assert _snapshot.lookup(None) is not None
    document = json.loads(path.read_text())
    for bad in (
        {"name": "corp", "token_path": "relative/corp.json", "skew": 60},
        {"name": "corp", "token_path": "/tmp/corp.json", "skew": True},
        {"name": "corp", "token_path": "/tmp/corp.json", "skew": 1e9},
        {"name": "", "token_path": "/tmp/corp.json", "skew": 60},
    ):
        document["entries"]["default"] = bad
        path.write_text(json.dumps(document))
        assert _snapshot.lookup(None) is None, bad


def test_not_written_for_a_fresh_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file changed within the racy window could change again unseen: no snapshot."""
    config = tmp_path / "kstlib.conf.yml"
    _write_config(config, tmp_path / "tokens")
    FileTokenStorage(tmp_path / "tokens").save("corp", _token(FIRST))
    monkeypatch.setenv("KSTLIB_CONFIG", str(config))
    proc, parsed = _run("auth", "token")
    assert proc.stdout == FIRST + "\n"
    assert parsed
    assert not _snapshot_file().exists()


def test_not_written_when_the_working_directory_has_a_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trust of ./kstlib.conf.yml depends on more than its metadata: never snapshotted."""
    user_config = Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib" / "kstlib.conf.yml"
    user_config.parent.mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    tokens = tmp_path / "tokens"
    _write_config(user_config, tokens)
    text = yaml.safe_load(user_config.read_text())
    text["trust"] = {"directories": [str(work)]}
    user_config.write_text(yaml.safe_dump(text))
    (work / "kstlib.conf.yml").write_text("auth:\n  default_provider: corp\n")
    FileTokenStorage(tokens).save("corp", _token(FIRST))
    monkeypatch.delenv("KSTLIB_CONFIG", raising=False)
    monkeypatch.chdir(work)
    _wait_past_racy_window()
    proc, parsed = _run("auth", "token")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == FIRST + "\n"
    assert not _snapshot_file().exists()
    (work / "kstlib.conf.yml").unlink()
    assert _run("auth", "token")[0].stdout == FIRST + "\n"
    assert _snapshot_file().exists()  # the same search without a file in the cwd: recorded


def test_a_decision_is_not_recorded_when_its_inputs_changed_during_the_load(
    setup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = [str(setup)]
    entry = _snapshot.SnapshotEntry("corp", str(tmp_path / "tokens" / "corp.json"), 60.0)
    before = _snapshot.current_key(sources)
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "changed-meanwhile"))
    assert not _snapshot.record(None, entry, sources, cwd_file=None, expected_key=before)
    assert not _snapshot_file().exists()
    unchanged = _snapshot.current_key(sources)
    assert _snapshot.record(None, entry, sources, cwd_file=None, expected_key=unchanged)
    assert _snapshot.lookup(None) == entry


#: What a snapshot hit must not load: each costs a sizeable part of Python's start-up
#: (typing, re and json each about half of it) or belongs to the full command line.
NOT_ON_A_HIT = (
    "typing",
    "re",
    "json",
    "dataclasses",
    "inspect",
    "enum",
    "pathlib",
    "collections",
    "base64",
    "shlex",
    "warnings",
    "yaml",
    "kstlib.auth.models",
    "kstlib._redaction",
    "typer",
    "rich",
    "click",
    "httpx",
    "cryptography",
)


def _jwt(claims: dict[str, object]) -> str:
    import base64

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


def _run_probe(
    *args: str, stdin: str | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``kstlib`` (its ``main``); return it and which of :data:`NOT_ON_A_HIT` it loaded."""
    proc, loaded = run_main(list(args), NOT_ON_A_HIT, stdin=stdin)
    return proc, [name for name in NOT_ON_A_HIT if name in loaded]


def test_a_hit_loads_none_of_the_costly_modules(setup: Path, tmp_path: Path) -> None:
    """token, --format kubectl (ID and access token) and git-credential get, from a hit."""
    now = int(time.time())
    id_token = _jwt({"sub": "alice", "iat": now, "exp": now + 3600})
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    token = Token(
        access_token=FIRST,
        expires_at=expires_at,
        issued_at=expires_at - timedelta(hours=1),
        id_token=id_token,
    )
    FileTokenStorage(setup.parent.parent / "tokens").save("corp", token)
    first, loaded = _run_probe("auth", "token")
    assert first.stdout == FIRST + "\n"
    assert "yaml" in loaded  # the first call loads the configuration and records it
    for args, stdin in (
        (("auth", "token"), None),
        (("auth", "token", "--format", "kubectl"), None),
        (("auth", "token", "--format", "kubectl", "--access-token"), None),
        (("auth", "token", "--header"), None),
        (("auth", "git-credential", "corp", "get"), GIT_REQUEST),
    ):
        if args[1] == "git-credential":  # its own entry ("=corp"), recorded on first use
            assert _run_probe(*args, stdin=stdin)[0].returncode == 0
        proc, loaded = _run_probe(*args, stdin=stdin)
        assert proc.returncode == 0, proc.stderr
        assert loaded == [], args
        if "kubectl" in args:
            status = json.loads(proc.stdout)["status"]
            assert status["token"] == (FIRST if "--access-token" in args else id_token)
        elif "--header" in args:
            assert proc.stdout == f"Authorization: Bearer {FIRST}\n"
        elif "get" in args:
            assert f"username=oauth2\npassword={FIRST}\n" in proc.stdout
        else:
            assert proc.stdout == FIRST + "\n"


@pytest.mark.parametrize("bound_by", ["token_type", "dpop_key"])
def test_a_dpop_bound_token_is_left_to_the_full_command(
    setup: Path, tmp_path: Path, bound_by: str
) -> None:
    """The fast path does not check a DPoP binding: the full command line answers."""
    assert _run("auth", "token")[0].returncode == 0
    assert not _run("auth", "token")[1]  # a hit
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    token = Token(
        access_token=SECOND,
        token_type="DPoP",
        expires_at=expires_at,
        issued_at=expires_at - timedelta(hours=1),
    )
    if bound_by == "dpop_key":
        from kstlib.auth._dpop import DPoPKey

        token.token_type = "Bearer"
        token.dpop_key = DPoPKey.generate()
    FileTokenStorage(setup.parent.parent / "tokens").save("corp", token)
    proc, parsed = _run("auth", "token")
    assert parsed  # the snapshot named the file, the fast path declined, the full CLI ran
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == SECOND + "\n"
