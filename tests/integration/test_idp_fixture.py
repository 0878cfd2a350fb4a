"""The test IdP fixture itself: a real oidc-provider answering real OAuth2/OIDC requests."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests import loopback_http
from tests.device_flow import DEVICE, DEVICE_PUBLIC, DEVICE_SHORT
from tests.idp_support import (
    CLIENTS,
    CONFIDENTIAL,
    CONFIDENTIAL_POST,
    ES256,
    PUBLIC,
    REDIRECT_URI,
    BrowserLoginError,
    IdP,
    OidcClient,
    browser_login,
    start_idp,
)

# ----------------------------------------------------------------- helpers


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def b64url_int(part: str) -> int:
    return int.from_bytes(b64url_decode(part), "big")


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


def verify_jwt(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """Verify an RS256/ES256 JWS against a JWKS with ``cryptography``; return its claims."""
    header, claims = jwt_parts(token)
    signing_input = token.rsplit(".", 1)[0].encode()
    signature = b64url_decode(token.rsplit(".", 1)[1])
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert jwk["alg"] == header["alg"]
    if header["alg"] == "RS256":
        rsa_key = rsa.RSAPublicNumbers(b64url_int(jwk["e"]), b64url_int(jwk["n"])).public_key()
        rsa_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif header["alg"] == "ES256":
        ec_key = ec.EllipticCurvePublicNumbers(
            b64url_int(jwk["x"]), b64url_int(jwk["y"]), ec.SECP256R1()
        ).public_key()
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        ec_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
    else:  # pragma: no cover
        raise AssertionError(f"unexpected alg {header['alg']}")
    return claims


def callback_params(callback: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}


def token_request(idp: IdP, client: OidcClient, data: dict[str, str]) -> httpx.Response:
    data = dict(data)
    auth = client.token_auth(data)
    return loopback_http.post(
        idp.token_endpoint, data=data, auth=auth or httpx.USE_CLIENT_DEFAULT, timeout=10
    )


def login(
    idp: IdP,
    client: OidcClient,
    *,
    scope: str = "openid profile email",
    username: str = "alice",
    redirect_uri: str | None = None,
) -> dict[str, Any]:
    """Full authorization code flow (PKCE always sent); returns the token response."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    redirect_uri = redirect_uri or client.redirect_uri
    url = idp.authorize_url(
        client,
        state=state,
        nonce=nonce,
        scope=scope,
        code_challenge=challenge,
        redirect_uri=redirect_uri,
    )
    params = callback_params(browser_login(url, username=username))
    assert params["state"] == state, params
    resp = token_request(
        idp,
        client,
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    )
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert jwt_parts(tokens["id_token"])[1]["nonce"] == nonce
    return dict(tokens)


def refresh(idp: IdP, client: OidcClient, refresh_token: str) -> httpx.Response:
    return token_request(
        idp, client, {"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


# ------------------------------------------------------------------- tests


def test_discovery_document(idp: IdP) -> None:
    assert idp.issuer == f"http://127.0.0.1:{idp.port}"
    doc = loopback_http.get(idp.discovery_url, timeout=10).json()
    assert doc["issuer"] == idp.issuer
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "end_session_endpoint",
    ):
        assert doc[name].startswith(idp.issuer + "/"), name
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token"} <= set(doc["grant_types_supported"])
    assert set(doc["scopes_supported"]) >= {"openid", "profile", "email", "offline_access"}
    assert {"client_secret_basic", "client_secret_post", "none"} <= set(
        doc["token_endpoint_auth_methods_supported"]
    )
    assert {"RS256", "ES256"} <= set(doc["id_token_signing_alg_values_supported"])
    jwks = idp.jwks()
    assert {k["alg"] for k in jwks["keys"]} >= {"RS256", "ES256"}
    assert all("d" not in k for k in jwks["keys"])
    # the configured clients are the ones exported by idp_support (and, always registered by
    # the server's device grant block, the device clients of tests/device_flow.py)
    served = loopback_http.get(f"{idp.issuer}/__test__/clients", timeout=10).json()
    device_clients = {c.client_id for c in (DEVICE, DEVICE_PUBLIC, DEVICE_SHORT)}
    assert {c["client_id"] for c in served} == set(CLIENTS) | device_clients
    assert doc["device_authorization_endpoint"] == f"{idp.issuer}/device/auth"


def test_public_client_code_pkce_flow(idp: IdP) -> None:
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    url = idp.authorize_url(PUBLIC, state=state, nonce=nonce, code_challenge=challenge)
    callback = browser_login(url, username="bob")
    assert callback.startswith(REDIRECT_URI + "?")
    params = callback_params(callback)
    assert params["state"] == state
    assert params["iss"] == idp.issuer
    assert params["code"]

    # raw token request, no client authentication, just client_id + code_verifier
    resp = loopback_http.post(
        idp.token_endpoint,
        data={
            "grant_type": "authorization_code",
            "client_id": PUBLIC.client_id,
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["token_type"] == "Bearer"
    assert 0 < tokens["expires_in"] <= 3600
    assert tokens["refresh_token"]
    assert set(tokens["scope"].split()) == {"openid", "profile", "email"}
    claims = verify_jwt(tokens["id_token"], idp.jwks())
    assert claims["iss"] == idp.issuer
    assert claims["aud"] == PUBLIC.client_id
    assert claims["sub"] == "bob"
    assert claims["nonce"] == nonce
    assert jwt_parts(tokens["id_token"])[0]["alg"] == "RS256"

    # the code is single-use
    again = loopback_http.post(
        idp.token_endpoint,
        data={
            "grant_type": "authorization_code",
            "client_id": PUBLIC.client_id,
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_public_client_requires_pkce(idp: IdP) -> None:
    url = idp.authorize_url(PUBLIC, state="s1")
    params = callback_params(browser_login(url))
    assert params["error"] == "invalid_request"
    assert "PKCE" in params["error_description"]
    assert params["state"] == "s1"


def test_public_client_wrong_verifier_is_rejected(idp: IdP) -> None:
    _, challenge = pkce_pair()
    url = idp.authorize_url(PUBLIC, state="s2", code_challenge=challenge)
    params = callback_params(browser_login(url))
    resp = loopback_http.post(
        idp.token_endpoint,
        data={
            "grant_type": "authorization_code",
            "client_id": PUBLIC.client_id,
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": pkce_pair()[0],
        },
        timeout=10,
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


def test_loopback_redirect_any_port(idp: IdP) -> None:
    """Native clients: a registered loopback redirect URI matches with any port (RFC 8252)."""
    tokens = login(idp, PUBLIC, redirect_uri="http://127.0.0.1:53187/callback")
    assert tokens["access_token"]
    tokens = login(idp, CONFIDENTIAL, redirect_uri="http://localhost:8401/callback")
    assert tokens["access_token"]
    # but the path (and the host name) must match a registered one
    url = idp.authorize_url(
        PUBLIC, state="s", code_challenge=pkce_pair()[1], redirect_uri="http://127.0.0.1:8400/other"
    )
    with pytest.raises(BrowserLoginError, match="redirect_uri"):
        browser_login(url)


@pytest.mark.parametrize("client", [CONFIDENTIAL, CONFIDENTIAL_POST], ids=lambda c: c.client_id)
def test_confidential_clients(idp: IdP, client: OidcClient) -> None:
    # confidential clients may skip PKCE
    state = secrets.token_urlsafe(8)
    params = callback_params(browser_login(idp.authorize_url(client, state=state)))
    assert params["iss"] == idp.issuer
    # the other client-auth method is refused
    wrong = {
        "code": params["code"],
        "grant_type": "authorization_code",
        "redirect_uri": REDIRECT_URI,
    }
    if client.token_endpoint_auth_method == "client_secret_basic":
        bad = loopback_http.post(
            idp.token_endpoint,
            data={**wrong, "client_id": client.client_id, "client_secret": client.client_secret},
            timeout=10,
        )
    else:
        bad = loopback_http.post(
            idp.token_endpoint,
            data=wrong,
            auth=(client.client_id, client.client_secret or ""),
            timeout=10,
        )
    # refused by the test IdP's strict mode (oidc-provider alone accepts both)
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_client"
    assert "strict" in bad.json()["error_description"]
    # a wrong secret is refused
    bad_secret = OidcClient(client.client_id, "nope", client.token_endpoint_auth_method)
    assert token_request(idp, bad_secret, wrong).status_code == 401

    resp = token_request(idp, client, wrong)
    assert resp.status_code == 200, resp.text
    tokens = resp.json()
    assert tokens["refresh_token"]
    claims = verify_jwt(tokens["id_token"], idp.jwks())
    assert claims["aud"] == client.client_id
    assert claims["sub"] == "alice"


def test_lenient_client_auth_when_strict_mode_off(idp: IdP) -> None:
    params = callback_params(browser_login(idp.authorize_url(CONFIDENTIAL, state="x")))
    idp.configure(strict_client_auth=False)
    try:
        resp = loopback_http.post(
            idp.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": REDIRECT_URI,
                "client_id": CONFIDENTIAL.client_id,
                "client_secret": CONFIDENTIAL.client_secret,
            },
            timeout=10,
        )
    finally:
        idp.configure(strict_client_auth=True)
    assert resp.status_code == 200, resp.text
    assert idp.settings()["strict_client_auth"] is True


def test_es256_client_gets_es256_id_token(idp: IdP) -> None:
    tokens = login(idp, ES256)
    header, _ = jwt_parts(tokens["id_token"])
    assert header["alg"] == "ES256"
    assert header["kid"] == idp.active_kid("ES256")
    assert verify_jwt(tokens["id_token"], idp.jwks())["aud"] == ES256.client_id


def test_consent_refused(idp: IdP) -> None:
    url = idp.authorize_url(CONFIDENTIAL, state="deny")
    params = callback_params(browser_login(url, consent=False))
    assert params["error"] == "access_denied"
    assert params["state"] == "deny"


def test_offline_access_with_prompt_consent(idp: IdP) -> None:
    tokens = login(idp, CONFIDENTIAL, scope="openid offline_access", username="carol")
    # oidc-provider drops offline_access unless prompt=consent is requested
    assert "offline_access" not in tokens["scope"].split()
    verifier, challenge = pkce_pair()
    url = idp.authorize_url(
        PUBLIC, state="o", scope="openid offline_access", code_challenge=challenge, prompt="consent"
    )
    code = callback_params(browser_login(url))["code"]
    resp = token_request(
        idp,
        PUBLIC,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
        },
    )
    assert "offline_access" in resp.json()["scope"].split()
    assert resp.json()["refresh_token"]


@pytest.mark.parametrize("client", [PUBLIC, CONFIDENTIAL], ids=lambda c: c.client_id)
def test_refresh_token_rotation(idp: IdP, client: OidcClient) -> None:
    tokens = login(idp, client)
    first_rt = tokens["refresh_token"]

    resp = refresh(idp, client, first_rt)
    assert resp.status_code == 200, resp.text
    refreshed = resp.json()
    assert refreshed["access_token"] != tokens["access_token"]
    assert refreshed["refresh_token"] != first_rt  # rotated
    assert jwt_parts(refreshed["id_token"])[1]["sub"] == "alice"

    resp = refresh(idp, client, refreshed["refresh_token"])
    assert resp.status_code == 200, resp.text
    latest = resp.json()

    # re-using a rotated refresh token fails and revokes the whole grant
    reuse = refresh(idp, client, first_rt)
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    assert refresh(idp, client, latest["refresh_token"]).json()["error"] == "invalid_grant"
    assert idp.introspect(latest["access_token"])["active"] is False


def test_revocation_then_introspection_inactive(idp: IdP) -> None:
    tokens = login(idp, CONFIDENTIAL)
    info = idp.introspect(tokens["refresh_token"])
    assert info["active"] is True
    assert info["client_id"] == CONFIDENTIAL.client_id
    assert info["sub"] == "alice"
    assert idp.introspect(tokens["access_token"])["active"] is True
    # a public client's token introspected by the confidential client
    public_tokens = login(idp, PUBLIC)
    assert idp.introspect(public_tokens["access_token"])["active"] is True

    idp.reset_stats()
    data = {"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}
    resp = loopback_http.post(
        idp.revocation_endpoint,
        data=data,
        auth=(CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret or ""),
        timeout=10,
    )
    assert resp.status_code == 200
    assert idp.stats()["revocation:200"] == 1
    assert idp.introspect(tokens["refresh_token"])["active"] is False
    # revoking the refresh token revokes its grant, hence the access token too
    assert idp.introspect(tokens["access_token"])["active"] is False
    assert refresh(idp, CONFIDENTIAL, tokens["refresh_token"]).json()["error"] == "invalid_grant"

    # the public client revokes its own access token (client_id only)
    resp = loopback_http.post(
        idp.revocation_endpoint,
        data={"token": public_tokens["access_token"], "client_id": PUBLIC.client_id},
        timeout=10,
    )
    assert resp.status_code == 200
    assert idp.introspect(public_tokens["access_token"])["active"] is False
    # oidc-provider: revoking an access token revokes every token of its grant
    assert idp.introspect(public_tokens["refresh_token"])["active"] is False


def test_userinfo(idp: IdP) -> None:
    tokens = login(idp, CONFIDENTIAL_POST, username="dave")
    resp = loopback_http.get(
        idp.userinfo_endpoint,
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "sub": "dave",
        "name": "Dave Test",
        "preferred_username": "dave",
        "email": "dave@example.test",
        "email_verified": True,
    }
    assert loopback_http.get(idp.userinfo_endpoint, timeout=10).status_code == 401


def test_key_rotation(idp: IdP) -> None:
    before = login(idp, CONFIDENTIAL)
    old_kid = jwt_parts(before["id_token"])[0]["kid"]
    assert old_kid == idp.active_kid("RS256")
    es_before = login(idp, ES256)

    info = idp.rotate_keys()
    new_kid = next(k["kid"] for k in info["active"] if k["alg"] == "RS256")
    assert new_kid != old_kid
    assert old_kid in {k["kid"] for k in info["retired"]}

    jwks = idp.jwks()
    by_kid = {k["kid"]: k for k in jwks["keys"]}
    assert new_kid in by_kid
    assert by_kid[old_kid]["key_ops"] == ["verify"]  # kept for verification only
    verify_jwt(before["id_token"], jwks)  # old tokens still verify

    # the refresh token (grant, session) obtained before the rotation still works
    resp = refresh(idp, CONFIDENTIAL, before["refresh_token"])
    assert resp.status_code == 200, resp.text
    after = resp.json()
    assert jwt_parts(after["id_token"])[0]["kid"] == new_kid
    assert verify_jwt(after["id_token"], jwks)["sub"] == "alice"
    # the access token issued before rotation stays valid too
    assert idp.introspect(before["access_token"])["active"] is True

    es_after = refresh(idp, ES256, es_before["refresh_token"]).json()
    es_header = jwt_parts(es_after["id_token"])[0]
    assert es_header["alg"] == "ES256"
    assert es_header["kid"] == idp.active_kid("ES256") != jwt_parts(es_before["id_token"])[0]["kid"]

    # new logins are signed with the new key too
    assert jwt_parts(login(idp, PUBLIC)["id_token"])[0]["kid"] == new_kid

    # a rotation dropping the old keys: they disappear from the JWKS
    info = idp.rotate_keys(keep_old=False)
    assert info["retired"] == []
    kids = {k["kid"] for k in idp.jwks()["keys"]}
    assert kids == {k["kid"] for k in info["active"]}
    assert old_kid not in kids and new_kid not in kids
    resp = refresh(idp, CONFIDENTIAL, after["refresh_token"])
    assert resp.status_code == 200, resp.text


def test_stats_count_requests(idp: IdP) -> None:
    tokens = login(idp, PUBLIC)
    idp.reset_stats()
    assert idp.stats() == {}
    rt = tokens["refresh_token"]
    for _ in range(3):
        resp = refresh(idp, PUBLIC, rt)
        assert resp.status_code == 200
        rt = resp.json()["refresh_token"]
    assert refresh(idp, PUBLIC, "not-a-refresh-token").status_code == 400
    stats = idp.stats()
    assert stats["token:refresh_token"] == 4
    assert stats["token:refresh_token:200"] == 3
    assert stats["token:refresh_token:400"] == 1
    assert stats["token"] == 4
    assert "token:authorization_code" not in stats
    idp.reset_stats()
    login(idp, CONFIDENTIAL)
    stats = idp.stats()
    assert stats["token:authorization_code"] == 1
    assert stats["authorization"] == 1
    assert stats.get("token:refresh_token", 0) == 0


def test_protected_api(idp: IdP) -> None:
    tokens = login(idp, CONFIDENTIAL, username="erin")
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    idp.reset_stats()

    resp = loopback_http.get(idp.api_url("items/1?x=2"), headers=bearer, timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {
        "sub": "erin",
        "client_id": CONFIDENTIAL.client_id,
        "scope": "openid profile email",
        "method": "GET",
        "path": "/__test__/api/items/1",
        "query": {"x": "2"},
        "body": None,
    }
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        resp = loopback_http.request(
            method, idp.api_url("items"), headers=bearer, json={"n": 1}, timeout=10
        )
        assert resp.status_code == 200
        assert resp.json()["method"] == method
        assert resp.json()["body"] == {"n": 1}
    assert httpx.head(idp.api_url("x"), headers=bearer, timeout=10).status_code == 200
    assert httpx.options(idp.api_url("x"), headers=bearer, timeout=10).json()["method"] == "OPTIONS"
    text = loopback_http.post(idp.api_url(), headers=bearer, content=b"plain", timeout=10).json()
    assert text["body"] == "plain"

    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        resp = loopback_http.get(idp.api_url("items"), headers=headers, timeout=10)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer ")
        assert 'error="invalid_token"' in resp.headers["www-authenticate"]

    stats = idp.stats()
    assert stats["api:200"] == 8
    assert stats["api:401"] == 3
    assert stats["api"] == 11

    # a revoked access token is refused
    loopback_http.post(
        idp.revocation_endpoint,
        data={"token": tokens["access_token"]},
        auth=(CONFIDENTIAL.client_id, CONFIDENTIAL.client_secret or ""),
        timeout=10,
    )
    assert loopback_http.get(idp.api_url(), headers=bearer, timeout=10).status_code == 401


def test_access_token_ttl_is_configurable(idp: IdP) -> None:
    default = idp.settings()["access_token_ttl"]
    idp.configure(access_token_ttl=1)
    try:
        tokens = login(idp, PUBLIC)
    finally:
        idp.configure(access_token_ttl=default)
    assert tokens["expires_in"] == 1
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    deadline = time.monotonic() + 5
    while loopback_http.get(idp.api_url(), headers=bearer, timeout=10).status_code == 200:
        assert time.monotonic() < deadline, "access token did not expire"
        time.sleep(0.2)
    assert loopback_http.get(idp.api_url(), headers=bearer, timeout=10).status_code == 401
    # the refresh token still works and yields a token with the default lifetime
    resp = refresh(idp, PUBLIC, tokens["refresh_token"])
    assert resp.json()["expires_in"] == default


def test_restart_keeps_grants_and_keys(tmp_path: Path) -> None:
    """A private IdP: restart on the same port keeps state (file-backed adapter)."""
    with start_idp(tmp_path / "idp", access_token_ttl=120) as own:
        tokens = login(own, PUBLIC)
        assert tokens["expires_in"] == 120
        port, kid = own.port, own.active_kid()
        own.restart()
        assert own.port == port
        assert own.active_kid() == kid
        resp = refresh(own, PUBLIC, tokens["refresh_token"])
        assert resp.status_code == 200, resp.text
        assert jwt_parts(resp.json()["id_token"])[0]["kid"] == kid
    assert not own.running
    assert "test IdP listening" in own.log_path.read_text()
