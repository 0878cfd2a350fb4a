"""Refresh storm: how many refresh requests reach the IdP when many callers find the token stale.

Counts, not times. For each scenario and contender: a fresh login at the
real test IdP (re-using a rotated refresh token revokes the whole grant, so
nothing is shared between runs), the token made stale on the client side
(it expires within the refresh skew but the IdP still accepts it), the
IdP's counters reset, then N callers make one API call each at the same
moment: N asyncio tasks on one session, 16 threads on one session, or 4
processes sharing one token file. The IdP counts ``grant_type=refresh_token``
requests (and how many it rejected).

Contenders: this project (``AuthSession``, single flight), kstlib 3.8.2
(``AuthSession`` via bench/peer_old.py), Authlib (``OAuth2Client`` /
``AsyncOAuth2Client`` with an ``update_token`` callback and one shared
token: a shared dict in-process, a shared JSON file across processes),
httpx-auth (``OAuth2AuthorizationCodePKCE`` on ``httpx.Client`` /
``httpx.AsyncClient``, its token cache seeded with the stale token and the
refresh token: a ``TokenMemoryCache`` in-process, one ``JsonTokenFileCache``
file across processes; its browser login is replaced by an error, see
bench.common.HTTPX_AUTH_SEED_NOTE).
Run ``python -m bench.storm child ...`` is the child process of a storm.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.common import (
    HTTPX_AUTH_SEED_NOTE,
    OLD_NAME,
    ROOT,
    Context,
    CountTable,
    Goal,
    httpx_auth_cache,
    httpx_auth_pkce,
    seed_httpx_auth,
)

MINE = "kstlib (this project)"
MINE_REDIS = "kstlib + Redis storage"  # issue 15
OLD = OLD_NAME
AUTHLIB = "Authlib"
HTTPX_AUTH = "httpx-auth"
HTTPX_AUTH_FILE = "httpx-auth-tokens.json"
TASKS = (10, 100, 1000)
THREADS = 16
PROCESSES = 4
TIMEOUT = 120.0


def _scenarios(smoke: bool) -> list[tuple[str, str, int]]:
    return [
        *((f"{n} asyncio tasks", "tasks", n) for n in TASKS),
        (f"{THREADS} threads", "threads", THREADS),
        (f"{PROCESSES} processes", "processes", PROCESSES),
    ]


# --------------------------------------------------------------------------- login


def raw_login(idp: Any) -> dict[str, Any]:
    """Code + PKCE login of the client_secret_post client; the raw token response."""
    import httpx
    from tests.idp_support import CONFIDENTIAL_POST, SCOPES, browser_login

    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    state = secrets.token_urlsafe(16)
    url = idp.authorize_url(
        CONFIDENTIAL_POST,
        state=state,
        scope=" ".join(SCOPES),
        code_challenge=challenge,
        nonce=secrets.token_urlsafe(16),
        prompt="consent",
    )
    callback = browser_login(url)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CONFIDENTIAL_POST.redirect_uri,
        "code_verifier": verifier,
    }
    CONFIDENTIAL_POST.token_auth(data)
    response = httpx.post(idp.token_endpoint, data=data, timeout=30.0)
    response.raise_for_status()
    raw = dict(response.json())
    if not raw.get("refresh_token"):
        raise RuntimeError("the IdP issued no refresh token")
    return raw


def _stale(raw: dict[str, Any]) -> dict[str, Any]:
    return {**raw, "expires_in": 5}


def _client_args(idp: Any) -> dict[str, Any]:
    from tests.idp_support import CONFIDENTIAL_POST, REDIRECT_URI, SCOPES

    return {
        "client_id": CONFIDENTIAL_POST.client_id,
        "client_secret": CONFIDENTIAL_POST.client_secret,
        "issuer": idp.issuer,
        "authorization_endpoint": idp.authorization_endpoint,
        "token_endpoint": idp.token_endpoint,
        "scopes": list(SCOPES),
        "redirect_uri": REDIRECT_URI,
    }


# --------------------------------------------------------------------------- this project


def _my_provider(args: dict[str, Any], storage: Any) -> Any:
    from kstlib.auth._discovery import MetadataCache
    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.providers.oidc import OIDCProvider

    config = AuthProviderConfig(
        client_id=args["client_id"],
        client_secret=args["client_secret"],
        issuer=args["issuer"],
        scopes=args["scopes"],
        redirect_uri=args["redirect_uri"],
        token_endpoint_auth_method="client_secret_post",
    )
    return OIDCProvider("storm", config, storage, metadata_cache=MetadataCache())


def _redis_storage(args: dict[str, Any]) -> Any:
    """issue 15: the Redis storage of a storm (its own key prefix)."""
    from kstlib.auth.token import RedisTokenStorage

    return RedisTokenStorage(args["redis_url"], prefix=args["redis_prefix"])


def _mine(mode: str, n: int, args: dict[str, Any], api: str, workdir: Path) -> Counter[str]:
    from kstlib.auth import AuthSession
    from kstlib.auth.models import Token
    from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage

    stale = Token.from_response(_stale(args["raw"]))
    # a 1 h token 5 s from expiry (a token merely 5 s long is fresh: the skew is clamped
    # to half the lifetime)
    stale.issued_at = stale.issued_at - timedelta(seconds=3595)
    redis = args.get("redis_url") is not None  # issue 15: the Redis column
    if mode == "processes":
        if redis:
            _redis_storage(args).save("storm", stale)
            return _processes("kstlib_redis", n, args, api, workdir)
        FileTokenStorage(workdir).save("storm", stale)
        return _processes("kstlib", n, args, api, workdir)
    provider = _my_provider(args, _redis_storage(args) if redis else MemoryTokenStorage())
    provider.discover()
    provider.save_token(stale)
    codes: Counter[str] = Counter()
    if mode == "tasks":

        async def main() -> None:
            async with AuthSession(provider, timeout=TIMEOUT) as session:
                results = await asyncio.gather(
                    *(session.aget(api) for _ in range(n)), return_exceptions=True
                )
            codes.update(_outcome(r) for r in results)

        asyncio.run(main())
        return codes
    with AuthSession(provider, timeout=TIMEOUT) as session:
        return _threads(n, lambda: session.get(api))


# --------------------------------------------------------------------------- Authlib


def _authlib(mode: str, n: int, args: dict[str, Any], api: str, workdir: Path) -> Counter[str]:
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client

    if mode == "processes":
        (workdir / "token.json").write_text(json.dumps(_stale(args["raw"])))
        return _processes("authlib", n, args, api, workdir)
    shared: dict[str, Any] = {}
    kwargs = {
        "client_id": args["client_id"],
        "client_secret": args["client_secret"],
        "token_endpoint_auth_method": "client_secret_post",
        "token_endpoint": args["token_endpoint"],
        "timeout": TIMEOUT,
    }
    codes: Counter[str] = Counter()
    if mode == "tasks":

        async def update_token(token: Any, refresh_token: Any = None, access_token: Any = None):
            shared["token"] = dict(token)

        async def main() -> None:
            async with AsyncOAuth2Client(
                token=_stale(args["raw"]), update_token=update_token, **kwargs
            ) as client:
                results = await asyncio.gather(
                    *(client.get(api) for _ in range(n)), return_exceptions=True
                )
            codes.update(_outcome(r) for r in results)

        asyncio.run(main())
        return codes

    def sync_update(token: Any, refresh_token: Any = None, access_token: Any = None) -> None:
        shared["token"] = dict(token)

    with OAuth2Client(token=_stale(args["raw"]), update_token=sync_update, **kwargs) as client:
        return _threads(n, lambda: client.get(api))


# --------------------------------------------------------------------------- httpx-auth


def _httpx_auth_flow(args: dict[str, Any]) -> Any:
    """httpx-auth's PKCE auth for the client_secret_post client (the secret goes in the form)."""
    return httpx_auth_pkce(
        args["authorization_endpoint"],
        args["token_endpoint"],
        client_id=args["client_id"],
        client_secret=args["client_secret"],
        scope=" ".join(args["scopes"]),
        timeout=TIMEOUT,
    )


def _httpx_auth(mode: str, n: int, args: dict[str, Any], api: str, workdir: Path) -> Counter[str]:
    import httpx
    from httpx_auth import JsonTokenFileCache, TokenMemoryCache

    stale = _stale(args["raw"])
    auth = _httpx_auth_flow(args)
    seed = (stale["access_token"], stale["expires_in"], stale["refresh_token"])
    if mode == "processes":
        seed_httpx_auth(JsonTokenFileCache(workdir / HTTPX_AUTH_FILE), auth, *seed)
        return _processes("httpx_auth", n, args, api, workdir)
    codes: Counter[str] = Counter()
    with httpx_auth_cache(TokenMemoryCache()) as cache:  # type: ignore[no-untyped-call]
        seed_httpx_auth(cache, auth, *seed)
        if mode == "tasks":

            async def main() -> None:
                async with httpx.AsyncClient(auth=auth, timeout=TIMEOUT) as client:
                    results = await asyncio.gather(
                        *(client.get(api) for _ in range(n)), return_exceptions=True
                    )
                codes.update(_outcome(r) for r in results)

            asyncio.run(main())
            return codes
        with httpx.Client(auth=auth, timeout=TIMEOUT) as client:
            return _threads(n, lambda: client.get(api))


# --------------------------------------------------------------------------- shared drivers


def _outcome(result: Any) -> str:
    status = getattr(result, "status_code", None)
    return str(status) if status is not None else type(result).__name__


def _threads(n: int, call: Callable[[], Any]) -> Counter[str]:
    barrier = threading.Barrier(n)
    lock = threading.Lock()
    codes: Counter[str] = Counter()

    def worker() -> None:
        barrier.wait()
        try:
            outcome = _outcome(call())
        except Exception as exc:  # counted, not raised
            outcome = type(exc).__name__
        with lock:
            codes.update([outcome])

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def _processes(kind: str, n: int, args: dict[str, Any], api: str, workdir: Path) -> Counter[str]:
    go = workdir / "go"
    child = json.dumps({**args, "raw": None, "kind": kind, "dir": str(workdir), "go": str(go)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.storm", "child", child, api],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(n)
    ]
    wait_ready(procs, kind)
    go.touch()
    return collect(procs)


def wait_ready(procs: list[subprocess.Popen[str]], kind: str) -> None:
    """Wait for every child's ``ready`` line (other output before it is skipped)."""
    for p in procs:
        assert p.stdout is not None
        for line in p.stdout:
            if line.strip() == "ready":
                break
        else:
            _, err = p.communicate(timeout=30)
            raise RuntimeError(f"{kind} storm child did not start: {err[-800:]}")


def collect(procs: list[subprocess.Popen[str]]) -> Counter[str]:
    """Each child's outcome: the last line it printed (status code or exception name)."""
    codes: Counter[str] = Counter()
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        lines = out.strip().splitlines()
        codes.update([lines[-1].strip() if lines else f"exit {p.returncode}: {err[-200:]}"])
    return codes


def _child(args: dict[str, Any], api: str) -> None:
    """One process of the 4-process storm (``python -m bench.storm child <json> <api>``)."""
    workdir, go = Path(args["dir"]), Path(args["go"])
    if args["kind"] in ("kstlib", "kstlib_redis"):
        from kstlib.auth import AuthSession
        from kstlib.auth.token import FileTokenStorage

        storage = (
            _redis_storage(args) if args["kind"] == "kstlib_redis" else FileTokenStorage(workdir)
        )
        provider = _my_provider(args, storage)
        provider.discover()  # warm up before the start line
        session = AuthSession(provider, timeout=TIMEOUT)
        call: Callable[[], Any] = lambda: session.get(api)  # noqa: E731
    elif args["kind"] == "httpx_auth":
        import httpx
        from httpx_auth import JsonTokenFileCache, OAuth2

        # The process-wide cache, on the file the parent seeded (no need to restore it here).
        OAuth2.token_cache = JsonTokenFileCache(workdir / HTTPX_AUTH_FILE)
        hx_client = httpx.Client(auth=_httpx_auth_flow(args), timeout=TIMEOUT)
        call = lambda: hx_client.get(api)  # noqa: E731
    else:
        warnings.simplefilter("ignore")
        from authlib.integrations.httpx_client import OAuth2Client

        path = workdir / "token.json"

        def update_token(token: Any, refresh_token: Any = None, access_token: Any = None) -> None:
            path.write_text(json.dumps(dict(token)))

        client = OAuth2Client(
            client_id=args["client_id"],
            client_secret=args["client_secret"],
            token_endpoint_auth_method="client_secret_post",
            token_endpoint=args["token_endpoint"],
            token=json.loads(path.read_text()),
            update_token=update_token,
            timeout=TIMEOUT,
        )
        call = lambda: client.get(api)  # noqa: E731
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    try:
        print(_outcome(call()), flush=True)
    except Exception as exc:
        print(type(exc).__name__, flush=True)


# --------------------------------------------------------------------------- the bench


def _cell(stats: dict[str, int], codes: Counter[str], n: int) -> tuple[str, int]:
    total = stats.get("token:refresh_token", 0)
    ok = stats.get("token:refresh_token:200", 0)
    text = str(total)
    if total != ok:
        text += f" ({total - ok} rejected)"
    failed = {k: v for k, v in codes.items() if k != "200"}
    if failed:
        detail = ", ".join(f"{v}x {k}" for k, v in sorted(failed.items()))
        text += f"; {sum(failed.values())}/{n} calls failed ({detail})"
    return text, total


def run(ctx: Context) -> list[CountTable]:
    columns = [MINE, MINE_REDIS, OLD, AUTHLIB, HTTPX_AUTH]
    table = CountTable(
        title="Refresh storm: refresh requests reaching the IdP (stale token, 1 API call each)",
        columns=columns,
        rows={},
        section="4. refresh storm",
    )
    scenarios = _scenarios(ctx.smoke)
    if ctx.smoke:
        table.rows = {label: {} for label, _, _ in scenarios}
        table.skipped = {"all contenders": "skipped in smoke (needs the local IdP and logins)"}
        table.goals.append(Goal("exactly 1 refresh per scenario (single flight)", None, "issue 4"))
        return [table]
    idp = ctx.idp()
    peer = ctx.peer()
    if peer is None:
        table.skipped[OLD] = ctx.old_reason()
    authlib_missing = ctx.available("authlib")
    if authlib_missing:
        table.skipped[AUTHLIB] = authlib_missing
    httpx_auth_missing = ctx.available("httpx_auth")
    if httpx_auth_missing:
        table.skipped[HTTPX_AUTH] = httpx_auth_missing
    api = idp.api_url("storm")
    mine_counts: dict[str, int] = {}
    redis_counts: dict[str, int] = {}  # issue 15
    for label, mode, n in scenarios:
        row: dict[str, Any] = {}
        for contender in columns:
            if contender in table.skipped:
                row[contender] = None
                continue
            slug = {
                MINE: "mine",
                MINE_REDIS: "mine-redis",
                OLD: "old",
                AUTHLIB: "authlib",
                HTTPX_AUTH: "httpx-auth",
            }[contender]
            workdir = ctx.tmp / "storm" / f"{mode}-{n}-{slug}"
            workdir.mkdir(parents=True, mode=0o700, exist_ok=True)
            args = {**_client_args(idp), "raw": raw_login(idp)}
            if contender == MINE_REDIS:  # issue 15
                args |= {"redis_url": ctx.redis().url, "redis_prefix": f"storm:{slug}:{mode}{n}:"}
            idp.reset_stats()
            if contender in (MINE, MINE_REDIS):
                codes = _mine(mode, n, args, api, workdir)
            elif contender == AUTHLIB:
                codes = _authlib(mode, n, args, api, workdir)
            elif contender == HTTPX_AUTH:
                codes = _httpx_auth(mode, n, args, api, workdir)
            else:
                assert peer is not None
                reply = peer.call("storm", mode=mode, n=n, api=api, dir=str(workdir), **args)
                codes = Counter(reply["codes"])
            time.sleep(0.05)  # the IdP counts a request when its response is ready
            text, total = _cell(idp.stats(), codes, n)
            row[contender] = text
            if contender == MINE:
                mine_counts[label] = total
            if contender == MINE_REDIS:
                redis_counts[label] = total
        table.rows[label] = row
    table.goals.append(
        Goal(
            "this project: exactly 1 refresh request per scenario (single flight)",
            all(v == 1 for v in mine_counts.values()) and len(mine_counts) == len(scenarios),
            "issue 4",
        )
    )
    table.goals.append(
        Goal(
            "this project with Redis storage: exactly 1 refresh request per scenario "
            "(the lease lock holds across processes and machines)",
            all(v == 1 for v in redis_counts.values()) and len(redis_counts) == len(scenarios),
            "issue 15",
        )
    )
    table.notes.append(
        "each cell: refresh requests at the IdP (rejected = invalid_grant after the rotated "
        "refresh token was reused, which revokes the grant); calls failed = API calls that did "
        "not end in 200"
    )
    table.notes.append(
        f"{OLD_NAME}: a threading lock plus a re-check of its in-memory token; its async "
        "methods refresh with a blocking call on the event loop (the other tasks are frozen "
        "meanwhile, hence 1); processes do not coordinate"
    )
    table.notes.append(
        "Authlib: AsyncOAuth2Client serialises refreshes with an asyncio lock; the sync "
        "OAuth2Client has no lock; across processes it has no way to see another's refresh"
    )
    if HTTPX_AUTH not in table.skipped:
        table.notes.append(
            "httpx-auth (OAuth2AuthorizationCodePKCE, same client_secret_post client): its auth "
            "flow is synchronous, also on httpx.AsyncClient, so the first task refreshes with a "
            "blocking call on the event loop (the other tasks are frozen meanwhile, hence 1); "
            "with threads, the first caller removes the expired token from the cache before "
            "refreshing, so the callers that look meanwhile find none and go to the browser "
            "login (InteractiveLogin: it takes the refresh lock but does not re-check the cache); "
            "its JsonTokenFileCache is shared by the processes but does not coordinate their "
            "refreshes, and a rejected refresh also ends in the browser login"
        )
        table.notes.append(HTTPX_AUTH_SEED_NOTE)
    return [table]


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "child":
        _child(json.loads(sys.argv[2]), sys.argv[3])
