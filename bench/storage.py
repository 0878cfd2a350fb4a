"""Token storage: save + load of one token per second, per backend, vs kstlib 3.8.2's storages.

Backends: memory, file (JSON, 0600, atomic), sops (the real ``sops`` binary
of the dev extra, one real age key made with pyrage). The same realistic
token (JWT-sized access and ID tokens) is saved then loaded back and
compared; kstlib 3.8.2's storages run in its own interpreter
(bench/peer_old.py) with the same sops binary and age key. Every backend
registered later belongs in ``BACKENDS``.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from typing import Any

from bench.common import OLD_NAME, Comparison, Context, Goal, alternate, calibrate

BACKENDS = ("memory", "file", "sops")
NOTES = {  # what each side does per operation (read from both sources)
    "memory": [
        "kstlib copies the token in and out (to_dict/from_dict of a deep copy) so callers "
        f"cannot mutate what is stored; {OLD_NAME} keeps and returns the caller's object"
    ],
    "file": [
        "kstlib writes a 0600 temp file, fsyncs it, renames it over the token and fsyncs the "
        f"directory (crash-safe); {OLD_NAME} rewrites the file in place, then chmods it, "
        "without fsync"
    ],
    "sops": [
        "kstlib pipes the plaintext through sops stdin/stdout; "
        f"{OLD_NAME} writes it to a temp file in the system temp dir first"
    ],
}


def _raw() -> dict[str, Any]:
    def jwt_like(size: int) -> str:
        return ".".join(secrets.token_urlsafe(n) for n in (27, size, 256))

    return {
        "access_token": jwt_like(600),
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": secrets.token_urlsafe(32),
        "scope": "openid profile email offline_access",
        "id_token": jwt_like(500),
    }


def _throughput(fn: Callable[[], Any], n: int) -> Callable[[], float]:
    import time

    def sample() -> float:
        started = time.perf_counter()
        for _ in range(n):
            fn()
        return n / (time.perf_counter() - started)

    return sample


def run(ctx: Context) -> list[Comparison]:
    from kstlib.auth.models import Token
    from kstlib.auth.token import (
        FileTokenStorage,
        MemoryTokenStorage,
        SOPSTokenStorage,
        factory,
        get_token_storage,
    )

    age = ctx.age()
    sops = shutil.which("sops")
    raw = _raw()
    token = Token.from_response(dict(raw))
    base = ctx.tmp / "storage"
    mine: dict[str, Any] = {
        "memory": MemoryTokenStorage(),
        "file": FileTokenStorage(base / "new-file"),
        "sops": SOPSTokenStorage(base / "new-sops", age_recipients=[age.recipient]),
    }
    # every backend registered since (redis, keyring, ...) is measured too, when it can be built
    later = sorted(set(getattr(factory, "_REGISTRY", {})) - set(BACKENDS))
    unbuildable: dict[str, str] = {}
    for backend in later:
        try:
            mine[backend] = get_token_storage(backend, directory=base / f"new-{backend}")
        except Exception as exc:
            unbuildable[backend] = f"{type(exc).__name__}: {exc}"[:200]
    peer = ctx.peer()
    peer_reason = None if peer is not None else ctx.old_reason()
    if peer is not None:
        peer.call(
            "storage_setup",
            dir=str(base / "old"),
            raw=raw,
            sops=sops,
            age_recipient=age.recipient,
            age_key_file=str(age.key_file),
        )
    results: list[Comparison] = []

    def not_run(backend: str, reason: str) -> Comparison:
        return Comparison(
            title=f"Token storage, {backend}: save + load",
            unit="save+load/s",
            baseline=f"kstlib {backend}",
            series={},
            skipped={f"kstlib {backend}": f"could not run in the bench: {reason}"},
            higher_is_better=True,
            section="6. token storage",
        )

    results.extend(not_run(backend, reason) for backend, reason in unbuildable.items())
    for backend in [b for b in (*BACKENDS, *later) if b in mine]:
        storage = mine[backend]

        def save_load(storage: Any = storage) -> None:
            storage.save("bench", token)
            loaded = storage.load("bench")
            if loaded is None or loaded.access_token != token.access_token:
                raise RuntimeError(f"{type(storage).__name__} lost the token")

        try:
            save_load()
        except Exception as exc:
            if backend in BACKENDS:
                raise
            results.append(not_run(backend, f"{type(exc).__name__}: {exc}"[:200]))
            continue
        slow = backend == "sops"
        seconds = 0.005 if ctx.smoke else 0.1
        n = 1 if slow else calibrate(save_load, seconds)
        rounds = (1 if ctx.smoke else min(ctx.rounds, 7)) if slow else ctx.rounds
        name = f"kstlib {type(storage).__name__}"
        contenders = {name: _throughput(save_load, n)}
        skipped: dict[str, str] = {}
        old_name = f"{OLD_NAME} {type(storage).__name__}"
        if backend not in BACKENDS:
            skipped[old_name] = f"{OLD_NAME} has no {backend} storage"
        elif peer is not None:
            op = f"storage_{backend}"
            per_call = peer.call("time", op=op, n=1)["seconds"]
            old_n = 1 if slow else max(1, round(seconds / max(per_call, 1e-7)))
            contenders[old_name] = _peer_throughput(peer, op, old_n)
        else:
            skipped[old_name] = peer_reason or "?"
        series = alternate(contenders, rounds=rounds, warmup=0 if slow else 1)
        comp = Comparison(
            title=f"Token storage, {backend}: save + load",
            unit="save+load/s",
            baseline=name,
            series=series,
            skipped=skipped,
            higher_is_better=True,
            section="6. token storage",
        )
        comp.notes.extend(NOTES.get(backend, []))
        if slow:
            comp.notes.append(
                "each save and each load runs the sops binary (age encryption/decryption)"
            )
        comp.goals.append(Goal("no speed goal (reported)", None, "issue 8"))
        results.append(comp)
    return results


def _peer_throughput(peer: Any, op: str, n: int) -> Callable[[], float]:
    return lambda: n / peer.call("time", op=op, n=n)["seconds"]
