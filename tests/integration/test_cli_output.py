"""Output a person and a pipe can read: the real ``kstlib`` script in a pseudo-terminal and a pipe.

In a pipe, a table has its natural width (no wrap at 80 columns) and no line ends in spaces;
in a terminal of 60 columns the tables fit, wrap whole words and leave out the columns of
least value; at 200 columns they show everything. ``--output table|json|tsv`` on every
listing command; an error is never inside a table cell: the cell says "unreadable (see
below)" and the error is a ``warning:`` (or ``error:``) line on stderr.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from kstlib.auth.models import Token
from kstlib.auth.token import FileTokenStorage
from tests.idp_support import IdP
from tests.integration.test_cli_verbosity import Setup

KSTLIB = str(Path(sys.executable).with_name("kstlib"))
LONG_ISSUER = "https://login.microsoftonline.com/0b2c3d4e-1111-2222-3333-444455556666/v2.0"
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
BOX = "│┃┏┓┗┛┡┩└┘├┤┬┴┼━─╇┳┻╋"


@dataclass
class Output:
    code: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def words(self) -> list[str]:
        return self.stdout.translate({ord(ch): " " for ch in BOX}).split()


def fake_id_token(claims: dict[str, object]) -> str:
    """An ID token shaped like a JWS; ``status`` only decodes it (it was verified when stored)."""

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    tokens = tmp_path / "tokens"
    path = tmp_path / "kstlib.conf.yml"
    providers = {
        "corporate": {"issuer": LONG_ISSUER, "client_id": "corporate-cli"},
        "broken": {"issuer": "https://broken.idp.invalid", "client_id": "broken-cli"},
        "partner": {
            "issuer": "https://partner.idp.invalid",
            "client_id": "partner-cli",
            "client_secret": "env://KSTLIB_TEST_UNSET_PARTNER_SECRET",
        },
    }
    auth = {"storage": {"file": {"directory": str(tokens)}}, "providers": providers}
    path.write_text(yaml.safe_dump({"auth": auth}))
    token = Token(
        access_token="output-test-access-token",
        refresh_token="output-test-refresh-token",
        id_token=fake_id_token({"sub": "alice.example@corporate.example.com"}),
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        scope=["openid", "profile", "email", "offline_access", "api://corporate-backend/read"],
    )
    FileTokenStorage(tokens).save("corporate", token)
    (tokens / "broken.json").write_text("{not json" + " garbage" * 200)
    (tokens / "broken.json").chmod(0o600)
    return path


def environment(config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env.pop("KSTLIB_TEST_UNSET_PARTNER_SECRET", None)
    return {**env, "KSTLIB_CONFIG": str(config), "TERM": "xterm-256color", **extra}


def in_pipe(config: Path, *args: str) -> Output:
    result = subprocess.run(
        [KSTLIB, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(config),
        check=False,
    )
    return Output(result.returncode, result.stdout, result.stderr)


def in_terminal(config: Path, columns: int, *args: str) -> Output:
    """Run with stdout on a real pseudo-terminal of ``columns`` columns (stderr on a pipe)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        [KSTLIB, *args],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=environment(config, COLUMNS=str(columns)),
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as exc:  # EIO: the other end is closed
            assert exc.errno == errno.EIO
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert process.stderr is not None
    with process.stderr:
        stderr = process.stderr.read().decode()
    code = process.wait(timeout=60)
    text = ANSI_RE.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")
    return Output(code, text, stderr)


def assert_no_trailing_spaces(text: str) -> None:
    for line in text.splitlines():
        assert line == line.rstrip(), repr(line)


# --------------------------------------------------------------------------- a pipe


def test_status_in_a_pipe_is_not_wrapped_and_has_no_error_in_a_cell(config: Path) -> None:
    out = in_pipe(config, "auth", "status")
    assert out.code == 1  # the unreadable token file
    assert_no_trailing_spaces(out.stdout)
    assert "\x1b[" not in out.stdout
    assert max(len(line) for line in out.lines) > 80  # one row a line, as wide as it needs
    row = next(line for line in out.lines if "corporate" in line)
    assert "alice.example@corporate.example.com" in row
    assert "api://corporate-backend/read" in row
    broken = next(line for line in out.lines if "broken" in line)
    assert "unreadable (see below)" in broken
    assert "garbage" not in out.stdout and "unusable" not in out.stdout
    assert len([line for line in out.lines if "broken" in line]) == 1
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: broken: ")]
    assert len(warnings) == 1 and "unusable" in warnings[0]


def test_providers_in_a_pipe_keep_long_values_whole(config: Path) -> None:
    out = in_pipe(config, "auth", "providers")
    assert out.code == 2  # partner's secret reference cannot be resolved
    assert_no_trailing_spaces(out.stdout)
    assert any(LONG_ISSUER in line for line in out.lines)
    assert "invalid (see below)" in out.stdout
    assert "KSTLIB_TEST_UNSET_PARTNER_SECRET" not in out.stdout
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: provider partner is invalid: ")
    assert "variable KSTLIB_TEST_UNSET_PARTNER_SECRET is not set" in line


def test_a_long_message_is_one_line_in_a_pipe(config: Path) -> None:
    out = in_pipe(config, "auth", "token", "partner")
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: ") and len(line) > 80


# --------------------------------------------------------------------------- a terminal


@pytest.mark.parametrize(
    "command", [("auth", "status"), ("auth", "providers"), ("auth", "config", "corporate")]
)
def test_at_60_columns_tables_fit(config: Path, command: tuple[str, ...]) -> None:
    out = in_terminal(config, 60, *command)
    assert out.stdout.strip()
    assert_no_trailing_spaces(out.stdout)
    for line in out.lines:
        assert len(line) <= 60, line


def test_at_60_columns_status_drops_low_value_columns_and_wraps_whole_words(
    config: Path,
) -> None:
    out = in_terminal(config, 60, "auth", "status")
    header = next(line for line in out.lines if "Provider" in line)
    assert "Access token" in header  # a header is never wrapped
    assert "Storage" not in out.stdout and "Scopes" not in out.stdout
    words = out.words()
    for word in ("corporate", "broken", "partner", "unreadable", "(see", "below)", "valid,"):
        assert word in words, (word, out.stdout)
    assert "expires" in words and "logged" in words


def test_at_200_columns_status_shows_every_column(config: Path) -> None:
    out = in_terminal(config, 200, "auth", "status")
    header = next(line for line in out.lines if "Provider" in line)
    for column in ("Subject", "Scopes", "Access token", "Refresh token", "Storage"):
        assert column in header
    words = out.words()
    for word in ("alice.example@corporate.example.com", "api://corporate-backend/read"):
        assert word in words
    assert f"file:{config.parent / 'tokens'}" in words
    assert all(len(line) <= 200 for line in out.lines)
    assert_no_trailing_spaces(out.stdout)


def test_at_60_columns_providers_keeps_the_issuer(config: Path) -> None:
    out = in_terminal(config, 60, "auth", "providers")
    assert "Issuer" in out.stdout and "Storage" not in out.stdout
    assert "https://broken.idp.invalid" in out.words()


# --------------------------------------------------------------------------- --output


def test_status_output_json_and_tsv(config: Path) -> None:
    as_json = json.loads(in_pipe(config, "auth", "status", "--output", "json").stdout)
    names = [entry["provider"] for entry in as_json]
    assert sorted(names) == ["broken", "corporate", "partner"]
    tsv = in_pipe(config, "auth", "status", "-o", "tsv")
    records = [line.split("\t") for line in tsv.stdout.splitlines()]
    assert [record[0] for record in records] == names
    fields = list(as_json[0])
    by_name = {record[0]: dict(zip(fields, record, strict=True)) for record in records}
    corporate, corporate_json = by_name["corporate"], as_json[names.index("corporate")]
    assert corporate["authenticated"] == "true"
    assert corporate["subject"] == "alice.example@corporate.example.com"
    assert corporate["scopes"].split() == corporate_json["scopes"]
    assert corporate["expires_at"] == corporate_json["expires_at"]
    broken = by_name["broken"]
    assert "unusable" in broken["error"] and "\n" not in broken["error"]
    assert "output-test-access-token" not in tsv.stdout + tsv.stderr


def test_providers_output_json_and_tsv(config: Path) -> None:
    as_json = json.loads(in_pipe(config, "auth", "providers", "-o", "json").stdout)
    by_name = {row["name"]: row for row in as_json}
    assert by_name["corporate"]["issuer"] == LONG_ISSUER
    assert "is not set" in by_name["partner"]["error"]
    records = in_pipe(config, "auth", "providers", "-o", "tsv").stdout.splitlines()
    corporate = next(r.split("\t") for r in records if r.startswith("corporate\t"))
    assert corporate[:4] == ["corporate", "false", "oidc", LONG_ISSUER]


def test_config_output_tsv(config: Path) -> None:
    records = [line.split("\t") for line in in_pipe(config, "auth", "config", "-o", "tsv").lines]
    assert any(r[:2] == ["file", str(config)] and r[2].startswith("loaded") for r in records)
    assert ["key", "corporate", "issuer", LONG_ISSUER, str(config)] in records


def test_json_and_another_output_conflict(config: Path) -> None:
    out = in_pipe(config, "auth", "status", "--json", "--output", "tsv")
    assert out.code == 2
    assert out.stderr.startswith("error: ") and "choose one output format" in out.stderr


def test_a_closed_pipe_ends_quietly(config: Path) -> None:
    process = subprocess.Popen(
        [KSTLIB, "auth", "config", "corporate"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(config),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()  # the reader goes away (as `| head -1` does)
    with process.stderr:
        stderr = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


# --------------------------------------------------------------------------- with the real IdP


@pytest.fixture
def logged_in(tmp_path: Path, idp: IdP) -> Setup:
    return Setup(tmp_path, idp)


def test_whoami_output_tsv_and_json(logged_in: Setup) -> None:
    as_json = json.loads(logged_in.run("auth", "whoami", "corp", "-o", "json").stdout)
    assert as_json["sub"]
    tsv = logged_in.run("auth", "whoami", "corp", "--output", "tsv")
    assert tsv.returncode == 0, tsv.stderr
    claims = dict(line.split("\t", 1) for line in tsv.stdout.splitlines())
    assert claims["sub"] == as_json["sub"]
    assert set(claims) == set(as_json)
    table = logged_in.run("auth", "whoami", "corp")
    assert_no_trailing_spaces(table.stdout)
    assert as_json["sub"] in table.stdout


def test_preflight_output_tsv_and_a_60_column_terminal(logged_in: Setup) -> None:
    tsv = logged_in.run("auth", "preflight", "corp", "-o", "tsv")
    assert tsv.returncode == 0, tsv.stderr
    records = [line.split("\t") for line in tsv.stdout.splitlines()]
    assert [r[0] for r in records][:3] == ["config", "discovery", "jwks"]
    assert all(len(r) == 4 and r[1] in ("success", "warning", "skipped") for r in records)
    assert all(r[3].isdigit() for r in records)
    narrow = in_terminal(logged_in.config, 60, "auth", "preflight", "corp")
    assert narrow.code == 0
    assert "Duration" not in narrow.stdout  # the column of least value
    assert all(len(line) <= 60 for line in narrow.lines)
    assert_no_trailing_spaces(narrow.stdout)
    wide = in_terminal(logged_in.config, 200, "auth", "preflight", "corp")
    assert "Duration" in wide.stdout
