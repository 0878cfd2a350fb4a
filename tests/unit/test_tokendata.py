"""kstlib.auth._tokendata: the one owner of a stored token's checks and of its staleness.

``Token.from_dict`` and the command line's ``StoredToken`` (its fast path) must accept and
refuse the same documents, with the same messages, decide staleness alike and print the
same bytes in every ``kstlib auth token`` format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kstlib.auth._tokendata import StoredToken, refresh_due_in
from kstlib.auth.errors import TokenStorageError, TokenValidationError
from kstlib.auth.models import Token
from kstlib.auth.token._document import dump_document, parse_document, parse_stored
from kstlib.cli._fast import TOKEN_FORMATS, format_token
from tests.hypothesis_support import examples


def _stored(**changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    data = Token(
        access_token="access-value",
        expires_at=now + timedelta(minutes=30),
        issued_at=now - timedelta(minutes=30),
        refresh_token="refresh-value",
        scope=["openid", "email"],
        id_token="id.token.value",
        metadata={"session_state": "s"},
    ).to_dict()
    data.update(changes)
    return data


def _outcome(build: Any, data: Any) -> tuple[str, str | None]:
    try:
        build(data)
    except TokenValidationError as exc:
        return exc.message, exc.claim
    return "accepted", None


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"access_token": ""},
        {"access_token": 42},
        {"access_token": "two\nlines"},
        {"token_type": 3},
        {"token_type": "bearer"},
        {"token_type": "unknown-type"},
        {"token_type": None},
        {"metadata": []},
        {"metadata": None},
        {"issued_at": "yesterday"},
        {"issued_at": None},
        {"expires_at": 1.5e300},
        {"expires_at": [2025]},
        {"expires_at": "2025-01-01T00:00:00"},  # naive: taken as UTC
        {"refresh_token": ""},
        {"id_token": "é"},
        {"scope": "a b"},
        {"scope": [1]},
    ],
)
def test_stored_token_accepts_and_refuses_as_token_from_dict(changes: dict[str, Any]) -> None:
    data = _stored(**changes)
    assert _outcome(StoredToken, data) == _outcome(Token.from_dict, data)
    if _outcome(Token.from_dict, data)[0] == "accepted":
        token, stored = Token.from_dict(data), StoredToken(data)
        for name in ("access_token", "expires_at", "refresh_token", "scope", "id_token"):
            assert getattr(stored, name) == getattr(token, name), name
        assert stored.token_type == str(getattr(token.token_type, "value", token.token_type))


def test_a_document_that_is_not_an_object_is_refused_alike() -> None:
    for data in (None, [], "token"):
        assert _outcome(StoredToken, data) == _outcome(Token.from_dict, data)


@given(
    lifetime=st.integers(min_value=1, max_value=10 * 86400),
    left=st.integers(min_value=-3600, max_value=10 * 86400),
    skew=st.floats(min_value=0, max_value=86400),
    known=st.booleans(),
)
@settings(max_examples=examples(200))
def test_staleness_is_the_same_decision(lifetime: int, left: int, skew: float, known: bool) -> None:
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=left) if known else None
    issued_at = (expires_at or now) - timedelta(seconds=lifetime)
    data = _stored(
        expires_at=expires_at.isoformat() if expires_at else None, issued_at=issued_at.isoformat()
    )
    token, stored = Token.from_dict(data), StoredToken(data)
    at = datetime.now(UTC)
    expected = refresh_due_in(token.expires_at, token.issued_at, skew, at)
    assert refresh_due_in(stored.expires_at, stored.issued_at, skew, at) == expected
    if abs(expected) > 5:  # away from the boundary, where the clock may tick between calls
        assert token.is_stale(skew) == stored.is_stale(skew) == (expected <= 0)


@pytest.mark.parametrize("output_format", TOKEN_FORMATS)
@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "MAC", "custom"])
def test_every_format_prints_the_same_from_either(output_format: str, token_type: str) -> None:
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": "alice", "iat": now, "exp": now + 3600}
    id_token = ".".join(
        part.rstrip("=")
        for part in (
            _b64(json.dumps({"alg": "RS256"})),
            _b64(json.dumps(claims)),
            "c2lnbmF0dXJl",
        )
    )
    data = _stored(token_type=token_type, id_token=id_token)
    token, stored = Token.from_dict(data), StoredToken(data)
    for access_token in (True, False):
        from_token = format_token(token, output_format, access_token=access_token)
        from_stored = format_token(stored, output_format, access_token=access_token)
        if output_format == "json":  # expires_in may tick between the two
            assert json.loads(from_token).pop("expires_in") - json.loads(from_stored).pop(
                "expires_in"
            ) in (-1, 0, 1)
            from_token, from_stored = (
                json.dumps({k: v for k, v in json.loads(t).items() if k != "expires_in"})
                for t in (from_token, from_stored)
            )
        assert from_stored == from_token


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).decode()


def test_parse_stored_refuses_what_parse_document_refuses(tmp_path: Path) -> None:
    good = dump_document("corp", Token.from_dict(_stored()))
    assert parse_stored("corp", good, tmp_path / "corp.json").access_token == "access-value"
    for data in (
        b"{not json",
        b"\xff\xfe",
        b"[]",
        json.dumps({"version": 1, "provider": "other", "token": _stored()}).encode(),
        json.dumps({"version": 99, "provider": "corp", "token": _stored()}).encode(),
        json.dumps({"version": 1, "provider": "corp", "token": _stored(access_token="")}).encode(),
    ):
        with pytest.raises(TokenStorageError) as document_error:
            parse_document("corp", data, tmp_path / "corp.json")
        with pytest.raises(TokenStorageError) as stored_error:
            parse_stored("corp", data, str(tmp_path / "corp.json"))
        assert str(stored_error.value) == str(document_error.value)


def test_the_owner_is_cheap_to_import() -> None:
    """What the fast path imports to read a stored token: none of the costly modules."""
    code = (
        "import sys; import kstlib.auth.token._document, kstlib.auth.token._atomic; "
        "print(sorted(m for m in ('typing', 're', 'json', 'dataclasses', 'enum', 'pathlib', "
        "'collections', 'kstlib.auth.models', 'kstlib._redaction') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
