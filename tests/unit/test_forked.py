"""tests/forked.py: a worker left running by its test is killed and reaped when the test ends.

``forked.close_all`` runs after every test (tests/conftest.py), passed or failed: a test that
fails before it reads or kills its workers leaves none behind, waiting for a start signal or
sleeping, and none for the pytest worker to wait for at its exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests import forked


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_close_all_kills_and_reaps_a_worker_still_running() -> None:
    worker = forked.start(time.sleep, 3600)
    assert worker.poll() is None
    forked.close_all()
    assert worker.returncode == -signal.SIGKILL
    assert _gone(worker.pid)
    assert worker.stdout.closed
    forked.close_all()  # nothing left: a no-op


def test_close_all_kills_the_session_a_worker_leads() -> None:
    """A ``new_session`` worker's own children (a ``sops`` it runs) go with it."""
    worker = forked.start(subprocess.call, ["sleep", "3600"], new_session=True)
    deadline = time.monotonic() + 30
    while _session_size(worker.pid) < 2:  # the worker and its sleep
        assert time.monotonic() < deadline, "the worker's sleep did not start"
        time.sleep(0.01)
    forked.close_all()
    assert worker.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while _session_size(worker.pid):  # the orphaned sleep is reaped by init
        assert time.monotonic() < deadline, "a process of the session survived"
        time.sleep(0.01)


def test_a_finished_worker_is_left_as_it_ended() -> None:
    worker = forked.start(print, "done")
    out, err = worker.communicate(timeout=60)
    assert (out, err, worker.returncode) == ("done\n", "", 0)
    forked.close_all()
    assert worker.returncode == 0


def _session_size(sid: int) -> int:
    """How many processes (zombies excluded) are in session ``sid``."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue  # it ended meanwhile
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            count += 1
    return count
