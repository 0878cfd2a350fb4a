"""The benchmark harness (bench/): its method helpers, its loopback server, and its smoke mode."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from bench.common import (
    Comparison,
    CountTable,
    Goal,
    Series,
    alternate,
    format_table,
    loopback_server,
)

ROOT = Path(__file__).resolve().parents[2]


def test_ratios_are_computed_round_by_round() -> None:
    comp = Comparison(
        title="t",
        unit="ms",
        baseline="a",
        series={"a": Series("a", [1.0, 10.0, 2.0]), "b": Series("b", [2.0, 10.0, 3.0])},
    )
    median, low, high = comp.ratio("b")
    assert (median, low, high) == (1.5, 1.0, 2.0)  # not median(b) / median(a) = 1.5 by chance
    assert comp.pair_ratio("a", "b")[1] == pytest.approx(0.5)


def test_alternate_warms_up_then_alternates_the_order() -> None:
    calls: list[str] = []

    def contender(name: str) -> float:
        calls.append(name)
        return 1.0

    series = alternate({"a": lambda: contender("a"), "b": lambda: contender("b")}, rounds=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert [len(s.samples) for s in series.values()] == [3, 3]


def test_table_prints_goals_skips_and_counts() -> None:
    comp = Comparison(
        title="import",
        unit="ms",
        baseline="httpx",
        series={"httpx": Series("httpx", [1.0, 1.0]), "mine": Series("mine", [1.2, 1.4])},
        goals=[Goal("mine <= 1.5x httpx", True, "issue 2")],
        skipped={"peer": "skipped in smoke"},
    )
    counts = CountTable(
        title="storm",
        columns=["mine", "peer"],
        rows={"16 threads": {"mine": "1", "peer": None}},
        goals=[Goal("exactly one", False)],
    )
    text = format_table([comp, counts])
    assert "mine <= 1.5x httpx -> MET" in text
    assert "exactly one -> NOT MET" in text
    assert "not measured: skipped in smoke" in text
    assert "1.30x (1.20-1.40)" in text


def _get(sock: socket.socket, headers: str) -> bytes:
    sock.sendall(f"GET /x HTTP/1.1\r\nHost: l\r\n{headers}\r\n".encode())
    return sock.recv(4096)


def test_loopback_server_keeps_alive_and_checks_the_header() -> None:
    with loopback_server() as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert _get(sock, "Authorization: Bearer t\r\n").startswith(b"HTTP/1.1 200")
            assert _get(sock, "").startswith(b"HTTP/1.1 401")  # same connection: kept alive


@pytest.mark.slow
def test_smoke_mode_runs_quickly_and_writes_nothing() -> None:
    outputs = [ROOT / "docs" / "performance.md", ROOT / "bench" / "results.json"]
    before = {p: p.stat().st_mtime_ns if p.exists() else None for p in outputs}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped in smoke" in proc.stdout
    assert "mode: smoke" in proc.stdout
    after = {p: p.stat().st_mtime_ns if p.exists() else None for p in outputs}
    assert after == before
