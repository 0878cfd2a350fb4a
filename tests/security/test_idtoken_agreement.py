"""One ID-token validation: OIDCProvider and TokenChecker give the same verdict.

The hostile IdP (tests/security/hostile_idp.py) mints each ID token once; the provider
validates it during a real code exchange, and TokenChecker checks the very same token
(with the same access token and nonce). Both must accept it, or both must refuse it
naming the same claim.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kstlib.auth.check import TokenChecker
from kstlib.auth.errors import TokenValidationError
from tests import loopback_http
from tests.security.hostile_idp import (
    CLIENT_ID,
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


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with loopback_http.client(timeout=5.0) as c:
        yield c


@pytest.fixture(autouse=True)
def _fresh(hostile: HostileIdP) -> None:
    hostile.reset()


CASES = [
    (Scenario.NORMAL, None),
    (Scenario.ID_SEVERAL_AUD_NO_AZP, "azp"),  # OIDC Core 3.1.3.7: refused by both
    (Scenario.ID_AZP_OTHER_CLIENT, "azp"),
    (Scenario.ID_WRONG_AUD, "aud"),
    (Scenario.ID_WRONG_NONCE, "nonce"),
    (Scenario.ID_NO_NONCE, "nonce"),
    (Scenario.ID_BAD_AT_HASH, "at_hash"),
    (Scenario.ID_EXPIRED, "exp"),
    (Scenario.ID_NBF_FUTURE, "nbf"),
    (Scenario.ID_IAT_FUTURE, "iat"),
    (Scenario.ID_NO_EXP, "exp"),
    (Scenario.ID_NO_IAT, "iat"),
    (Scenario.ID_NO_SUB, "sub"),
    (Scenario.ID_ED448, None),  # at_hash by SHAKE256 (the Ed448 curve): accepted
    (Scenario.ID_ED448_BAD_AT_HASH, "at_hash"),  # the Ed25519 rule on an Ed448 key
]


@pytest.mark.parametrize(("scenario", "claim"), CASES, ids=[c[0].value for c in CASES])
def test_provider_and_checker_agree(
    hostile: HostileIdP, client: httpx.Client, scenario: Scenario, claim: str | None
) -> None:
    hostile.scenario = scenario
    provider = make_provider(hostile)
    try:
        login(provider, hostile)
        provider_claim = None
    except TokenValidationError as exc:
        provider_claim = exc.claim
    finally:
        provider.close()
    body = hostile.last_token_response
    assert body is not None and hostile.nonce is not None

    checker = TokenChecker(client, expected_issuer=hostile.issuer, expected_audience=CLIENT_ID)
    report = checker.check(body["id_token"], access_token=body["access_token"], nonce=hostile.nonce)
    if report.valid:
        checker_claim = None
        assert report.steps[-1].details.get("at_hash_checked") is True
    else:
        failed = report.failed_step
        assert failed is not None and failed.name == "validate_claims", report.error
        checker_claim = failed.details.get("claim")

    assert provider_claim == checker_claim == claim


def test_ed448_token_verifies_with_the_ed448_key(hostile: HostileIdP, client: httpx.Client) -> None:
    """The accepted Ed448 case really went through the Ed448 key (no other key could)."""
    hostile.scenario = Scenario.ID_ED448
    provider = make_provider(hostile)
    with provider:
        token = login(provider, hostile)
    assert token.id_token is not None
    report = TokenChecker(client, expected_issuer=hostile.issuer).check(
        token.id_token, access_token=token.access_token
    )
    assert report.valid, report.error
    assert report.key_type == "OKP Ed448"
    wrong = TokenChecker(client, expected_issuer=hostile.issuer).check(
        token.id_token, access_token=token.access_token + "x"
    )
    assert wrong.failed_step is not None
    assert wrong.failed_step.details == {"claim": "at_hash"}
