"""Issue 14 item 6: ``profile: fapi2`` turns on and enforces FAPI 2.0's client rules; a
configuration that cannot meet them is refused with every missing piece named."""

from __future__ import annotations

from typing import Any

import pytest

from kstlib.auth._config.profiles import FAPI2_ALGORITHMS, fapi2_problems
from kstlib.auth.config import AuthProviderConfig, build_provider_config
from kstlib.auth.errors import ConfigurationError
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.token import MemoryTokenStorage
from tests import jwt_factory as f
from tests.unit.test_signing import private_jwk

ISSUER = "https://idp.example.com"
KEY = private_jwk(f.ec_key("P-256", kid="k1"))


def fapi2(**kwargs: Any) -> AuthProviderConfig:
    values: dict[str, Any] = {
        "client_id": "app",
        "issuer": ISSUER,
        "client_key": KEY,
        "profile": "fapi2",
    }
    values.update(kwargs)
    return AuthProviderConfig(**values)


def test_the_profile_turns_its_rules_on() -> None:
    config = fapi2()
    assert config.par is True
    assert config.pkce is True
    assert config.token_endpoint_auth_method == "private_key_jwt"
    assert config.id_token_signing_alg_values == list(FAPI2_ALGORITHMS)
    assert config.dpop is True  # sender-constrained tokens (DPoP; mTLS is not supported)
    assert config.dpop_alg == "ES256"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"client_key": None}, "client_key is missing"),
        ({"client_secret": "s3cr3t-value"}, "client_secret must not be set"),
        (
            {"token_endpoint_auth_method": "client_secret_basic", "client_secret": "x"},
            "token_endpoint_auth_method must be private_key_jwt",
        ),
        ({"par": False}, "par must not be false"),
        ({"pkce": False}, "pkce must not be false"),
        ({"client_assertion_alg": "RS256"}, "client_assertion_alg must be one of"),
        ({"dpop_alg": "ES384"}, "dpop_alg must be one of"),
        ({"dpop_alg": "RS256"}, "dpop_alg must be one of"),
        ({"id_token_signing_alg_values": ["RS256", "ES256"]}, "not RS256"),
        (
            {"issuer": None, "authorize_url": f"{ISSUER}/a", "token_url": f"{ISSUER}/t"},
            "issuer is missing",
        ),
    ],
)
def test_each_missing_piece_is_named(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        fapi2(**change)
    assert err.value.key == "profile"
    assert named in str(err.value)
    assert "s3cr3t-value" not in str(err.value)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigurationError) as err:
        fapi2(client_key=None, client_secret="x", par=False)
    message = str(err.value)
    assert "fapi2 (FAPI 2.0) cannot be met" in message
    for named in ("client_key is missing", "client_secret must not be set", "par must not"):
        assert named in message


def test_fapi2_problems_is_the_one_list() -> None:
    plain = AuthProviderConfig(client_id="app", issuer=ISSUER, client_secret="x")
    problems = fapi2_problems(plain)
    assert any(p.startswith("client_key") for p in problems)
    assert any(p.startswith("client_secret") for p in problems)
    assert fapi2_problems(AuthProviderConfig(client_id="app", issuer=ISSUER, client_key=KEY)) == []


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown profile 'fapi1'"):
        fapi2(profile="fapi1")


def test_the_error_names_the_file_and_key(tmp_path: Any) -> None:
    config = {
        "auth": {
            "providers": {
                "bank": {"issuer": ISSUER, "client_id": "app", "client_secret": "x",
                         "profile": "fapi2"},
            }
        }
    }  # fmt: skip
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("bank", config=config)
    assert "auth.providers.bank.profile" in str(err.value)
    assert "client_key is missing" in str(err.value)


def test_an_rsa_key_signs_ps256_under_the_profile() -> None:
    """OAuth2Provider: no discovery (the example issuer is not reachable)."""
    from kstlib.auth._jose import decode_jws

    rsa = private_jwk(f.rsa_key(kid="r1"))
    provider = OAuth2Provider("bank", fapi2(client_key=rsa), MemoryTokenStorage())
    data: dict[str, str] = {}
    provider.client_authentication().apply(data, {}, endpoint=f"{ISSUER}/token")
    assert decode_jws(data["client_assertion"]).header["alg"] == "PS256"
    assert provider._assertion_audience(f"{ISSUER}/token") == ISSUER
    plain = OAuth2Provider(
        "rsa", AuthProviderConfig(client_id="app", issuer=ISSUER, client_key=rsa),
        MemoryTokenStorage(),
    )  # fmt: skip
    plain.client_authentication().apply(data, {}, endpoint=f"{ISSUER}/token")
    assert decode_jws(data["client_assertion"]).header["alg"] == "RS256"


@pytest.mark.parametrize("name", ["request", "request_uri"])
def test_authorize_params_cannot_smuggle_a_request_object_or_uri(name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"must not set '{name}'"):
        AuthProviderConfig(client_id="app", issuer=ISSUER, extra={"authorize_params": {name: "x"}})
