"""Cold start of a fleet: discovery and JWKS fetches reaching the IdP when 20 workers start.

Each worker is a new process (tests/redis_worker.py, mode ``metadata``) that needs the
discovery document and the JWKS, as its first ID token verification does. Without
``share_metadata`` every process fetches both; with ``storage.redis.share_metadata: true``
the first fetches once for the fleet and the others read its copy from Redis (re-validated).
Counts at the real test IdP; issue 15.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench.common import ROOT, Context, CountTable, Goal

WORKERS = 20
PLAIN = "kstlib, process-local cache"
SHARED = "kstlib, share_metadata (Redis)"


def _config(idp: Any) -> dict[str, Any]:
    from tests.idp_support import CONFIDENTIAL, REDIRECT_URI, SCOPES

    return {
        "client_id": CONFIDENTIAL.client_id,
        "client_secret": CONFIDENTIAL.client_secret,
        "issuer": idp.issuer,
        "redirect_uri": REDIRECT_URI,
        "scopes": list(SCOPES),
        "token_endpoint_auth_method": CONFIDENTIAL.token_endpoint_auth_method,
    }


def _start(ctx: Context, idp: Any, share: bool, n: int) -> dict[str, int]:
    workdir = ctx.tmp / "coldstart" / ("shared" if share else "plain")
    workdir.mkdir(parents=True, exist_ok=True)
    args = {"mode": "metadata", "url": ctx.redis().url, "prefix": f"cold:{share}:"}
    args |= {"name": "cold", "config": _config(idp), "dir": str(workdir), "share_metadata": share}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.redis_worker", json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(n)
    ]
    for proc in procs:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "ready":
                break
    idp.reset_stats()
    (workdir / "go1").touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"cold worker failed: {err[-500:]}")
    time.sleep(0.05)
    stats = idp.stats()
    return {"discovery": stats.get("discovery", 0), "jwks": stats.get("jwks", 0)}


def run(ctx: Context) -> list[CountTable]:
    table = CountTable(
        title=f"Cold start: discovery and JWKS fetches at the IdP when {WORKERS} workers start",
        columns=[PLAIN, SHARED],
        rows={},
        section="4. refresh storm",
    )
    goal_text = "share_metadata: 1 discovery fetch and 1 JWKS fetch for the whole fleet"
    if ctx.smoke:
        table.rows = {"discovery fetches": {}, "JWKS fetches": {}}
        table.skipped = {"all": "skipped in smoke (needs the local IdP and a redis-server)"}
        table.goals.append(Goal(goal_text, None, "issue 15"))
        return [table]
    idp = ctx.idp()
    plain = _start(ctx, idp, False, WORKERS)
    shared = _start(ctx, idp, True, WORKERS)
    table.rows = {
        "discovery fetches": {PLAIN: plain["discovery"], SHARED: shared["discovery"]},
        "JWKS fetches": {PLAIN: plain["jwks"], SHARED: shared["jwks"]},
    }
    table.goals.append(
        Goal(goal_text, shared["discovery"] == 1 and shared["jwks"] == 1, "issue 15")
    )
    table.notes.append(
        "each worker is a new process that needs discovery and the JWKS (as its first ID "
        "token verification does); with share_metadata the first claims the fetch in Redis "
        "(SET NX), the others wait for its copy and re-validate it (issuer, https rule, keys)"
    )
    return [table]
