"""Client authentication at the token endpoint, as one pluggable step.

Every request a provider sends to the token, revocation or introspection
endpoint goes through :meth:`ClientAuthentication.apply`, which adds the
client's credentials to the form body and headers. Methods of RFC 6749 2.3.1
(``client_secret_basic``, ``client_secret_post``) and ``none`` (public
clients) live here; ``private_key_jwt`` / ``client_secret_jwt`` (RFC 7523)
slot in as further subclasses registered in :data:`CLIENT_AUTH_METHODS`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import quote

from kstlib.auth.errors import ConfigurationError

__all__ = [
    "CLIENT_AUTH_METHODS",
    "SECRET_METHODS",
    "ClientAuthentication",
    "ClientSecretBasic",
    "ClientSecretPost",
    "NoClientAuthentication",
    "select_client_authentication",
]


class ClientAuthentication:
    """Base class: adds client credentials to one token-endpoint request."""

    method: ClassVar[str] = ""

    def __init__(self, client_id: str, client_secret: str | None = None) -> None:
        self.client_id = client_id
        self._client_secret = client_secret

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        """Mutate ``data`` (form body) and ``headers`` for a request to ``endpoint``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.client_id!r})"


class NoClientAuthentication(ClientAuthentication):
    """Public client (``none``): only ``client_id`` in the body."""

    method = "none"

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        data["client_id"] = self.client_id


class ClientSecretBasic(ClientAuthentication):
    """HTTP Basic with the form-urlencoded id and secret (RFC 6749 2.3.1)."""

    method = "client_secret_basic"

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        user = quote(self.client_id, safe="")
        password = quote(self._client_secret or "", safe="")
        raw = f"{user}:{password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")


class ClientSecretPost(ClientAuthentication):
    """``client_id`` and ``client_secret`` in the form body."""

    method = "client_secret_post"

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        data["client_id"] = self.client_id
        data["client_secret"] = self._client_secret or ""


CLIENT_AUTH_METHODS: dict[str, type[ClientAuthentication]] = {
    cls.method: cls for cls in (NoClientAuthentication, ClientSecretBasic, ClientSecretPost)
}
#: Methods that authenticate with the client secret.
SECRET_METHODS: frozenset[str] = frozenset({ClientSecretBasic.method, ClientSecretPost.method})


def select_client_authentication(
    client_id: str,
    client_secret: str | None,
    *,
    configured: str | None = None,
    server_supported: Sequence[str] | None = None,
    provider_name: str | None = None,
) -> ClientAuthentication:
    """Choose how this client authenticates.

    The configured method wins. Otherwise: with a secret,
    ``client_secret_basic`` (RFC 8414's default) unless the server's
    ``token_endpoint_auth_methods_supported`` lists only ``client_secret_post``;
    without a secret, ``none``.
    """
    if configured:
        cls = CLIENT_AUTH_METHODS.get(configured)
        if cls is None:
            raise ConfigurationError(
                f"Provider '{provider_name}': unsupported token_endpoint_auth_method "
                f"'{configured}' (supported: {', '.join(sorted(CLIENT_AUTH_METHODS))})",
                provider=provider_name,
                key="token_endpoint_auth_method",
            )
        if cls is not NoClientAuthentication and not client_secret:
            raise ConfigurationError(
                f"Provider '{provider_name}': token_endpoint_auth_method '{configured}' "
                "needs a client_secret",
                provider=provider_name,
                key="client_secret",
            )
        return cls(client_id, client_secret)
    if not client_secret:
        return NoClientAuthentication(client_id)
    supported = list(server_supported or [])
    if supported and "client_secret_basic" not in supported and "client_secret_post" in supported:
        return ClientSecretPost(client_id, client_secret)
    return ClientSecretBasic(client_id, client_secret)
