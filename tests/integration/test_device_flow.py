"""Device authorization grant (RFC 8628) against the real test IdP (oidc-provider deviceFlow).

The user's side (verification page, code, login, consent or abort) is played over HTTP by
:mod:`tests.device_flow`. The IdP announces ``interval`` 1 s; ``kstlib-device-short``'s codes
live 2 s; ``slow_down`` comes from the IdP's small emulation (oidc-provider never sends it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kstlib.auth import (
    AuthorizationError,
    ConfigurationError,
    DeviceAuthorization,
    DeviceAuthorizationDeniedError,
    DeviceAuthorizationError,
    DeviceCodeExpiredError,
)
from kstlib.auth._device import DEVICE_CODE_GRANT, SLOW_DOWN_STEP
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.redaction import TRACE
from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage
from tests.device_flow import (
    DEVICE,
    DEVICE_PUBLIC,
    DEVICE_SHORT,
    IDP_INTERVAL,
    approve_device,
    deny_device,
)
from tests.flows import make_oidc
from tests.idp_support import CONFIDENTIAL, IdP

POLLS = f"token:{DEVICE_CODE_GRANT}"


@pytest.fixture
def provider(idp: IdP) -> Iterator[OIDCProvider]:
    with make_oidc(idp, DEVICE, name="device") as made:
        yield made


def _polls(idp: IdP, status: int | None = None) -> int:
    key = POLLS if status is None else f"{POLLS}:{status}"
    return idp.stats().get(key, 0)


def _approve_once_pending(idp: IdP, authorization: DeviceAuthorization) -> threading.Thread:
    """Approve in a thread as soon as the IdP answered one poll authorization_pending."""

    def run() -> None:
        deadline = time.monotonic() + 30
        while _polls(idp, 400) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        approve_device(authorization.verification_uri, authorization.user_code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- approve


def test_start_returns_the_codes_and_hides_the_device_code(provider: OIDCProvider) -> None:
    authorization = provider.start_device_authorization()
    assert authorization.verification_uri == f"{provider.config.issuer}/device"
    assert authorization.verification_uri_complete is not None
    assert authorization.user_code in authorization.verification_uri_complete
    assert authorization.interval == IDP_INTERVAL
    assert 0 < authorization.expires_in <= 600
    assert 0 < authorization.seconds_left <= authorization.expires_in
    assert authorization.device_code not in repr(authorization)
    assert authorization.user_code not in repr(authorization)


def test_approved_while_polling_stores_a_validated_token(idp: IdP, provider: OIDCProvider) -> None:
    idp.reset_stats()
    authorization = provider.start_device_authorization()
    approver = _approve_once_pending(idp, authorization)
    token = provider.poll_device_authorization(authorization, timeout=60)
    approver.join(10)
    assert token.id_token and token.refresh_token
    assert provider.get_userinfo(token)["sub"] == "alice"
    stored = provider.token_storage.load("device")
    assert stored is not None and stored.access_token == token.access_token
    assert _polls(idp, 400) >= 1  # authorization_pending: waited and asked again
    assert _polls(idp, 200) == 1


def test_a_public_client_approved_through_the_complete_uri(idp: IdP) -> None:
    with make_oidc(idp, DEVICE_PUBLIC, name="pub") as provider:
        authorization = provider.start_device_authorization()
        assert authorization.verification_uri_complete is not None
        approve_device(authorization.verification_uri_complete, username="bob")
        token = provider.poll_device_authorization(authorization)
        assert provider.get_userinfo(token)["sub"] == "bob"
        assert provider.token_storage.load("pub") is not None


def test_the_device_code_is_never_logged(
    idp: IdP, provider: OIDCProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(TRACE)
    authorization = provider.start_device_authorization()
    approve_device(authorization.verification_uri, authorization.user_code)
    token = provider.poll_device_authorization(authorization)
    assert "/device/auth" in caplog.text  # the traces were captured
    for secret in (authorization.device_code, token.access_token, token.refresh_token):
        assert secret and secret not in caplog.text


def test_the_token_is_saved_under_the_storage_lock(idp: IdP, tmp_path: Path) -> None:
    """While another holder (another process, in effect: its own flock) holds the provider's
    storage lock, an approved poll waits for it before storing."""
    other = FileTokenStorage(tmp_path)
    with make_oidc(idp, DEVICE, name="locked", storage=FileTokenStorage(tmp_path)) as provider:
        authorization = provider.start_device_authorization()
        approve_device(authorization.verification_uri, authorization.user_code)
        idp.reset_stats()
        result: list[object] = []
        with other.lock("locked"):
            poller = threading.Thread(
                target=lambda: result.append(provider.poll_device_authorization(authorization))
            )
            poller.start()
            deadline = time.monotonic() + 30
            while _polls(idp, 200) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _polls(idp, 200) == 1  # the token was issued ...
            time.sleep(1.0)  # ... time enough to store it, were the lock not held ...
            assert other.load("locked") is None  # ... and waits for the lock
        poller.join(30)
        stored = other.load("locked")
        assert stored is not None and result and stored.access_token == result[0].access_token  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- refusals


def test_denied_raises_and_stores_nothing(idp: IdP, provider: OIDCProvider) -> None:
    authorization = provider.start_device_authorization()
    deny_device(authorization.verification_uri, authorization.user_code)
    with pytest.raises(DeviceAuthorizationDeniedError) as caught:
        provider.poll_device_authorization(authorization, timeout=30)
    assert caught.value.error_code == "access_denied"
    assert isinstance(caught.value, AuthorizationError)
    assert "denied" in str(caught.value)
    assert provider.token_storage.load("device") is None


def test_codes_expiring_while_waiting_raise_expired(idp: IdP) -> None:
    with make_oidc(idp, DEVICE_SHORT, name="short") as provider:
        authorization = provider.start_device_authorization()
        assert authorization.expires_in == 2
        with pytest.raises(DeviceCodeExpiredError) as caught:
            provider.poll_device_authorization(authorization)
        assert "start the device login again" in str(caught.value)
        assert provider.token_storage.load("short") is None


def test_the_servers_expired_token_answer(idp: IdP) -> None:
    """A code polled after the server's expiry: expired_token (the local clock is fooled)."""
    with make_oidc(idp, DEVICE_SHORT, name="short") as provider:
        authorization = provider.start_device_authorization()
        while authorization.seconds_left > 0:  # let the server's 2 s pass
            time.sleep(0.1)
        time.sleep(0.5)
        stale = dataclasses.replace(
            authorization, expires_in=600, expires_at=time.monotonic() + 600
        )
        with pytest.raises(DeviceCodeExpiredError) as caught:
            provider.poll_device_authorization(stale, timeout=30)
        assert caught.value.error_code == "expired_token"
        assert provider.token_storage.load("short") is None


def test_slow_down_adds_five_seconds(
    idp: IdP, provider: OIDCProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kstlib.auth.device")
    idp.reset_stats()
    authorization = provider.start_device_authorization()
    approve_device(authorization.verification_uri, authorization.user_code)
    idp._test_call("POST", "device/slow-down", {"count": 1})
    token = provider.poll_device_authorization(authorization, timeout=60)
    assert token.access_token
    assert _polls(idp, 400) == 1 and _polls(idp, 200) == 1
    assert f"polling every {IDP_INTERVAL + SLOW_DOWN_STEP:g} s now" in caplog.text


def test_timeout_leaves_the_code_usable(idp: IdP, provider: OIDCProvider) -> None:
    authorization = provider.start_device_authorization()
    with pytest.raises(DeviceAuthorizationError) as caught:
        provider.poll_device_authorization(authorization, timeout=0.3)
    assert caught.value.reason == "timeout"
    assert not isinstance(caught.value, DeviceAuthorizationDeniedError | DeviceCodeExpiredError)
    assert provider.token_storage.load("device") is None
    approve_device(authorization.verification_uri, authorization.user_code)
    assert provider.poll_device_authorization(authorization).access_token


def test_a_client_without_the_device_grant_is_refused(idp: IdP) -> None:
    with make_oidc(idp, CONFIDENTIAL, name="code-only") as provider:
        with pytest.raises(DeviceAuthorizationError) as caught:
            provider.start_device_authorization()
        assert caught.value.error_code == "invalid_request"  # oidc-provider's choice
        assert "code-only" in str(caught.value)
        assert "device_code is not allowed for this client" in str(caught.value)


def test_no_device_endpoint_names_the_setting() -> None:
    config = AuthProviderConfig(
        client_id="app",
        authorize_url="https://idp.example/authorize",
        token_url="https://idp.example/token",
    )
    with OAuth2Provider("plain", config, MemoryTokenStorage()) as provider:
        with pytest.raises(ConfigurationError) as caught:
            provider.start_device_authorization()
    assert caught.value.key == "device_authorization_endpoint"
    assert "device_authorization_endpoint" in str(caught.value)


def test_a_configured_device_endpoint_is_used_without_discovery(idp: IdP) -> None:
    config = AuthProviderConfig(
        client_id=DEVICE_PUBLIC.client_id,
        authorize_url=idp.authorization_endpoint,
        token_url=idp.token_endpoint,
        device_authorization_url=f"{idp.issuer}/device/auth",
        scopes=["profile"],
    )
    with OAuth2Provider("plain", config, MemoryTokenStorage()) as provider:
        authorization = provider.start_device_authorization()
        approve_device(authorization.verification_uri, authorization.user_code)
        token = provider.poll_device_authorization(authorization)
        assert token.access_token and token.id_token is None


# --------------------------------------------------------------------------- async


def test_async_approve_and_deny(idp: IdP, provider: OIDCProvider) -> None:
    async def main() -> None:
        idp.reset_stats()
        authorization = await provider.astart_device_authorization()
        approver = _approve_once_pending(idp, authorization)
        token = await provider.apoll_device_authorization(authorization, timeout=60)
        await asyncio.to_thread(approver.join, 10)
        stored = await provider.token_storage.aload("device")
        assert stored is not None and stored.access_token == token.access_token
        assert _polls(idp, 400) >= 1

        provider.clear_token()
        denied = await provider.astart_device_authorization()
        await asyncio.to_thread(deny_device, denied.verification_uri, denied.user_code)
        with pytest.raises(DeviceAuthorizationDeniedError):
            await provider.apoll_device_authorization(denied, timeout=30)
        assert await provider.token_storage.aload("device") is None

    asyncio.run(main())


def test_async_expiry_and_cancellation_store_nothing(idp: IdP) -> None:
    async def main() -> None:
        with make_oidc(idp, DEVICE_SHORT, name="short") as provider:
            authorization = await provider.astart_device_authorization()
            with pytest.raises(DeviceCodeExpiredError):
                await provider.apoll_device_authorization(authorization)
            pending = await provider.astart_device_authorization()
            task = asyncio.create_task(provider.apoll_device_authorization(pending))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await provider.token_storage.aload("short") is None

    asyncio.run(main())
