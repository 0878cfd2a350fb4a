"""RFC 8628 device authorization answers and polling rules (no network: pure functions).

The real exchanges run against the test IdP in tests/integration/test_device_flow.py; these
cover answers a conforming server does not send.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kstlib.auth import DeviceAuthorizationError, TokenExchangeError
from kstlib.auth._device import (
    DEFAULT_INTERVAL,
    MAX_TRANSIENT_FAILURES,
    SLOW_DOWN_STEP,
    DeviceAuthorization,
    DevicePoll,
    parse_device_authorization,
)

GOOD: dict[str, Any] = {
    "device_code": "dc-secret-value",
    "user_code": "ABCD-EFGH",
    "verification_uri": "https://idp.example/device",
    "verification_uri_complete": "https://idp.example/device?user_code=ABCD-EFGH",
    "expires_in": 600,
    "interval": 2,
}


def _error(code: str | None, *, retryable: bool = False, **details: Any) -> TokenExchangeError:
    return TokenExchangeError(
        f"refused: {code}", reason=str(code), error_code=code, retryable=retryable, details=details
    )


def test_a_good_answer() -> None:
    authorization = parse_device_authorization("p", GOOD)
    assert authorization.user_code == "ABCD-EFGH"
    assert authorization.interval == 2 and authorization.expires_in == 600
    assert "dc-secret-value" not in repr(authorization)
    assert "ABCD" not in repr(authorization)


def test_interval_defaults_to_five_and_verification_url_is_accepted() -> None:
    data = {k: v for k, v in GOOD.items() if k not in {"interval", "verification_uri"}}
    data["verification_url"] = "https://idp.example/device"
    authorization = parse_device_authorization("p", data)
    assert authorization.interval == DEFAULT_INTERVAL
    assert authorization.verification_uri == "https://idp.example/device"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("device_code", None),
        ("device_code", ""),
        ("user_code", 12),
        ("user_code", "AB\x1bCD"),
        ("verification_uri", None),
        ("verification_uri", "http://idp.example/device"),  # plain http, not loopback
        ("verification_uri", "javascript:alert(1)"),
        ("verification_uri_complete", "file:///etc/passwd"),
        ("expires_in", None),
        ("expires_in", 0),
        ("expires_in", True),
        ("interval", -1),
        ("interval", 10_000),
    ],
)
def test_unusable_answers_are_refused_naming_the_field(field: str, value: Any) -> None:
    data = dict(GOOD)
    if value is None:
        del data[field]
    else:
        data[field] = value
    with pytest.raises(DeviceAuthorizationError) as caught:
        parse_device_authorization("corp", data)
    assert field in str(caught.value) and "'corp'" in str(caught.value)
    assert "dc-secret-value" not in str(caught.value)


def test_not_an_object() -> None:
    with pytest.raises(DeviceAuthorizationError, match="JSON object"):
        parse_device_authorization("p", ["device_code"])


def _poll(interval: int = 1, expires_in: int = 600) -> DevicePoll:
    data = dict(GOOD, interval=interval, expires_in=expires_in)
    return DevicePoll("p", parse_device_authorization("p", data), None)


def test_pending_keeps_the_interval_and_slow_down_adds_five() -> None:
    poll = _poll(interval=1)
    poll.failed(_error("authorization_pending", retryable=True))
    assert poll.interval == 1
    poll.failed(_error("slow_down", retryable=True))
    assert poll.interval == 1 + SLOW_DOWN_STEP
    poll.failed(_error("slow_down", retryable=True, interval=30))  # the server's own figure
    assert poll.interval == 30


def test_transient_failures_are_retried_a_few_times_then_raised() -> None:
    poll = _poll()
    for _ in range(MAX_TRANSIENT_FAILURES):
        poll.failed(_error(None, retryable=True))
    with pytest.raises(DeviceAuthorizationError) as caught:
        poll.failed(_error(None, retryable=True))
    assert caught.value.reason == "None"


def test_other_errors_end_the_wait_with_the_servers_code() -> None:
    with pytest.raises(DeviceAuthorizationError) as caught:
        _poll().failed(_error("invalid_grant"))
    assert caught.value.error_code == "invalid_grant"


def test_a_wait_needs_a_device_authorization_and_a_sane_timeout() -> None:
    with pytest.raises(TypeError):
        DevicePoll("p", object(), None)  # type: ignore[arg-type]
    authorization = DeviceAuthorization("d", "u", "https://i/device", None, 60, 5)
    with pytest.raises(ValueError, match="timeout"):
        DevicePoll("p", authorization, float("nan"))


# --------------------------------------------------------------------------- respx: broken servers
# Error paths the real test IdP cannot produce (tests/integration/test_device_flow.py runs the
# real ones): a device endpoint answering 503, a token endpoint failing transiently.

IDP = "https://idp.example"


def _plain_provider() -> Any:
    from kstlib.auth import AuthProviderConfig, MemoryTokenStorage, OAuth2Provider

    config = AuthProviderConfig(
        client_id="app",
        authorize_url=f"{IDP}/authorize",
        token_url=f"{IDP}/token",
        device_authorization_url=f"{IDP}/device/auth",
    )
    return OAuth2Provider("broken", config, MemoryTokenStorage())


def test_a_device_endpoint_answering_503_is_a_typed_error() -> None:
    import respx

    with respx.mock, _plain_provider() as provider:
        respx.post(f"{IDP}/device/auth").respond(503, text="<html>down</html>")
        with pytest.raises(DeviceAuthorizationError) as caught:
            provider.start_device_authorization()
    assert "Device authorization request to 'broken' failed" in str(caught.value)


def test_transient_token_endpoint_failures_are_polled_through() -> None:
    import respx

    token = {"access_token": "at-value", "token_type": "Bearer", "expires_in": 60}
    answers = [
        httpx.Response(503, text="busy"),
        httpx.Response(400, json={"error": "authorization_pending"}),
        httpx.Response(500, json={"error": "server_error"}),
        httpx.Response(200, json=token),
    ]
    with respx.mock, _plain_provider() as provider:
        respx.post(f"{IDP}/device/auth").respond(200, json=dict(GOOD, interval=1))
        route = respx.post(f"{IDP}/token").mock(side_effect=answers)
        authorization = provider.start_device_authorization()
        got = provider.poll_device_authorization(authorization, timeout=30)
        assert got.access_token == "at-value"
        assert route.call_count == 4
        body = route.calls[0].request.content.decode()
        assert "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code" in body
        assert "device_code=dc-secret-value" in body
        assert provider.token_storage.load("broken").access_token == "at-value"
