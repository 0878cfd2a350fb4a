"""Custom client authentication methods join the one registry the configuration validates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kstlib.auth._clientauth import CLIENT_AUTH_METHODS, CLIENT_AUTH_REQUIREMENTS
from kstlib.auth.config import build_provider_config
from kstlib.auth.errors import ConfigurationError
from kstlib.auth.providers import ClientAuthentication, register_client_authentication


class HeaderKey(ClientAuthentication):
    method = "test_header_key"
    requires = "client_secret"

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        headers["X-Client-Key"] = self._client_secret or ""


@pytest.fixture
def registered() -> Iterator[type[ClientAuthentication]]:
    register_client_authentication(HeaderKey)
    try:
        yield HeaderKey
    finally:
        CLIENT_AUTH_METHODS.pop(HeaderKey.method, None)
        CLIENT_AUTH_REQUIREMENTS.pop(HeaderKey.method, None)


def provider(**settings: object) -> dict[str, object]:
    base = {"issuer": "https://idp.example.com", "client_id": "app"}
    return {"auth": {"providers": {"p": {**base, **settings}}}}


def test_a_registered_method_is_accepted_by_the_configuration(registered: type) -> None:
    config = provider(token_endpoint_auth_method="test_header_key", client_secret="s")
    assert build_provider_config("p", config=config).token_endpoint_auth_method == (
        "test_header_key"
    )


def test_its_requirement_is_enforced(registered: type) -> None:
    with pytest.raises(ConfigurationError, match="test_header_key needs a client_secret"):
        build_provider_config("p", config=provider(token_endpoint_auth_method="test_header_key"))


def test_unregistered_methods_are_refused_and_the_list_is_live(registered: type) -> None:
    with pytest.raises(ConfigurationError, match="test_header_key") as err:
        build_provider_config("p", config=provider(token_endpoint_auth_method="nope"))
    assert "unknown method 'nope'" in str(err.value)


def test_a_name_is_registered_once(registered: type) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_client_authentication(HeaderKey)
    assert register_client_authentication(HeaderKey, replace=True) is HeaderKey

    class Nameless(ClientAuthentication):
        pass

    with pytest.raises(ValueError, match="non-empty 'method'"):
        register_client_authentication(Nameless)
