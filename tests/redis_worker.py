"""One worker process of the fleet tests: :func:`main` with its arguments as JSON, in a process
forked with kstlib imported (tests/forked.py), or ``python -m tests.redis_worker '<json>'``.

Modes:

* ``storm``: an OIDC provider on a RedisTokenStorage; prints ``ready`` (after discovery,
  unless ``cold``), waits for each ``go<N>`` file of ``rounds`` and makes ``n`` concurrent
  async API calls through one AuthSession; prints one JSON line per round:
  ``{"round": r, "codes": {...}, "token": <fingerprint of the token it ends with>}``.
* ``hold``: takes the provider's lease, prints ``held``, then sleeps (to be SIGKILLed).
* ``stale-save``: takes the lease, prints ``held``, waits for ``go1``, then saves a token
  it made up and prints ``saved`` or the error's class name.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def storage(args: dict[str, Any]) -> Any:
    from kstlib.auth.token import RedisTokenStorage

    return RedisTokenStorage(
        args.get("url"),
        prefix=args["prefix"],
        lock_ttl=args.get("lock_ttl", 30.0),
        sentinels=args.get("sentinels", ()),
        service_name=args.get("service_name"),
        share_metadata=args.get("share_metadata", False),
        timeout=args.get("timeout", 5.0),
    )


def wait_for(path: Path, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:  # the test is gone: do not wait forever
            raise SystemExit(f"no start signal ({path}) within {seconds:.0f} s")
        time.sleep(0.002)


def outcome(result: Any) -> str:
    status = getattr(result, "status_code", None)
    return str(status) if status is not None else type(result).__name__


def storm(args: dict[str, Any]) -> None:
    from kstlib.auth import AuthSession
    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.providers.oidc import OIDCProvider
    from kstlib.auth.redaction import fingerprint

    store = storage(args)
    config = AuthProviderConfig(**args["config"])
    provider = OIDCProvider(args["name"], config, store, metadata_cache=None)
    if not args.get("cold"):
        provider.discover()
    print("ready", flush=True)
    directory = Path(args["dir"])

    async def main() -> None:
        async with AuthSession(provider, timeout=60.0) as session:
            for round_no in range(1, args.get("rounds", 1) + 1):
                await asyncio.to_thread(wait_for, directory / f"go{round_no}")
                results = await asyncio.gather(
                    *(session.aget(args["api"]) for _ in range(args["n"])),
                    return_exceptions=True,
                )
                codes = Counter(outcome(r) for r in results)
                try:
                    token = (await provider.aacquire()).token
                    held = fingerprint(token.access_token)
                except Exception as exc:
                    held = type(exc).__name__
                line = {"round": round_no, "codes": dict(codes), "token": held}
                print(json.dumps(line), flush=True)

    asyncio.run(main())
    store.close()


def metadata(args: dict[str, Any]) -> None:
    """A cold worker: discovery and JWKS, as the first ID token verification needs them."""
    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.providers.oidc import OIDCProvider

    store = storage(args)
    provider = OIDCProvider(args["name"], AuthProviderConfig(**args["config"]), store)
    print("ready", flush=True)
    wait_for(Path(args["dir"]) / "go1")
    document = provider.discover()
    keys = provider._cache.jwks(provider.http_client, document["jwks_uri"])
    print(json.dumps({"issuer": document["issuer"], "keys": len(keys)}), flush=True)
    provider.close()
    store.close()


def hold(args: dict[str, Any]) -> None:
    store = storage(args)
    handle = store.create_lock(args["name"])
    handle.acquire(10.0)
    print("held", flush=True)
    time.sleep(3600)


def stale_save(args: dict[str, Any]) -> None:
    from kstlib.auth.errors import TokenStorageError
    from kstlib.auth.models import Token

    store = storage(args)
    with store.lock(args["name"], timeout=10.0):
        print("held", flush=True)
        wait_for(Path(args["dir"]) / "go1")
        stale = Token(
            access_token="made-up-by-a-paused-worker",
            refresh_token="made-up-refresh",
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        try:
            store.save(args["name"], stale)
            print("saved", flush=True)
        except TokenStorageError as exc:
            print(type(exc).__name__, flush=True)


def main(argument: str) -> None:
    arguments = json.loads(argument)
    {"storm": storm, "hold": hold, "stale-save": stale_save, "metadata": metadata}[
        arguments["mode"]
    ](arguments)


if __name__ == "__main__":
    main(sys.argv[1])
