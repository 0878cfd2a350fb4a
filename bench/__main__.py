"""Run the benchmarks: ``python -m bench`` (full, with peers) or ``python -m bench --smoke``.

``python -m bench --report-only`` measures nothing: it rebuilds the charts and
docs/performance.md from the last full run's bench/results.json.

The full run prints one table, writes bench/results.json and bench/results.png
and regenerates docs/performance.md. The smoke run (a few seconds, no peers,
no installs, no IdP) only prints the table: it checks that every bench still
runs. Figures are measured, never typed in.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable

from bench import (
    checker,
    cli_token,
    coldstart,  # issue 15
    dpop,  # issue 14: per-request cost with DPoP
    imports,
    login,
    per_request,
    storage,
    storm,
    storm_cc,  # issue 13: client-credentials storm
    verify,
)
from bench.common import Context, CountTable, Result, format_table

BENCHES: dict[str, Callable[[Context], list[Result]]] = {
    "imports": imports.run,
    "cli": cli_token.run,
    "requests": per_request.run,
    "dpop": dpop.run,  # issue 14 item 2
    "storm": storm.run,
    "storm_cc": storm_cc.run,  # issue 13
    "coldstart": coldstart.run,  # issue 15
    "checker": checker.run,
    "verify": verify.run,
    "storage": storage.run,
    "login": login.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds, no peers: checks the benches run"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rebuild the charts and docs/performance.md from bench/results.json",
    )
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (15)")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of {','.join(BENCHES)} (writes no files)",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        if args.smoke or args.only or args.rounds:
            parser.error("--report-only measures nothing: it takes no --smoke, --only, --rounds")
        return _report_only()
    rounds = args.rounds or (2 if args.smoke else 15)
    selected = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHES)
    unknown = set(selected) - set(BENCHES)
    if unknown:
        parser.error(f"unknown bench(es): {', '.join(sorted(unknown))}")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")

    started = time.monotonic()
    load_before = os.getloadavg()
    results: list[Result] = []
    failures: list[str] = []
    with Context.open(smoke=args.smoke, rounds=rounds) as ctx:
        for name in selected:
            t0 = time.monotonic()
            print(f"-- {name} ...", flush=True)
            try:
                results.extend(BENCHES[name](ctx))
            except Exception:
                failures.append(name)
                error = traceback.format_exc()
                print(error, file=sys.stderr)
                results.append(
                    CountTable(
                        title=f"bench '{name}' FAILED",
                        columns=[],
                        rows={},
                        notes=[error.strip().splitlines()[-1]],
                        section=name,
                    )
                )
            print(f"   {name}: {time.monotonic() - t0:.1f} s", flush=True)
        peer_version = ctx._peer.hello.get("version") if ctx._peer is not None else None
        missing = dict(ctx.missing)
    elapsed = time.monotonic() - started
    if args.smoke:  # 2 rounds of tiny batches: the figures are not fit to judge a goal
        for result in results:
            for goal in result.all_goals():
                goal.met = None
        results[0].notes.append("smoke mode: goals are not judged (n/a)")
    print(format_table(results))
    print(f"\n{len(results)} results in {elapsed:.0f} s; mode: {'smoke' if args.smoke else 'full'}")
    if args.smoke or args.only:
        print("smoke/partial run: nothing written (bench/results.*, docs/performance.md)")
    else:
        from bench import report

        meta = report.metadata(
            rounds=rounds,
            elapsed=elapsed,
            load_before=load_before,
            load_after=os.getloadavg(),
            peer_version=peer_version,
            missing=missing,
        )
        for path in report.write_all(results, meta):
            print(f"wrote {path}")
    if failures:
        print(f"FAILED benches: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _report_only() -> int:
    from bench import report
    from bench.common import ensure_packages

    if not report.JSON_PATH.is_file():  # read at call time: tests point it elsewhere
        print(f"error: {report.JSON_PATH} is missing: run a full `python -m bench` first")
        return 1
    failures = ensure_packages(["matplotlib"])  # bench-only, as in a full run
    for module, reason in failures.items():
        print(f"warning: {module}: {reason}; the page is written without charts")
    for path in report.regenerate():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
