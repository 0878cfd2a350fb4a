from __future__ import annotations

import json
import logging

import pytest

from kstlib.auth.errors import AuthError, TokenRefreshError
from kstlib.auth.redaction import (
    REDACTED,
    TRACE,
    fingerprint,
    get_logger,
    redact_body,
    redact_headers,
    redact_mapping,
    redact_text,
    redact_url,
)

SECRET = "s3cr3t-VALUE-xyz"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    "key",
    [
        "code",
        "state",
        "code_verifier",
        "client_secret",
        "client_assertion",
        "device_code",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "nonce",
        "password",
        "subject_token",
    ],
)
def test_url_query_and_fragment(key: str) -> None:
    url = f"https://idp.example/cb?{key}={SECRET}&keep=yes#{key}={SECRET}"
    out = redact_url(url)
    assert SECRET not in out
    assert "keep=yes" in out
    assert out.count(REDACTED) == 2 or out.count("%5BREDACTED%5D") == 2


def test_redaction_hides_length() -> None:
    short = redact_url("https://x/cb?code=a")
    long = redact_url("https://x/cb?code=" + "a" * 500)
    assert short == long


def test_form_and_json_bodies() -> None:
    form = f"grant_type=refresh_token&refresh_token={SECRET}&client_id=app"
    out = redact_body(form, "application/x-www-form-urlencoded")
    assert SECRET not in out and "client_id=app" in out
    body = json.dumps(
        {"access_token": SECRET, "nested": {"id_token": JWT}, "list": [{"code": SECRET}], "ok": 1}
    )
    out = redact_body(body.encode(), "application/json")
    assert SECRET not in out and JWT not in out and '"ok": 1' in out


def test_headers() -> None:
    out = redact_headers(
        {"Authorization": f"Bearer {SECRET}", "Cookie": f"sid={SECRET}", "Accept": "x"}
    )
    assert SECRET not in json.dumps(out)
    assert out["Authorization"] == f"Bearer {REDACTED}"
    assert out["Accept"] == "x"


def test_free_text() -> None:
    text = (
        f"failed with Bearer {SECRET} and token {JWT} and client_secret={SECRET} "
        f'"state": "{SECRET}"'
    )
    out = redact_text(text)
    assert SECRET not in out and JWT not in out


@pytest.mark.parametrize(
    "message",
    [
        # the error of an unset env:// reference (it read "client_secret: [REDACTED] resolve
        # secret reference ...: [REDACTED] variable CORP_SECRET is not set")
        "/home/u/kstlib.conf.yml: auth.providers.corp.client_secret: cannot resolve secret "
        "reference 'env://CORP_SECRET': environment variable CORP_SECRET is not set.",
        "auth.storage.redis.password: expected a secret reference, got a number",
        "file:///run/secrets/client_secret: is not a regular file",
    ],
)
def test_prose_about_a_secret_field_keeps_its_words(message: str) -> None:
    assert redact_text(message) == message


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("client_secret: s3cr3t-value", "s3cr3t-value"),
        ("client_secret=s3cr3t-value&x=1", "s3cr3t-value"),
        ('{"refresh_token": "s3cr3t-value"}', "s3cr3t-value"),
        ("headers: {client_secret: s3cr3t-value}", "s3cr3t-value"),
        ("got password: s3cr3t-value from the server", "s3cr3t-value"),
    ],
)
def test_a_key_standing_on_its_own_still_hides_its_value(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out


def test_extra_keys() -> None:
    assert SECRET not in redact_url(f"https://x/?my_key={SECRET}", extra_keys=["my_key"])
    assert SECRET not in redact_mapping({"my_key": SECRET}, extra_keys=["my_key"])["my_key"]


def test_mapping_suffix_rules() -> None:
    out = redact_mapping({"api_secret": SECRET, "custom_token": SECRET, "user": "alice"})
    assert out == {"api_secret": REDACTED, "custom_token": REDACTED, "user": "alice"}


def test_fingerprint_is_short_and_stable() -> None:
    assert fingerprint(SECRET) == fingerprint(SECRET)
    assert fingerprint(SECRET) != fingerprint(SECRET + "x")
    assert SECRET not in fingerprint(SECRET) and len(fingerprint(SECRET)) == len("sha256:") + 8
    assert fingerprint(None) == "none"


def test_logger_redacts_messages_and_args(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("kstlib.test.redaction")
    with caplog.at_level(TRACE, logger="kstlib"):
        log.log(
            TRACE,
            "calling %s with body %s",
            f"https://x/cb?code={SECRET}",
            {"access_token": SECRET},
        )
        log.warning("Authorization: Bearer %s", SECRET)
    assert caplog.records
    assert SECRET not in caplog.text
    assert logging.getLevelName(TRACE) == "TRACE"


def test_errors_never_carry_secrets() -> None:
    err = AuthError("boom", details={"refresh_token": SECRET, "url": f"https://x/?code={SECRET}"})
    assert SECRET not in repr(err.details) and SECRET not in str(err) and SECRET not in repr(err)
    refresh = TokenRefreshError("refresh failed", retryable=True)
    assert refresh.retryable and refresh.reason == "refresh failed"


# --- prose words after a secret's name or an auth scheme (#16 item 10) -------------------


@pytest.mark.parametrize(
    "message",
    [
        # the unset env:// reference, as the secrets module words it without a dotted path
        "client_secret: cannot resolve secret reference env://CORP_SECRET: "
        "variable CORP_SECRET is not set",
        "HTTP Basic with the form-urlencoded id and secret (RFC 6749 2.3.1).",
        "Token response has an unsupported 'token_type' (expected Bearer, DPoP or MAC)",
        "bearer tokens need TLS; a DPoP provider signs a proof",
        "refresh_token: none, access token: expired.",
        "password: missing (set auth.storage.redis.password)",
    ],
)
def test_prose_after_a_secret_name_or_a_scheme_keeps_its_words(message: str) -> None:
    assert redact_text(message) == message


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopqrstuvwxyz"),
        ("Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("DPoP proofless", "proofless"),  # not a prose word: a value
        ("password: hunter", "hunter"),
        ("client_secret=cannot", "cannot"),  # key=value: always a value
        ('{"client_secret": "cannot"}', "cannot"),  # quoted: always a value
        ("client_secret: 'cannot'", "cannot"),
        ("token: S3cr3t", "S3cr3t"),
    ],
)
def test_a_value_that_is_not_a_prose_word_is_still_hidden(text: str, secret: str) -> None:
    out = redact_text(text)
    assert secret not in out.replace("[REDACTED]", "")
    assert REDACTED in out


def test_patterns_are_compiled_at_first_use_not_at_import() -> None:
    """Importing the redaction module compiles no pattern (the token fast path imports it
    and redacts nothing); the first redaction compiles them and still redacts."""
    import subprocess
    import sys

    script = (
        "import kstlib._redaction as r\n"
        "assert not r._compiled, sorted(r._compiled)\n"
        "out = r.redact_text('Authorization: Bearer abcdefghijklmnop client_secret=s3cr3t')\n"
        "assert 'abcdefghijklmnop' not in out and 's3cr3t' not in out, out\n"
        "assert {'scheme', 'kv'} <= set(r._compiled), sorted(r._compiled)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
