"""tests/once.py: a build shared by the xdist workers of one run, built once, never half."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.once import once_per_run


class _Factory:
    """A stand-in for pytest's TempPathFactory whose base is a fresh directory."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def getbasetemp(self) -> Path:
        return self.base


def _produce(out: Path) -> dict[str, Any]:
    (out / "artifact").write_text("built")
    runs = out.parent / "runs"
    runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
    return {"returncode": 0}


def _ask(base: Path, answers: list[str]) -> None:
    out, result = once_per_run(_Factory(base), "thing", _produce)  # type: ignore[arg-type]
    if result == {"returncode": 0}:
        answers.append((out / "artifact").read_text())


def test_built_once_for_every_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent callers (threads: each opens the lock file, so flock excludes them as it
    excludes worker processes) get the one build."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    answers: list[str] = []
    callers = [threading.Thread(target=_ask, args=(tmp_path, answers)) for _ in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(60)
    _ask(tmp_path, answers)
    assert answers == ["built"] * 5
    assert (tmp_path / "runs").read_text() == "x"  # produced once


def test_a_failed_build_leaves_no_result_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)

    def fail(out: Path) -> dict[str, Any]:
        (out / "half").write_text("")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        once_per_run(_Factory(tmp_path), "thing", fail)  # type: ignore[arg-type]
    assert not (tmp_path / "once-thing.json").exists()
    out, result = once_per_run(_Factory(tmp_path), "thing", _produce)  # type: ignore[arg-type]
    assert result == {"returncode": 0} and not (out / "half").exists()
    assert json.loads((tmp_path / "once-thing.json").read_text()) == result


def test_under_xdist_the_root_is_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_base = tmp_path / "popen-gw3"
    worker_base.mkdir()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    out, _ = once_per_run(_Factory(worker_base), "thing", _produce)  # type: ignore[arg-type]
    assert out == tmp_path / "once-thing"
