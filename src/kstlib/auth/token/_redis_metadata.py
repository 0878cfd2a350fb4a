"""The discovery/JWKS cache of a fleet, shared through the token storage's Redis (issue 15).

``storage.redis.share_metadata: true``: the first process that needs a discovery document
or a JWKS claims the fetch (``SET NX PX``), fetches it and stores it; the others wait for
that copy instead of asking the IdP. Keys: ``<prefix>meta:<tls>:<sha256 of the cache key>``,
where ``<tls>`` separates clients that trust TLS differently. What is read back is
re-validated by :class:`~kstlib.auth._discovery.MetadataCache` as if just fetched.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kstlib.auth.token.redis_storage import RedisTokenStorage

__all__ = ["RedisMetadataStore", "tls_namespace"]

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def tls_namespace(ssl_verify: bool, ssl_ca_bundle: str | None) -> str:
    """A short name for a TLS trust setting (documents are shared only within one)."""
    if not ssl_verify:
        return "insecure"
    if ssl_ca_bundle is None:
        return "system"
    return "ca-" + hashlib.sha256(ssl_ca_bundle.encode()).hexdigest()[:16]


class RedisMetadataStore:
    """:class:`~kstlib.auth._discovery.SharedMetadata` in a :class:`RedisTokenStorage`'s Redis."""

    def __init__(self, storage: RedisTokenStorage, namespace: str = "system") -> None:
        self._storage = storage
        self.namespace = namespace
        self.identity = f"{storage.describe()} {namespace}"

    def _key(self, kind: str, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return f"{self._storage.prefix}{kind}:{self.namespace}:{digest}"

    def get(self, key: str) -> bytes | None:
        """The shared entry, or None."""
        value = self._storage.sync_client().get(self._key("meta", key))
        return None if value is None else bytes(value)

    def put(self, key: str, value: bytes, ttl: float) -> None:
        """Share an entry for ``ttl`` seconds."""
        self._storage.sync_client().set(self._key("meta", key), value, px=max(int(ttl * 1000), 1))

    def claim(self, key: str, ttl: float) -> str | None:
        """The right to fetch ``key`` (a token), or None while another process holds it."""
        token = secrets.token_hex(8)
        taken = self._storage.sync_client().set(
            self._key("meta-lock", key), token, nx=True, px=max(int(ttl * 1000), 1)
        )
        return token if taken else None

    def release(self, key: str, token: str) -> None:
        """Give back a claim (only if still ours)."""
        client = self._storage.sync_client()
        self._storage.script(client, _RELEASE)(keys=[self._key("meta-lock", key)], args=[token])
