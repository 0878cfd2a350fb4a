"""Client-credentials storm: how many token requests reach the IdP when many callers of a
service (``flow: client_credentials``) need its token at the same moment (issue 13).

Counts, not times. For each scenario: nothing stored yet (a service's first call, the same
path as a stale token), the IdP's counters reset, then N callers make one API call each at
the same moment: 200 asyncio tasks on one session, 16 threads on one session, or 4
processes sharing one token file. The real test IdP counts ``grant_type=client_credentials``
requests. Run ``python -m bench.storm_cc child ...`` is the child process of a storm.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, Context, CountTable, Goal
from bench.storm import _outcome, _threads, collect, wait_ready

MINE = "kstlib (this project)"
TASKS = 200
THREADS = 16
PROCESSES = 4
TIMEOUT = 120.0
TITLE = (
    "client credentials: token requests at the IdP in a storm (200 tasks, 16 threads, 4 processes)"
)


def _scenarios() -> list[tuple[str, str, int]]:
    return [
        (f"{TASKS} asyncio tasks", "tasks", TASKS),
        (f"{THREADS} threads", "threads", THREADS),
        (f"{PROCESSES} processes", "processes", PROCESSES),
    ]


def _args(idp: Any) -> dict[str, Any]:
    from tests.idp_support import SERVICE

    return {
        "client_id": SERVICE.client_id,
        "client_secret": SERVICE.client_secret,
        "issuer": idp.issuer,
    }


def _provider(args: dict[str, Any], storage: Any) -> Any:
    from kstlib.auth._discovery import MetadataCache
    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.providers.oidc import OIDCProvider

    config = AuthProviderConfig(
        client_id=args["client_id"],
        client_secret=args["client_secret"],
        issuer=args["issuer"],
        flow="client_credentials",
        scopes=["api:read"],
        token_endpoint_auth_method="client_secret_basic",
    )
    return OIDCProvider("service", config, storage, metadata_cache=MetadataCache())


def _mine(mode: str, n: int, args: dict[str, Any], api: str, workdir: Path) -> Counter[str]:
    from kstlib.auth import AuthSession
    from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage

    if mode == "processes":
        FileTokenStorage(workdir)  # the directory, made once before the children race
        return _processes(n, args, api, workdir)
    provider = _provider(args, MemoryTokenStorage())
    provider.discover()
    if mode == "tasks":
        codes: Counter[str] = Counter()

        async def main() -> None:
            async with AuthSession(provider, timeout=TIMEOUT) as session:
                results = await asyncio.gather(
                    *(session.aget(api) for _ in range(n)), return_exceptions=True
                )
            codes.update(_outcome(r) for r in results)

        asyncio.run(main())
        provider.close()
        return codes
    with AuthSession(provider, timeout=TIMEOUT) as session:
        codes = _threads(n, lambda: session.get(api))
    provider.close()
    return codes


def _processes(n: int, args: dict[str, Any], api: str, workdir: Path) -> Counter[str]:
    go = workdir / "go"
    child = json.dumps({**args, "dir": str(workdir), "go": str(go)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.storm_cc", "child", child, api],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(n)
    ]
    wait_ready(procs, "kstlib client credentials")
    go.touch()
    return collect(procs)


def _child(args: dict[str, Any], api: str) -> None:
    from kstlib.auth import AuthSession
    from kstlib.auth.token import FileTokenStorage

    provider = _provider(args, FileTokenStorage(Path(args["dir"])))
    provider.discover()  # warm up before the start line
    session = AuthSession(provider, timeout=TIMEOUT)
    call: Callable[[], Any] = lambda: session.get(api)  # noqa: E731
    go = Path(args["go"])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    try:
        print(_outcome(call()), flush=True)
    except Exception as exc:
        print(type(exc).__name__, flush=True)
    session.close()


def _cell(stats: dict[str, int], codes: Counter[str], n: int) -> tuple[str, int]:
    total = stats.get("token:client_credentials", 0)
    ok = stats.get("token:client_credentials:200", 0)
    text = str(total) if total == ok else f"{total} ({total - ok} refused)"
    failed = {k: v for k, v in codes.items() if k != "200"}
    if failed:
        detail = ", ".join(f"{v}x {k}" for k, v in sorted(failed.items()))
        text += f"; {sum(failed.values())}/{n} calls failed ({detail})"
    return text, total


def run(ctx: Context) -> list[CountTable]:
    table = CountTable(
        title=TITLE,
        columns=[MINE],
        rows={},
        section="4b. client-credentials storm",
    )
    scenarios = _scenarios()
    goal = "exactly 1 client-credentials token request per scenario (single flight)"
    if ctx.smoke:
        table.rows = {label: {} for label, _, _ in scenarios}
        table.skipped = {MINE: "skipped in smoke (needs the local IdP)"}
        table.goals.append(Goal(goal, None, "issue 13"))
        return [table]
    idp = ctx.idp()
    api = idp.api_url("storm-cc")
    counts: dict[str, int] = {}
    for label, mode, n in scenarios:
        workdir = ctx.tmp / "storm-cc" / f"{mode}-{n}"
        workdir.mkdir(parents=True, mode=0o700, exist_ok=True)
        idp.reset_stats()
        codes = _mine(mode, n, _args(idp), api, workdir)
        time.sleep(0.05)  # the IdP counts a request when its response is ready
        text, total = _cell(idp.stats(), codes, n)
        table.rows[label] = {MINE: text}
        counts[label] = total
    table.goals.append(
        Goal(
            f"this project: {goal}",
            len(counts) == len(scenarios) and all(v == 1 for v in counts.values()),
            "issue 13",
        )
    )
    table.notes.append(
        "each cell: client_credentials requests at the IdP for a service with no token yet "
        "(a stale one takes the same path); calls failed = API calls that did not end in 200"
    )
    return [table]


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "child":
        _child(json.loads(sys.argv[2]), sys.argv[3])
