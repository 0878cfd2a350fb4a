from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kstlib.auth.errors import TokenValidationError
from kstlib.auth.models import (
    AuthFlow,
    PreflightReport,
    PreflightResult,
    PreflightStatus,
    Token,
    TokenType,
)
from tests.hypothesis_support import examples


def test_reference_example_token() -> None:
    token = Token(
        access_token="eyJhbGc...",
        expires_at=datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC),
        refresh_token="dGhpcyBpcyBh...",
        scope=["openid", "profile"],
    )
    assert token.is_expired is True
    assert token.is_refreshable is True
    assert token.should_refresh is True


def test_reference_example_from_response() -> None:
    response = {
        "access_token": "eyJhbGc...",
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "dGhpcyBpcyBh...",
        "scope": "openid profile",
        "id_token": "eyJhbGc...",
    }
    token = Token.from_response(response)
    assert token.scope == ["openid", "profile"]
    assert token.token_type is TokenType.BEARER
    assert 3590 <= (token.expires_in or 0) <= 3600
    assert not token.is_expired and not token.should_refresh


@pytest.mark.parametrize("expires_in", [3600, "3600", " 3600 ", 3600.0])
def test_expires_in_int_or_numeric_string(expires_in: object) -> None:
    token = Token.from_response({"access_token": "a", "expires_in": expires_in})
    assert token.expires_at is not None
    assert 3590 <= (token.expires_in or 0) <= 3600


@pytest.mark.parametrize(
    "bad", [-1, "-5", "soon", True, [1], {"a": 1}, float("nan"), float("inf"), 10**12]
)
def test_bad_expires_in_is_a_typed_error(bad: object) -> None:
    with pytest.raises(TokenValidationError) as err:
        Token.from_response({"access_token": "a", "expires_in": bad})
    assert err.value.claim == "expires_in"


def test_scope_list_and_defaults_and_metadata() -> None:
    token = Token.from_response(
        {"access_token": "a", "scope": ["openid", "email"], "session_state": "x", "foo": 1}
    )
    assert token.scope == ["openid", "email"]
    assert token.token_type is TokenType.BEARER
    assert token.metadata == {"session_state": "x", "foo": 1}
    assert token.expires_at is None and token.expires_in is None


@pytest.mark.parametrize("tt", ["bearer", "BEARER", "DPoP", "dpop", "MAC"])
def test_token_type_case_insensitive(tt: str) -> None:
    assert isinstance(
        Token.from_response({"access_token": "a", "token_type": tt}).token_type, TokenType
    )


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"access_token": ""},
        {"access_token": 5},
        {"access_token": "a", "token_type": "weird"},
        {"access_token": "a", "refresh_token": 3},
        {"access_token": "a", "scope": 7},
    ],
)
def test_unusable_responses(data: dict[str, object]) -> None:
    with pytest.raises(TokenValidationError):
        Token.from_response(data)


def test_round_trip_is_exact_and_json_serialisable() -> None:
    token = Token.from_response(
        {
            "access_token": "a",
            "expires_in": 60,
            "refresh_token": "r",
            "scope": "x y",
            "id_token": "i",
            "refresh_expires_in": 1800,
            "extra": {"k": [1, 2]},
        }
    )
    data = json.loads(json.dumps(token.to_dict()))
    again = Token.from_dict(data)
    assert again == token
    assert again.expires_at is not None and again.expires_at.tzinfo is not None
    assert again.issued_at.utcoffset() == timedelta(0)
    assert again.refresh_expires_at is not None


def test_naive_datetimes_are_utc() -> None:
    token = Token(access_token="a", expires_at=datetime(2030, 1, 1, 0, 0))
    assert token.expires_at == datetime(2030, 1, 1, tzinfo=UTC)


def test_unknown_lifetime_expires_after_an_hour() -> None:
    fresh = Token(access_token="a")
    old = Token(access_token="a", issued_at=datetime.now(UTC) - timedelta(hours=2))
    assert not fresh.is_expired
    assert old.is_expired and old.should_refresh


def test_needs_refresh_skew() -> None:
    token = Token(access_token="a", expires_at=datetime.now(UTC) + timedelta(seconds=120))
    assert not token.should_refresh
    assert token.needs_refresh(300)


def test_repr_shows_no_secret() -> None:
    token = Token(
        access_token="ACCESS-SECRET-123", refresh_token="REFRESH-SECRET-456", id_token="ID-789"
    )
    for text in (repr(token), str(token), f"{token}"):
        assert "ACCESS-SECRET-123" not in text
        assert "REFRESH-SECRET-456" not in text
        assert "ID-789" not in text
        assert "sha256:" in text


def test_enums_and_preflight() -> None:
    assert {f.value for f in AuthFlow} == {
        "authorization_code",
        "authorization_code_pkce",
        "client_credentials",
        "device_code",
        "refresh_token",
        "token_exchange",
    }
    assert {s.value for s in PreflightStatus} == {"success", "failure", "warning", "skipped"}
    report = PreflightReport(
        "p",
        [
            PreflightResult("a", PreflightStatus.SUCCESS, "ok"),
            PreflightResult("b", PreflightStatus.WARNING, "hm"),
        ],
    )
    assert report.success
    report.results.append(PreflightResult("c", PreflightStatus.FAILURE, "no", duration_ms=1.5))
    assert not report.success
    assert json.loads(json.dumps(report.to_dict()))["results"][2]["status"] == "failure"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
token_like = st.dictionaries(
    st.sampled_from(
        [
            "access_token",
            "token_type",
            "expires_in",
            "refresh_token",
            "scope",
            "id_token",
            "expires_at",
            "issued_at",
            "metadata",
            "refresh_expires_in",
            "other",
        ]
    ),
    json_values | st.text(max_size=30),
    max_size=9,
)


@settings(max_examples=examples(100), deadline=None)
@given(data=token_like | json_values)
def test_from_response_only_typed_errors(data: object) -> None:
    try:
        token = Token.from_response(data)  # type: ignore[arg-type]
    except TokenValidationError:
        return
    assert Token.from_dict(json.loads(json.dumps(token.to_dict()))) == token


@settings(max_examples=examples(100), deadline=None)
@given(data=token_like | json_values)
def test_from_dict_only_typed_errors(data: object) -> None:
    try:
        Token.from_dict(data)  # type: ignore[arg-type]
    except TokenValidationError:
        pass


def _lived(lifetime: float, left: float) -> Token:
    """A token of ``lifetime`` seconds with ``left`` seconds to go."""
    expires_at = datetime.now(UTC) + timedelta(seconds=left)
    return Token(
        access_token="a", expires_at=expires_at, issued_at=expires_at - timedelta(seconds=lifetime)
    )


@pytest.mark.parametrize(
    ("lifetime", "skew", "effective"),
    [(30, 60, 15), (60, 60, 30), (3600, 60, 60), (3600, 300, 300), (400, 300, 200), (10, 0, 0)],
)
def test_effective_skew_is_at_most_half_the_lifetime(
    lifetime: float, skew: float, effective: float
) -> None:
    assert _lived(lifetime, lifetime).effective_skew(skew) == pytest.approx(effective)


def test_a_short_token_is_stale_only_in_the_second_half_of_its_life() -> None:
    """Measured defect: a 30 s token was stale from birth with the default 60 s skew."""
    assert not _lived(30, 29).is_stale()
    assert not _lived(30, 16).is_stale()
    assert _lived(30, 14).is_stale()
    assert 13 <= _lived(30, 29).refresh_due_in() <= 14
    assert _lived(3600, 30).is_stale() and not _lived(3600, 90).is_stale()
    assert _lived(3600, -1).is_stale()


def test_staleness_of_a_token_of_unknown_lifetime_follows_is_expired() -> None:
    fresh = Token(access_token="a")
    old = Token(access_token="a", issued_at=datetime.now(UTC) - timedelta(hours=2))
    assert not fresh.is_stale() and 3500 < fresh.refresh_due_in() <= 3600
    assert old.is_stale() and old.is_expired
