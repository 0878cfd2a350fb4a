"""DPoP against a real local server that misbehaves (tests/security/hostile_idp.py).

The hostile IdP knows nothing of DPoP: it issues Bearer tokens whatever the client proves,
which is exactly the server this client must refuse (no silent downgrade). Its scripted
token errors play the nonce loop and the malformed nonce; nothing is ever stored.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kstlib.auth import DPoPBindingError, DPoPNonceError, TokenExchangeError, TokenRefreshError
from kstlib.auth._dpop import DPoPKey
from kstlib.auth.models import Token
from tests.security.hostile_idp import (
    HostileIdP,
    Scenario,
    login,
    make_provider,
    running_hostile_idp,
)


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileIdP]:
    with running_hostile_idp() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(hostile: HostileIdP) -> None:
    hostile.reset()


def test_a_server_that_ignores_dpop_is_refused_nothing_stored(hostile: HostileIdP) -> None:
    provider = make_provider(hostile, dpop=True)
    with pytest.raises(DPoPBindingError) as info:
        login(provider, hostile)
    assert info.value.reason == "not bound"
    assert "Bearer" in str(info.value) and "nothing was stored" in str(info.value)
    assert provider.token_storage.load(provider.name) is None
    sent = hostile.seen_headers["/token"]
    assert sent["dpop"].count(".") == 2  # the proof was sent: the server chose not to bind


def test_a_refresh_answered_with_bearer_keeps_the_bound_token(hostile: HostileIdP) -> None:
    provider = make_provider(hostile, dpop=True)
    key = DPoPKey.generate()
    bound = Token(access_token="bound", token_type="DPoP", refresh_token="rt", dpop_key=key)
    provider.save_token(bound)
    with pytest.raises(TokenRefreshError) as info:
        provider.refresh()
    assert isinstance(info.value, DPoPBindingError)
    assert info.value.retryable is False
    stored = provider.token_storage.load(provider.name)
    assert stored is not None and stored.access_token == "bound" and stored.dpop_key == key


@pytest.mark.parametrize(
    ("nonce", "reason", "requests"),
    [
        ("n-1", "nonce loop", 2),  # the server asks for a nonce again after getting it
        ("a nonce with spaces", "malformed nonce", 1),
        ('quote"d', "malformed nonce", 1),
        ("x" * 600, "malformed nonce", 1),
        (None, "missing nonce", 1),
    ],
)
def test_token_endpoint_nonce_errors_are_typed(
    hostile: HostileIdP, nonce: str | None, reason: str, requests: int
) -> None:
    provider = make_provider(hostile, dpop=True)
    hostile.scenario = Scenario.TOKEN_ERROR
    headers = {} if nonce is None else {"DPoP-Nonce": nonce}
    hostile.token_error = (400, {"error": "use_dpop_nonce"}, headers)
    with pytest.raises(DPoPNonceError) as info:
        login(provider, hostile)
    assert info.value.reason == reason
    assert info.value.origin == hostile.issuer
    assert hostile.count("token") == requests
    assert provider.token_storage.load(provider.name) is None
    assert provider._dpop_nonces.get(hostile.issuer) == (nonce if requests == 2 else None)


def test_without_dpop_a_nonce_challenge_stays_a_retryable_polling_error(
    hostile: HostileIdP,
) -> None:
    """A provider without ``dpop`` makes no proof and never retries: the caller decides."""
    provider = make_provider(hostile)
    hostile.scenario = Scenario.TOKEN_ERROR
    hostile.token_error = (400, {"error": "use_dpop_nonce"}, {"DPoP-Nonce": "n-1"})
    with pytest.raises(TokenExchangeError) as info:
        provider.token_request("client_credentials")
    assert not isinstance(info.value, DPoPNonceError)
    assert info.value.error_code == "use_dpop_nonce" and info.value.retryable is True
    assert hostile.count("token") == 1
    assert "dpop" not in hostile.seen_headers["/token"]
