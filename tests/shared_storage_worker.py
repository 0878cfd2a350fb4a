"""The processes of the "4 processes sharing a file storage" tests (client credentials in
tests/integration/test_client_credentials.py, a refresh in tests/integration/test_session.py).

Each runs forked with kstlib imported (tests/forked.py): it builds its own provider on the
shared token directory, discovers, prints ``ready``, waits for the ``go`` file, makes three
calls through an :class:`~kstlib.auth.AuthSession` and prints their status codes.
"""

from __future__ import annotations

import time
from pathlib import Path

from kstlib.auth import AuthSession
from kstlib.auth._discovery import MetadataCache
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.providers import OIDCProvider
from kstlib.auth.token import FileTokenStorage

#: Seconds a worker waits for the start signal before it gives up.
START_WAIT = 120.0


def client_credentials(issuer: str, directory: str, go: str, api: str, secret: str) -> None:
    cfg = AuthProviderConfig(
        client_id="kstlib-service",
        client_secret=secret,
        issuer=issuer,
        flow="client_credentials",
        scopes=["api:read"],
        token_endpoint_auth_method="client_secret_basic",
    )
    provider = OIDCProvider("svc", cfg, FileTokenStorage(directory), metadata_cache=MetadataCache())
    _three_calls(provider, go, api)


def refresh(issuer: str, directory: str, go: str, api: str, secret: str) -> None:
    cfg = AuthProviderConfig(
        client_id="kstlib-confidential",
        client_secret=secret,
        issuer=issuer,
        scopes=["openid", "profile", "email", "offline_access"],
        token_endpoint_auth_method="client_secret_basic",
    )
    storage = FileTokenStorage(directory)
    provider = OIDCProvider("shared", cfg, storage, metadata_cache=MetadataCache())
    _three_calls(provider, go, api)


def _three_calls(provider: OIDCProvider, go: str, api: str) -> None:
    provider.discover()  # warm up before the start line
    session = AuthSession(provider)
    print("ready", flush=True)
    deadline = time.monotonic() + START_WAIT
    while not Path(go).exists():
        if time.monotonic() > deadline:  # the test is gone: do not wait forever
            raise SystemExit(f"no start signal ({go}) within {START_WAIT:.0f} s")
        time.sleep(0.001)
    print([session.get(api).status_code for _ in range(3)], flush=True)
    session.close()
