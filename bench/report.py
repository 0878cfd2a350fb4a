"""Outputs of a full run: bench/results.json, bench/results.png, docs/performance.md.

Everything here is generated from the measured results; nothing is typed in.
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
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import OLD_NAME, ROOT, Comparison, CountTable, Result

JSON_PATH = ROOT / "bench" / "results.json"
PNG_PATH = ROOT / "bench" / "results.png"
DOC_PATH = ROOT / "docs" / "performance.md"

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
    written = [write_json(results, meta)]
    chart = write_chart(results, meta)
    if chart is not None:
        written.append(chart)
    written.append(write_markdown(results, meta, chart is not None))
    return written


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


def _leading_int(cell: Any) -> int | None:
    match = re.match(r"\s*(\d+)", str(cell)) if cell is not None else None
    return int(match.group(1)) if match else None


def write_chart(results: Sequence[Result], meta: dict[str, Any]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed: no chart (bench/results.png) this time")
        return None
    panels = [
        r
        for r in results
        if (isinstance(r, Comparison) and r.series)
        or (isinstance(r, CountTable) and r.rows and r.columns)
    ]
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(21, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, result in zip(axes.flat, panels, strict=False):
        if isinstance(result, Comparison):
            names = list(result.series)
            medians = [result.series[n].median for n in names]
            lows = [m - result.series[n].spread[0] for n, m in zip(names, medians, strict=True)]
            highs = [result.series[n].spread[1] - m for n, m in zip(names, medians, strict=True)]
            colors = [_colour(n, result.baseline) for n in names]
            ax.barh(range(len(names)), medians, xerr=[lows, highs], color=colors, capsize=3)
            ax.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=7)
            ax.invert_yaxis()
            better = "higher is better" if result.higher_is_better else "lower is better"
            ax.set_xlabel(f"{result.unit} (median, min-max; {better})", fontsize=7)
            if max(medians) / max(min(medians), 1e-12) > 50:
                ax.set_xscale("log")
        else:
            scen = list(result.rows)
            width = 0.8 / max(1, len(result.columns))
            for j, col in enumerate(result.columns):
                values = [_leading_int(result.rows[s].get(col)) or 0 for s in scen]
                bars = ax.bar(
                    [i + j * width for i in range(len(scen))],
                    values,
                    width,
                    label=col,
                    color=_colour(col, ""),
                )
                ax.bar_label(bars, fontsize=7)
            ax.set_xticks(
                [i + 0.4 - width / 2 for i in range(len(scen))], scen, fontsize=7, rotation=12
            )
            ax.set_ylabel("refresh requests at the IdP (lower is better)", fontsize=7)
            ax.legend(fontsize=7)
        ax.set_title(_short(result.title, 70), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(
        f"kstlib.auth vs peers - python -m bench, {meta['date']} "
        f"({meta['machine']['cpu']}, {meta['machine']['cores']} cores) - green: this project, "
        f"orange: {OLD_NAME}, blue: other peers, grey: baseline of the panel",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(PNG_PATH, dpi=90)
    plt.close(fig)
    return PNG_PATH


def _colour(name: str, baseline: str) -> str:
    if name.startswith(OLD_NAME):
        return "#ff7f0e"
    if name.startswith("kstlib") or "kstlib.auth" in name:
        return "#2ca02c"
    return "#999999" if name == baseline else "#1f77b4"


def _short(text: str, limit: int = 42) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


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


def write_markdown(results: Sequence[Result], meta: dict[str, Any], chart: bool) -> Path:
    m = meta["machine"]
    lines = [
        "# Performance",
        "",
        "<!-- GENERATED by `python -m bench` (bench/report.py): do not edit by hand. -->",
        "",
        f"Generated by `python -m bench` on **{meta['date']}** in {meta['elapsed_seconds']:.0f} s "
        f"({meta['rounds']} rounds). Raw figures: `bench/results.json`.",
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
        "| goal | from | verdict | section |",
        "|---|---|---|---|",
    ]
    for result in results:
        for goal in result.all_goals():
            if goal.met is None and goal.text.startswith("no speed goal"):
                continue
            verdict = {True: "**MET**", False: "**NOT MET**", None: "n/a"}[goal.met]
            lines.append(
                f"| {_md_escape(goal.text)} | {goal.source} | {verdict} | {result.section} |"
            )
    if chart:
        lines += ["", "![benchmark chart](../bench/results.png)"]
    section = None
    for result in results:
        if result.section != section:
            section = result.section
            lines += ["", f"## {section}"]
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
    DOC_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOC_PATH.write_text("\n".join(lines), encoding="utf-8")
    return DOC_PATH


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
            lines.append(f"- goal ({goal.source}): {_md_escape(goal.text)}: **{goal.verdict}**")
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
            lines.append(f"- goal ({goal.source}): {_md_escape(goal.text)}: **{goal.verdict}**")
    lines.append("")
    return lines
