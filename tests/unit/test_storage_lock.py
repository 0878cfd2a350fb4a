"""Per-provider storage locks: threads, processes, timeouts, asyncio."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from kstlib.auth.errors import TokenStorageError
from kstlib.auth.models import Token
from kstlib.auth.token import (
    AbstractTokenStorage,
    FileTokenStorage,
    MemoryTokenStorage,
    SOPSTokenStorage,
    StorageLock,
)
from kstlib.auth.token.lock import FileLock, LocalLock

PROVIDER = "corp.example"


class DictStorage(AbstractTokenStorage):
    """A custom backend implementing only the four abstract methods."""

    def __init__(self) -> None:
        self.tokens: dict[str, Token] = {}

    def save(self, provider_name: str, token: Token) -> None:
        self.tokens[provider_name] = token

    def load(self, provider_name: str) -> Token | None:
        return self.tokens.get(provider_name)

    def delete(self, provider_name: str) -> bool:
        return self.tokens.pop(provider_name, None) is not None

    def exists(self, provider_name: str) -> bool:
        return provider_name in self.tokens


@pytest.fixture(params=["file", "memory", "custom"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AbstractTokenStorage:
    if request.param == "file":
        return FileTokenStorage(tmp_path / "tokens")
    if request.param == "memory":
        return MemoryTokenStorage()
    return DictStorage()


# -- interface -------------------------------------------------------------------------------


def test_lock_handles_implement_the_interface(tmp_path: Path) -> None:
    file_lock = FileTokenStorage(tmp_path).create_lock(PROVIDER)
    memory_lock = MemoryTokenStorage().create_lock(PROVIDER)
    assert isinstance(file_lock, FileLock) and isinstance(file_lock, StorageLock)
    assert isinstance(memory_lock, LocalLock) and isinstance(memory_lock, StorageLock)
    assert file_lock.path == tmp_path / ".locks" / "corp%2Eexample.lock"


def test_owner_identity_while_held(storage: AbstractTokenStorage) -> None:
    handle = storage.create_lock(PROVIDER)
    assert handle.owner is None and not handle.held
    owner = handle.acquire(timeout=1)
    assert handle.owner == owner and handle.held
    assert f":{os.getpid()}:" in owner
    handle.release()
    assert handle.owner is None
    with storage.lock(PROVIDER) as first, storage.lock("other") as second:
        assert first.owner and second.owner and first.owner != second.owner


def test_release_without_holding_is_refused(storage: AbstractTokenStorage) -> None:
    handle = storage.create_lock(PROVIDER)
    with pytest.raises(TokenStorageError, match="does not hold it"):
        handle.release()


def test_same_handle_cannot_acquire_twice(storage: AbstractTokenStorage) -> None:
    handle = storage.create_lock(PROVIDER)
    handle.acquire(timeout=1)
    try:
        with pytest.raises(TokenStorageError, match="not reentrant"):
            handle.acquire(timeout=1)
    finally:
        handle.release()


def test_lock_is_not_reentrant(storage: AbstractTokenStorage) -> None:
    with storage.lock(PROVIDER):
        with pytest.raises(TokenStorageError, match="Timed out"):
            with storage.lock(PROVIDER, timeout=0.05):
                pass


def test_empty_provider_name_is_rejected_for_locks(storage: AbstractTokenStorage) -> None:
    with pytest.raises(TokenStorageError, match="non-empty"):
        storage.create_lock("")


def test_providers_have_independent_locks(storage: AbstractTokenStorage) -> None:
    with storage.lock("a") as a, storage.lock("b", timeout=0) as b:
        assert a.held and b.held  # holding "a" does not block "b"


def test_lock_is_released_after_an_exception(storage: AbstractTokenStorage) -> None:
    with pytest.raises(RuntimeError), storage.lock(PROVIDER):
        raise RuntimeError("boom")
    with storage.lock(PROVIDER, timeout=0):
        pass


# -- threads ---------------------------------------------------------------------------------


def test_mutual_exclusion_between_threads(storage: AbstractTokenStorage) -> None:
    state = {"counter": 0, "inside": 0, "max_inside": 0}
    rounds, workers = 50, 6

    def work() -> None:
        for _ in range(rounds):
            with storage.lock(PROVIDER, timeout=30):
                state["inside"] += 1
                state["max_inside"] = max(state["max_inside"], state["inside"])
                value = state["counter"]
                time.sleep(0)  # invite a race
                state["counter"] = value + 1
                state["inside"] -= 1

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state["counter"] == rounds * workers
    assert state["max_inside"] == 1


def test_separate_memory_storages_do_not_share_locks() -> None:
    first, second = MemoryTokenStorage(), MemoryTokenStorage()
    with first.lock(PROVIDER), second.lock(PROVIDER, timeout=0):
        pass


# -- timeouts --------------------------------------------------------------------------------


def test_timeout_error_names_provider_lock_file_and_holder(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path)
    with storage.lock(PROVIDER) as held:
        holder = held.owner
        started = time.monotonic()
        with pytest.raises(TokenStorageError) as info:
            with storage.lock(PROVIDER, timeout=0.2):
                pass
        elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 2
    message = str(info.value)
    lock_file = tmp_path / ".locks" / "corp%2Eexample.lock"
    assert "'corp.example'" in message and str(lock_file) in message
    assert holder is not None and f"held by {holder}" in message
    assert info.value.path == str(lock_file)
    assert info.value.provider == PROVIDER


def test_memory_timeout_error_names_provider() -> None:
    storage = MemoryTokenStorage()
    with storage.lock(PROVIDER):
        with pytest.raises(TokenStorageError, match="corp.example.*process-local"):
            with storage.lock(PROVIDER, timeout=0):
                pass


def test_zero_timeout_takes_a_free_lock(storage: AbstractTokenStorage) -> None:
    with storage.lock(PROVIDER, timeout=0) as handle:
        assert handle.held


def test_failed_acquisitions_leak_no_file_descriptor(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    with storage.lock(PROVIDER):
        for _ in range(20):
            with pytest.raises(TokenStorageError):
                storage.create_lock(PROVIDER).acquire(timeout=0)
    assert len(os.listdir("/proc/self/fd")) == before


# -- processes -------------------------------------------------------------------------------

_INCREMENT_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kstlib.auth.token import FileTokenStorage

    storage = FileTokenStorage(sys.argv[1])
    counter = Path(sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()  # start together
    for _ in range(int(sys.argv[3])):
        with storage.lock("corp.example", timeout=60):
            value = int(counter.read_text())
            time.sleep(0.0002)
            counter.write_text(str(value + 1))
    """
)


def test_mutual_exclusion_between_processes(tmp_path: Path) -> None:
    counter = tmp_path / "counter.txt"
    counter.write_text("0")
    rounds = 150
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _INCREMENT_CHILD,
                str(tmp_path / "tokens"),
                str(counter),
                str(rounds),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        assert child.wait(timeout=120) == 0
        child.stdin.close()
        child.stdout.close()
    assert int(counter.read_text()) == rounds * len(children)


_HOLD_CHILD = textwrap.dedent(
    """
    import sys, time
    from kstlib.auth.token import FileTokenStorage

    with FileTokenStorage(sys.argv[1]).lock("corp.example"):
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        storage = FileTokenStorage(tmp_path)
        with pytest.raises(TokenStorageError, match="Timed out"):
            storage.create_lock(PROVIDER).acquire(timeout=0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    with storage.lock(PROVIDER, timeout=5):
        pass


def test_file_and_sops_storages_share_provider_locks(tmp_path: Path) -> None:
    file_storage = FileTokenStorage(tmp_path)
    sops_storage = SOPSTokenStorage(tmp_path, age_recipients=["age1unused"])
    with file_storage.lock(PROVIDER):
        with pytest.raises(TokenStorageError, match="Timed out"):
            with sops_storage.lock(PROVIDER, timeout=0.05):
                pass


def test_lock_file_modes(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        with FileTokenStorage(tmp_path / "t").lock(PROVIDER) as handle:
            assert isinstance(handle, FileLock)
            assert stat.S_IMODE(os.stat(handle.path).st_mode) == 0o600
            assert stat.S_IMODE(os.stat(handle.path.parent).st_mode) == 0o700
    finally:
        os.umask(previous)


# -- asyncio ---------------------------------------------------------------------------------


def _hold_in_thread(
    storage: AbstractTokenStorage, seconds: float
) -> tuple[threading.Thread, threading.Event]:
    locked = threading.Event()

    def hold() -> None:
        with storage.lock(PROVIDER):
            locked.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    assert locked.wait(5)
    return thread, locked


def test_alock_waits_without_blocking_the_event_loop(storage: AbstractTokenStorage) -> None:
    async def scenario() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        thread, _ = _hold_in_thread(storage, 0.4)
        started = time.monotonic()
        async with storage.alock(PROVIDER, timeout=10) as handle:
            assert handle.held
            waited = time.monotonic() - started
        stop.set()
        await ticking
        await asyncio.to_thread(thread.join)
        assert waited >= 0.3
        return ticks

    # ~40 ticks when the loop runs freely; a blocked loop would manage one or two.
    assert asyncio.run(scenario()) >= 8


def test_alock_times_out(storage: AbstractTokenStorage) -> None:
    async def scenario() -> None:
        async with storage.alock(PROVIDER):
            with pytest.raises(TokenStorageError, match="Timed out"):
                async with storage.alock(PROVIDER, timeout=0.1):
                    pass

    asyncio.run(scenario())


def test_alock_serialises_tasks(storage: AbstractTokenStorage) -> None:
    async def scenario() -> list[str]:
        events: list[str] = []

        async def worker(name: str) -> None:
            async with storage.alock(PROVIDER):
                events.append(f"{name}-in")
                await asyncio.sleep(0.02)
                events.append(f"{name}-out")

        await asyncio.gather(*(worker(str(i)) for i in range(4)))
        return events

    events = asyncio.run(scenario())
    assert all(events[i][:-3] == events[i + 1][:-4] for i in range(0, len(events), 2))


def test_cancelled_alock_waiter_holds_nothing(storage: AbstractTokenStorage) -> None:
    async def scenario() -> None:
        async with storage.alock(PROVIDER):
            waiter = asyncio.create_task(storage.alock(PROVIDER, timeout=30).__aenter__())
            await asyncio.sleep(0.05)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with storage.alock(PROVIDER, timeout=0):
            pass

    asyncio.run(scenario())


def test_async_helpers_default_to_a_worker_thread() -> None:
    storage = DictStorage()
    threads: list[int] = []
    real_load = storage.load

    def spying_load(provider_name: str) -> Token | None:
        threads.append(threading.get_ident())
        return real_load(provider_name)

    storage.load = spying_load  # type: ignore[method-assign]

    async def scenario() -> None:
        await storage.asave(PROVIDER, Token(access_token="x"))
        token = await storage.aload(PROVIDER)
        assert token is not None and token.access_token == "x"
        assert await storage.adelete(PROVIDER) is True

    asyncio.run(scenario())
    assert threads and threads[0] != threading.get_ident()
