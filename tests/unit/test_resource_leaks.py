"""The suite fails the test that leaks a resource, deterministically.

A pytest run with this project's configuration (pyproject.toml ``filterwarnings`` and the
hooks and fixtures of tests/conftest.py) runs tests that leak on purpose: the leaking tests
are reported, with the leaked object, and the innocent test after them passes - even for a
socket held in a reference cycle while the garbage collector is disabled, which without the
suite's own per-test ``gc.collect()`` would be reported in whichever later test the collector
happened to run (or not at all). What outlives its test is frozen after that collection; a
socket among it, dropped unclosed by a later test, fails the teardown of the last test when
the session's frozen objects are collected.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.providers import OAuth2Provider
from kstlib.auth.token import MemoryTokenStorage
from tests.jwks_server import JWKSServer

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


KEPT = []


def test_keeps_a_socket_past_its_end():
    KEPT.append(Holder())  # alive when the test ends: frozen with the rest of the heap


def test_drops_it_later():
    KEPT.clear()  # garbage now, in a cycle, frozen: only the end-of-session sweep finds it


def test_last():
    assert KEPT == []  # the socket is garbage by now; the sweep after this test finalises it
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
    result.stdout.fnmatch_lines(  # the frozen socket, found by the end-of-session sweep
        [
            "*ERROR at teardown of test_last*",
            "*outlived the test that made them*ResourceWarning: unclosed <socket.socket*",
        ],
        consecutive=False,
    )
    failed = [line for line in result.outlines if line.startswith(("FAILED", "ERROR"))]
    assert sorted(line.split()[1].split("::")[1] for line in failed) == [
        "test_last",
        "test_leaks_a_file",
        "test_leaks_a_socket_in_a_cycle",
        "test_leaks_an_event_loop",
    ], result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_a_provider_nobody_closed_closes_its_http_client_once_garbage(server: JWKSServer) -> None:
    """The README's ``provider = get_provider(...)`` is never closed: its pooled sockets must
    still be closed with it, not left to warn in whichever test collects them."""
    server.set_json("/ping", {})
    config = AuthProviderConfig(
        client_id="app", authorize_url=server.url("/authorize"), token_url=server.url("/token")
    )
    provider = OAuth2Provider("p", config, MemoryTokenStorage())
    client = provider.http_client
    assert client.get(server.url("/ping")).status_code == 200  # a kept-alive pooled socket
    provider.self_reference = provider  # type: ignore[attr-defined]  # only the GC frees it
    del provider
    assert not client.is_closed
    gc.collect()
    assert client.is_closed
