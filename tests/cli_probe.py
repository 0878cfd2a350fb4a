"""``kstlib.cli.main`` in a fresh interpreter, reporting which modules it had loaded.

The start-up tests (which heavy modules a command loads) and the token snapshot tests (whether
a command parsed YAML) both ask a real process what it imported; this is their one way to ask.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable

__all__ = ["run_main"]

_MARK = "LOADED="


def run_main(
    args: list[str], watched: Iterable[str], *, stdin: str | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``kstlib.cli.main(args)`` in a fresh interpreter (this process's environment);
    return it and which of the ``watched`` modules were in ``sys.modules`` when it exited.
    """
    script = (
        "import atexit, sys\n"
        f"watched = {sorted(watched)!r}\n"
        "atexit.register(lambda: sys.stderr.write("
        f"'\\n{_MARK}' + repr([m for m in watched if m in sys.modules]) + '\\n'))\n"
        "from kstlib.cli import main\n"
        f"main({args!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith(_MARK))
    return proc, set(ast.literal_eval(line.removeprefix(_MARK)))
