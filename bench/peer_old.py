"""Bench worker for the published kstlib 3.8.2, run by ITS python (bench/.venvs/kstlib-3.8.2).

Same import name as this project, hence a separate interpreter. It reads one
JSON command per line on stdin and answers one JSON line on stdout
(``{"ok": true, ...}`` / ``{"ok": false, "error": ...}``), so the bench can
alternate its measurements with the local contenders. Only the standard
library, httpx and kstlib 3.8.2's own API are used (plus tests/idp_support.py
to play the browser at the local IdP). ``peer_old.py child ...`` is the child
process of the 4-process refresh storm.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)  # never shadow a top-level module with a file of bench/

import httpx  # noqa: E402

import kstlib  # noqa: E402
from kstlib.auth.check import TokenChecker  # noqa: E402
from kstlib.auth.models import Token  # noqa: E402
from kstlib.auth.providers.base import AuthProviderConfig  # noqa: E402
from kstlib.auth.providers.oidc import OIDCProvider  # noqa: E402
from kstlib.auth.session import AuthSession  # noqa: E402
from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage, SOPSTokenStorage  # noqa: E402

OPS: dict[str, Callable[[], Any]] = {}
STATE: dict[str, Any] = {}


def _config(args: dict[str, Any]) -> AuthProviderConfig:
    return AuthProviderConfig(
        client_id=args["client_id"],
        client_secret=args.get("client_secret"),
        issuer=args["issuer"],
        scopes=list(args.get("scopes") or ["openid"]),
        redirect_uri=args.get("redirect_uri", "http://127.0.0.1:8400/callback"),
    )


def _token(raw: dict[str, Any]) -> Token:
    return Token.from_response(dict(raw))


# ------------------------------------------------------------------ per-request cost


def session_setup(args: dict[str, Any]) -> dict[str, Any]:
    storage = MemoryTokenStorage()
    provider = OIDCProvider("bench", _config(args), storage)
    storage.save("bench", _token(args["raw"]))
    url = args["url"]
    session = AuthSession(provider, timeout=30.0).__enter__()
    runner = asyncio.Runner()
    asession = AuthSession(provider, timeout=30.0)
    runner.run(asession.__aenter__())
    STATE.update(session=session, asession=asession, runner=runner)

    def sync_get() -> None:
        response = session.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")

    async def abatch(n: int) -> None:
        for _ in range(n):
            response = await asession.aget(url)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")

    OPS["session_sync"] = sync_get
    STATE["abatch"] = abatch
    sync_get()
    runner.run(abatch(1))
    return {}


def _time(op: str, n: int) -> float:
    if op == "session_async":
        runner, abatch = STATE["runner"], STATE["abatch"]
        started = time.perf_counter()
        runner.run(abatch(n))
        return time.perf_counter() - started
    fn = OPS[op]
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - started


# ------------------------------------------------------------------ TokenChecker


def checker_setup(args: dict[str, Any]) -> dict[str, Any]:
    client = httpx.Client(timeout=10.0)
    checker = TokenChecker(
        client, expected_issuer=args["issuer"], expected_audience=args["audience"]
    )
    token = args["token"]
    report = checker.check(token)
    failed = [s.name + ": " + s.message for s in report.steps if not s.passed]

    def check() -> None:
        if not checker.check(token).valid:
            raise RuntimeError("kstlib 3.8.2 TokenChecker rejected the token")

    OPS["checker_reused"] = check
    return {"valid": report.valid, "failed": failed}


# ------------------------------------------------------------------ storage


def storage_setup(args: dict[str, Any]) -> dict[str, Any]:
    token = _token(args["raw"])
    base = Path(args["dir"])
    os.environ["SOPS_AGE_KEY_FILE"] = args["age_key_file"]
    storages = {
        "memory": MemoryTokenStorage(),
        "file": FileTokenStorage(base / "file"),
        "sops": SOPSTokenStorage(
            base / "sops", sops_binary=args["sops"], age_recipients=[args["age_recipient"]]
        ),
    }
    for kind, storage in storages.items():

        def save_load(storage: Any = storage) -> None:
            storage.save("bench", token)
            loaded = storage.load("bench")
            if loaded is None or loaded.access_token != token.access_token:
                raise RuntimeError(f"{type(storage).__name__} lost the token")

        OPS[f"storage_{kind}"] = save_load
        save_load()
    return {}


def cli_token_file(args: dict[str, Any]) -> dict[str, Any]:
    """Store a valid token where 3.8.2's ``kstlib auth token`` looks (file storage)."""
    FileTokenStorage(args["dir"]).save(args["name"], _token(args["raw"]))
    return {}


# ------------------------------------------------------------------ login


def login(args: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.idp_support import browser_login

    counts: Counter[str] = Counter()

    def count(name: str) -> Callable[[httpx.Request], None]:
        return lambda request: counts.update([name])

    started = time.perf_counter()
    client = httpx.Client(timeout=30.0, event_hooks={"request": [count("provider")]})
    browser = httpx.Client(timeout=30.0, event_hooks={"request": [count("browser")]})
    try:
        provider = OIDCProvider("bench", _config(args), MemoryTokenStorage(), http_client=client)
        url, _ = provider.get_authorization_url()
        callback = browser_login(url, browser=browser)
        query = parse_qs(urlsplit(callback).query)
        token = provider.exchange_code(query["code"][0], query["state"][0])
        provider.save_token(token)
        seconds = time.perf_counter() - started
    finally:
        client.close()
        browser.close()
    return {"seconds": seconds, "provider": counts["provider"], "browser": counts["browser"]}


# ------------------------------------------------------------------ refresh storm


def _stale(raw: dict[str, Any]) -> Token:
    return _token({**raw, "expires_in": 5})


def storm(args: dict[str, Any]) -> dict[str, Any]:
    mode, n, api = args["mode"], int(args["n"]), args["api"]
    codes: Counter[str] = Counter()
    if mode == "processes":
        return _storm_processes(args)
    storage = MemoryTokenStorage()
    provider = OIDCProvider("bench", _config(args), storage)
    storage.save("bench", _stale(args["raw"]))
    if mode == "tasks":

        async def main() -> None:
            async with AuthSession(provider, timeout=120.0) as session:
                results = await asyncio.gather(
                    *(session.aget(api) for _ in range(n)), return_exceptions=True
                )
            for r in results:
                codes.update(
                    [str(r.status_code) if hasattr(r, "status_code") else type(r).__name__]
                )

        asyncio.run(main())
    else:
        barrier = threading.Barrier(n)
        lock = threading.Lock()
        with AuthSession(provider, timeout=120.0) as session:

            def worker() -> None:
                barrier.wait()
                try:
                    result = str(session.get(api).status_code)
                except Exception as exc:  # counted, not raised
                    result = type(exc).__name__
                with lock:
                    codes.update([result])

            threads = [threading.Thread(target=worker) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    return {"codes": dict(codes)}


def _storm_processes(args: dict[str, Any]) -> dict[str, Any]:
    import subprocess

    directory = Path(args["dir"])
    FileTokenStorage(directory).save("bench", _stale(args["raw"]))
    go = directory / "go"
    child_args = json.dumps({**args, "go": str(go)})
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "child", child_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(int(args["n"]))
    ]
    for p in procs:
        assert p.stdout is not None
        for line in p.stdout:  # kstlib 3.8.2 logs warnings to stdout: skip to "ready"
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError(f"storm child did not start: {p.stderr.read()[-500:]}")
    go.touch()
    codes: Counter[str] = Counter()
    details: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        lines = out.strip().splitlines()
        codes.update([lines[-1].strip() if lines else f"exit {p.returncode}"])
        details.append(out[-1500:] + err[-1500:])
    return {"codes": dict(codes), "details": details}


def _child(args: dict[str, Any]) -> None:
    provider = OIDCProvider("bench", _config(args), FileTokenStorage(args["dir"]))
    provider.discover()  # warm up before the start line, like this project's child
    session = AuthSession(provider, timeout=120.0).__enter__()
    print("ready", flush=True)
    go = Path(args["go"])
    while not go.exists():
        time.sleep(0.001)
    try:
        print(session.get(args["api"]).status_code, flush=True)
    except Exception as exc:
        print(type(exc).__name__, flush=True)


# ------------------------------------------------------------------ protocol


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything kstlib prints goes to the log, not into the protocol
    sys.stdout = sys.stderr
    version = getattr(kstlib, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("kstlib")
    proto.write(json.dumps({"ok": True, "version": version}) + "\n")
    handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "session_setup": session_setup,
        "checker_setup": checker_setup,
        "storage_setup": storage_setup,
        "cli_token_file": cli_token_file,
        "login": login,
        "storm": storm,
    }
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "quit":
            proto.write(json.dumps({"ok": True}) + "\n")
            break
        try:
            if cmd == "time":
                reply = {"seconds": _time(request["op"], int(request["n"]))}
            else:
                reply = handlers[cmd](request)
            proto.write(json.dumps({"ok": True, **reply}) + "\n")
        except Exception:
            proto.write(json.dumps({"ok": False, "error": traceback.format_exc()[-3000:]}) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        _child(json.loads(sys.argv[2]))
    else:
        main()
