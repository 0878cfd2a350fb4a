"""ProviderAuth's per-request hooks: proof headers on every request, one replay on a challenge.

These are the extension points a DPoP provider (RFC 9449) plugs into. No identity provider
is involved: an httpx.MockTransport plays an API that demands a fresh nonce once, which the
test IdP never does.
"""

from __future__ import annotations

import asyncio
import itertools

import httpx

from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.models import PreflightReport, Token
from kstlib.auth.providers.base import AbstractAuthProvider
from kstlib.auth.session import ProviderAuth
from kstlib.auth.token import MemoryTokenStorage


class ProofProvider(AbstractAuthProvider):
    """Signs each request with a counter and the last server nonce (a DPoP stand-in)."""

    flow = None  # type: ignore[assignment]

    def __init__(self) -> None:
        config = AuthProviderConfig(client_id="c", issuer="https://idp.example")
        super().__init__("proof", config, MemoryTokenStorage())
        self.save_token(Token(access_token="at-1"))
        self.counter = itertools.count(1)
        self.nonce: str | None = None

    def authorize_request(self, request: httpx.Request, token: Token) -> None:
        request.headers["X-Proof"] = f"{next(self.counter)}:{self.nonce}:{token.access_token}"

    def wants_replay(self, request: httpx.Request, response: httpx.Response) -> bool:
        nonce = response.headers.get("x-nonce")
        if response.status_code == 401 and nonce and nonce != self.nonce:
            self.nonce = nonce
            return True
        return False

    def get_authorization_url(self, state: str | None = None) -> tuple[str, str]:
        raise NotImplementedError

    def exchange_code(self, code: str, state: str, *, code_verifier: str | None = None) -> Token:
        raise NotImplementedError

    def refresh(self, token: Token | None = None) -> Token:
        raise NotImplementedError

    def revoke(self, token: Token | None = None) -> bool:
        return False

    def preflight(self) -> PreflightReport:
        return PreflightReport(self.name)


def nonce_api(seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["X-Proof"])
        assert request.headers["Authorization"] == "Bearer at-1"
        if ":n1:" not in request.headers["X-Proof"]:
            return httpx.Response(401, headers={"x-nonce": "n1"})
        return httpx.Response(200, json={"ok": True})

    return httpx.MockTransport(handler)


def test_each_request_gets_fresh_proof_and_one_replay_on_a_challenge() -> None:
    provider = ProofProvider()
    seen: list[str] = []
    with httpx.Client(auth=ProviderAuth(provider), transport=nonce_api(seen)) as client:
        assert client.post("https://api.example/x", json={"a": 1}).status_code == 200
        assert client.get("https://api.example/y").status_code == 200
    # first request: challenged, replayed once with a new proof carrying the nonce
    assert seen == ["1:None:at-1", "2:n1:at-1", "3:n1:at-1"]


def test_async_path_uses_the_same_hooks() -> None:
    provider = ProofProvider()
    seen: list[str] = []

    async def main() -> int:
        transport = nonce_api(seen)
        async with httpx.AsyncClient(auth=ProviderAuth(provider), transport=transport) as client:
            return (await client.get("https://api.example/z")).status_code

    # MockTransport also serves async clients
    assert asyncio.run(main()) == 200
    assert seen == ["1:None:at-1", "2:n1:at-1"]


def test_a_challenge_is_answered_once_only() -> None:
    provider = ProofProvider()
    calls: list[str] = []

    def always_challenge(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["X-Proof"])
        return httpx.Response(401, headers={"x-nonce": f"n{len(calls)}"})

    auth = ProviderAuth(provider, retry_on_401=False)
    with httpx.Client(auth=auth, transport=httpx.MockTransport(always_challenge)) as client:
        assert client.get("https://api.example/").status_code == 401
    assert len(calls) == 2
