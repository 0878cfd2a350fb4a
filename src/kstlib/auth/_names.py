"""Names shared by the configuration, the providers and the JOSE layer, defined once.

Standard library only, so the configuration can use them without loading cryptography.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DPOP_ALGORITHMS",
    "ENDPOINT_ALIASES",
    "ENDPOINT_FIELDS",
    "METADATA_ENDPOINTS",
]

#: Signature algorithms verified by default (asymmetric only: ``none`` and ``HS*`` are never
#: accepted for a token signed by an identity provider).
ALLOWED_ALGORITHMS: Final[frozenset[str]] = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

#: Server metadata names (RFC 8414 / OIDC Discovery) -> ``AuthProviderConfig`` field names.
METADATA_ENDPOINTS: Final[Mapping[str, str]] = {
    "authorization_endpoint": "authorize_url",
    "token_endpoint": "token_url",
    "revocation_endpoint": "revoke_url",
    "userinfo_endpoint": "userinfo_url",
    "jwks_uri": "jwks_uri",
    "end_session_endpoint": "end_session_endpoint",
    "introspection_endpoint": "introspection_url",
    "device_authorization_endpoint": "device_authorization_url",
    # issue 14: pushed authorization requests (RFC 9126)
    "pushed_authorization_request_endpoint": "pushed_authorization_request_endpoint",
}
#: ``AuthProviderConfig`` fields holding an endpoint URL (the issuer aside).
ENDPOINT_FIELDS: Final[tuple[str, ...]] = tuple(METADATA_ENDPOINTS.values())
#: Config-file spellings of endpoint keys that differ from the field name -> field name.
ENDPOINT_ALIASES: Final[Mapping[str, str]] = {
    name: field for name, field in METADATA_ENDPOINTS.items() if name != field
}

#: Algorithms of a DPoP key (``dpop_alg``, RFC 9449); the first is the default.
DPOP_ALGORITHMS: Final[tuple[str, ...]] = ("ES256", "ES384", "EdDSA", "PS256", "RS256")
