"""Provider settings of the grants for services: ``flow``, ``subject_provider``, ``audience``,
``resource`` (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest

from kstlib.auth.config import AuthProviderConfig, build_provider_config
from kstlib.auth.errors import ConfigurationError

TOKEN_URL = "https://idp.example.com/token"


def config(**values: Any) -> AuthProviderConfig:
    base: dict[str, Any] = {"client_id": "svc", "client_secret": "s", "token_url": TOKEN_URL}
    base.update(values)
    return AuthProviderConfig(**base)


def test_default_flow_is_the_browser_login() -> None:
    cfg = AuthProviderConfig(client_id="app", issuer="https://idp.example.com")
    assert cfg.flow == "authorization_code" and cfg.subject_provider is None
    with pytest.raises(ConfigurationError) as info:  # a login needs the authorization endpoint
        config()
    assert info.value.key == "issuer"


@pytest.mark.parametrize(
    "spelled", ["client_credentials", "Client-Credentials", " CLIENT_CREDENTIALS "]
)
def test_client_credentials_needs_only_the_token_endpoint(spelled: str) -> None:
    cfg = config(flow=spelled)
    assert cfg.flow == "client_credentials" and cfg.authorize_url is None


def test_client_credentials_needs_a_confidential_client() -> None:
    for values in ({"client_secret": None}, {"token_endpoint_auth_method": "none"}):
        with pytest.raises(ConfigurationError, match="confidential client") as info:
            config(flow="client_credentials", **values)
        assert info.value.key == "flow"
    key = {"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "d": "d"}
    cfg = config(flow="client_credentials", client_secret=None, client_key=key)
    assert cfg.token_endpoint_auth_method is None and cfg.client_key is not None


def test_service_flow_needs_a_token_endpoint() -> None:
    with pytest.raises(ConfigurationError, match="token_url"):
        config(flow="client_credentials", token_url=None)


@pytest.mark.parametrize("bad", ["implicit", "password", 3, ""])
def test_unknown_flow(bad: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        config(flow=bad)
    assert info.value.key == "flow"


def test_token_exchange_needs_its_subject_provider_and_only_it_has_one() -> None:
    with pytest.raises(ConfigurationError, match="subject_provider") as info:
        config(flow="token_exchange")
    assert info.value.key == "subject_provider"
    cfg = config(flow="token_exchange", subject_provider="corporate", audience="orders")
    assert cfg.subject_provider == "corporate" and cfg.audience == "orders"
    with pytest.raises(ConfigurationError, match="only used with flow token_exchange"):
        config(flow="client_credentials", subject_provider="corporate")


def test_resource_is_an_absolute_url() -> None:
    # one resource setting for every grant (RFC 8707 2: an absolute URI without fragment)
    cfg = config(flow="client_credentials", resource="https://api.example.com/")
    assert cfg.resource == ["https://api.example.com/"]
    for bad in ("orders", "https://api.example.com/#frag"):
        with pytest.raises(ConfigurationError) as info:
            config(flow="client_credentials", resource=bad)
        assert info.value.key == "resource"


def test_a_service_in_the_file_asks_for_no_openid_scope_by_default() -> None:
    loaded = {
        "auth": {
            "providers": {
                "svc": {
                    "type": "oauth2",
                    "flow": "client_credentials",
                    "client_id": "svc",
                    "client_secret": "s",
                    "token_endpoint": TOKEN_URL,
                },
                "app": {"issuer": "https://idp.example.com", "client_id": "app"},
                "bad": {"flow": "device", "issuer": "https://idp.example.com", "client_id": "x"},
            }
        }
    }
    assert build_provider_config("svc", config=loaded).scopes == []
    assert build_provider_config("app", config=loaded).scopes == ["openid", "profile", "email"]
    with pytest.raises(ConfigurationError, match="unknown flow 'device'"):
        build_provider_config("bad", config=loaded)
