"""OIDCProvider against a hostile OpenID provider (tests/security/hostile_idp.py).

Every case drives the real provider code (discovery, code exchange, refresh,
userinfo) against a real HTTP server that misbehaves in one way, and checks
three things: a typed error whose message names the problem, nothing stored
(or the stored token unchanged), and an error that prints as one line with no
chained internal exception (no traceback of library internals for the user).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from kstlib.auth._discovery import MetadataCache
from kstlib.auth._http import DEFAULT_MAX_RESPONSE_BYTES
from kstlib.auth.errors import (
    AuthError,
    DiscoveryError,
    TokenExchangeError,
    TokenRefreshError,
    TokenValidationError,
)
from kstlib.auth.models import Token
from kstlib.auth.providers.oidc import OIDCProvider
from tests.jwks_server import JWKSServer, running_server
from tests.security.hostile_idp import (
    HUGE_BODY_BYTES,
    OTHER_SUBJECT,
    PROVIDER_NAME,
    FakeClock,
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


@pytest.fixture(scope="module")
def attacker() -> Iterator[JWKSServer]:
    """The attacker's own server: every request it gets is counted (none must arrive)."""
    with running_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(hostile: HostileIdP, attacker: JWKSServer) -> None:
    hostile.reset()
    attacker.reset()
    hostile.attacker_url = attacker.base_url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(hostile: HostileIdP, clock: FakeClock) -> Iterator[OIDCProvider]:
    p = make_provider(hostile, cache=MetadataCache(clock=clock))
    yield p
    p.close()


def refused(error: BaseException, error_type: type[AuthError], fragment: str) -> None:
    """The error is ``error_type``, names the problem, and prints as one clean line."""
    assert isinstance(error, error_type), repr(error)
    message = str(error)
    assert re.search(fragment, message), message
    assert "\n" not in message and "Traceback" not in message, message
    # Nothing chained: a printed traceback shows this one error, not httpx/jose internals.
    assert error.__cause__ is None, repr(error.__cause__)
    assert error.__suppress_context__ or error.__context__ is None, repr(error.__context__)


def stored(provider: OIDCProvider) -> Token | None:
    return provider.token_storage.load(PROVIDER_NAME)


# --------------------------------------------------------------------------- sanity


def test_the_normal_scenario_logs_in(provider: OIDCProvider, hostile: HostileIdP) -> None:
    """Baseline: the hostile server is a working IdP when no scenario is set."""
    token = login(provider, hostile)
    assert stored(provider) == token
    assert hostile.count("token:authorization_code") == 1


# --------------------------------------------------------------------------- discovery


def test_discovery_naming_another_issuer_is_refused(
    provider: OIDCProvider, hostile: HostileIdP
) -> None:
    hostile.scenario = Scenario.DISCOVERY_OTHER_ISSUER
    with pytest.raises(DiscoveryError) as err:
        provider.get_authorization_url()
    refused(err.value, DiscoveryError, r"names issuer 'https://evil\.example'")
    assert hostile.count("token") == 0
    assert stored(provider) is None


def test_discovery_redirect_to_another_host_is_not_followed(
    provider: OIDCProvider, hostile: HostileIdP, attacker: JWKSServer
) -> None:
    hostile.scenario = Scenario.DISCOVERY_REDIRECT
    with pytest.raises(DiscoveryError) as err:
        provider.get_authorization_url()
    refused(err.value, DiscoveryError, "redirects are not followed")
    assert attacker.count() == 0
    assert hostile.count("discovery") == 1  # a redirect is not retried either
    assert stored(provider) is None


# --------------------------------------------------------------------------- JWKS


def test_unparseable_keys_beside_a_good_one_are_skipped(
    provider: OIDCProvider, hostile: HostileIdP
) -> None:
    hostile.scenario = Scenario.JWKS_UNPARSEABLE_BESIDE_GOOD
    token = login(provider, hostile)
    assert stored(provider) == token
    assert hostile.count("jwks") == 1


def test_rsa_1024_key_is_refused(provider: OIDCProvider, hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.JWKS_RSA_1024
    with pytest.raises(DiscoveryError) as err:
        login(provider, hostile)
    refused(err.value, DiscoveryError, r"too weak \(1024 bits, minimum 2048\)")
    assert stored(provider) is None


def test_duplicate_kids_the_signature_decides(provider: OIDCProvider, hostile: HostileIdP) -> None:
    """Two different keys under one kid: the one that verifies is used, no confusion."""
    hostile.scenario = Scenario.JWKS_DUPLICATE_KIDS
    token = login(provider, hostile)
    assert stored(provider) == token


def test_duplicate_kids_none_of_which_signed_is_refused(
    provider: OIDCProvider, hostile: HostileIdP
) -> None:
    hostile.scenario = Scenario.JWKS_DUPLICATE_KIDS_FORGED
    with pytest.raises(TokenValidationError) as err:
        login(provider, hostile)
    refused(err.value, TokenValidationError, "does not verify with any of the 2 candidate keys")
    assert stored(provider) is None


def test_key_rotation_new_kid_accepted_after_one_refetch(
    provider: OIDCProvider, hostile: HostileIdP, clock: FakeClock
) -> None:
    login(provider, hostile)
    assert hostile.count("jwks") == 1
    clock.advance(31)  # past the re-fetch cooldown of the first fetch
    hostile.scenario = Scenario.ID_ROTATED_KID
    token = login(provider, hostile)
    assert stored(provider) == token
    assert hostile.count("jwks") == 2  # exactly one re-fetch for the new kid
    login(provider, hostile)
    assert hostile.count("jwks") == 2  # the new key is now cached


def test_key_rotation_right_after_start_is_accepted(
    provider: OIDCProvider, hostile: HostileIdP, clock: FakeClock
) -> None:
    """A new kid within 30 s of the first JWKS fetch: one re-fetch, the login succeeds."""
    login(provider, hostile)
    assert hostile.count("jwks") == 1
    hostile.scenario = Scenario.ID_ROTATED_KID  # no clock advance: within the cooldown
    token = login(provider, hostile)
    assert stored(provider) == token
    assert hostile.count("jwks") == 2


def test_flood_of_unknown_kids_refetches_once_per_cooldown(
    provider: OIDCProvider, hostile: HostileIdP, clock: FakeClock
) -> None:
    first = login(provider, hostile)
    clock.advance(31)
    hostile.scenario = Scenario.ID_UNKNOWN_KID
    for _ in range(25):
        with pytest.raises(TokenValidationError) as err:
            login(provider, hostile)
        refused(err.value, TokenValidationError, "no key in the JWKS can verify")
    assert hostile.count("jwks") == 2  # the warm-up fetch + one re-fetch for 25 forged kids
    clock.advance(31)
    for _ in range(25):
        with pytest.raises(TokenValidationError):
            login(provider, hostile)
    assert hostile.count("jwks") == 3
    assert hostile.count("token:authorization_code") == 51
    assert stored(provider) == first


# --------------------------------------------------------------------------- ID tokens

ID_TOKEN_CASES = [
    (Scenario.ID_ALG_NONE, r"unsigned|'none'", None),
    (Scenario.ID_HS256_WITH_PUBLIC_KEY, r"algorithm 'HS256' is not allowed", None),
    (Scenario.ID_BAD_SIGNATURE, r"signature is invalid", None),
    (Scenario.ID_WRONG_ISS, r"issuer 'https://evil\.example' is not", "iss"),
    (Scenario.ID_WRONG_AUD, r"audience does not include 'hostile-client'", "aud"),
    (Scenario.ID_SEVERAL_AUD_NO_AZP, r"several audiences and no 'azp'", "azp"),
    (Scenario.ID_EXPIRED, r"token expired at", "exp"),
    (Scenario.ID_NBF_FUTURE, r"not valid before", "nbf"),
    (Scenario.ID_IAT_FUTURE, r"issued in the future", "iat"),
    (Scenario.ID_NO_EXP, r"no 'exp' claim", "exp"),
    (Scenario.ID_NO_IAT, r"no 'iat' claim", "iat"),
    (Scenario.ID_NO_SUB, r"has no 'sub'", "sub"),
    (Scenario.ID_WRONG_NONCE, r"wrong or missing nonce", "nonce"),
    (Scenario.ID_NO_NONCE, r"wrong or missing nonce", "nonce"),
    (Scenario.ID_BAD_AT_HASH, r"does not match its access token \(at_hash\)", "at_hash"),
    (Scenario.ID_UNKNOWN_CRIT, r"critical extensions \('crit'\)", None),
]


@pytest.mark.parametrize(
    ("scenario", "fragment", "claim"), ID_TOKEN_CASES, ids=[c[0].value for c in ID_TOKEN_CASES]
)
def test_hostile_id_token_is_refused_before_storage(
    provider: OIDCProvider,
    hostile: HostileIdP,
    scenario: Scenario,
    fragment: str,
    claim: str | None,
) -> None:
    """The token endpoint answered (once) and the ID token was refused: nothing stored.

    The server advertises HS256 and none in its discovery document: that must not
    widen the algorithm allow-list.
    """
    hostile.scenario = scenario
    with pytest.raises(TokenValidationError) as err:
        login(provider, hostile)
    refused(err.value, TokenValidationError, fragment)
    assert err.value.claim == claim
    assert hostile.count("token:authorization_code") == 1
    assert stored(provider) is None


def test_jku_x5u_and_jwk_headers_are_never_followed(
    provider: OIDCProvider, hostile: HostileIdP, attacker: JWKSServer
) -> None:
    """A token signed by the attacker's key, whose headers point at the attacker's server."""
    hostile.scenario = Scenario.ID_FOREIGN_KEY_HEADERS
    with pytest.raises(TokenValidationError) as err:
        login(provider, hostile)
    refused(err.value, TokenValidationError, r"no key in the JWKS can verify .*'attacker'")
    assert attacker.count() == 0
    assert stored(provider) is None


# --------------------------------------------------------------------------- token responses

TOKEN_RESPONSE_CASES = [
    (Scenario.TOKEN_HTML, r"answered HTTP 200 with an HTML page where JSON was expected"),
    (Scenario.TOKEN_EMPTY, r"answered HTTP 200 with an empty body"),
    (Scenario.TOKEN_NOT_JSON, r"answered HTTP 200 with a body that is not JSON"),
    (Scenario.TOKEN_JSON_ARRAY, r"token response is not a JSON object"),
    (Scenario.TOKEN_NO_ACCESS_TOKEN, r"has no 'access_token'"),
    (Scenario.TOKEN_NEGATIVE_EXPIRES_IN, r"'expires_in' is out of range"),
    (Scenario.TOKEN_TEXT_EXPIRES_IN, r"'expires_in' is not a number"),
    (Scenario.TOKEN_UNKNOWN_TYPE, r"unsupported 'token_type'"),
    # Known types this provider cannot use (no DPoP key, no MAC): never stored, never sent
    # as Bearer.
    (Scenario.TOKEN_TYPE_DPOP, r"token_type 'DPoP' this client cannot use \(it uses Bearer\)"),
    (Scenario.TOKEN_TYPE_MAC, r"token_type 'MAC' this client cannot use \(it uses Bearer\)"),
]


@pytest.mark.parametrize(
    ("scenario", "fragment"), TOKEN_RESPONSE_CASES, ids=[c[0].value for c in TOKEN_RESPONSE_CASES]
)
def test_hostile_token_response_is_refused(
    provider: OIDCProvider, hostile: HostileIdP, scenario: Scenario, fragment: str
) -> None:
    hostile.scenario = scenario
    with pytest.raises(TokenExchangeError) as err:
        login(provider, hostile)
    refused(err.value, TokenExchangeError, fragment)
    assert stored(provider) is None


def test_huge_integer_expires_in_is_refused(provider: OIDCProvider, hostile: HostileIdP) -> None:
    hostile.scenario = Scenario.TOKEN_HUGE_INT_EXPIRES_IN
    with pytest.raises(TokenExchangeError) as err:
        login(provider, hostile)
    refused(err.value, TokenExchangeError, r"'expires_in' is out of range|not a number")
    assert stored(provider) is None


UNUSABLE_ACCESS_TOKENS = {
    "non_ascii": "t\u00f6ken",
    "crlf": "abc\r\nX-Injected: 1",
    "lone_surrogate": "\ud800",
}


@pytest.mark.parametrize("kind", sorted(UNUSABLE_ACCESS_TOKENS))
def test_access_token_that_cannot_be_sent_is_refused(
    provider: OIDCProvider, hostile: HostileIdP, kind: str
) -> None:
    hostile.scenario = Scenario.TOKEN_UNUSABLE_ACCESS_TOKEN
    hostile.access_token_value = UNUSABLE_ACCESS_TOKENS[kind]
    with pytest.raises(TokenExchangeError) as err:
        login(provider, hostile)
    refused(err.value, TokenExchangeError, "access_token")
    assert stored(provider) is None


def _wait_for_huge_writer(hostile: HostileIdP) -> None:
    deadline = time.monotonic() + 10
    while hostile.huge_bytes_written == 0 and time.monotonic() < deadline:
        time.sleep(0.02)


def test_10mb_token_response_with_declared_length_is_refused_unread(
    provider: OIDCProvider, hostile: HostileIdP
) -> None:
    """Refused from the Content-Length header: the client hangs up instead of reading."""
    hostile.scenario = Scenario.TOKEN_HUGE
    with pytest.raises(TokenExchangeError) as err:
        login(provider, hostile)
    refused(err.value, TokenExchangeError, rf"too large \({HUGE_BODY_BYTES} bytes, limit {LIMIT}\)")
    _wait_for_huge_writer(hostile)
    assert hostile.huge_write_aborted  # the server could not push its 10 MB
    assert hostile.huge_bytes_written < HUGE_BODY_BYTES
    assert stored(provider) is None


def test_10mb_token_response_without_length_stops_at_the_limit(
    provider: OIDCProvider, hostile: HostileIdP
) -> None:
    hostile.scenario = Scenario.TOKEN_HUGE_UNDECLARED
    with pytest.raises(TokenExchangeError) as err:
        login(provider, hostile)
    refused(err.value, TokenExchangeError, rf"too large \(over {LIMIT} bytes\)")
    _wait_for_huge_writer(hostile)
    assert hostile.huge_write_aborted
    assert hostile.huge_bytes_written < HUGE_BODY_BYTES
    assert stored(provider) is None


# --------------------------------------------------------------------------- refresh, userinfo


def test_refresh_returning_an_id_token_for_another_sub_is_refused(
    provider: OIDCProvider, hostile: HostileIdP
) -> None:
    before = login(provider, hostile)
    hostile.scenario = Scenario.REFRESH_OTHER_SUB
    with pytest.raises(TokenValidationError) as err:
        provider.refresh()
    refused(err.value, TokenValidationError, r"another 'sub' than the one issued at login")
    assert err.value.claim == "sub"
    assert isinstance(err.value, TokenRefreshError) and err.value.retryable is False
    assert hostile.count("token:refresh_token") == 1
    assert stored(provider) == before


REFRESH_ID_TOKEN_CASES = [
    (Scenario.ID_BAD_SIGNATURE, r"signature is invalid"),
    (Scenario.ID_WRONG_AUD, r"audience does not include"),
    (Scenario.ID_EXPIRED, r"token expired at"),
    (Scenario.ID_HS256_WITH_PUBLIC_KEY, r"algorithm 'HS256' is not allowed"),
]


@pytest.mark.parametrize(
    ("scenario", "fragment"),
    REFRESH_ID_TOKEN_CASES,
    ids=[c[0].value for c in REFRESH_ID_TOKEN_CASES],
)
def test_refresh_with_a_hostile_id_token_keeps_the_stored_token(
    provider: OIDCProvider, hostile: HostileIdP, scenario: Scenario, fragment: str
) -> None:
    """A new ID token from a refresh is verified like the first one before anything is saved."""
    before = login(provider, hostile)
    hostile.scenario = scenario
    with pytest.raises(TokenValidationError) as err:
        provider.refresh()
    refused(err.value, TokenValidationError, fragment)
    # a refresh failure too (security #5: every failure of the refresh path is one)
    assert isinstance(err.value, TokenRefreshError) and err.value.retryable is False
    assert stored(provider) == before


@pytest.mark.parametrize(
    ("scenario", "fragment"),
    [
        (Scenario.TOKEN_HTML, r"an HTML page"),
        (Scenario.TOKEN_NO_ACCESS_TOKEN, r"no 'access_token'"),
        (Scenario.TOKEN_NEGATIVE_EXPIRES_IN, r"'expires_in' is out of range"),
    ],
    ids=["html", "no_access_token", "negative_expires_in"],
)
def test_refresh_with_a_hostile_token_response_keeps_the_stored_token(
    provider: OIDCProvider, hostile: HostileIdP, scenario: Scenario, fragment: str
) -> None:
    before = login(provider, hostile)
    hostile.scenario = scenario
    with pytest.raises(TokenRefreshError) as err:
        provider.refresh()
    refused(err.value, TokenRefreshError, fragment)
    assert stored(provider) == before


def test_userinfo_about_another_sub_is_refused(provider: OIDCProvider, hostile: HostileIdP) -> None:
    before = login(provider, hostile)
    assert provider.get_userinfo()["sub"] == "alice"
    hostile.scenario = Scenario.USERINFO_OTHER_SUB
    with pytest.raises(AuthError) as err:
        provider.get_userinfo()
    refused(err.value, AuthError, "about another subject than the ID token")
    assert OTHER_SUBJECT not in str(err.value)
    assert stored(provider) == before
