"""Login flow end to end against the local IdP: wall time and HTTP requests.

One round = one complete authorization-code + PKCE login by a new provider
(cold: discovery and JWKS are fetched, as in a fresh ``kstlib auth login``
process): authorization URL -> the user's browser at the IdP (login and
consent pages, played by tests/idp_support.browser_login) -> code exchange
-> ID token verified -> token stored in memory. HTTP requests are counted
with httpx request event hooks on the provider's client and on the browser's
client. Same confidential client (client_secret_post) for both contenders;
kstlib 3.8.2 runs in its own interpreter (bench/peer_old.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from bench.common import OLD_NAME, Comparison, Context, Goal, Series

MINE = "kstlib login (code + PKCE)"
OLD = f"{OLD_NAME} login (code + PKCE)"


def run(ctx: Context) -> list[Comparison]:
    if ctx.smoke:
        comp = Comparison(
            title="Login flow end to end (local IdP)",
            unit="ms",
            baseline=MINE,
            series={},
            skipped={MINE: "skipped in smoke (needs the local IdP)"},
            section="7. login",
        )
        return [comp]
    from tests.flows import provider_config
    from tests.idp_support import CONFIDENTIAL_POST, REDIRECT_URI, SCOPES, browser_login

    from kstlib.auth._discovery import MetadataCache
    from kstlib.auth.providers.oidc import OIDCProvider
    from kstlib.auth.token import MemoryTokenStorage

    idp = ctx.idp()
    counts: dict[str, list[tuple[int, int]]] = {MINE: [], OLD: []}

    def mine() -> float:
        seen: Counter[str] = Counter()

        def hook(name: str) -> Callable[[httpx.Request], None]:
            return lambda request: seen.update([name])

        started = time.perf_counter()
        client = httpx.Client(timeout=30.0, event_hooks={"request": [hook("provider")]})
        browser = httpx.Client(timeout=30.0, event_hooks={"request": [hook("browser")]})
        try:
            provider = OIDCProvider(
                "bench",
                provider_config(idp, CONFIDENTIAL_POST),
                MemoryTokenStorage(),
                http_client=client,
                metadata_cache=MetadataCache(),
            )
            url, state = provider.get_authorization_url()
            callback = browser_login(url, browser=browser)
            provider.exchange_code(callback, state)
            elapsed = time.perf_counter() - started
        finally:
            client.close()
            browser.close()
        counts[MINE].append((seen["provider"], seen["browser"]))
        return elapsed * 1e3

    contenders: dict[str, Callable[[], float]] = {MINE: mine}
    skipped: dict[str, str] = {}
    peer = ctx.peer()
    if peer is not None:
        args: dict[str, Any] = {
            "client_id": CONFIDENTIAL_POST.client_id,
            "client_secret": CONFIDENTIAL_POST.client_secret,
            "issuer": idp.issuer,
            "scopes": list(SCOPES),
            "redirect_uri": REDIRECT_URI,
        }

        def old() -> float:
            reply = peer.call("login", **args)
            counts[OLD].append((reply["provider"], reply["browser"]))
            return float(reply["seconds"]) * 1e3

        contenders[OLD] = old
    else:
        skipped[OLD] = ctx.old_reason()
    rounds = ctx.rounds
    for fn in contenders.values():  # warm-up (imports, connections to the IdP)
        fn()
    series = {name: Series(name) for name in contenders}
    names = list(contenders)
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            series[name].samples.append(contenders[name]())
    extra = {}
    for name, seen in counts.items():
        if seen:
            provider_n, browser_n = seen[-1]
            varied = len(set(seen)) > 1
            extra[name] = {
                "HTTP requests": f"{provider_n + browser_n} = {provider_n} client + "
                f"{browser_n} browser" + (" (varied)" if varied else "")
            }
    comp = Comparison(
        title="Login flow end to end against the local IdP (new provider each time)",
        unit="ms/login",
        baseline=MINE,
        series=series,
        skipped=skipped,
        extra=extra,
        section="7. login",
        notes=["browser requests: the IdP's login and consent pages and their redirects"],
    )
    comp.goals.append(Goal("no speed goal (reported)", None, "issue 8"))
    return [comp]
