"""MemoryTokenStorage."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from kstlib.auth.models import Token
from kstlib.auth.token import AbstractTokenStorage, MemoryTokenStorage


def make_token(n: int = 1) -> Token:
    return Token(
        access_token=f"access-{n}",
        refresh_token=f"refresh-{n}",
        expires_at=datetime(2031, 1, 1, tzinfo=UTC),
        scope=["openid", "email"],
        issued_at=datetime(2030, 12, 31, tzinfo=UTC),
        metadata={"n": n, "nested": {"k": [1, 2]}},
    )


def test_round_trip_delete_exists_clear_all() -> None:
    storage = MemoryTokenStorage()
    assert isinstance(storage, AbstractTokenStorage)
    assert storage.load("p") is None and not storage.exists("p")
    storage.save("p", make_token(1))
    storage.save("q", make_token(2))
    assert storage.load("p") == make_token(1)
    assert storage.exists("p")
    assert storage.delete("p") is True
    assert storage.delete("p") is False
    assert storage.load("p") is None
    storage.clear_all()
    assert not storage.exists("q")


def test_saved_token_is_a_copy() -> None:
    storage = MemoryTokenStorage()
    token = make_token()
    storage.save("p", token)
    token.access_token = "mutated"
    token.scope.append("admin")
    token.metadata["nested"]["k"].append(3)
    stored = storage.load("p")
    assert stored == make_token()


def test_loaded_token_is_a_copy() -> None:
    storage = MemoryTokenStorage()
    storage.save("p", make_token())
    loaded = storage.load("p")
    assert loaded is not None
    loaded.scope.clear()
    loaded.metadata["n"] = 99
    assert storage.load("p") == make_token()


def test_backend_name_and_describe() -> None:
    storage = MemoryTokenStorage()
    storage.save("p", make_token())
    assert storage.backend_name == "memory"
    assert storage.describe() == "memory"
    assert "access-1" not in repr(storage)


def test_async_helpers_do_not_hop_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_thread(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("memory storage must not use a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    storage = MemoryTokenStorage()

    async def scenario() -> None:
        await storage.asave("p", make_token())
        assert await storage.aload("p") == make_token()
        assert await storage.adelete("p") is True
        assert await storage.aload("p") is None

    asyncio.run(scenario())


def test_sensitive_token_yields_token_or_none() -> None:
    storage = MemoryTokenStorage()
    with storage.sensitive_token("p") as token:
        assert token is None
    storage.save("p", make_token())
    with storage.sensitive_token("p") as token:
        assert token is not None and token.access_token == "access-1"


def test_concurrent_saves_and_loads_are_safe() -> None:
    storage = MemoryTokenStorage()
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for n in range(200):
                storage.save(f"p{index % 3}", make_token(n))
                storage.load(f"p{index % 3}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
