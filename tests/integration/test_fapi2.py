"""Issue 14 item 6 end to end: ``profile: fapi2`` logs in to oidc-provider running its own
FAPI 2.0 profile (``features.fapi`` 2.0, PAR required, client assertions for the issuer,
DPoP-bound access tokens only for the FAPI client), from a configuration file, then calls
userinfo and the DPoP-protected API, refreshes with DPoP, revokes.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import yaml

from kstlib.auth import AuthSession
from kstlib.auth._jose import decode_jws
from kstlib.auth.config import get_provider
from kstlib.auth.errors import AuthorizationError, TokenValidationError
from kstlib.auth.providers.oidc import OIDCProvider
from tests.flows import login, make_oidc
from tests.idp_support import FAPI, PRIVATE_KEY_JWT, IdP, browser_login, private_key_jwt_key


def _from_file(
    fapi_idp: IdP, tmp_path: Path, kid: str, monkeypatch: pytest.MonkeyPatch
) -> OIDCProvider:
    key_file = tmp_path / "bank-client.jwk"
    key_file.write_text(json.dumps(private_key_jwt_key(kid)))
    key_file.chmod(0o600)
    conf = tmp_path / "kstlib.conf.yml"
    conf.write_text(
        yaml.safe_dump(
            {
                "auth": {
                    "token_storage": "memory",
                    "providers": {
                        "bank": {
                            "issuer": fapi_idp.issuer,
                            "client_id": FAPI.client_id,
                            "client_key": f"file://{key_file}",
                            "scopes": ["openid", "profile", "email", "offline_access"],
                            "redirect_uri": "http://127.0.0.1:8400/callback",
                            "profile": "fapi2",
                        }
                    },
                }
            }
        )
    )
    monkeypatch.setenv("KSTLIB_CONFIG", str(conf))  # a file named there is trusted
    provider = get_provider("bank")
    assert isinstance(provider, OIDCProvider)
    return provider


@pytest.mark.parametrize("kid", ["pkjwt-p256", "pkjwt-rsa", "pkjwt-ed25519"])
def test_fapi2_login_userinfo_api_refresh_and_revoke(
    fapi_idp: IdP, tmp_path: Path, kid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = _from_file(fapi_idp, tmp_path, kid, monkeypatch)
    fapi_idp.reset_stats()
    url, state = provider.get_authorization_url()
    assert set(parse_qs(urlsplit(url).query)) == {"client_id", "request_uri"}
    token = provider.exchange_code(browser_login(url), state)
    assert decode_jws(token.id_token or "").header["alg"] == "ES256"
    assert token.token_type.lower() == "dpop" and token.dpop_key is not None
    jkt = token.dpop_key.thumbprint
    assert provider.introspect(token.access_token)["cnf"] == {"jkt": jkt}
    assert provider.get_userinfo()["sub"] == "alice"
    with AuthSession(provider) as session:
        answer = session.get(fapi_idp.api_url("accounts"))
        assert answer.status_code == 200 and answer.json()["client_id"] == FAPI.client_id
        assert answer.json()["dpop_jkt"] == jkt  # the API checked the proof of our key
    refreshed = provider.refresh()
    assert refreshed.access_token != token.access_token
    assert refreshed.dpop_key is not None and refreshed.dpop_key.thumbprint == jkt
    assert provider.revoke(refreshed) is True
    assert provider.introspect(refreshed.access_token)["active"] is False
    stats = fapi_idp.stats()
    assert stats.get("pushed_authorization_request:201") == 1
    assert stats.get("token:authorization_code:200") == 1
    assert stats.get("token:refresh_token:200") == 1
    assert stats.get("revocation:200") == 2
    # DPoP nonces: each endpoint answers use_dpop_nonce once (400 at the token endpoint,
    # 401 at userinfo and the API); nothing else is refused
    refused = {k: v for k, v in stats.items() if k.endswith((":400", ":401"))}
    assert all("nonce" in k or k.startswith("token:") for k in refused), refused
    assert sum(v for k, v in refused.items() if not k.startswith("token:")) <= 2, refused
    assert stats.get("token:authorization_code:400", 0) <= 1, refused


def test_fapi2_with_the_headless_flow_helper(fapi_idp: IdP) -> None:
    provider = make_oidc(fapi_idp, FAPI, client_key=private_key_jwt_key(), profile="fapi2")
    token = login(provider)
    assert provider.refresh().access_token != token.access_token


def test_fapi2_pushes_even_where_the_server_does_not_require_it(idp: IdP) -> None:
    provider = make_oidc(idp, FAPI, client_key=private_key_jwt_key("pkjwt-p256"), profile="fapi2")
    url, state = provider.get_authorization_url()
    assert set(parse_qs(urlsplit(url).query)) == {"client_id", "request_uri"}
    assert provider.exchange_code(browser_login(url), state).id_token


def test_fapi2_refuses_an_rs256_id_token(idp: IdP) -> None:
    """PRIVATE_KEY_JWT's ID tokens are RS256: outside PS256/ES256/EdDSA, refused, not stored."""
    provider = make_oidc(
        idp, PRIVATE_KEY_JWT, client_key=private_key_jwt_key("pkjwt-p256"), profile="fapi2"
    )
    url, state = provider.get_authorization_url()
    with pytest.raises(TokenValidationError) as err:
        provider.exchange_code(browser_login(url), state)
    assert "RS256" in str(err.value) and "not allowed" in str(err.value)
    assert provider.token_storage.load("test") is None


def test_fapi2_requires_the_iss_response_parameter(fapi_idp: IdP) -> None:
    provider = make_oidc(fapi_idp, FAPI, client_key=private_key_jwt_key(), profile="fapi2")
    url, state = provider.get_authorization_url()
    callback = browser_login(url)
    parts = urlsplit(callback)
    query = parse_qs(parts.query)
    assert query["iss"] == [fapi_idp.issuer]
    stripped = urlunsplit(
        parts._replace(query=urlencode({k: v[0] for k, v in query.items() if k != "iss"}))
    )
    with pytest.raises(AuthorizationError) as err:
        provider.exchange_code(stripped, state)
    assert err.value.reason == "missing iss" and "fapi2" in str(err.value)
    # A bare code needs its iss too (the caller passes it along).
    _, state = provider.get_authorization_url()
    with pytest.raises(AuthorizationError, match="requires it"):
        provider.exchange_code(query["code"][0], state)
    assert provider.token_storage.load("test") is None


def test_fapi2_interactive_login_through_the_loopback_server(fapi_idp: IdP) -> None:
    from tests.integration.test_login import ANY_PORT, Browser

    provider = make_oidc(
        fapi_idp, FAPI, client_key=private_key_jwt_key("pkjwt-ed25519"), profile="fapi2",
        redirect_uri=ANY_PORT,
    )  # fmt: skip
    browser = Browser()
    with provider:
        token = provider.login(open_browser=False, timeout=30, on_url=browser.on_url)
        assert "Login complete" in browser.join().text
        assert provider.token_storage.load("test") == token
        assert provider.refresh().access_token != token.access_token
