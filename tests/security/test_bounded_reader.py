"""One bounded reader for every IdP answer, the total deadline, the https rule for
discovered endpoints, and the token_request door (tests/security/hostile_idp.py).

Each case drives the real provider against a real local server that misbehaves:
stacked or bomb Content-Encodings, a byte-dripping server (body or headers), endpoints
advertised over plain http, huge revocation / preflight answers, OAuth polling errors.
"""

from __future__ import annotations

import asyncio
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kstlib.auth._http import DEFAULT_MAX_RESPONSE_BYTES
from kstlib.auth.errors import (
    AuthError,
    DiscoveryError,
    TokenExchangeError,
    TokenRefreshError,
)
from kstlib.auth.models import PreflightStatus, Token, TokenType
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.token import FileTokenStorage
from tests.security.hostile_idp import (
    PROVIDER_NAME,
    HostileIdP,
    Scenario,
    login,
    make_provider,
    running_hostile_idp,
)

LIMIT = DEFAULT_MAX_RESPONSE_BYTES


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileIdP]:
    with running_hostile_idp() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(hostile: HostileIdP) -> None:
    hostile.reset()


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, message
    assert error.__cause__ is None, repr(error.__cause__)
    return message


# --------------------------------------------------------------------------- encodings


def test_stacked_gzip_discovery_is_refused_before_inflating(hostile: HostileIdP) -> None:
    """``Content-Encoding: gzip, gzip, gzip`` (a few hundred bytes, gigabytes inflated)."""
    hostile.scenario = Scenario.DISCOVERY_GZIP_STACKED
    provider = make_provider(hostile, max_retries=0)
    tracemalloc.start()
    try:
        with pytest.raises(DiscoveryError) as err:
            provider.discover()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert re.search(
        r"Content-Encoding 'gzip, gzip, gzip'; only identity or one", one_line(err.value)
    )
    assert peak < 8 * LIMIT, peak


def test_one_layer_gzip_bomb_stops_at_the_budget_once_decompressed(hostile: HostileIdP) -> None:
    """100 MiB of zeros in ~100 KB of gzip: inflated incrementally, never past 1 MiB."""
    hostile.scenario = Scenario.DISCOVERY_GZIP_BOMB
    provider = make_provider(hostile, max_retries=0)
    tracemalloc.start()
    try:
        with pytest.raises(DiscoveryError) as err:
            provider.discover()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "too large (over 1048576 bytes once decompressed)" in one_line(err.value)
    assert peak < 8 * LIMIT, peak  # the old reader inflated a whole network chunk (~64 MiB)


def test_one_honest_gzip_layer_is_accepted(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.DISCOVERY_GZIP_ONCE
    provider = make_provider(hostile)
    assert provider.discover()["issuer"] == hostile.issuer


def test_other_encodings_are_refused_and_identity_is_asked_for(hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.DISCOVERY_BROTLI
    provider = make_provider(hostile, max_retries=0)
    with pytest.raises(DiscoveryError, match=r"Content-Encoding 'br'"):
        provider.discover()
    assert hostile.seen_headers["/.well-known/openid-configuration"]["accept-encoding"] == (
        "identity"
    )


# --------------------------------------------------------------------------- deadline


@pytest.mark.parametrize(
    "scenario", [Scenario.DISCOVERY_DRIP_BODY, Scenario.DISCOVERY_DRIP_HEADERS]
)
def test_a_dripping_server_cannot_hold_discovery_past_the_deadline(
    hostile: HostileIdP, scenario: Scenario
) -> None:
    """One byte every 0.2 s under a 0.5 s timeout: per-read timeouts never fire, the
    total deadline does (the drip would take minutes)."""
    hostile.scenario = scenario
    provider = make_provider(hostile, timeout=0.5, max_retries=0)
    with pytest.raises(DiscoveryError) as err:
        provider.discover()
    assert "timed out talking to 127.0.0.1 (no complete answer within 0.5 s)" in one_line(err.value)
    assert hostile.drip_finished is False


def test_a_dripping_token_endpoint_cannot_hold_the_refresh_lock(
    hostile: HostileIdP, tmp_path: Path
) -> None:
    """The refresh fails at its deadline, the stored token is unchanged and the
    cross-process lock is free at once for another process."""
    storage = FileTokenStorage(directory=tmp_path / "tokens")
    provider = make_provider(hostile, storage=storage, timeout=0.5)
    token = login(provider, hostile)
    hostile.scenario = Scenario.TOKEN_DRIP
    with pytest.raises(TokenRefreshError) as err:
        provider.refresh()
    assert "no complete answer within 0.5 s" in one_line(err.value)
    assert err.value.retryable is True
    assert hostile.drip_finished is False
    other = FileTokenStorage(directory=tmp_path / "tokens")
    with other.lock(PROVIDER_NAME, timeout=0.05):
        assert other.load(PROVIDER_NAME) == token


# --------------------------------------------------------------------------- https rule


@pytest.mark.parametrize(
    ("field", "config_key"),
    [
        ("token_endpoint", "token_url"),
        ("jwks_uri", "jwks_uri"),
        ("userinfo_endpoint", "userinfo_url"),
        ("revocation_endpoint", "revoke_url"),
    ],
)
def test_discovered_http_endpoints_are_refused_with_the_fix(
    hostile: HostileIdP, field: str, config_key: str
) -> None:
    """An IdP behind a TLS-terminating proxy advertising http:// endpoints."""
    hostile.overrides = {field: f"http://idp.invalid/{field}"}
    provider = make_provider(hostile)
    with pytest.raises(DiscoveryError) as err:
        provider.endpoint(field)
    message = one_line(err.value)
    assert f"the discovery document's {field} must use https" in message
    assert f"set '{config_key}' explicitly" in message


def test_an_http_token_endpoint_never_gets_the_code_or_the_secret(hostile: HostileIdP) -> None:
    hostile.overrides = {"token_endpoint": "http://idp.invalid/token"}
    provider = make_provider(hostile)
    with pytest.raises(DiscoveryError, match="token_endpoint must use https"):
        login(provider, hostile)
    assert provider.token_storage.load(PROVIDER_NAME) is None


def test_a_configured_endpoint_still_wins_over_a_bad_discovered_one(hostile: HostileIdP) -> None:
    hostile.overrides = {"token_endpoint": "http://idp.invalid/token"}
    provider = make_provider(hostile, token_url=hostile.url("/token"))
    assert login(provider, hostile).access_token
    assert hostile.count("token") == 1


# --------------------------------------------------------------------------- other answers


def test_revocation_answers_are_bounded(hostile: HostileIdP) -> None:
    provider = make_provider(hostile)
    token = login(provider, hostile)
    hostile.scenario = Scenario.REVOCATION_HUGE
    with pytest.raises(AuthError) as err:
        provider.revoke(token)
    assert f"too large (over {LIMIT} bytes)" in one_line(err.value)


def test_preflight_answers_are_bounded(hostile: HostileIdP) -> None:
    provider = make_provider(hostile)
    hostile.scenario = Scenario.TOKEN_HUGE
    report = provider.preflight()
    step = next(r for r in report.results if r.step == "token_endpoint")
    assert step.status is PreflightStatus.FAILURE
    assert "too large" in step.message


class _ProofProvider(OIDCProvider):
    """Adds a proof header to resource requests, as a DPoP provider does."""

    def authorize_request(self, request: httpx.Request, token: Token) -> None:
        request.headers["DPoP"] = "proof-for-" + request.url.path


def test_userinfo_sends_the_token_type_and_the_request_proof(hostile: HostileIdP) -> None:
    plain = make_provider(hostile)
    token = login(plain, hostile)
    proof = _ProofProvider(plain.name, plain.config, plain.token_storage)
    dpop = Token.from_dict({**token.to_dict(), "token_type": "DPoP"})
    assert dpop.token_type is TokenType.DPOP
    proof.get_userinfo(dpop)
    seen = hostile.seen_headers["/userinfo"]
    assert seen["authorization"].startswith("DPoP ")
    assert seen["dpop"] == "proof-for-/userinfo"
    assert seen["accept-encoding"] == "identity"


# --------------------------------------------------------------------------- token_request


@pytest.mark.parametrize(
    ("error", "status", "body", "headers", "details"),
    [
        ("authorization_pending", 400, {}, {}, {}),
        ("slow_down", 400, {"interval": 10}, {}, {"interval": 10}),
        ("use_dpop_nonce", 400, {}, {"DPoP-Nonce": "n-123"}, {"dpop_nonce_header": "n-123"}),
    ],
)
def test_polling_errors_are_typed_and_retryable(
    hostile: HostileIdP,
    error: str,
    status: int,
    body: dict[str, object],
    headers: dict[str, str],
    details: dict[str, object],
) -> None:
    provider = make_provider(hostile)
    hostile.scenario = Scenario.TOKEN_ERROR
    hostile.token_error = (status, {"error": error, **body}, headers)
    with pytest.raises(TokenExchangeError) as err:
        provider.token_request("urn:ietf:params:oauth:grant-type:device_code", device_code="dc-123")
    assert err.value.error_code == error
    assert err.value.retryable is True
    assert err.value.status_code == status
    for key, value in details.items():
        assert err.value.details[key] == value
    assert hostile.count("token:urn:ietf:params:oauth:grant-type:device_code") == 1


def test_token_request_validates_the_id_token_and_does_not_store(hostile: HostileIdP) -> None:
    provider = make_provider(hostile)
    token = provider.token_request("client_credentials", scope="openid")
    assert token.access_token and token.id_token
    assert provider.token_storage.load(PROVIDER_NAME) is None
    hostile.scenario = Scenario.ID_BAD_SIGNATURE
    with pytest.raises(AuthError, match="signature is invalid"):
        provider.token_request("client_credentials", scope="openid")


def test_token_request_refuses_non_string_parameters(hostile: HostileIdP) -> None:
    provider = make_provider(hostile)
    with pytest.raises(ValueError, match="'scope' must be a string"):
        provider.token_request("client_credentials", scope=["openid"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grant_type"):
        provider.token_request("")
    assert hostile.count("token") == 0


def test_atoken_request_does_not_block_the_event_loop(hostile: HostileIdP) -> None:
    provider = make_provider(hostile)
    provider.discover()
    hostile.scenario = Scenario.TOKEN_SLOW
    hostile.delay = 0.5
    events: list[str] = []

    async def ticker() -> None:
        while True:
            events.append("tick")
            await asyncio.sleep(0.02)

    async def main() -> Token:
        task = asyncio.create_task(ticker())
        try:
            token = await provider.atoken_request("client_credentials")
            events.append("done")
            return token
        finally:
            task.cancel()

    token = asyncio.run(main())
    assert token.access_token
    assert events.index("done") >= 5, events  # the loop kept running meanwhile
