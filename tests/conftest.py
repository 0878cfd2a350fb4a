"""Shared fixtures. Servers are started once per session (fixture scope), never per test."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest

from tests import (
    forked,
    hypothesis_support,  # noqa: F401 - registers and loads the Hypothesis profile
    loopback_http,
)
from tests.idp_support import IdP, start_idp
from tests.jwks_server import JWKSServer, running_server
from tests.redis_support import RedisServer, SentinelCluster  # issue 15
from tests.sops_support import AgeIdentity, ensure_venv_bin_on_path, make_age_identity

ensure_venv_bin_on_path()

pytest_plugins = ("pytester",)  # tests/unit/test_resource_leaks.py runs pytest on leaky tests


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core (at most 8). Many tests wait - on the IdP, a device
    grant's polling interval, a subprocess, a deadline - so a second worker per core fills
    that time: 2,002 tests took 9 min 33 s with 4 workers where 2 workers took 14 min 30 s
    on the same loaded 2-core machine. PYTEST_XDIST_AUTO_NUM_WORKERS still overrides it."""
    return min(8, 2 * (os.cpu_count() or 1))


#: Files holding the longest tests (10-17 s each: a Sphinx build, the docs' examples, real CLI
#: journeys, the bench smoke and report, the fleet failover, the checker fuzzers). Collected
#: first, they run early: pytest-xdist's worksteal hands each worker a contiguous part of the
#: list, and idle workers take the far end of the longest queue, never its head. In
#: alphabetical order one of them started last and kept a worker busy for 10-15 s at the end
#: of a run while the others sat idle.
_LONGEST_FIRST: Final = (
    "tests/integration/test_docs_build.py",
    "tests/integration/test_docs_examples.py",
    "tests/security/test_no_secret_in_output.py",
    "tests/unit/test_bench_smoke.py",
    "tests/unit/test_bench_report.py",
    "tests/integration/test_redis_fleet.py",
    "tests/security/test_checker_hostile.py",
    "tests/integration/test_demo.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(_LONGEST_FIRST)}
    last = len(rank)
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], last))  # stable


@pytest.fixture(scope="session")
def age_identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgeIdentity]:
    """A real age key pair; SOPS_AGE_KEY_FILE points at it for the whole session."""
    mp = pytest.MonkeyPatch()
    ident = make_age_identity(tmp_path_factory.mktemp("age"))
    mp.setenv("SOPS_AGE_KEY_FILE", str(ident.key_file))
    yield ident
    mp.undo()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection allocated (modules, strategies, test items): the per-test
    ``gc.collect()`` below then scans only what the tests allocate, in well under a
    millisecond instead of tens of milliseconds per test."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def _sweep_the_frozen_heap() -> Iterator[None]:
    """At the end of the worker's session (torn down last, in the teardown of its last test),
    collect everything :func:`_collect_garbage_after_test` froze.

    An object that outlived its test and became garbage later (in a reference cycle) is
    finalised here: an unclosed socket or file among them fails that last teardown
    (ResourceWarning is an error), so no leak goes unseen because it was frozen.
    """
    yield
    leaked: list[str] = []
    default_hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: leaked.append(
        f"{unraisable.exc_type.__name__}: {unraisable.exc_value}"
    )
    try:
        gc.unfreeze()
        gc.collect()
    finally:
        sys.unraisablehook = default_hook
    if leaked:
        pytest.fail(
            "finalised when the session's frozen objects were collected (they outlived the "
            "test that made them, then were dropped unclosed): " + "; ".join(leaked),
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _collect_garbage_after_test() -> Iterator[None]:
    """Run the garbage collector at the end of every test (autouse: set up first, torn down last).

    An unclosed socket, file or subprocess only warns (ResourceWarning, an error in this suite:
    pyproject.toml filterwarnings) when it is finalised. Objects caught in a reference cycle
    are finalised whenever the collector happens to run - possibly in a much later test, which
    then fails or, worse, records the warning as its own. Collecting here makes pytest's
    unraisable-exception check (which runs right after teardown) blame the test that leaked.

    What survives the collection is then frozen (``gc.freeze``): the next test's collection
    scans only what that test allocated. Without it every collection scanned all the modules,
    caches and fixtures the worker had accumulated since collection (20,000-75,000 objects,
    10-50 ms per test, 24 s of CPU per run); :func:`_sweep_the_frozen_heap` collects the frozen
    objects once at the end.
    """
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _forked_workers_closed() -> Iterator[None]:
    """Every worker a test forked (tests/forked.py) is killed and reaped when the test ends,
    passed or failed (torn down before the garbage collection above)."""
    yield
    forked.close_all()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's real config or token files."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "etc-xdg"))
    monkeypatch.delenv("KSTLIB_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


# --- test OpenID Provider (panva/oidc-provider, see tests/idp_support.py) ---


@pytest.fixture(scope="session")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    """A real oidc-provider on 127.0.0.1 (one per session / xdist worker), stopped at the end."""
    server = start_idp(tmp_path_factory.mktemp("idp"))
    try:
        yield server
    finally:
        server.close()


# --- issue 14: a second oidc-provider in FAPI 2.0 mode (PAR required, aud = issuer) ---


@pytest.fixture(scope="session")
def fapi_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    """oidc-provider with ``features.fapi`` profile 2.0 (started once per session/worker)."""
    server = start_idp(tmp_path_factory.mktemp("fapi-idp"), fapi="2.0")
    try:
        yield server
    finally:
        server.close()


# --- a tiny real HTTP server for discovery/JWKS documents (see tests/jwks_server.py) ---


@pytest.fixture(scope="session")
def _jwks_server() -> Iterator[JWKSServer]:
    with running_server() as srv:
        yield srv


@pytest.fixture
def server(_jwks_server: JWKSServer) -> JWKSServer:
    """The session's JWKS/discovery server, reset (routes, counters) for this test."""
    _jwks_server.reset()
    return _jwks_server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with loopback_http.client(timeout=5.0) as c:
        yield c


# --- issue 15: real redis-server / Redis Sentinel (see tests/redis_support.py) ---


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free 127.0.0.1 port (password set), stopped at the end."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sentinel_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    """A primary, a replica and 3 sentinels (real redis-server processes), stopped at the end."""
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


# --- end issue 15 ---
