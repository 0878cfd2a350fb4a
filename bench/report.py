"""Outputs of a full run: bench/results.json, the charts, docs/performance.md.

Everything here is generated from the measured results; nothing is typed in. The page has
one chart per section (docs/_static/perf/<section>.png, sized for the docs' content column,
one colour per peer); bench/results.png is the same panels on one sheet. ``python -m bench
--report-only`` rebuilds the charts and the page from bench/results.json without measuring
(:func:`regenerate`).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    OLD_NAME,
    ROOT,
    Comparison,
    CountTable,
    Goal,
    Result,
    goal_purpose,
    result_from_dict,
)

JSON_PATH = ROOT / "bench" / "results.json"
PNG_PATH = ROOT / "bench" / "results.png"
DOC_PATH = ROOT / "docs" / "performance.md"
CHART_DIR = ROOT / "docs" / "_static" / "perf"

METHOD = (
    "Each contender is warmed up, then measured in rounds that alternate the contenders "
    "(A B C, C B A, ...) so that a noisy neighbour slows all of them alike. A sample is a "
    "batch (N requests, N verifications, one fresh interpreter, ...). The table shows the "
    "median of the rounds with min-max; ratios are computed round by round (pair by pair: "
    "each round's sample divided by the same round's baseline sample), then their median "
    "and min-max are shown. Peers: kstlib 3.8.2 runs in its own venv (bench/.venvs/, same "
    "import name) through a worker process that takes part in the same alternation; "
    "Authlib, httpx-auth, PyJWT and joserfc are pip-installed into the project venv for the "
    "bench only (with the project's httpx pinned, so none of them can change it). "
    "Every server is on 127.0.0.1: a minimal asyncio HTTP/1.1 server in its own process "
    "for the per-request cost, a threaded discovery/JWKS server for the checker, and the "
    "real OpenID provider of the test suite (panva's oidc-provider) for the refresh storm "
    "and the login. The machine is shared and has 2 cores: read the min-max columns."
)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _sops_version() -> str | None:
    sops = shutil.which("sops") or str(Path(sys.executable).parent / "sops")
    try:
        out = subprocess.run(
            [sops, "--version", "--disable-version-check"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except OSError:
        return None
    match = re.search(r"\d+\.\d+\.\d+", out)
    return match.group(0) if match else None


def metadata(
    *,
    rounds: int,
    elapsed: float,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    peer_version: str | None,
    missing: dict[str, str],
) -> dict[str, Any]:
    versions = {"kstlib (this project)": _version("kstlib-auth"), "kstlib (peer)": peer_version}
    versions.update(
        (dist, _version(dist))
        for dist in (
            "httpx",
            "cryptography",
            "authlib",
            "httpx-auth",
            "pyjwt",
            "joserfc",
            "matplotlib",
        )
    )
    versions["sops"] = _sops_version()
    versions["node"] = _node_version()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench",
        "machine": {
            "cpu": _cpu(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
        },
        "versions": versions,
        "rounds": rounds,
        "elapsed_seconds": round(elapsed, 1),
        "not_installed": missing,
        "method": METHOD,
    }


def _node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().lstrip("v") or None


def write_all(results: Sequence[Result], meta: dict[str, Any]) -> list[Path]:
    return [write_json(results, meta), *write_pages(results, meta)]


def write_pages(
    results: Sequence[Result],
    meta: dict[str, Any],
    *,
    doc_path: Path | None = None,
    chart_dir: Path | None = None,
    overview: Path | None = None,
) -> list[Path]:
    """The charts (one per section, and the overview sheet) and the Markdown page."""
    doc_path, chart_dir = doc_path or DOC_PATH, chart_dir or CHART_DIR
    overview = overview or PNG_PATH
    charts = write_charts(results, meta, chart_dir=chart_dir, overview=overview)
    written = [*charts.values()]
    if charts:
        written.append(overview)
    written.append(write_markdown(results, meta, charts, doc_path=doc_path))
    return written


def load_results(json_path: Path | None = None) -> tuple[list[Result], dict[str, Any]]:
    """The results and the run's metadata, as a full run wrote them to ``json_path``."""
    document = json.loads((json_path or JSON_PATH).read_text(encoding="utf-8"))
    meta = {k: v for k, v in document.items() if k not in ("goals", "results")}
    return [result_from_dict(r) for r in document["results"]], meta


def regenerate(
    json_path: Path | None = None,
    *,
    doc_path: Path | None = None,
    chart_dir: Path | None = None,
    overview: Path | None = None,
) -> list[Path]:
    """``python -m bench --report-only``: charts and page again, from the saved results
    (by default bench/results.json into docs/performance.md, docs/_static/perf/ and
    bench/results.png)."""
    results, meta = load_results(json_path)
    return write_pages(results, meta, doc_path=doc_path, chart_dir=chart_dir, overview=overview)


def write_json(results: Sequence[Result], meta: dict[str, Any]) -> Path:
    document = {
        **meta,
        "goals": [
            {"section": r.section, "title": r.title, **g.to_dict()}
            for r in results
            for g in r.all_goals()
            if g.met is not None
        ],
        "results": [r.to_dict() for r in results],
    }
    JSON_PATH.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return JSON_PATH


# --------------------------------------------------------------------------- chart

#: One colour per peer, the same in every chart (a contender's peer: :func:`peer_of`).
PEER_COLOURS: dict[str, str] = {
    "kstlib.auth (this project)": "#2ca02c",
    OLD_NAME: "#ff7f0e",
    "Authlib": "#1f77b4",
    "httpx-auth": "#9467bd",
    "PyJWT": "#d62728",
    "joserfc": "#8c564b",
    "bare cryptography": "#17becf",
    "bare httpx": "#7f7f7f",
    "python -c (interpreter start-up)": "#bcbd22",
}

#: Chart geometry: 9 inches at 100 dpi is 900 px, drawn at the content column's width
#: (about 700 px): the 13 pt labels read as about 14 px.
CHART_WIDTH_IN = 9.0
CHART_DPI = 100
FONT_SIZE = 13


def peer_of(name: str) -> str:
    """The peer a contender (or a count column) belongs to."""
    lowered = name.lower()
    if lowered.startswith(OLD_NAME.lower()):
        return OLD_NAME
    for needle, peer in (
        ("httpx-auth", "httpx-auth"),
        ("authlib", "Authlib"),
        ("pyjwt", "PyJWT"),
        ("joserfc", "joserfc"),
        ("cryptography", "bare cryptography"),
    ):
        if needle in lowered:
            return peer
    if lowered.startswith("python -c"):
        return "python -c (interpreter start-up)"
    if lowered.startswith("httpx"):
        return "bare httpx"
    if "kstlib" in lowered:
        return "kstlib.auth (this project)"
    return "other"


def _colour(name: str) -> str:
    return PEER_COLOURS.get(peer_of(name), "#444444")


def section_slug(section: str) -> str:
    """``5. TokenChecker and JWT verification`` -> ``5-tokenchecker-and-jwt-verification``."""
    return re.sub(r"[^a-z0-9]+", "-", section.lower()).strip("-") or "results"


def _leading_int(cell: Any) -> int | None:
    match = re.match(r"\s*(\d+)", str(cell)) if cell is not None else None
    return int(match.group(1)) if match else None


def _charted(results: Sequence[Result]) -> list[Result]:
    return [
        r
        for r in results
        if (isinstance(r, Comparison) and r.series)
        or (isinstance(r, CountTable) and r.rows and r.columns)
    ]


def _panel_height(result: Result) -> float:
    if isinstance(result, Comparison):
        return 1.6 + 0.55 * len(result.series)
    return 4.6


def write_charts(
    results: Sequence[Result], meta: dict[str, Any], *, chart_dir: Path, overview: Path
) -> dict[str, Path]:
    """One PNG per section in ``chart_dir`` and the overview sheet; {} without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no charts this time")
        return {}
    panels = _charted(results)
    sections: dict[str, list[Result]] = {}
    for result in panels:
        sections.setdefault(result.section, []).append(result)
    chart_dir.mkdir(parents=True, exist_ok=True)
    for stale in chart_dir.glob("*.png"):
        stale.unlink()
    written: dict[str, Path] = {}
    with plt.rc_context({"font.size": FONT_SIZE}):
        for section, members in sections.items():
            heights = [_panel_height(r) for r in members]
            legend_in = 0.1 + 0.32 * -(-len(_peers_present(members)) // 3)  # rows of 3 entries
            fig, axes = plt.subplots(
                len(members),
                1,
                figsize=(CHART_WIDTH_IN, sum(heights) + legend_in),
                gridspec_kw={"height_ratios": heights},
                squeeze=False,
            )
            for ax, result in zip(axes.flat, members, strict=True):
                _draw(ax, result)
            _legend(fig, members)
            fig.tight_layout(rect=(0, 0, 1, 1 - legend_in / (sum(heights) + legend_in)))
            path = chart_dir / f"{section_slug(section)}.png"
            fig.savefig(path, dpi=CHART_DPI)
            plt.close(fig)
            written[section] = path
    _overview(written, meta, overview)
    return written


def _overview(charts: dict[str, Path], meta: dict[str, Any], path: Path) -> None:
    """The section charts tiled on one sheet (bench/results.png), for a look at the whole run.

    Tiled from the PNGs just written rather than drawn again: drawing every panel a second
    time took as long as all the section charts together.
    """
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    tiles = [Image.open(chart) for chart in charts.values()]
    columns, margin, title_height, tile_width = 2, 20, 60, round(CHART_WIDTH_IN * CHART_DPI)
    heights = [0] * columns
    places: list[tuple[int, int]] = []
    for tile in tiles:  # each chart goes under the shortest column
        column = heights.index(min(heights))
        places.append((margin + column * (tile_width + margin), heights[column]))
        heights[column] += tile.height + margin
    width = margin + columns * (tile_width + margin)
    sheet = Image.new("RGB", (width, title_height + max(heights, default=0) + margin), "white")
    for tile, (x, y) in zip(tiles, places, strict=True):
        sheet.paste(tile.convert("RGB"), (x, title_height + y))
        tile.close()
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), FONT_SIZE * 2)
    ImageDraw.Draw(sheet).text(
        (margin, margin // 2),
        f"kstlib.auth and its peers - python -m bench, {meta['date']} "
        f"({meta['machine']['cpu']}, {meta['machine']['cores']} cores)",
        fill="black",
        font=font,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def _legend(fig: Any, members: Sequence[Result], *, top: float = 1.0) -> None:
    """One legend entry per peer present in ``members``, in :data:`PEER_COLOURS` order."""
    from matplotlib.patches import Patch

    present = _peers_present(members)
    handles = [Patch(color=c, label=p) for p, c in PEER_COLOURS.items() if p in present]
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=min(3, len(handles)),
        bbox_to_anchor=(0.5, top),
        frameon=False,
    )


def _peers_present(members: Sequence[Result]) -> set[str]:
    names = [
        name
        for result in members
        for name in (result.series if isinstance(result, Comparison) else result.columns)
    ]
    return {peer_of(name) for name in names}


def _wrap(text: str, width: int = 26) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _draw(ax: Any, result: Result) -> None:
    if isinstance(result, Comparison):
        names = list(result.series)
        medians = [result.series[n].median for n in names]
        lows = [m - result.series[n].spread[0] for n, m in zip(names, medians, strict=True)]
        highs = [result.series[n].spread[1] - m for n, m in zip(names, medians, strict=True)]
        colours = [_colour(n) for n in names]
        hatches = ["//" if n == result.baseline else "" for n in names]
        bars = ax.barh(
            range(len(names)),
            medians,
            xerr=[lows, highs],
            color=colours,
            capsize=4,
            edgecolor="white",
        )
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
        ax.set_yticks(range(len(names)), [_wrap(n) for n in names])
        ax.invert_yaxis()
        better = "higher is better" if result.higher_is_better else "lower is better"
        ax.set_xlabel(f"{result.unit}: median, min-max ({better}; hatched: baseline)")
        if max(medians) / max(min(medians), 1e-12) > 50:
            ax.set_xscale("log")
    else:
        scenarios = list(result.rows)
        width = 0.8 / max(1, len(result.columns))
        for j, column in enumerate(result.columns):
            counts = [_leading_int(result.rows[s].get(column)) for s in scenarios]
            bars = ax.bar(
                [i + j * width for i in range(len(scenarios))],
                [count or 0 for count in counts],
                width,
                label=column,
                color=_colour(column),
            )
            ax.bar_label(bars, labels=["n/a" if c is None else str(c) for c in counts])
        ax.set_xticks(
            [i + 0.4 - width / 2 for i in range(len(scenarios))],
            [_wrap(s, 12) for s in scenarios],
        )
        ax.set_ylabel("refresh requests\nat the IdP (lower is better)")
    ax.set_title("\n".join(textwrap.wrap(result.title, 64)), fontsize=FONT_SIZE + 1)


# --------------------------------------------------------------------------- markdown


def _num(value: float) -> str:
    if value != value:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def write_markdown(
    results: Sequence[Result],
    meta: dict[str, Any],
    charts: dict[str, Path],
    *,
    doc_path: Path | None = None,
) -> Path:
    doc_path = doc_path or DOC_PATH
    m = meta["machine"]
    lines = [
        "# Performance",
        "",
        "<!-- GENERATED by `python -m bench` (bench/report.py): do not edit by hand; "
        "`python -m bench --report-only` rebuilds it from bench/results.json. -->",
        "",
        f"Generated by `python -m bench` on **{meta['date']}** in {meta['elapsed_seconds']:.0f} s "
        f"({meta['rounds']} rounds). Raw figures: `bench/results.json`; "
        "`python -m bench --report-only` rebuilds this page and its charts from them without "
        "measuring.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores (shared with other work; load average "
        f"{' / '.join(map(str, m['load_average_before']))} before, "
        f"{' / '.join(map(str, m['load_average_after']))} after)",
        f"- {m['platform']}, Python {m['python']}",
        "- versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v is not None),
        "",
        "## Method",
        "",
        meta["method"],
        "",
        "## Goals",
        "",
        "What each part of the run is held to, why, and whether this run met it.",
    ]
    groups: dict[tuple[str, str], list[Goal]] = {}
    for result in results:
        for goal in result.all_goals():
            if goal.met is None and goal.text.startswith("no speed goal"):
                continue
            groups.setdefault((result.section, goal_purpose(goal.source)), []).append(goal)
    for (section, why), goals in groups.items():
        lines += ["", f"**{section}**" + (f": {_md_escape(why)}." if why else "")]
        lines += [""] + [f"- {_md_escape(goal.text)}: **{goal.verdict}**" for goal in goals]
    if charts:
        lines += [
            "",
            "Charts: one per section; each peer keeps its colour in every chart, the hatched "
            "bar is the baseline of its panel, whiskers span min-max.",
        ]
    section = None
    for result in results:
        if result.section != section:
            section = result.section
            lines += ["", f"## {section}"]
            if section in charts:
                image = os.path.relpath(charts[section], doc_path.parent)
                lines += ["", f"![{section}]({image})"]
        lines += ["", f"### {result.title}", ""]
        if isinstance(result, Comparison):
            lines += _md_comparison(result)
        else:
            lines += _md_counts(result)
        for name, reason in result.skipped.items():
            lines.append(f"- not measured: {name}: {_md_escape(reason)}")
        for note in result.notes:
            lines.append(f"- {_md_escape(note)}")
    if meta.get("not_installed"):
        lines += ["", "## Not installed", ""]
        for module, reason in meta["not_installed"].items():
            lines.append(f"- {module}: {reason}")
    lines.append("")
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    doc_path.write_text("\n".join(lines), encoding="utf-8")
    return doc_path


def _md_goal(goal: Goal) -> str:
    why = goal_purpose(goal.source)
    line = f"- goal: {_md_escape(goal.text)}: **{goal.verdict}**"
    return line + (f" (why: {_md_escape(why)})" if why else "")


def _md_comparison(comp: Comparison) -> list[str]:
    better = "higher is better" if comp.higher_is_better else "lower is better"
    extra_cols = sorted({k for e in comp.extra.values() for k in e})
    lines = [
        f"Unit: {comp.unit} ({better}); ratio = contender / {_md_escape(comp.baseline)}, "
        "per round.",
        "",
        "| contender | median | min | max | ratio (min-max) |"
        + "".join(f" {c} |" for c in extra_cols),
        "|---|---:|---:|---:|---:|" + "---|" * len(extra_cols),
    ]
    for name, s in comp.series.items():
        r, lo, hi = comp.ratio(name)
        lines.append(
            f"| {_md_escape(name)} | {_num(s.median)} | {_num(s.spread[0])} | "
            f"{_num(s.spread[1])} | {r:.2f}x ({lo:.2f}-{hi:.2f}) |"
            + "".join(f" {comp.extra.get(name, {}).get(c, '')} |" for c in extra_cols)
        )
    goals = [g for g in comp.all_goals() if not g.text.startswith("no speed goal")]
    if goals:
        lines.append("")
        for goal in goals:
            lines.append(_md_goal(goal))
    lines.append("")
    return lines


def _md_counts(table: CountTable) -> list[str]:
    lines = [
        f"| {table.row_label} | " + " | ".join(table.columns) + " |",
        "|---|" + "---:|" * len(table.columns),
    ]
    for row, cells in table.rows.items():
        lines.append(
            f"| {row} | "
            + " | ".join(
                "-" if cells.get(c) is None else _md_escape(str(cells[c])) for c in table.columns
            )
            + " |"
        )
    if table.goals:
        lines.append("")
        for goal in table.goals:
            lines.append(_md_goal(goal))
    lines.append("")
    return lines
