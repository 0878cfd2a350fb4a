"""The performance page (docs/performance.md) and its charts, rebuilt from bench/results.json.

``python -m bench --report-only`` measures nothing: it reads the last full run's results and
writes one chart per section (docs/_static/perf/), the overview sheet and the page. Here it
runs on the committed results into a temporary directory: the committed page must be exactly
what it writes (the page was regenerated after the report changed), the charts fit the docs'
content column, every peer has its own colour, and the goals are explained in words, never
by an issue number.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from bench import __main__ as bench_main
from bench import report
from bench.common import GOAL_PURPOSES, goal_purpose

from tests.once import once_per_run

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results.json"


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def _write_report(out: Path) -> dict[str, Any]:
    """``python -m bench --report-only`` on the committed results, writing under ``out``."""
    paths = {
        "doc": out / "docs" / "performance.md",
        "charts": out / "docs" / "_static" / "perf",
        "overview": out / "bench" / "results.png",
    }
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(report, "JSON_PATH", RESULTS)
        patch.setattr(report, "DOC_PATH", paths["doc"])
        patch.setattr(report, "CHART_DIR", paths["charts"])
        patch.setattr(report, "PNG_PATH", paths["overview"])
        patch.setattr(bench_main, "BENCHES", {})  # nothing may be measured
        assert bench_main.main(["--report-only"]) == 0
    written = {Path(line.removeprefix("wrote ")) for line in printed.getvalue().splitlines()}
    assert written >= {paths["doc"], paths["overview"], *paths["charts"].glob("*.png")}
    return {name: str(path.relative_to(out)) for name, path in paths.items()}


@pytest.fixture(scope="session")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The report written once per run (drawing the charts is most of this file's time: the
    tests, on whichever xdist workers, share one run: tests/once.py)."""
    out, paths = once_per_run(tmp_path_factory, "bench-report", _write_report)
    return {name: out / relative for name, relative in paths.items()}


def _sections() -> list[str]:
    document = json.loads(RESULTS.read_text(encoding="utf-8"))
    return list(dict.fromkeys(r["section"] for r in document["results"]))


def test_the_committed_page_is_what_the_report_writes(rebuilt: dict[str, Path]) -> None:
    committed = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert rebuilt["doc"].read_text(encoding="utf-8") == committed, (
        "docs/performance.md is stale: run `python -m bench --report-only`"
    )
    committed_charts = sorted(p.name for p in (ROOT / "docs" / "_static" / "perf").glob("*.png"))
    assert committed_charts == sorted(p.name for p in rebuilt["charts"].glob("*.png"))


def test_one_chart_per_section_sized_for_the_content_column(rebuilt: dict[str, Path]) -> None:
    page = rebuilt["doc"].read_text(encoding="utf-8")
    sections = _sections()
    charts = sorted(rebuilt["charts"].glob("*.png"))
    assert len(charts) == len(sections) >= 7
    for section in sections:
        chart = rebuilt["charts"] / f"{report.section_slug(section)}.png"
        width, height = _png_size(chart)
        # 900 px drawn at the ~700 px column: scaled by less than 0.8, the 13 pt text stays
        # readable; not taller than a few screens
        assert width == report.CHART_WIDTH_IN * report.CHART_DPI == 900, chart.name
        assert 300 <= height <= 2400, (chart.name, height)
        heading = page.index(f"\n## {section}\n")
        following = page.find("\n## ", heading + 1)
        image = page.index(f"![{section}](_static/perf/{chart.name})")
        assert heading < image < (following if following != -1 else len(page)), section
    assert report.FONT_SIZE >= 12


def test_every_peer_has_its_own_colour() -> None:
    colours = list(report.PEER_COLOURS.values())
    assert len(set(colours)) == len(colours)
    document = json.loads(RESULTS.read_text(encoding="utf-8"))
    for result in document["results"]:
        names = list(result.get("contenders") or result.get("columns") or [])
        peers = {report.peer_of(name) for name in names}
        assert "other" not in peers, names  # each contender is attributed to its peer
        assert len({report.PEER_COLOURS[p] for p in peers}) == len(peers)
    assert report.peer_of("kstlib 3.8.2 AuthSession") == "kstlib 3.8.2"
    assert report.peer_of("kstlib AuthSession") == "kstlib.auth (this project)"
    assert report.peer_of("Authlib OAuth2Client") != report.peer_of("httpx-auth")


def test_goals_are_stated_in_words_not_issue_numbers(rebuilt: dict[str, Path]) -> None:
    page = rebuilt["doc"].read_text(encoding="utf-8")
    assert not re.search(r"\bissues?\s*#?\d|#\d+\b|seams issue", page, re.IGNORECASE)
    document = json.loads(RESULTS.read_text(encoding="utf-8"))
    for goal in document["goals"]:
        why = goal_purpose(goal["source"])
        if not goal["text"].startswith("no speed goal"):
            assert why and not re.search(r"\d", why), goal
            assert f": {why}." in page
    assert goal_purpose("issue 99") == ""  # an unlisted issue shows nothing, not its number
    assert all(not re.search(r"issue", words) for words in GOAL_PURPOSES.values())


def test_report_only_measures_nothing_and_writes_the_page(
    rebuilt: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m bench --report-only`` rebuilds from the JSON file; no bench runs (the
    ``rebuilt`` fixture ran it with no bench registered); it refuses measuring options and
    says what to do without results."""
    assert rebuilt["doc"].is_file() and rebuilt["overview"].is_file()
    assert len(list(rebuilt["charts"].glob("*.png"))) == len(_sections())
    monkeypatch.setattr(bench_main, "BENCHES", {})
    with pytest.raises(SystemExit):
        bench_main.main(["--report-only", "--smoke"])
    monkeypatch.setattr(report, "JSON_PATH", tmp_path / "missing.json")
    assert bench_main.main(["--report-only"]) == 1
