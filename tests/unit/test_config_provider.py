"""AuthProviderConfig: defaults, validation (each rule), immutability, repr without secrets."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import ConfigurationError

SECRET = "pr0vider-SECRET-42"
ISSUER = "https://idp.example.com/realms/main"


def make(**kwargs: Any) -> AuthProviderConfig:
    kwargs.setdefault("client_id", "app")
    if "authorize_url" not in kwargs and "token_url" not in kwargs:
        kwargs.setdefault("issuer", ISSUER)
    return AuthProviderConfig(**kwargs)


def test_defaults() -> None:
    config = AuthProviderConfig(client_id="app", issuer=ISSUER)
    assert config.scopes == ["openid"]
    assert config.redirect_uri == "http://127.0.0.1:8400/callback"
    assert config.pkce is True
    assert config.discovery_ttl == 3600
    assert config.headers == {} and config.extra == {}
    assert config.ssl_verify is True and config.ssl_ca_bundle is None
    assert config.server_side is False
    assert config.token_endpoint_auth_method is None
    assert (config.leeway, config.timeout, config.max_retries, config.refresh_skew) == (
        60.0,
        30.0,
        2,
        60.0,
    )
    assert config.id_token_signing_alg_values is None
    assert config.is_public_client


def test_manual_endpoints_without_issuer() -> None:
    config = AuthProviderConfig(
        client_id="app",
        authorize_url="https://github.com/login/oauth/authorize",
        token_url="https://github.com/login/oauth/access_token",
        client_secret=SECRET,
        scopes=["read", "write"],
    )
    assert config.issuer is None and not config.is_public_client


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"authorize_url": "https://idp.example.com/auth"},
        {"token_url": "https://idp.example.com/token"},
    ],
)
def test_needs_issuer_or_both_endpoints(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as err:
        AuthProviderConfig(client_id="app", **kwargs)
    assert err.value.key == "issuer"
    assert "authorize_url" in str(err.value) and "token_url" in str(err.value)


@pytest.mark.parametrize("client_id", ["", "   ", None, 42])
def test_client_id_required(client_id: Any) -> None:
    with pytest.raises(ConfigurationError) as err:
        make(client_id=client_id)
    assert err.value.key == "client_id"


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com",
        "https://idp.example.com:8443/realms/x",
        "http://127.0.0.1:8080",
        "http://127.3.2.1/x",
        "http://localhost:9000",
        "http://LOCALHOST",
        "http://[::1]:9000/",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert make(issuer=url).issuer == url


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://idp.example.com", "must use https"),
        ("http://10.0.0.1/realms", "must use https"),
        ("ftp://idp.example.com", "absolute http(s) URL"),
        ("idp.example.com/realms", "absolute http(s) URL"),
        ("/relative/path", "absolute http(s) URL"),
        ("https://", "absolute http(s) URL"),
        ("https://idp.example.com/a b", "absolute http(s) URL"),
        ("https://idp.example.com/#frag", "fragment"),
        ("https://user:pw@idp.example.com", "credentials"),
        ("https://[::1", "not a valid URL"),
        ("https://idp.example.com:99999", "not a valid URL"),
    ],
)
def test_rejected_urls(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        make(token_url=url, authorize_url="https://idp.example.com/auth")
    assert err.value.key == "token_url"
    assert fragment in str(err.value)
    assert "pw" not in str(err.value)


def test_issuer_must_not_have_a_query() -> None:
    with pytest.raises(ConfigurationError, match="query"):
        make(issuer="https://idp.example.com/?tenant=a")
    assert make(issuer=ISSUER, token_url="https://idp.example.com/t?x=1").token_url


@pytest.mark.parametrize(
    "field_name",
    [
        "revoke_url",
        "userinfo_url",
        "jwks_uri",
        "end_session_endpoint",
        "introspection_url",
        "device_authorization_url",
        "post_logout_redirect_uri",
    ],
)
def test_every_endpoint_is_checked(field_name: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        make(**{field_name: "http://idp.example.com/x"})
    assert err.value.key == field_name


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:8400/callback",
        "http://localhost/cb",
        "http://[::1]:5000/cb",
        "https://127.0.0.1/cb",
    ],
)
def test_loopback_redirect_uri(uri: str) -> None:
    assert make(redirect_uri=uri).redirect_uri == uri


@pytest.mark.parametrize(
    "uri", ["https://app.example.com/callback", "http://192.168.1.5/cb", "com.example.app:/cb"]
)
def test_non_loopback_redirect_uri_needs_server_side(uri: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        make(redirect_uri=uri)
    assert err.value.key == "redirect_uri"
    if uri.startswith("https"):
        assert "server_side" in str(err.value)
        assert make(redirect_uri=uri, server_side=True).redirect_uri == uri


def test_server_side_redirect_still_needs_https() -> None:
    with pytest.raises(ConfigurationError, match="must use https"):
        make(redirect_uri="http://app.example.com/cb", server_side=True)


def test_scopes_accept_a_space_separated_string_and_drop_duplicates() -> None:
    assert make(scopes="openid  profile email openid").scopes == ["openid", "profile", "email"]
    assert make(scopes=("a", "b")).scopes == ["a", "b"]
    assert make(scopes=[]).scopes == []


@pytest.mark.parametrize("scopes", [["openid", ""], ["openid", 3], ["open id"], 5, {"a": 1}])
def test_bad_scopes(scopes: Any) -> None:
    with pytest.raises(ConfigurationError) as err:
        make(scopes=scopes)
    assert err.value.key == "scopes"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("pkce", "yes"),
        ("pkce", 1),
        ("ssl_verify", "false"),
        ("server_side", None),
        ("discovery_ttl", -1),
        ("discovery_ttl", 1.5),
        ("discovery_ttl", True),
        ("leeway", -0.1),
        ("leeway", float("nan")),
        ("leeway", "60"),
        ("timeout", 0),
        ("timeout", float("inf")),
        ("max_retries", 11),
        ("max_retries", -1),
        ("refresh_skew", 10**400),
        ("client_secret", ""),
        ("client_secret", 1234),
        ("ssl_ca_bundle", ""),
        ("token_endpoint_auth_method", "client_secret_magic"),
        ("id_token_signing_alg_values", ["none"]),
        ("id_token_signing_alg_values", ["RS256", "XX999"]),
        ("id_token_signing_alg_values", []),
        ("extra", ["not", "a", "mapping"]),
        ("extra", {1: "non-string key"}),
    ],
)
def test_bad_values_name_their_field(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as err:
        make(**{name: value})
    assert err.value.key == name
    assert str(err.value).startswith(f"{name}: ")


def test_none_algorithm_is_refused_explicitly() -> None:
    with pytest.raises(ConfigurationError, match="never accepted"):
        make(id_token_signing_alg_values=["RS256", "none"])
    assert make(id_token_signing_alg_values=["RS256", "ES256"]).id_token_signing_alg_values == [
        "RS256",
        "ES256",
    ]


def test_secret_auth_methods_need_a_secret() -> None:
    with pytest.raises(ConfigurationError, match="needs a client_secret"):
        make(token_endpoint_auth_method="client_secret_basic")
    assert make(token_endpoint_auth_method="none").token_endpoint_auth_method == "none"
    config = make(token_endpoint_auth_method="client_secret_post", client_secret=SECRET)
    assert config.token_endpoint_auth_method == "client_secret_post"


@pytest.mark.parametrize(
    "headers",
    [
        {"Bad Header": "x"},
        {"X-Ok": 5},
        {"X-Injected": "a\r\nSet-Cookie: b"},
        {3: "x"},
        ["X-Ok", "x"],
    ],
)
def test_bad_headers(headers: Any) -> None:
    with pytest.raises(ConfigurationError) as err:
        make(headers=headers)
    assert err.value.key == "headers"


def test_authorize_params_are_checked() -> None:
    config = make(extra={"authorize_params": {"prompt": "login", "max_age": 300}, "other": [1]})
    assert config.extra == {"authorize_params": {"prompt": "login", "max_age": "300"}, "other": [1]}
    with pytest.raises(ConfigurationError, match="'state'"):
        make(extra={"authorize_params": {"state": "fixed"}})
    with pytest.raises(ConfigurationError, match="mapping"):
        make(extra={"authorize_params": "prompt=login"})


def test_inputs_are_copied() -> None:
    headers = {"X-A": "1"}
    extra: dict[str, Any] = {"nested": {"k": ["v"]}}
    scopes = ["openid"]
    config = make(headers=headers, extra=extra, scopes=scopes)
    headers["X-A"] = "2"
    extra["nested"]["k"].append("w")
    scopes.append("leak")
    assert config.headers == {"X-A": "1"}
    assert config.extra == {"nested": {"k": ["v"]}}
    assert config.scopes == ["openid"]


def test_frozen_and_replace_validates_again() -> None:
    config = make(client_secret=SECRET)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.client_id = "other"  # type: ignore[misc]
    renamed = dataclasses.replace(config, client_id="other", scopes="a b")  # type: ignore[arg-type]
    assert renamed.client_id == "other" and renamed.scopes == ["a", "b"]
    with pytest.raises(ConfigurationError):
        dataclasses.replace(config, token_url="http://idp.example.com/token")


def test_repr_and_str_never_show_secrets() -> None:
    config = make(
        client_secret=SECRET,
        headers={
            "Authorization": f"Bearer {SECRET}",
            "Cookie": f"session={SECRET}",
            "X-Api-Key": SECRET,
            "X-Client-Token": SECRET,
            "Host": "idp.internal",
        },
        extra={"client_assertion": SECRET, "authorize_params": {"prompt": "login"}},
    )
    for text in (repr(config), str(config), str(config.to_safe_dict())):
        assert SECRET not in text
        assert "client_secret='[REDACTED]'" in text or "'client_secret': '[REDACTED]'" in text
        assert "idp.internal" in text and "login" in text
    assert "client_secret=None" in repr(make())


def test_errors_never_show_the_secret() -> None:
    for bad in (
        {"client_secret": SECRET, "pkce": SECRET},
        {"client_secret": SECRET, "scopes": [SECRET, 1]},
        {"client_secret": SECRET, "headers": {"Authorization": f"Bearer {SECRET}\n"}},
        {"client_secret": SECRET, "discovery_ttl": SECRET},
    ):
        with pytest.raises(ConfigurationError) as err:
            make(**bad)
        assert SECRET not in str(err.value) and SECRET not in repr(err.value)
