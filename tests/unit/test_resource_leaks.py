"""The suite fails the test that leaks a resource, deterministically.

A pytest run with this project's configuration (pyproject.toml ``filterwarnings`` and the
hooks and fixtures of tests/conftest.py) runs tests that leak on purpose: the leaking tests
are reported, with the leaked object, and the innocent test after them passes - even for a
socket held in a reference cycle while the garbage collector is disabled, which without the
suite's own per-test ``gc.collect()`` would be reported in whichever later test the collector
happened to run (or not at all).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LEAKY_TESTS = """
import asyncio
import gc
import socket


class Holder:
    def __init__(self):
        self.sock = socket.socket()
        self.me = self  # a reference cycle: only the garbage collector finalises it


def test_leaks_a_socket_in_a_cycle():
    gc.disable()  # the collector cannot run by chance: only the suite's own collection
    Holder()


def test_leaks_a_file(tmp_path):
    open(tmp_path / "f", "w")


def test_leaks_an_event_loop():
    asyncio.new_event_loop()


def test_innocent():
    gc.enable()
"""


def test_leaked_resources_fail_the_test_that_leaked_them(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    result = pytester.runpytest_subprocess(
        *("-c", str(ROOT / "pyproject.toml"), "--rootdir", str(pytester.path)),
        *("-p", "tests.conftest", "-p", "no:cacheprovider", "-n", "0", "-rA"),
        "test_leaky.py",
    )
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks_a_socket_in_a_cycle*",
            "*ResourceWarning: unclosed <socket.socket*",
        ],
        consecutive=False,
    )
    result.stdout.fnmatch_lines(["*unclosed file*"])
    result.stdout.fnmatch_lines(["*unclosed event loop*"])
    result.stdout.fnmatch_lines(["PASSED test_leaky.py::test_innocent"])
    failed = [line for line in result.outlines if line.startswith(("FAILED", "ERROR"))]
    assert sorted(line.split()[1].split("::")[1] for line in failed) == [
        "test_leaks_a_file",
        "test_leaks_a_socket_in_a_cycle",
        "test_leaks_an_event_loop",
    ], result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
