"""Import cost: ``import kstlib.auth`` (and the names a script really uses) vs ``import httpx``.

Each sample is the wall time of a fresh interpreter (``python -c ...``), so
interpreter start-up is included for every contender alike; kstlib 3.8.2
runs in its own venv (same import name).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from bench.common import OLD_NAME, Comparison, Context, Goal, alternate, time_subprocess

GOAL_RATIO = 1.5
#: The realistic line <= 1.3x import httpx (#16 item 4).
REALISTIC_GOAL_RATIO = 1.3
HTTPX = "python -c 'import httpx'"
MINE = "import kstlib.auth"
REALISTIC = "from kstlib.auth import OIDCProvider, AuthSession, get_provider"
OLD = f"{OLD_NAME}: import kstlib.auth"
OLD_REALISTIC = f"{OLD_NAME}: from kstlib.auth import OIDCProvider, AuthSession"


def run(ctx: Context) -> list[Comparison]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the warm-up round writes .pyc files
    py = sys.executable

    def timed(python: str, code: str) -> Callable[[], float]:
        return lambda: time_subprocess([python, "-c", code], env=env, cwd=ctx.tmp) * 1e3

    contenders = {
        HTTPX: timed(py, "import httpx"),
        MINE: timed(py, "import kstlib.auth"),
        REALISTIC: timed(py, "from kstlib.auth import OIDCProvider, AuthSession, get_provider"),
    }
    skipped: dict[str, str] = {}
    notes: list[str] = []
    old = ctx.old_python()
    if old is not None:
        contenders[OLD] = timed(str(old), "import kstlib.auth")
        contenders[OLD_REALISTIC] = timed(
            str(old), "from kstlib.auth import OIDCProvider, AuthSession"
        )
        notes.append(f"{OLD_NAME} has no kstlib.auth.get_provider; its line imports the other two")
    else:
        skipped[OLD] = ctx.old_reason()
    series = alternate(contenders, rounds=ctx.rounds, warmup=1)
    comp = Comparison(
        title="Import time (fresh interpreter, wall time)",
        unit="ms",
        baseline=HTTPX,
        series=series,
        skipped=skipped,
        notes=notes,
        section="1. import",
    )
    ratio = comp.ratio(MINE)[0]
    comp.goals.append(
        Goal(
            f"import kstlib.auth <= {GOAL_RATIO}x import httpx (measured {ratio:.2f}x)",
            ratio <= GOAL_RATIO,
            "issue 2",
        )
    )
    realistic = comp.ratio(REALISTIC)[0]
    comp.goals.append(
        Goal(
            f"{REALISTIC} <= {REALISTIC_GOAL_RATIO}x import httpx (measured {realistic:.2f}x)",
            realistic <= REALISTIC_GOAL_RATIO,
            "issue 16",
        )
    )
    return [comp]
