"""RedisTokenStorage against a real redis-server: storage, lease lock, fencing, outage,
no round trip per request, and the fleet (8 processes x 50 async calls -> 1 refresh).

The servers are session fixtures (tests/conftest.py, tests/redis_support.py); each test
uses its own key prefix. The worker processes are tests/redis_worker.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kstlib.auth import AuthSession, RedisTokenStorage, Token
from kstlib.auth.errors import ConfigurationError, TokenStorageError
from kstlib.auth.redaction import fingerprint
from tests import forked, redis_worker
from tests.flows import login, make_oidc
from tests.idp_support import CONFIDENTIAL, IdP
from tests.redis_support import PASSWORD, RedisServer, make_tls_files

ROOT = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT = 120.0


def token(access: str = "at-1", refresh: str = "rt-1", *, hours: float = 1.0) -> Token:
    return Token(
        access_token=access,
        refresh_token=refresh,
        expires_at=datetime.now(UTC) + timedelta(hours=hours),
    )


def stale(tok: Token) -> Token:
    """``tok`` 5 s from expiry, issued an hour ago (stale for the default skew)."""
    expires_at = datetime.now(UTC) + timedelta(seconds=5)
    return replace(tok, expires_at=expires_at, issued_at=expires_at - timedelta(seconds=3600))


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def store(redis_server: RedisServer, prefix: str) -> Any:
    storage = RedisTokenStorage(redis_server.url, prefix=prefix, lock_ttl=2.0)
    yield storage
    storage.close()


def config_dict(idp: IdP) -> dict[str, Any]:
    from tests.idp_support import REDIRECT_URI, SCOPES

    return {
        "client_id": CONFIDENTIAL.client_id,
        "client_secret": CONFIDENTIAL.client_secret,
        "issuer": idp.issuer,
        "redirect_uri": REDIRECT_URI,
        "scopes": list(SCOPES),
        "token_endpoint_auth_method": CONFIDENTIAL.token_endpoint_auth_method,
    }


def spawn(args: dict[str, Any]) -> forked.Forked:
    """A worker process (tests/redis_worker.py), forked with kstlib imported (tests/forked.py)."""
    return forked.start(redis_worker.main, json.dumps(args), cwd=ROOT)


def wait_line(proc: forked.Forked, expected: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == expected:
            return
    _, err = proc.communicate(timeout=30)
    raise AssertionError(f"worker did not print {expected!r}: {err[-1500:]}")


def results(proc: forked.Forked) -> list[dict[str, Any]]:
    out, err = proc.communicate(timeout=WORKER_TIMEOUT)
    assert proc.returncode == 0, err[-2000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def logged_in_stale(idp: IdP, store: RedisTokenStorage, name: str = "fleet") -> Token:
    provider = make_oidc(idp, CONFIDENTIAL, name=name)
    tok = login(provider)
    provider.close()
    store.save(name, stale(tok))
    return tok


# --------------------------------------------------------------------------- the storage


def test_save_load_delete_exists_sync_and_async(store: RedisTokenStorage) -> None:
    assert store.load("p") is None and not store.exists("p")
    store.save("p", token())
    loaded = store.load("p")
    assert loaded is not None and loaded.access_token == "at-1" and store.exists("p")

    async def main() -> tuple[Token | None, bool, Token | None]:
        await store.asave("p", token("at-2"))
        got = await store.aload("p")
        deleted = await store.adelete("p")
        return got, deleted, await store.aload("p")

    got, deleted, after = asyncio.run(main())
    assert got is not None and got.access_token == "at-2"
    assert deleted and after is None
    assert store.delete("p") is False


def test_1000_concurrent_async_loads_wait_for_a_connection(store: RedisTokenStorage) -> None:
    """Regression: redis.asyncio's pool refused the 101st concurrent command
    (MaxConnectionsError); commands beyond the pool now wait their turn."""
    store.save("p", token())

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(store.aload("p") for _ in range(1000)), return_exceptions=True
        )

    loaded = asyncio.run(main())
    assert Counter(type(item).__name__ for item in loaded) == Counter({"Token": 1000})


def test_two_prefixes_do_not_see_each_other(redis_server: RedisServer, prefix: str) -> None:
    a = RedisTokenStorage(redis_server.url, prefix=prefix + "a:")
    b = RedisTokenStorage(redis_server.url, prefix=prefix + "b:")
    a.save("p", token())
    assert b.load("p") is None
    a.close()
    b.close()


def test_an_invalid_document_in_redis_is_refused_with_the_fix(
    store: RedisTokenStorage, redis_server: RedisServer, prefix: str
) -> None:
    client = redis_server.client()
    client.set(f"{prefix}token:p", b"not json")
    client.close()
    with pytest.raises(TokenStorageError) as caught:
        store.load("p")
    assert "redis-cli DEL" in str(caught.value) and PASSWORD not in str(caught.value)


def test_encryption_at_rest_with_a_key_from_a_secret_reference(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("KSTLIB_TEST_REDIS_KEY", key)
    storage = RedisTokenStorage(
        redis_server.url, prefix=prefix, encryption_key="env://KSTLIB_TEST_REDIS_KEY"
    )
    storage.save("p", token("secret-access", "secret-refresh"))
    client = redis_server.client()
    raw = client.get(f"{prefix}token:p")
    assert raw is not None and b"secret-access" not in raw and b"secret-refresh" not in raw
    loaded = storage.load("p")
    assert loaded is not None and loaded.refresh_token == "secret-refresh"
    # another key cannot read it; no key says so; a tampered value is refused
    monkeypatch.setenv("KSTLIB_TEST_REDIS_KEY", base64.b64encode(os.urandom(32)).decode())
    other = RedisTokenStorage(
        redis_server.url, prefix=prefix, encryption_key="env://KSTLIB_TEST_REDIS_KEY"
    )
    with pytest.raises(TokenStorageError, match="cannot be decrypted"):
        other.load("p")
    plain = RedisTokenStorage(redis_server.url, prefix=prefix)
    with pytest.raises(TokenStorageError, match="encryption_key"):
        plain.load("p")
    client.set(f"{prefix}token:p", raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(TokenStorageError, match="cannot be decrypted"):
        storage.load("p")
    client.close()
    for each in (storage, other, plain):
        each.close()


def test_rediss_tls_with_a_ca_bundle(tmp_path: Path, prefix: str) -> None:
    """A real TLS redis-server whose certificate a private CA signed: trusted with
    ssl_ca_bundle, refused (certificate check) without it."""
    tls = make_tls_files(tmp_path / "tls")
    server = RedisServer(tmp_path / "redis-tls", tls=tls).start()
    try:
        assert server.url.startswith("rediss://")
        storage = RedisTokenStorage(server.url, prefix=prefix, ssl_ca_bundle=tls / "ca.pem")
        storage.save("p", token("over-tls"))
        loaded = storage.load("p")
        assert loaded is not None and loaded.access_token == "over-tls"
        got = asyncio.run(storage.aload("p"))
        assert got is not None and got.access_token == "over-tls"
        storage.close()
        untrusting = RedisTokenStorage(server.url, prefix=prefix, timeout=2.0)
        with pytest.raises(TokenStorageError) as caught:
            untrusting.load("p")
        assert "certificate" in str(caught.value).lower() and PASSWORD not in str(caught.value)
        untrusting.close()
    finally:
        server.stop()


def test_a_short_encryption_key_is_a_configuration_error(redis_server: RedisServer) -> None:
    with pytest.raises(ConfigurationError, match="16, 24 or 32 byte"):
        RedisTokenStorage(redis_server.url, encryption_key="c2hvcnQ=")


def test_config_token_storage_redis_with_the_url_in_a_secret_reference(
    idp: IdP, redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kstlib.auth.config import get_token_storage_for_provider

    monkeypatch.setenv("KSTLIB_TEST_REDIS_URL", redis_server.url)
    config = {
        "auth": {
            "token_storage": "redis",
            "storage": {
                "redis": {"url": "env://KSTLIB_TEST_REDIS_URL", "prefix": prefix, "lock_ttl": 5}
            },
            "providers": {"corp": {"type": "oidc", **config_dict(idp)}},
        }
    }
    storage = get_token_storage_for_provider("corp", config=config)
    assert isinstance(storage, RedisTokenStorage)
    assert storage.prefix == prefix and storage.lock_ttl == 5.0
    assert PASSWORD not in repr(storage) and PASSWORD not in storage.describe()
    assert "[REDACTED]" in repr(storage)
    storage.save("corp", token())
    assert storage.load("corp") is not None
    storage.close()


def test_configuration_mistakes_name_the_fix() -> None:
    with pytest.raises(ConfigurationError, match=r"storage\.redis\.url"):
        RedisTokenStorage()
    with pytest.raises(ConfigurationError, match="service_name"):
        RedisTokenStorage(sentinels=["127.0.0.1:26379"])
    with pytest.raises(ConfigurationError, match="host:port"):
        RedisTokenStorage(sentinels=["nowhere"], service_name="x")
    with pytest.raises(ConfigurationError) as caught:
        RedisTokenStorage("http://user:hunter2-pw@host/0")
    assert "hunter2-pw" not in str(caught.value)


def test_importable_from_the_packages() -> None:
    import kstlib.auth
    import kstlib.auth.token

    assert kstlib.auth.RedisTokenStorage is kstlib.auth.token.RedisTokenStorage
    assert "redis" in kstlib.auth.token.registered_token_storages()


# --------------------------------------------------------------------------- the lease


def test_the_lease_excludes_a_second_holder_and_only_its_owner_releases_it(
    store: RedisTokenStorage, redis_server: RedisServer, prefix: str
) -> None:
    first = store.create_lock("p")
    owner = first.acquire(1.0)
    client = redis_server.client()
    assert client.get(f"{prefix}lock:p").decode() == owner
    second = store.create_lock("p")
    with pytest.raises(TokenStorageError, match="Timed out"):
        second.acquire(0.2)
    # someone else's lease is not deleted by a release of an expired one
    client.set(f"{prefix}lock:p", "someone-else", px=5000)
    first.release()
    assert client.get(f"{prefix}lock:p") == b"someone-else"
    client.delete(f"{prefix}lock:p")
    client.close()


def test_a_slow_holder_keeps_its_lease_past_the_ttl(
    store: RedisTokenStorage, redis_server: RedisServer, prefix: str
) -> None:
    with store.lock("p") as handle:
        time.sleep(store.lock_ttl * 1.6)  # the extender renews it every ttl/3
        client = redis_server.client()
        assert client.get(f"{prefix}lock:p").decode() == handle.owner
        other = store.create_lock("p")
        with pytest.raises(TokenStorageError):
            other.acquire(0.1)
        client.close()
        store.save("p", token("kept"))  # still the owner: the fenced save goes through
    loaded = store.load("p")
    assert loaded is not None and loaded.access_token == "kept"


def test_a_slow_async_holder_keeps_its_lease_and_its_fenced_asave_lands(
    store: RedisTokenStorage,
) -> None:
    async def main() -> bool:
        async with store.alock("p"):
            await asyncio.sleep(store.lock_ttl * 1.6)  # the loop stays free meanwhile
            other = store.create_lock("p")
            try:
                await other.aacquire(0.1)
                taken = True
            except TokenStorageError:
                taken = False
            await store.asave("p", token("async-kept"))
        return taken

    assert asyncio.run(main()) is False
    loaded = store.load("p")
    assert loaded is not None and loaded.access_token == "async-kept"


def test_async_lease_twin(store: RedisTokenStorage) -> None:
    async def main() -> list[str]:
        order: list[str] = []

        async def worker(tag: str) -> None:
            async with store.alock("p", timeout=5.0):
                order.append(f"{tag}-in")
                await asyncio.sleep(0.05)
                order.append(f"{tag}-out")

        await asyncio.gather(worker("a"), worker("b"))
        return order

    order = asyncio.run(main())
    assert order in (["a-in", "a-out", "b-in", "b-out"], ["b-in", "b-out", "a-in", "a-out"])


def test_fencing_a_paused_holder_cannot_overwrite_a_newer_token(
    redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    """A worker paused (SIGSTOP) past its lease's TTL: another takes the lease and saves;
    when the first resumes, its save is refused and the newer token stays."""
    args = {"mode": "stale-save", "url": redis_server.url, "prefix": prefix, "name": "p"}
    args |= {"lock_ttl": 1.0, "dir": str(tmp_path)}
    worker = spawn(args)
    try:
        wait_line(worker, "held")
        worker.send_signal(signal.SIGSTOP)
        other = RedisTokenStorage(redis_server.url, prefix=prefix, lock_ttl=1.0)
        with other.lock("p", timeout=10.0):  # waits until the paused worker's lease expires
            other.save("p", token("newer"))
        (tmp_path / "go1").touch()
        worker.send_signal(signal.SIGCONT)
        out, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGCONT)
            worker.kill()
            worker.communicate()
    assert out.strip().splitlines()[-1] == "TokenStorageError", err[-1500:]
    loaded = other.load("p")
    assert loaded is not None and loaded.access_token == "newer"
    other.close()


# --------------------------------------------------------------------------- outage


def test_redis_down_is_a_clear_error_then_the_next_call_works(tmp_path: Path, prefix: str) -> None:
    server = RedisServer(tmp_path / "redis").start()
    storage = RedisTokenStorage(server.url, prefix=prefix, timeout=1.0)
    try:
        storage.save("p", token("before"))
        handle = storage.create_lock("p")
        handle.acquire(1.0)
        server.stop()
        handle.release()  # cannot reach Redis: logged, not raised (the lease has a TTL)
        assert not handle.held
        for call in (lambda: storage.load("p"), lambda: storage.save("p", token("lost?"))):
            with pytest.raises(TokenStorageError) as caught:
                call()
            message = str(caught.value)
            assert f"127.0.0.1:{server.port}" in message and "[REDACTED]" in message
            assert PASSWORD not in message and PASSWORD not in repr(caught.value)
            assert caught.value.path is not None and PASSWORD not in caught.value.path
        with pytest.raises(TokenStorageError) as caught_async:
            asyncio.run(storage.aload("p"))
        assert PASSWORD not in str(caught_async.value)
        # Redis comes back (same port, empty: nothing persisted); the next call works
        server.start()
        storage.save("p", token("after"))
        loaded = storage.load("p")
        assert loaded is not None and loaded.access_token == "after"
    finally:
        storage.close()
        server.stop()


def test_redis_down_during_a_session_then_back(idp: IdP, tmp_path: Path, prefix: str) -> None:
    """Through AuthSession: a fresh cached header needs no Redis; a stale token while Redis
    is down is a TokenStorageError (URL, no password); Redis back (its data kept on disk),
    the next call refreshes once and works."""
    server = RedisServer(tmp_path / "redis", extra=("appendonly yes", "appendfsync always"))
    server.start()
    storage = RedisTokenStorage(server.url, prefix=prefix, timeout=1.0)
    provider = make_oidc(idp, CONFIDENTIAL, name="outage", storage=storage)
    api = idp.api_url("outage")
    try:
        tok = login(provider)
        with AuthSession(provider) as session:
            assert session.get(api).status_code == 200
            server.stop()
            assert session.get(api).status_code == 200  # the cached header: no Redis needed
        server.start()
        storage.save("outage", stale(tok))
        server.stop()
        idp.reset_stats()
        with AuthSession(provider) as session:
            with pytest.raises(TokenStorageError) as caught:
                session.get(api)
            message = str(caught.value)
            assert f"127.0.0.1:{server.port}" in message and PASSWORD not in message
            assert idp.stats().get("token:refresh_token", 0) == 0
            server.start()  # the same data (append-only file)
            assert session.get(api).status_code == 200
        assert idp.stats().get("token:refresh_token", 0) == 1
        stored = storage.load("outage")
        assert stored is not None and not stored.is_stale(60)
    finally:
        provider.close()
        storage.close()
        server.stop()


def test_a_wrong_password_is_reported_without_it(redis_server: RedisServer, prefix: str) -> None:
    url = redis_server.url.replace(PASSWORD, "wrong-pass-Qx9")
    storage = RedisTokenStorage(url, prefix=prefix)
    with pytest.raises(TokenStorageError) as caught:
        storage.load("p")
    assert "wrong-pass-Qx9" not in str(caught.value)
    storage.close()


# --------------------------------------------------------------------------- per request


def _commands(redis_server: RedisServer) -> Counter[str]:
    client = redis_server.client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    # this probe's own connection handshake and INFO are not the session's
    own = ("cmdstat_info", "cmdstat_hello", "cmdstat_auth", "cmdstat_client|setinfo")
    return Counter({name: int(value["calls"]) for name, value in stats.items() if name not in own})


def test_no_redis_round_trip_per_api_request(
    idp: IdP, redis_server: RedisServer, store: RedisTokenStorage
) -> None:
    provider = make_oidc(idp, CONFIDENTIAL, name="perreq", storage=store)
    login(provider)
    api = idp.api_url("perreq")
    with AuthSession(provider) as session:
        assert session.get(api).status_code == 200  # the first call loads the token
        before = _commands(redis_server)
        for _ in range(100):
            assert session.get(api).status_code == 200

        async def many() -> list[int]:
            responses = await asyncio.gather(*(session.aget(api) for _ in range(50)))
            return [r.status_code for r in responses]

        codes = asyncio.run(many())
        after = _commands(redis_server)
    provider.close()
    assert codes == [200] * 50
    # the header cached by ProviderAuth serves both clients until the token turns stale
    delta = after - before
    assert sum(delta.values()) == 0, delta


# --------------------------------------------------------------------------- the fleet


def test_8_processes_x_50_async_calls_with_a_stale_token_send_one_refresh(
    idp: IdP, redis_server: RedisServer, store: RedisTokenStorage, prefix: str, tmp_path: Path
) -> None:
    logged_in_stale(idp, store)
    args = {"mode": "storm", "url": redis_server.url, "prefix": prefix, "name": "fleet"}
    args |= {"config": config_dict(idp), "api": idp.api_url("fleet"), "n": 50}
    args |= {"dir": str(tmp_path)}
    workers = [spawn(args) for _ in range(8)]
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
    assert stats.get("token:refresh_token", 0) == 1, stats
    assert stats.get("token:refresh_token:200", 0) == 1
    codes = sum((Counter(line["codes"]) for line in lines), Counter())
    assert codes == Counter({"200": 400})
    stored = store.load("fleet")
    assert stored is not None
    assert {line["token"] for line in lines} == {fingerprint(stored.access_token)}


def test_a_lease_holder_killed_with_sigkill_another_worker_refreshes(
    idp: IdP, redis_server: RedisServer, prefix: str, tmp_path: Path
) -> None:
    storage = RedisTokenStorage(redis_server.url, prefix=prefix, lock_ttl=1.0)
    logged_in_stale(idp, storage)
    before = storage.load("fleet")
    holder = spawn(
        {"mode": "hold", "url": redis_server.url, "prefix": prefix, "name": "fleet"}
        | {"lock_ttl": 1.0}
    )
    try:
        wait_line(holder, "held")
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=10)
        args = {"mode": "storm", "url": redis_server.url, "prefix": prefix, "name": "fleet"}
        args |= {"config": config_dict(idp), "api": idp.api_url("fleet"), "n": 10}
        args |= {"dir": str(tmp_path), "lock_ttl": 1.0}
        workers = [spawn(args) for _ in range(3)]
        for worker in workers:
            wait_line(worker, "ready")
        idp.reset_stats()
        (tmp_path / "go1").touch()
        lines = [results(worker)[0] for worker in workers]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    time.sleep(0.05)
    stats = idp.stats()
    assert stats.get("token:refresh_token", 0) == 1, stats
    assert sum((Counter(line["codes"]) for line in lines), Counter()) == Counter({"200": 30})
    after = storage.load("fleet")
    assert after is not None and before is not None
    assert after.access_token != before.access_token and not after.is_stale(60)
    assert {line["token"] for line in lines} == {fingerprint(after.access_token)}
    storage.close()
