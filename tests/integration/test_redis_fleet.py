"""The fleet around Redis: shared discovery/JWKS (share_metadata) and Sentinel failover.

Real servers: the test IdP, redis-server, and a Sentinel cluster (primary, replica,
3 sentinels), all session fixtures. Workers are processes (tests/redis_worker.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kstlib.auth import RedisTokenStorage
from kstlib.auth._discovery import MetadataCache
from kstlib.auth.redaction import fingerprint
from kstlib.auth.token._redis_metadata import RedisMetadataStore
from tests.idp_support import IdP
from tests.integration.test_redis_storage import (
    config_dict,
    logged_in_stale,
    results,
    spawn,
    wait_line,
)
from tests.redis_support import RedisServer, SentinelCluster


@pytest.fixture
def prefix() -> str:
    return f"f{uuid.uuid4().hex[:10]}:"


def test_20_cold_workers_fetch_discovery_and_jwks_once(
    idp: IdP, redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    args = {"mode": "metadata", "url": redis_server.url, "prefix": prefix, "name": "cold"}
    args |= {"config": config_dict(idp), "dir": str(tmp_path), "share_metadata": True}
    workers = [spawn(args) for _ in range(20)]
    try:
        for worker in workers:
            wait_line(worker, "ready")
        idp.reset_stats()
        (tmp_path / "go1").touch()
        lines = [results(worker)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    time.sleep(0.05)
    stats = idp.stats()
    assert stats.get("discovery", 0) == 1, stats
    assert stats.get("jwks", 0) == 1, stats
    assert all(line["issuer"] == idp.issuer and line["keys"] >= 1 for line in lines)


def test_a_shared_entry_is_revalidated_when_read_back(
    idp: IdP, redis_server: RedisServer, prefix: str, client: Any
) -> None:
    """A discovery document planted in Redis naming another issuer is refused and fetched."""
    storage = RedisTokenStorage(redis_server.url, prefix=prefix, share_metadata=True)
    store = storage.metadata_store()
    assert isinstance(store, RedisMetadataStore)
    forged = {"url": f"{idp.issuer}/.well-known/openid-configuration"}
    forged["document"] = {"issuer": "https://evil.example", "jwks_uri": "https://evil.example/k"}
    envelope = {"expires_at": time.time() + 600, "value": json.dumps(forged)}
    store.put("d:" + idp.issuer, json.dumps(envelope).encode(), 600)
    idp.reset_stats()
    cache = MetadataCache(shared=store)
    document = cache.discovery(client, idp.issuer)
    assert document["issuer"] == idp.issuer
    assert idp.stats().get("discovery", 0) == 1  # refused, fetched, shared again
    again = MetadataCache(shared=store).discovery(client, idp.issuer)
    assert again["issuer"] == idp.issuer and idp.stats().get("discovery", 0) == 1
    storage.close()


def test_sentinel_failover_during_a_refresh_storm(
    idp: IdP, sentinel_cluster: SentinelCluster, prefix: str, tmp_path: Path
) -> None:
    """The primary is SIGKILLed while a worker holds the lease and its refresh is in flight
    (a slow IdP); Sentinel promotes the replica; the workers end on one valid token, with at
    most one extra refresh, nothing rejected, no crash."""
    cluster = sentinel_cluster
    assert cluster.primary is not None and cluster.replica is not None
    # with sentinels, the URL carries only the password and the database
    common = {"sentinels": cluster.addresses, "service_name": cluster.service_name}
    common |= {"url": f"redis://:{cluster.replica.password}@/0", "prefix": prefix}

    def open_storage() -> RedisTokenStorage:
        return RedisTokenStorage(
            common["url"],
            prefix=prefix,
            sentinels=common["sentinels"],
            service_name=common["service_name"],
        )

    storage = open_storage()
    logged_in_stale(idp, storage)
    storage.close()
    args = {"mode": "storm", "name": "fleet", "config": config_dict(idp), "n": 20}
    args |= {"api": idp.api_url("failover"), "dir": str(tmp_path), "rounds": 2, **common}
    args |= {"lock_ttl": 5.0, "timeout": 2.0}
    old_port = cluster.primary_port()
    assert cluster.primary.port == old_port
    workers = [spawn(args) for _ in range(4)]
    idp.configure(token_delay_ms=2500)
    try:
        for worker in workers:
            wait_line(worker, "ready")
        idp.reset_stats()
        (tmp_path / "go1").touch()
        probe = cluster.primary.client(socket_timeout=1)
        deadline = time.monotonic() + 30
        while probe.get(f"{prefix}lock:fleet") is None:  # a worker holds the lease
            assert time.monotonic() < deadline
            time.sleep(0.01)
        probe.close()
        time.sleep(0.3)  # its refresh is at the (slow) IdP now
        cluster.primary.kill()
        new_port = cluster.wait_failover(old_port)
        assert new_port == cluster.replica.port
        time.sleep(3.0)  # round 1 ends
        (tmp_path / "go2").touch()
        outputs = [results(worker) for worker in workers]
    finally:
        idp.configure(token_delay_ms=0)
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    time.sleep(0.05)
    stats = idp.stats()
    assert 1 <= stats.get("token:refresh_token", 0) <= 2, stats
    assert stats.get("token:refresh_token", 0) == stats.get("token:refresh_token:200", 0)
    first = sum((Counter(out[0]["codes"]) for out in outputs), Counter())
    assert set(first) <= {"200", "TokenStorageError"}, first
    second = sum((Counter(out[1]["codes"]) for out in outputs), Counter())
    assert second == Counter({"200": 80}), second
    after = open_storage()
    stored = after.load("fleet")
    after.close()
    assert stored is not None and not stored.is_stale(60)
    assert {out[1]["token"] for out in outputs} == {fingerprint(stored.access_token)}
