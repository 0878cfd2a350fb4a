"""Run an expensive, read-only build once per pytest run, whatever the number of xdist workers.

A module- or session-scoped fixture runs once per *worker* that executes a test needing it:
with ``--dist worksteal`` the tests of one file may be spread over every worker, and the
Sphinx build of tests/integration/test_docs_build.py ran three times in one run (15 s of
CPU each). :func:`once_per_run` makes the first worker that asks build into a directory of
the run's shared temporary root, under an exclusive ``flock``; the others wait on the lock
(no polling, no timing), then read the same result. The result is written last, atomically:
a build that failed or was interrupted leaves no result, and the next worker builds again.
Nothing is shared between runs: the root is this run's ``pytest-N`` directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = ["once_per_run"]


def _run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary directory of this pytest run, shared by its xdist workers."""
    base = tmp_path_factory.getbasetemp()
    # under xdist each worker's basetemp is <run root>/popen-gwN; without xdist it is the root
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once_per_run(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    produce: Callable[[Path], dict[str, Any]],
) -> tuple[Path, dict[str, Any]]:
    """``produce(directory)`` once per run; every caller gets ``(directory, its result)``.

    ``produce`` writes what it builds under ``directory`` (created empty for it) and returns
    a JSON-serialisable description of the outcome (exit status, output...).
    """
    root = _run_root(tmp_path_factory)
    directory = root / f"once-{name}"
    result_file = root / f"once-{name}.json"
    with open(root / f"once-{name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if result_file.is_file():
            return directory, json.loads(result_file.read_text(encoding="utf-8"))
        if directory.exists():  # an earlier attempt failed part-way: start afresh
            shutil.rmtree(directory)
        directory.mkdir()
        result = produce(directory)
        partial = result_file.with_suffix(".partial")
        partial.write_text(json.dumps(result), encoding="utf-8")
        partial.replace(result_file)
        return directory, result
