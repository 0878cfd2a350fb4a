"""Worker processes that start with kstlib already imported: forked from a preloaded server.

The fleet tests (tests/integration/test_redis_*.py), the crash test
(tests/integration/test_storage_crash.py) and the shared-storage tests (4 processes, one
grant: test_client_credentials.py, test_session.py) start dozens of short worker processes:
the 20 cold workers of one test, the kill-and-check rounds of another. A fresh interpreter
spent most of its CPU importing (0.2 s for the token storages, 0.6 s for a provider, httpx
and asyncio), not doing the work under test. Here each worker is forked from
multiprocessing's *forkserver* (one per pytest worker, started on first use), which imported
those modules once (:data:`PRELOAD`).

A worker is still a real, separate process with its own pid, memory, sockets and Redis
connections; it can be paused, SIGKILLed mid-write, made the leader of its own session
(``new_session``, so a kill of its group also reaches the ``sops`` it runs). What the tests
check of it is what they checked of a ``subprocess.Popen``: its stdout lines, its stderr, its
exit status (``-9`` after a SIGKILL). :class:`Forked` offers that subset of ``Popen``. The
forkserver is a fresh interpreter (not a fork of pytest and its threads); Python reseeds
``random`` in every forked child.

What the start of a real interpreter does (``kstlib`` on PATH, its start-up, its imports) is
tested with real ``subprocess`` launches elsewhere (tests/unit/test_cli_startup.py,
tests/integration/test_cli*.py).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TextIO

__all__ = ["PRELOAD", "Forked", "close_all", "start"]

#: Imported once by the forkserver; every worker forked from it starts with them.
PRELOAD = [
    "asyncio",
    "kstlib.auth",
    "kstlib.auth.config",
    "kstlib.auth.models",
    "kstlib.auth.providers.oidc",
    "kstlib.auth.redaction",
    "kstlib.auth.token",
    "kstlib.auth.token.redis_storage",
    "redis",
    "redis.asyncio",
    "redis.asyncio.sentinel",
    "redis.sentinel",
    "tests.redis_worker",
    "tests.shared_storage_worker",
    "tests.storage_saver",
]


def _context() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # used when the server starts (first use)
    return context


def _child(
    target: Callable[..., object],
    args: Sequence[Any],
    out: socket.socket,
    err_path: str,
    new_session: bool,
    environ: dict[str, str],
    cwd: str,
) -> None:
    """In the forked worker: the parent's environment and directory as they are now (as a
    ``Popen`` would inherit them), stdout to the parent's socket, stderr to a file; then run."""
    os.environ.clear()
    os.environ.update(environ)
    os.chdir(cwd)
    if new_session:
        os.setsid()
    os.dup2(out.fileno(), 1)
    out.close()
    err = os.open(err_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(err, 2)
    os.close(err)
    sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
    target(*args)


class Forked:
    """A forked worker, seen through the part of ``subprocess.Popen`` the tests use."""

    def __init__(
        self, process: BaseProcess, out: socket.socket, err_path: Path, new_session: bool
    ) -> None:
        self._process = process
        self._new_session = new_session
        self._out = out
        self._err_path = err_path
        self._timed_out = False
        self._err: str | None = None
        self.pid: int = process.pid  # type: ignore[assignment]
        self.stdout: TextIO = out.makefile("r", encoding="utf-8")
        self.returncode: int | None = None
        # released however the test ends (a failing test may drop a worker unread)
        self._release = weakref.finalize(self, _release, out, err_path)
        _OPEN.append(self)

    def poll(self) -> int | None:
        if self.returncode is None and self._process.exitcode is not None:
            self._reap()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._process.join(timeout)
            if self._process.exitcode is None:
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout or 0)
            self._reap()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:  # it ended meanwhile
                pass

    def kill(self) -> None:
        """SIGKILL it, and its whole session when it leads one (``new_session``)."""
        if self._new_session and self.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile
                pass
        else:
            self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """The rest of stdout (until the worker closes it) and all of stderr; waits."""
        out = ""
        if not self.stdout.closed and not self._timed_out:
            self._out.settimeout(timeout)
            try:
                out = self.stdout.read()
            except TimeoutError:
                self._timed_out = True  # the stream cannot be read again: like Popen, raise
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout or 0)
        self.stdout.close()
        self.wait(timeout)
        if self._err is None:
            self._err = self._err_path.read_text(encoding="utf-8", errors="replace")
            self._release()
        return out, self._err

    def _reap(self) -> None:
        self.returncode = self._process.exitcode
        self._process.join()
        self._process.close()

    def close(self) -> None:
        """Kill it if still running; release its stdout and its stderr file."""
        if self.poll() is None:
            self.kill()
            self.wait()
        self.stdout.close()
        self._release()
        if self in _OPEN:
            _OPEN.remove(self)


def _release(out: socket.socket, err_path: Path) -> None:
    out.close()
    err_path.unlink(missing_ok=True)


#: Workers started and not closed yet (tests/conftest.py closes them after every test).
_OPEN: list[Forked] = []


def close_all() -> None:
    """Kill and reap every worker still open, and release its stdout and stderr file.

    A test that fails before it reads or kills its workers (one of twenty did not say
    ``ready``) would otherwise leave the others waiting for a start signal that never comes;
    and as non-daemonic children of the pytest worker they would be waited for at its exit.
    """
    while _OPEN:
        _OPEN.pop().close()


def start(
    target: Callable[..., object],
    *args: Any,
    new_session: bool = False,
    cwd: str | os.PathLike[str] | None = None,
) -> Forked:
    """``target(*args)`` in a new worker forked from the preloaded server, with this
    process's environment and ``cwd`` (default: the current directory).

    ``target`` must be a module-level function (it is named, not copied, to the server).
    """
    parent_end, child_end = socket.socketpair()
    cwd = os.fspath(cwd if cwd is not None else os.getcwd())
    fd, err_name = tempfile.mkstemp(prefix="forked-", suffix=".stderr")
    os.close(fd)
    process = _context().Process(
        target=_child,
        args=(target, args, child_end, err_name, new_session, dict(os.environ), cwd),
        daemon=False,
    )
    try:
        process.start()
    finally:
        child_end.close()
    return Forked(process, parent_end, Path(err_name), new_session)
