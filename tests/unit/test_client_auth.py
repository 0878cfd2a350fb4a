"""Client authentication: the one registry, the key settings of AuthProviderConfig, the
choice of a method, and the JWT assertions (checked with kstlib.auth._jose)."""

from __future__ import annotations

import base64
import sys
import time
from typing import Any

import pytest

from kstlib.auth._clientauth import (
    CLIENT_ASSERTION_ALGORITHMS,
    CLIENT_AUTH_METHODS,
    KEY_METHODS,
    SECRET_METHODS,
    ClientSecretBasic,
    ClientSecretJWT,
    ClientSecretPost,
    NoClientAuthentication,
    PrivateKeyJWT,
    select_client_authentication,
)
from kstlib.auth._config.values import TOKEN_ENDPOINT_AUTH_METHODS
from kstlib.auth._jose import SUPPORTED_ALGORITHMS, decode_jws, parse_jwk, verify_signature
from kstlib.auth._signing import SIGNING_ALGORITHMS
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.errors import ConfigurationError
from tests import jwt_factory as f
from tests.unit.test_signing import private_jwk

ISSUER = "https://idp.example.com"
TOKEN_URL = "https://idp.example.com/token"
LONG_SECRET = "s" * 64


def make(**kwargs: Any) -> AuthProviderConfig:
    kwargs.setdefault("client_id", "app")
    kwargs.setdefault("issuer", ISSUER)
    return AuthProviderConfig(**kwargs)


def test_one_registry_feeds_the_configuration() -> None:
    assert (
        set(TOKEN_ENDPOINT_AUTH_METHODS)
        == set(CLIENT_AUTH_METHODS)
        == {
            "none",
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
            "private_key_jwt",
        }
    )
    assert SECRET_METHODS == {"client_secret_basic", "client_secret_post", "client_secret_jwt"}
    assert KEY_METHODS == {"private_key_jwt"}
    assert CLIENT_ASSERTION_ALGORITHMS == SIGNING_ALGORITHMS


def test_configuration_does_not_load_cryptography() -> None:
    """The JWT methods import the signing module on first use only."""
    import subprocess

    code = (
        "import sys\n"
        "from kstlib.auth.config import AuthProviderConfig\n"
        "AuthProviderConfig(client_id='a', issuer='https://i.example', "
        "token_endpoint_auth_method='private_key_jwt', client_key='file:///k.pem')\n"
        "assert 'cryptography' not in sys.modules, 'cryptography loaded'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("kwargs", "key", "fragment"),
    [
        (
            {"token_endpoint_auth_method": "private_key_jwt"},
            "token_endpoint_auth_method",
            "needs a client_key",
        ),
        (
            {"token_endpoint_auth_method": "client_secret_jwt"},
            "token_endpoint_auth_method",
            "needs a client_secret",
        ),
        ({"client_key": 42}, "client_key", "expected PEM text, a JWK"),
        ({"client_key": ""}, "client_key", "must not be empty"),
        ({"client_key": {"n": "x"}}, "client_key", "needs a 'kty'"),
        ({"client_key_id": 7}, "client_key_id", "expected a string"),
        ({"client_assertion_alg": "none"}, "client_assertion_alg", "is never used"),
        ({"client_assertion_alg": "RS1"}, "client_assertion_alg", "is not supported"),
        (
            {
                "client_secret": LONG_SECRET,
                "token_endpoint_auth_method": "client_secret_jwt",
                "client_assertion_alg": "RS256",
            },
            "client_assertion_alg",
            "signs with HS256/384/512",
        ),
        (
            {
                "client_key": "file:///k.pem",
                "token_endpoint_auth_method": "private_key_jwt",
                "client_assertion_alg": "HS256",
            },
            "client_assertion_alg",
            "use client_secret_jwt",
        ),
    ],
)
def test_key_settings_are_validated(kwargs: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        make(**kwargs)
    assert err.value.key == key
    assert fragment in str(err.value)


def test_the_client_key_never_shows() -> None:
    pem = (
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcw\n"
        "-----END PRIVATE KEY-----"
    )
    config = make(client_key=pem, token_endpoint_auth_method="private_key_jwt")
    assert "MIIEvQ" not in repr(config)
    assert "MIIEvQ" not in str(config.to_safe_dict())
    jwk = private_jwk(f.ec_key("P-256"))
    config = make(client_key=jwk)
    assert jwk["d"] not in repr(config)


@pytest.mark.parametrize(
    ("secret", "key", "supported", "expected"),
    [
        (None, None, None, NoClientAuthentication),
        ("s", None, None, ClientSecretBasic),
        ("s", None, ["client_secret_post"], ClientSecretPost),
        (None, {"kty": "EC"}, None, PrivateKeyJWT),
        ("s", {"kty": "EC"}, None, PrivateKeyJWT),
    ],
)
def test_the_default_choice(
    secret: str | None, key: Any, supported: list[str] | None, expected: type
) -> None:
    auth = select_client_authentication("app", secret, client_key=key, server_supported=supported)
    assert type(auth) is expected


def _claims(auth: Any) -> tuple[dict[str, Any], dict[str, str], Any]:
    data: dict[str, str] = {}
    headers: dict[str, str] = {}
    auth.apply(data, headers, endpoint=TOKEN_URL)
    assert headers == {}
    assert set(data) == {"client_assertion_type", "client_assertion"}
    assert data["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    jws = decode_jws(data["client_assertion"])
    return jws.payload, jws.header, jws


def test_private_key_jwt_assertion_verifies_with_the_public_key() -> None:
    key = f.rsa_key(kid="client-rsa")
    auth = select_client_authentication(
        "app",
        None,
        configured="private_key_jwt",
        client_key=private_jwk(key),
        assertion_alg="PS384",
    )
    before = int(time.time())
    claims, header, jws = _claims(auth)
    verify_signature(jws, parse_jwk(key.public_jwk), allowed=SUPPORTED_ALGORITHMS)
    assert header == {"alg": "PS384", "typ": "JWT", "kid": "client-rsa"}
    assert claims["iss"] == claims["sub"] == "app"
    assert claims["aud"] == TOKEN_URL
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 60
    assert len(claims["jti"]) >= 32


def test_client_key_id_overrides_the_jwk_kid() -> None:
    auth = select_client_authentication(
        "app", None, client_key=private_jwk(f.ec_key("P-384", kid="own")), client_key_id="set"
    )
    _, header, _ = _claims(auth)
    assert header == {"alg": "ES384", "typ": "JWT", "kid": "set"}


def test_client_secret_jwt_is_an_hmac_of_the_secret_which_is_never_sent() -> None:
    import hashlib
    import hmac

    auth = select_client_authentication("app", LONG_SECRET, configured="client_secret_jwt")
    assert isinstance(auth, ClientSecretJWT)
    data: dict[str, str] = {}
    auth.apply(data, {}, endpoint=TOKEN_URL)
    assert LONG_SECRET not in str(data)
    head, body, signature = data["client_assertion"].split(".")
    expected = hmac.new(LONG_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(signature + "==") == expected


def test_an_oct_jwk_is_not_a_private_key_for_private_key_jwt() -> None:
    auth = select_client_authentication(
        "app",
        None,
        configured="private_key_jwt",
        client_key={"kty": "oct", "k": f.b64(b"k" * 32)},
        provider_name="corp",
    )
    with pytest.raises(ConfigurationError) as err:
        auth.apply({}, {}, endpoint=TOKEN_URL)
    assert err.value.key == "client_key"
    assert "use client_secret_jwt" in str(err.value)
    assert "Provider 'corp'" in str(err.value)
