"""The process-wide discovery/JWKS cache keys its documents by TLS settings (security #12).

A document fetched by a provider that does not verify certificates (or trusts another
CA bundle) could come from a man in the middle: it must never be served to a provider
of the same issuer that verifies TLS. Real providers, a real server on 127.0.0.1.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from kstlib.auth._discovery import shared_cache
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.token import MemoryTokenStorage
from tests import jwt_factory as f
from tests.jwks_server import JWKSServer

pytestmark = pytest.mark.usefixtures("server")


def _provider(issuer: str, **tls: Any) -> OIDCProvider:
    config = AuthProviderConfig(client_id="my-app", issuer=issuer, **tls)
    return OIDCProvider("tls", config, MemoryTokenStorage())  # the process-wide cache


def _fresh_issuer(server: JWKSServer) -> tuple[str, str]:
    path = f"/tls-{uuid.uuid4().hex}"  # the shared cache outlives tests: a new issuer each
    issuer = server.set_issuer(path, jwks=f.jwks(f.rsa_key()))
    return issuer, path + "/.well-known/openid-configuration"


def test_document_fetched_without_tls_verification_is_not_shared(server: JWKSServer) -> None:
    issuer, discovery = _fresh_issuer(server)
    with _provider(issuer, ssl_verify=False) as insecure, _provider(issuer) as verifying:
        insecure.discover()
        assert server.count(discovery) == 1
        verifying.discover()
        assert server.count(discovery) == 2  # fetched again, with verification
        _provider(issuer).discover()  # a second verifying provider shares its cache
        assert server.count(discovery) == 2


def test_another_ca_bundle_is_another_cache(server: JWKSServer, tmp_path: Path) -> None:
    der = f.self_signed_x5c(f.rsa_key(), common_name="test-ca")[0]
    lines = "\n".join(der[i : i + 64] for i in range(0, len(der), 64))
    bundle = tmp_path / "ca.pem"  # a real CA certificate (the discovery URL is plain http)
    bundle.write_text(f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n")
    issuer, discovery = _fresh_issuer(server)
    with _provider(issuer, ssl_ca_bundle=str(bundle)) as custom, _provider(issuer) as default:
        custom.discover()
        default.discover()
        assert server.count(discovery) == 2


def test_injected_client_gets_a_cache_of_its_own(server: JWKSServer) -> None:
    issuer, discovery = _fresh_issuer(server)
    config = AuthProviderConfig(client_id="my-app", issuer=issuer)
    with httpx.Client(verify=False) as client:  # noqa: S501 - the point of the test
        injected = OIDCProvider("tls", config, MemoryTokenStorage(), http_client=client)
        injected.discover()
    with _provider(issuer) as verifying:
        verifying.discover()
    assert server.count(discovery) == 2


def test_shared_cache_per_tls_setting() -> None:
    assert shared_cache() is shared_cache(ssl_verify=True)
    assert shared_cache(ssl_verify=False) is not shared_cache()
    assert shared_cache(ssl_verify=False, ssl_ca_bundle="x") is shared_cache(ssl_verify=False)
    assert shared_cache(ssl_ca_bundle="/etc/ca.pem") is not shared_cache()
