"""OAuth2Provider / OIDCProvider end to end against the real oidc-provider."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from kstlib.auth._discovery import MetadataCache
from kstlib.auth._jose import decode_jws
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import (
    AuthorizationError,
    ConfigurationError,
    DiscoveryError,
    TokenExchangeError,
    TokenRefreshError,
    TokenValidationError,
)
from kstlib.auth.models import AuthFlow, PreflightStatus, Token
from kstlib.auth.providers import AuthProviderConfig as ExportedConfig
from kstlib.auth.providers import OAuth2Provider, OIDCProvider
from kstlib.auth.token import MemoryTokenStorage
from tests import loopback_http
from tests.flows import login, make_oidc, provider_config
from tests.idp_support import (
    CONFIDENTIAL,
    CONFIDENTIAL_POST,
    ES256,
    PUBLIC,
    REDIRECT_URI,
    IdP,
    browser_login,
)


def claims(jwt: str | None) -> dict[str, Any]:
    assert jwt is not None
    return decode_jws(jwt).payload


@pytest.mark.parametrize(
    "client", [PUBLIC, CONFIDENTIAL, CONFIDENTIAL_POST, ES256], ids=lambda c: c.client_id
)
def test_code_flow_with_pkce(idp: IdP, client: Any) -> None:
    provider = make_oidc(idp, client)
    assert provider.flow is AuthFlow.AUTHORIZATION_CODE_PKCE
    idp.reset_stats()
    token = login(provider)
    assert token.refresh_token and token.id_token and token.access_token
    assert claims(token.id_token)["sub"] == "alice"
    assert claims(token.id_token)["aud"] == client.client_id
    assert provider.token_storage.load("test") == token
    assert provider.is_authenticated
    assert idp.stats()["token:authorization_code:200"] == 1
    if client is ES256:
        assert decode_jws(token.id_token or "").header["alg"] == "ES256"


def test_authorization_url_contents(idp: IdP) -> None:
    provider = make_oidc(
        idp, PUBLIC, extra={"authorize_params": {"prompt": "consent", "ui_locales": "fr"}}
    )
    url, state = provider.get_authorization_url()
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q["state"] == state and len(state) >= 22  # >= 128 bits
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["nonce"] and q["redirect_uri"] == REDIRECT_URI
    assert q["prompt"] == "consent" and q["ui_locales"] == "fr"
    assert q["scope"].split()[0] == "openid"


@pytest.mark.parametrize("key", ["state", "nonce", "code_challenge", "redirect_uri"])
def test_authorize_params_cannot_override_security_parameters(idp: IdP, key: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        make_oidc(idp, PUBLIC, extra={"authorize_params": {key: "attacker"}})


def test_several_pending_authorizations_each_consumed_once(idp: IdP) -> None:
    provider = make_oidc(idp, PUBLIC)
    url1, state1 = provider.get_authorization_url()
    url2, state2 = provider.get_authorization_url()
    cb2 = browser_login(url2)
    cb1 = browser_login(url1)
    provider.exchange_code(cb2, state2)
    provider.exchange_code(cb1, state1)
    with pytest.raises(AuthorizationError, match="pending"):
        provider.exchange_code(cb1, state1)  # consumed


def test_wrong_state_is_refused_before_any_token_request(idp: IdP) -> None:
    provider = make_oidc(idp, PUBLIC)
    url, state = provider.get_authorization_url()
    callback = browser_login(url)
    idp.reset_stats()
    with pytest.raises(AuthorizationError, match="state"):
        provider.exchange_code(callback, "forged-state")
    with pytest.raises(AuthorizationError):
        code = parse_qs(urlsplit(callback).query)["code"][0]
        provider.exchange_code(code, "forged-state")
    assert "token" not in idp.stats()
    assert provider.token_storage.load("test") is None


def test_rfc9207_issuer_mismatch_and_missing(idp: IdP) -> None:
    provider = make_oidc(idp, PUBLIC)
    url, state = provider.get_authorization_url()
    callback = browser_login(url)
    assert "iss=" in callback
    code = parse_qs(urlsplit(callback).query)["code"][0]
    with pytest.raises(AuthorizationError, match="another issuer"):
        provider.exchange_code(code, state, iss="https://evil.example")
    url, state = provider.get_authorization_url()
    callback = browser_login(url)
    stripped = callback.split("&iss=")[0] if "&iss=" in callback else callback.replace("iss=", "x=")
    with pytest.raises(AuthorizationError, match="no 'iss'"):
        provider.exchange_code(stripped, state)
    assert provider.token_storage.load("test") is None


def test_bare_code_with_matching_iss(idp: IdP) -> None:
    provider = make_oidc(idp, PUBLIC)
    url, state = provider.get_authorization_url()
    q = parse_qs(urlsplit(browser_login(url)).query)
    token = provider.exchange_code(q["code"][0], state, iss=q["iss"][0])
    assert token.id_token


def test_error_returned_to_redirect_uri(idp: IdP) -> None:
    provider = make_oidc(idp, PUBLIC)
    url, state = provider.get_authorization_url()
    callback = browser_login(url, consent=False)
    with pytest.raises(AuthorizationError) as err:
        provider.exchange_code(callback, state)
    assert err.value.error_code == "access_denied"


def test_client_secret_basic_is_the_default_and_post_needs_config(idp: IdP) -> None:
    basic = make_oidc(idp, CONFIDENTIAL, token_endpoint_auth_method=None)
    assert basic.client_authentication().method == "client_secret_basic"
    login(basic)
    # kstlib-confidential-post only accepts the form body: the default (basic) is refused
    wrong = make_oidc(idp, CONFIDENTIAL_POST, token_endpoint_auth_method=None)
    with pytest.raises(TokenExchangeError) as err:
        login(wrong)
    assert err.value.error_code == "invalid_client" and err.value.status_code == 401
    assert wrong.token_storage.load("test") is None


def test_userinfo(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    login(provider, username="bob")
    info = provider.get_userinfo()
    assert info["sub"] == "bob"
    assert info.get("email")


def test_refresh_with_rotation(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    first = login(provider)
    idp.reset_stats()
    second = provider.refresh()
    assert idp.stats()["token:refresh_token:200"] == 1
    assert second.refresh_token and second.refresh_token != first.refresh_token  # rotated
    assert second.access_token != first.access_token
    assert second.id_token  # validated (new) or kept
    assert claims(second.id_token)["sub"] == "alice"
    assert provider.token_storage.load("test") == second
    third = provider.refresh()
    assert third.refresh_token != second.refresh_token
    # the spent refresh token is refused: invalid_grant is not retryable and says to log in
    with pytest.raises(TokenRefreshError) as err:
        provider.refresh(first)
    assert err.value.retryable is False and err.value.error_code == "invalid_grant"
    assert "kstlib auth login test" in str(err.value)


def test_refresh_failure_leaves_stored_token(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    token = login(provider)
    provider.revoke()
    with pytest.raises(TokenRefreshError):
        provider.refresh()
    kept = provider.token_storage.load("test")  # the same tokens; the refresh token marked dead
    assert kept is not None and (kept.access_token, kept.refresh_token, kept.id_token) == (
        token.access_token,
        token.refresh_token,
        token.id_token,
    )
    assert not provider.can_renew(kept)


def test_revoke_then_introspection_inactive_and_refresh_fails(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    token = login(provider)
    assert idp.introspect(token.access_token)["active"] is True
    idp.reset_stats()
    assert provider.revoke() is True
    assert idp.stats()["revocation:200"] == 2  # refresh token, then access token
    assert idp.introspect(token.access_token)["active"] is False
    assert idp.introspect(token.refresh_token or "")["active"] is False
    with pytest.raises(TokenRefreshError) as err:
        provider.refresh()
    assert err.value.retryable is False


def test_revoke_without_endpoint_returns_false(idp: IdP) -> None:
    cfg = AuthProviderConfig(
        client_id=CONFIDENTIAL.client_id,
        client_secret=CONFIDENTIAL.client_secret,
        authorize_url=idp.authorization_endpoint,
        token_url=idp.token_endpoint,
    )
    provider = OAuth2Provider("plain", cfg, MemoryTokenStorage())
    provider.save_token(Token(access_token="x"))
    assert provider.revoke() is False


def test_signing_key_rotation_mid_session(idp: IdP) -> None:
    cache = MetadataCache(jwks_refetch_cooldown=0.0)
    provider = make_oidc(idp, CONFIDENTIAL, cache=cache)
    first = login(provider)
    old_kid = decode_jws(first.id_token or "").header["kid"]
    idp.rotate_keys()
    new_kid = idp.active_kid("RS256")
    assert new_kid != old_kid
    refreshed = provider.refresh()  # new id_token signed by an unknown kid -> one JWKS re-fetch
    assert decode_jws(refreshed.id_token or "").header["kid"] == new_kid
    second = login(provider)
    assert decode_jws(second.id_token or "").header["kid"] == new_kid


def test_discovery_modes(idp: IdP) -> None:
    auto = make_oidc(idp, CONFIDENTIAL)
    assert auto.discovery_mode == "auto"
    doc = auto.discover()
    assert doc["issuer"] == idp.issuer
    assert auto.endpoint("token_endpoint") == idp.token_endpoint

    hybrid = make_oidc(idp, CONFIDENTIAL, userinfo_url=idp.api_url("userinfo"))
    assert hybrid.discovery_mode == "hybrid"
    assert hybrid.endpoint("userinfo_endpoint") == idp.api_url("userinfo")  # explicit wins
    assert hybrid.endpoint("token_endpoint") == idp.token_endpoint  # discovered

    idp.reset_stats()
    manual = OIDCProvider(
        "manual",
        AuthProviderConfig(
            client_id=CONFIDENTIAL.client_id,
            client_secret=CONFIDENTIAL.client_secret,
            authorize_url=idp.authorization_endpoint,
            token_url=idp.token_endpoint,
            jwks_uri=idp.jwks_uri,
            userinfo_url=idp.userinfo_endpoint,
            revoke_url=idp.revocation_endpoint,
            redirect_uri=REDIRECT_URI,
            scopes=["openid", "profile"],
            token_endpoint_auth_method="client_secret_basic",
        ),
        MemoryTokenStorage(),
        metadata_cache=MetadataCache(),
    )
    assert manual.discovery_mode == "manual"
    assert manual.discover() == {}
    token = login(manual)
    assert manual.get_userinfo()["sub"] == "alice"
    assert manual.revoke() is True
    assert token.id_token
    assert not any(k.startswith("discovery") for k in idp.stats())


def test_discovery_cached_for_ttl_and_force(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    idp.reset_stats()
    provider.discover()
    provider.discover()
    provider.endpoint("token_endpoint")
    n = sum(v for k, v in idp.stats().items() if k.startswith("discovery") and ":" not in k)
    provider.discover(force=True)
    m = sum(v for k, v in idp.stats().items() if k.startswith("discovery") and ":" not in k)
    assert (n, m) == (1, 2)


def test_discovered_issuer_must_match_exactly(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL, issuer=idp.issuer + "/")
    with pytest.raises(DiscoveryError, match="issuer"):
        provider.discover()


def test_logout_after_discovery_mode_login_revokes(idp: IdP) -> None:
    """The reference never learned the revocation endpoint in discovery mode."""
    provider = make_oidc(idp, PUBLIC)
    token = login(provider)
    fresh = make_oidc(
        idp, PUBLIC, storage=provider.token_storage
    )  # a new process: nothing discovered yet
    assert fresh.revoke() is True
    assert idp.introspect(token.access_token)["active"] is False


def test_preflight(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    report = provider.preflight()
    steps = {r.step: r for r in report.results}
    assert report.success, [r.to_dict() for r in report.results]
    assert {
        "config",
        "discovery",
        "jwks",
        "scopes",
        "authorization_endpoint",
        "token_endpoint",
    } <= set(steps)
    assert all(r.duration_ms >= 0 for r in report.results)
    bad = make_oidc(idp, CONFIDENTIAL, scopes=["openid", "no-such-scope"])
    assert {r.step: r for r in bad.preflight().results}["scopes"].status is PreflightStatus.WARNING
    down = make_oidc(idp, CONFIDENTIAL, issuer="http://127.0.0.1:9")
    report = down.preflight()
    assert not report.success
    assert {r.step: r for r in report.results}["discovery"].status is PreflightStatus.FAILURE


def test_get_token_refreshes_when_stale(idp: IdP) -> None:
    from datetime import UTC, datetime, timedelta

    provider = make_oidc(idp, CONFIDENTIAL)
    token = login(provider)
    expires_at = datetime.now(UTC) + timedelta(seconds=5)  # a 1 h token, 5 s from expiry
    stale = replace(token, expires_at=expires_at, issued_at=expires_at - timedelta(hours=1))
    provider.save_token(stale)
    got = provider.get_token()
    assert got is not None and got.access_token != token.access_token
    assert provider.get_token(auto_refresh=False) == got


def test_context_manager_closes_client(idp: IdP) -> None:
    with make_oidc(idp, CONFIDENTIAL) as provider:
        client = provider.http_client
        provider.discover()
    assert client.is_closed


def test_own_http_client_is_used_and_not_closed(idp: IdP) -> None:
    seen: list[str] = []
    client = loopback_http.client(event_hooks={"request": [lambda r: seen.append(str(r.url))]})
    provider = OIDCProvider(
        "own",
        provider_config(idp),
        MemoryTokenStorage(),
        http_client=client,
        metadata_cache=MetadataCache(),
    )
    with provider:
        provider.discover()
    assert seen and not client.is_closed
    client.close()


def test_from_config_both_endpoint_spellings(idp: IdP) -> None:
    config = {
        "auth": {
            "token_storage": "memory",
            "providers": {
                "a": {
                    "type": "oauth2",
                    "client_id": "x",
                    "authorization_endpoint": idp.authorization_endpoint,
                    "token_endpoint": idp.token_endpoint,
                    "revocation_endpoint": idp.revocation_endpoint,
                },
                "b": {
                    "type": "oauth2",
                    "client_id": "x",
                    "authorize_url": idp.authorization_endpoint,
                    "token_url": idp.token_endpoint,
                    "revoke_url": idp.revocation_endpoint,
                },
            },
        }
    }
    a = OAuth2Provider.from_config("a", config=config)
    b = OAuth2Provider.from_config("b", config=config)
    for p in (a, b):
        assert p.endpoint("token_endpoint") == idp.token_endpoint
        assert p.endpoint("revocation_endpoint") == idp.revocation_endpoint
    c = OAuth2Provider.from_config("a", config=config, client_id="override-id")
    assert c.config.client_id == "override-id"


def test_reference_examples_run(idp: IdP) -> None:
    """Every code example of the reference's provider sections, only the issuer URL changed."""
    from kstlib.auth.providers import AuthProviderConfig, OIDCProvider
    from kstlib.auth.token import MemoryTokenStorage

    # OIDCProvider example
    config = AuthProviderConfig(
        client_id="my-app",
        issuer=idp.issuer,
        scopes=["openid", "profile", "email"],
        pkce=True,  # Enabled by default
    )
    provider = OIDCProvider("example", config, MemoryTokenStorage())
    url, state = provider.get_authorization_url()
    assert url.startswith(idp.authorization_endpoint) and state

    # Config-driven usage
    conf = {
        "auth": {
            "token_storage": "memory",
            "providers": {
                "corporate": {
                    "type": "oidc",
                    "issuer": idp.issuer,
                    "client_id": PUBLIC.client_id,
                    "scopes": ["openid", "profile", "email"],
                    "pkce": True,
                }
            },
        }
    }
    provider = OIDCProvider.from_config("corporate", config=conf)
    provider = OIDCProvider.from_config("corporate", config=conf, client_id="override-id")
    assert provider.config.client_id == "override-id"

    # OAuth2Provider example (endpoints of the local IdP)
    from kstlib.auth.providers import OAuth2Provider

    config = AuthProviderConfig(
        client_id=CONFIDENTIAL.client_id,
        client_secret=CONFIDENTIAL.client_secret,
        authorize_url=idp.authorization_endpoint,
        token_url=idp.token_endpoint,
        scopes=["openid"],
    )
    provider2 = OAuth2Provider("example", config, MemoryTokenStorage())
    url, state = provider2.get_authorization_url()
    callback = browser_login(url)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    token = provider2.exchange_code(code=code, state=state)
    assert token.access_token
    assert ExportedConfig is AuthProviderConfig


def test_invalid_code_is_a_typed_error(idp: IdP) -> None:
    provider = make_oidc(idp, CONFIDENTIAL)
    _, state = provider.get_authorization_url()
    with pytest.raises(TokenExchangeError) as err:
        provider.exchange_code("not-a-real-code", state)
    assert err.value.error_code == "invalid_grant" and err.value.status_code == 400
    assert "not-a-real-code" not in str(err.value)


def test_refreshed_id_token_for_another_subject_is_refused(idp: IdP) -> None:
    """OIDC Core 12.2: a refresh cannot switch users; nothing is stored."""
    provider = make_oidc(idp, CONFIDENTIAL)
    alice = login(provider, username="alice")
    other = make_oidc(idp, CONFIDENTIAL)
    bob = login(other, username="bob")
    forged = replace(bob)  # bob's genuine, validated tokens offered as alice's refresh
    with pytest.raises(TokenValidationError, match="'sub'"):
        provider._validate_refreshed(forged, previous=alice)
    assert provider.token_storage.load("test") == alice


def test_unusable_ssl_setting_and_manual_without_jwks(idp: IdP) -> None:
    manual = OIDCProvider(
        "nojwks",
        AuthProviderConfig(
            client_id=PUBLIC.client_id,
            authorize_url=idp.authorization_endpoint,
            token_url=idp.token_endpoint,
            scopes=["openid"],
        ),
        MemoryTokenStorage(),
        metadata_cache=MetadataCache(),
    )
    with pytest.raises(TokenValidationError, match="jwks_uri"):
        login(manual)
    assert manual.token_storage.load("nojwks") is None
