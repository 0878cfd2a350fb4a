"""Redis (and Valkey) token storage: one token for a fleet of workers, a lease lock, failover.

Keys, under ``prefix`` (default ``kstlib:auth:``)::

    <prefix>token:<provider>   the token document (the JSON of the file storage), or its
                               AES-GCM ciphertext when an encryption key is configured
    <prefix>gen:<provider>     the token's generation: incremented by every save and delete
    <prefix>lock:<provider>    the lease: a random owner token, with a TTL (``lock_ttl``)

The lock (:class:`RedisLease`) is a **lease**: taken with ``SET NX PX``, extended by a
background thread while its holder works (a slow refresh keeps it), released only by its
owner (compare-and-delete script). When the lease is taken, the generation is read in the
same script; a save made while the lease is held is **fenced**: it is written only if the
lease is not held by someone else and the generation is still the one seen when the lease
was taken. A holder that was paused past its TTL (and whose lease another worker took) can
therefore never overwrite the newer token.

With ``sentinels`` and ``service_name`` the primary is found through Redis Sentinel, and
after taking a lease or saving a token the storage waits (``WAIT``, bounded) for a replica
to acknowledge it, so a failover does not lose a token the IdP has already rotated.

redis-py is an optional dependency (``pip install 'kstlib-auth[redis]'``), imported when a
storage is created; the async methods use ``redis.asyncio`` (one client per event loop, closed
when that loop shuts down) and never block the loop.
"""

from __future__ import annotations

import base64
import os
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from kstlib._redaction import redact_url
from kstlib.auth.errors import ConfigurationError, TokenStorageError
from kstlib.auth.redaction import get_logger
from kstlib.auth.token._document import dump_document, parse_document
from kstlib.auth.token._naming import check_provider_name
from kstlib.auth.token._settings import (
    StorageSetting,
    parse_bool,
    parse_number,
    parse_path,
    parse_string_list,
    parse_text,
)
from kstlib.auth.token.base import AbstractTokenStorage
from kstlib.auth.token.lock import DEFAULT_LOCK_TIMEOUT, PollingLock, new_owner_id

if TYPE_CHECKING:
    import asyncio

    from kstlib.auth.models import Token
    from kstlib.auth.token._redis_metadata import RedisMetadataStore

__all__ = ["DEFAULT_PREFIX", "RedisLease", "RedisTokenStorage"]

_log = get_logger("kstlib.auth.token")

DEFAULT_PREFIX = "kstlib:auth:"
#: Seconds a Redis command (or a connection attempt) may take.
DEFAULT_REDIS_TIMEOUT = 5.0
#: Seconds a save is retried, in Sentinel mode, while a new primary is elected.
DEFAULT_FAILOVER_TIMEOUT = 30.0
#: Milliseconds a save or a lease waits for a replica's acknowledgement (Sentinel mode).
REPLICA_ACK_MS = 1000
#: Connections per client (per process for the sync client, per event loop for asyncio);
#: more concurrent commands wait for a free connection instead of failing.
MAX_CONNECTIONS = 64
_ENCRYPTED_MAGIC = b"kstlib-aesgcm1:"
_NONCE_BYTES = 12

# KEYS: lock, gen. ARGV: owner, ttl ms. -> {1, generation} when taken, {0, holder} when not.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('get', KEYS[2]) or '0'}
end
return {0, redis.call('get', KEYS[1]) or ''}
"""
# KEYS: lock. ARGV: owner. -> 1 when released, 0 when the lease is no longer ours.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# KEYS: lock. ARGV: owner, ttl ms. -> 1 when extended, 0 when the lease is no longer ours.
_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lock, token, gen. ARGV: owner, document, generation seen with the lease.
# -> the new generation, -1 when another owner holds the lease, -2 when someone saved since.
_FENCED_SAVE = """
local holder = redis.call('get', KEYS[1])
if holder and holder ~= ARGV[1] then return -1 end
if (redis.call('get', KEYS[3]) or '0') ~= ARGV[3] then return -2 end
redis.call('set', KEYS[2], ARGV[2])
return redis.call('incr', KEYS[3])
"""
# KEYS: token, gen. ARGV: document. -> the new generation.
_SAVE = """
redis.call('set', KEYS[1], ARGV[1])
return redis.call('incr', KEYS[2])
"""
# KEYS: token, gen. -> 1 when a token was deleted.
_DELETE = """
local deleted = redis.call('del', KEYS[1])
if deleted == 1 then redis.call('incr', KEYS[2]) end
return deleted
"""


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ConfigurationError(
            "Token storage 'redis' needs the redis package: pip install 'kstlib-auth[redis]'.",
            key="auth.token_storage",
        ) from None
    return redis


def _parse_sentinels(value: Sequence[str]) -> tuple[tuple[str, int], ...]:
    found: list[tuple[str, int]] = []
    for item in value:
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigurationError(
                f"Sentinel address {item!r} is not host:port.", key="auth.storage.redis.sentinels"
            )
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _load_aes_key(reference: str) -> bytes:
    """The AES key a secret reference (or a literal) names: base64 of 16, 24 or 32 bytes."""
    from kstlib.secrets import resolve_secret

    text = resolve_secret(reference, base_dir=None, what="auth.storage.redis.encryption_key")
    text = text.strip()
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=False)
    except ValueError:
        key = b""
    if len(key) not in (16, 24, 32):
        raise ConfigurationError(
            "auth.storage.redis.encryption_key must be the base64 of a 16, 24 or 32 byte AES "
            'key (make one with: python -c "import os,base64;print(base64.b64encode('
            'os.urandom(32)).decode())"); keep it in a secret reference (env://, file://, '
            "sops://).",
            key="auth.storage.redis.encryption_key",
        )
    return key


class RedisLease(PollingLock):
    """The lease on one provider's token in Redis (see the module docstring).

    Created by :meth:`RedisTokenStorage.create_lock`; while held, a daemon thread extends
    it every third of its TTL.
    """

    def __init__(self, storage: RedisTokenStorage, provider_name: str) -> None:
        super().__init__(provider_name)
        self._storage = storage
        self._candidate = new_owner_id()
        self._generation = "0"
        self._holder: str | None = None
        self._stop = threading.Event()
        self._extender: threading.Thread | None = None
        self.lost = False

    def describe(self) -> str:
        """Where the lease lives (no password)."""
        return f"Redis lease {self._storage.key('lock', self.provider_name)} at {self._storage}"

    # -- PollingLock (sync) ----------------------------------------------------------------

    def _try_acquire(self) -> bool:
        storage = self._storage
        result = storage.run_sync(
            "taking the lease of",
            self.provider_name,
            lambda client: storage.script(client, _ACQUIRE)(
                keys=[
                    storage.key("lock", self.provider_name),
                    storage.key("gen", self.provider_name),
                ],
                args=[self._candidate, storage.lock_ttl_ms],
            ),
        )
        return self._taken(result)

    def _taken(self, result: Any) -> bool:
        taken, value = int(result[0]), _text(result[1])
        if taken:
            self._generation = value or "0"
            return True
        self._holder = value or None
        return False

    def _mark_held(self) -> str:
        self._owner = self._candidate
        self._storage.note_lease(self.provider_name, self._owner, self._generation)
        self._storage.wait_for_replica_sync(self.provider_name)
        self._start_extender()
        return self._owner

    def _release_held(self) -> None:
        owner = self._candidate
        self._stop_extender()
        self._storage.forget_lease(self.provider_name, owner)
        storage = self._storage
        self._candidate = new_owner_id()
        try:
            released = storage.run_sync(
                "releasing the lease of",
                self.provider_name,
                lambda client: storage.script(client, _RELEASE)(
                    keys=[storage.key("lock", self.provider_name)], args=[owner]
                ),
            )
        except TokenStorageError as exc:
            self._release_failed(exc)
            return
        self._after_release(released)

    def _abandon(self) -> None:
        """A failed attempt holds nothing (``SET NX`` either took the lease or not)."""

    def _current_holder(self) -> str | None:
        return self._holder

    def _lock_path(self) -> str:
        return self._storage.safe_url

    # -- async -----------------------------------------------------------------------------

    async def aacquire(self, timeout: float = DEFAULT_LOCK_TIMEOUT) -> str:
        """Take the lease with the asyncio client (never blocks the loop)."""
        import asyncio
        import random

        self._check_not_held()
        storage = self._storage
        deadline = time.monotonic() + max(timeout, 0.0)
        pause = 0.001
        keys = [storage.key("lock", self.provider_name), storage.key("gen", self.provider_name)]
        args = [self._candidate, storage.lock_ttl_ms]
        while True:
            client = await storage.async_client()
            result = await storage.run_async(
                "taking the lease of",
                self.provider_name,
                storage.script(client, _ACQUIRE)(keys=keys, args=args),
            )
            if self._taken(result):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error(timeout)
            await asyncio.sleep(min(pause * random.uniform(0.5, 1.5), remaining))  # noqa: S311
            pause = min(pause * 2, 0.025)
        self._owner = self._candidate
        storage.note_lease(self.provider_name, self._owner, self._generation)
        await storage.await_replica(self.provider_name)
        self._start_extender()
        return self._owner

    async def arelease(self) -> None:
        """Release the lease with the asyncio client (compare-and-delete)."""
        if self._owner is None:
            self.release()  # raises the "not held" error
            return
        owner, self._owner = self._candidate, None
        self._stop_extender(wait=False)  # never block the loop: the thread ends by itself
        storage = self._storage
        storage.forget_lease(self.provider_name, owner)
        self._candidate = new_owner_id()
        client = await storage.async_client()
        try:
            released = await storage.run_async(
                "releasing the lease of",
                self.provider_name,
                storage.script(client, _RELEASE)(
                    keys=[storage.key("lock", self.provider_name)], args=[owner]
                ),
            )
        except TokenStorageError as exc:
            self._release_failed(exc)
            return
        self._after_release(released)

    def _release_failed(self, exc: TokenStorageError) -> None:
        """What was done under the lease stands; the lease itself expires after its TTL."""
        _log.warning(
            "%s The lease of provider '%s' expires by itself within %g s.",
            exc.message,
            self.provider_name,
            self._storage.lock_ttl,
        )

    def _after_release(self, released: Any) -> None:
        if not int(released):
            _log.warning(
                "The Redis lease of provider '%s' had expired before its release (another "
                "worker may have taken it meanwhile)",
                self.provider_name,
            )

    # -- extension -------------------------------------------------------------------------

    def _start_extender(self) -> None:
        self._stop = threading.Event()
        self.lost = False
        thread = threading.Thread(
            target=self._extend_loop,
            args=(self._stop, self._candidate),
            name=f"kstlib-redis-lease-{self.provider_name}",
            daemon=True,
        )
        self._extender = thread
        thread.start()

    def _stop_extender(self, *, wait: bool = True) -> None:
        self._stop.set()
        thread, self._extender = self._extender, None
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._storage.timeout + 1.0)

    def _extend_loop(self, stop: threading.Event, owner: str) -> None:
        storage = self._storage
        interval = storage.lock_ttl / 3.0
        key = storage.key("lock", self.provider_name)
        while not stop.wait(interval):
            try:
                extended = storage.run_sync(
                    "extending the lease of",
                    self.provider_name,
                    lambda client: storage.script(client, _EXTEND)(
                        keys=[key], args=[owner, storage.lock_ttl_ms]
                    ),
                )
            except TokenStorageError as exc:
                if not stop.is_set():
                    _log.warning("%s", exc.message)
                continue  # Redis may come back before the TTL ends
            if not int(extended) and not stop.is_set():
                self.lost = True
                _log.warning(
                    "The Redis lease of provider '%s' expired while held; its save will be "
                    "refused if another worker saved meanwhile",
                    self.provider_name,
                )
                return


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class RedisTokenStorage(AbstractTokenStorage):
    """Tokens in Redis or Valkey, shared by every worker that uses the same server and prefix.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://`` (TLS), or a secret
            reference to one (``env://REDIS_URL``, ``file://...``, ``sops://...#key``); its
            password is never shown. With ``sentinels`` it only carries the credentials,
            the database and the TLS choice (``redis://:password@/0``), and may be omitted.
        prefix: Prepended to every key (several applications can share one server).
        lock_ttl: Seconds a lease lives without extension (its holder extends it every
            third of that while it works; a dead holder's lease expires after it).
        encryption_key: A secret reference to a base64 AES key (16, 24 or 32 bytes): token
            documents are stored AES-GCM encrypted (the key name is the associated data).
        sentinels: ``host:port`` of Redis Sentinels; the primary of ``service_name`` is found
            through them (and found again after a failover).
        service_name: The Sentinel service (``sentinel monitor <name> ...``).
        share_metadata: Also share the discovery and JWKS cache of OpenID providers through
            this Redis (:meth:`metadata_store`), re-validated when read back.
        timeout: Seconds a Redis command or connection attempt may take.
        failover_timeout: Sentinel mode: seconds a save is retried while a new primary is
            elected (the token in hand is not lost to a failover).
        ssl_ca_bundle: With ``rediss://``: the CA bundle that signs the server's certificate
            (default: the system's CAs). The certificate and its host name are always checked.
    """

    backend_name = "redis"
    storage_settings = (
        StorageSetting(
            "url",
            parse_text,
            doc="redis:// or rediss:// URL, or a secret reference (env://, file://, sops://)",
        ),
        StorageSetting("prefix", parse_text, default=DEFAULT_PREFIX, doc="key prefix"),
        StorageSetting("lock_ttl", parse_number, default=30.0, doc="seconds a lease lives"),
        StorageSetting(
            "encryption_key",
            parse_text,
            doc="secret reference to a base64 AES key: tokens are stored AES-GCM encrypted",
        ),
        StorageSetting(
            "sentinels", parse_string_list, default=(), doc="host:port of Redis Sentinels"
        ),
        StorageSetting("service_name", parse_text, doc="the Sentinel service name"),
        StorageSetting(
            "share_metadata",
            parse_bool,
            default=False,
            doc="share the discovery/JWKS cache through Redis",
        ),
        StorageSetting(
            "timeout", parse_number, default=DEFAULT_REDIS_TIMEOUT, doc="seconds per command"
        ),
        StorageSetting(
            "ssl_ca_bundle",
            parse_path,
            path=True,
            doc="rediss://: CA bundle that signs the server's certificate (default: system CAs)",
        ),
        StorageSetting(
            "failover_timeout",
            parse_number,
            default=DEFAULT_FAILOVER_TIMEOUT,
            doc="Sentinel mode: seconds a save is retried while a new primary is elected",
        ),
    )

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        lock_ttl: float = 30.0,
        encryption_key: str | None = None,
        sentinels: Sequence[str] = (),
        service_name: str | None = None,
        share_metadata: bool = False,
        timeout: float = DEFAULT_REDIS_TIMEOUT,
        failover_timeout: float = DEFAULT_FAILOVER_TIMEOUT,
        ssl_ca_bundle: Path | str | None = None,
    ) -> None:
        """Configure the storage (no connection is made until the first command)."""
        from kstlib.secrets import is_secret_reference, resolve_secret

        self._redis = _import_redis()
        self.url_reference = url if url is not None and is_secret_reference(url) else None
        resolved = (
            resolve_secret(url, base_dir=None, what="auth.storage.redis.url")
            if url is not None
            else None
        )
        self._sentinels = _parse_sentinels(sentinels)
        if self._sentinels and not service_name:
            raise ConfigurationError(
                "auth.storage.redis.sentinels needs auth.storage.redis.service_name (the name "
                "given to 'sentinel monitor').",
                key="auth.storage.redis.service_name",
            )
        if resolved is None and not self._sentinels:
            raise ConfigurationError(
                "Token storage 'redis' needs auth.storage.redis.url (redis://host:6379/0, "
                "rediss:// for TLS, or a secret reference such as env://REDIS_URL), or "
                "sentinels and service_name.",
                key="auth.storage.redis.url",
            )
        self._url = resolved or "redis://"
        parts = urlsplit(self._url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"auth.storage.redis.url must start with redis://, rediss:// or unix:// "
                f"(got {redact_url(self._url)!r}).",
                key="auth.storage.redis.url",
            )
        self._password = unquote(parts.password) if parts.password else None
        self.safe_url = redact_url(self._url)
        self.service_name = service_name or ""
        self.prefix = prefix
        if not (isinstance(lock_ttl, int | float) and lock_ttl > 0):
            raise ConfigurationError(
                "auth.storage.redis.lock_ttl must be a positive number of seconds.",
                key="auth.storage.redis.lock_ttl",
            )
        self.lock_ttl = float(lock_ttl)
        self.lock_ttl_ms = max(int(self.lock_ttl * 1000), 1)
        self.timeout = float(timeout)
        self.failover_timeout = float(failover_timeout)
        self.ssl_ca_bundle = None if ssl_ca_bundle is None else str(ssl_ca_bundle)
        self.share_metadata = bool(share_metadata)
        self._aes_key = _load_aes_key(encryption_key) if encryption_key else None
        self._client_guard = threading.Lock()
        self._client: Any = None
        self._sentinel: Any = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._aguards: dict[int, AsyncGenerator[None, None]] = {}
        #: Per loop: at most MAX_CONNECTIONS commands in flight (the others wait their turn).
        self._aslots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._leases: dict[str, list[str]] = {}
        self._leases_guard = threading.Lock()

    # -- description -----------------------------------------------------------------------

    def describe(self) -> str:
        """Where tokens live, the password redacted."""
        if self._sentinels:
            where = ",".join(f"{h}:{p}" for h, p in self._sentinels)
            return f"redis sentinel {self.service_name} via {where} (prefix {self.prefix})"
        return f"redis {self.safe_url} (prefix {self.prefix})"

    def __str__(self) -> str:
        return self.describe()

    def key(self, kind: str, provider_name: str) -> str:
        """The Redis key of ``kind`` (token, gen, lock) for a provider."""
        return f"{self.prefix}{kind}:{check_provider_name(provider_name)}"

    # -- clients ---------------------------------------------------------------------------

    def _connection_options(self) -> dict[str, Any]:
        return {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
        }

    def _data_options(self) -> dict[str, Any]:
        """Options of connections to the data node (not to sentinels): TLS trust."""
        options = self._connection_options()
        if urlsplit(self._url).scheme == "rediss" and self.ssl_ca_bundle is not None:
            options["ssl_ca_certs"] = self.ssl_ca_bundle
        return options

    def _sentinel_options(self) -> dict[str, Any]:
        parts = urlsplit(self._url)
        options: dict[str, Any] = self._data_options()
        if parts.username:
            options["username"] = unquote(parts.username)
        if self._password:
            options["password"] = self._password
        db = parts.path.lstrip("/")
        if db.isdigit():
            options["db"] = int(db)
        if parts.scheme == "rediss":
            options["ssl"] = True
        return options

    def sync_client(self) -> Any:
        """The (thread-safe, pooled) synchronous client, created on first use."""
        client = self._client
        if client is not None:
            return client
        with self._client_guard:
            if self._client is None:
                if self._sentinels:
                    sentinel = self._redis.sentinel.Sentinel(
                        list(self._sentinels),
                        sentinel_kwargs=self._connection_options(),
                        **self._connection_options(),
                    )
                    self._sentinel = sentinel
                    self._client = sentinel.master_for(
                        self.service_name, **self._sentinel_options()
                    )
                else:
                    pool = self._redis.BlockingConnectionPool.from_url(
                        self._url,
                        max_connections=MAX_CONNECTIONS,
                        timeout=self.timeout,
                        **self._data_options(),
                    )
                    self._client = self._redis.Redis(connection_pool=pool)
            return self._client

    async def async_client(self) -> Any:
        """The asyncio client of the running loop (closed when that loop shuts down)."""
        import asyncio

        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is not None:
            return client
        import redis.asyncio

        if self._sentinels:
            import redis.asyncio.sentinel

            sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
                list(self._sentinels),
                sentinel_kwargs=self._connection_options(),
                **self._connection_options(),
            )
            client = sentinel.master_for(
                self.service_name, max_connections=MAX_CONNECTIONS, **self._sentinel_options()
            )
            closables: tuple[Any, ...] = (client, *sentinel.sentinels)
        else:
            client = redis.asyncio.Redis.from_url(
                self._url, max_connections=MAX_CONNECTIONS, **self._data_options()
            )
            closables = (client,)
        self._aclients[loop] = client
        self._aslots[loop] = asyncio.Semaphore(MAX_CONNECTIONS)
        guard = self._close_with_loop(loop, closables)
        self._aguards[id(loop)] = guard
        _start_guard(guard)
        return client

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, closables: tuple[Any, ...]
    ) -> AsyncGenerator[None, None]:
        """Closed by ``loop.shutdown_asyncgens``: closes the loop's clients on their loop."""
        try:
            yield
        finally:
            self._aclients.pop(loop, None)
            self._aslots.pop(loop, None)
            self._aguards.pop(id(loop), None)
            for closable in closables:
                try:
                    await closable.aclose()
                except Exception as exc:
                    _log.debug("closing a Redis client: %s", type(exc).__name__)

    def close(self) -> None:
        """Close the synchronous client's connections (async ones close with their loop)."""
        with self._client_guard:
            client, self._client = self._client, None
            sentinel, self._sentinel = self._sentinel, None
        if client is not None:
            client.close()
            client.connection_pool.disconnect()
        if sentinel is not None:
            for each in sentinel.sentinels:
                each.close()

    @staticmethod
    def script(client: Any, source: str) -> Any:
        """A call of the Lua ``source`` on ``client`` (``EVAL``; the server caches it).

        ``script(client, source)(keys=[...], args=[...])`` returns the reply (a coroutine
        with an asyncio client). Nothing is cached here, so a client that was closed (an
        event loop that ended) is never reused.
        """

        def call(*, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
            return client.eval(source, len(keys), *keys, *args)

        return call

    # -- errors ----------------------------------------------------------------------------

    def _error(self, action: str, provider_name: str, exc: BaseException) -> TokenStorageError:
        detail = str(exc)
        if self._password:
            detail = detail.replace(self._password, "[REDACTED]")
        from kstlib._redaction import redact_urls

        detail = redact_urls(detail).rstrip(". ")
        error = TokenStorageError(
            f"Redis {action} provider '{provider_name}' failed at {self.describe()}: "
            f"{type(exc).__name__}: {detail}. The token stored there is unchanged; check that "
            "Redis is reachable (and the URL, password and TLS settings), then retry.",
            path=self.safe_url,
            provider=provider_name,
        )
        error.__dict__["redis_cause"] = exc  # for the failover retry only
        return error

    def run_sync(self, action: str, provider_name: str, call: Any) -> Any:
        """``call(client)`` with the sync client; Redis errors become TokenStorageError."""
        try:
            return call(self.sync_client())
        except (self._redis.exceptions.RedisError, OSError) as exc:
            raise self._error(action, provider_name, exc) from None

    async def run_async(self, action: str, provider_name: str, awaitable: Any) -> Any:
        """Await a Redis command (waiting for a free connection); errors become
        TokenStorageError."""
        import asyncio

        slots = self._aslots.get(asyncio.get_running_loop())
        try:
            if slots is None:
                return await awaitable
            async with slots:
                return await awaitable
        except (self._redis.exceptions.RedisError, OSError) as exc:
            raise self._error(action, provider_name, exc) from None

    # -- leases (used by RedisLease and the fenced save) -----------------------------------

    def create_lock(self, provider_name: str) -> RedisLease:
        """A new, unacquired lease handle for ``provider_name``."""
        check_provider_name(provider_name)
        return RedisLease(self, provider_name)

    def note_lease(self, provider_name: str, owner: str, generation: str) -> None:
        """Record that this process holds the lease (its saves are fenced)."""
        with self._leases_guard:
            self._leases[provider_name] = [owner, generation]

    def forget_lease(self, provider_name: str, owner: str) -> None:
        """This process no longer holds the lease ``owner``."""
        with self._leases_guard:
            held = self._leases.get(provider_name)
            if held is not None and held[0] == owner:
                del self._leases[provider_name]

    def _held_lease(self, provider_name: str) -> list[str] | None:
        with self._leases_guard:
            held = self._leases.get(provider_name)
            return None if held is None else list(held)

    def wait_for_replica_sync(self, provider_name: str) -> None:
        """Sentinel mode: wait (bounded) until a replica has what was just written."""
        if not self._sentinels:
            return
        try:
            acked = self.run_sync(
                "waiting for a replica of",
                provider_name,
                lambda client: client.wait(1, REPLICA_ACK_MS),
            )
        except TokenStorageError as exc:
            _log.warning("%s", exc.message)
            return
        self._note_ack(provider_name, acked)

    async def await_replica(self, provider_name: str) -> None:
        """Async :meth:`wait_for_replica_sync`."""
        if not self._sentinels:
            return
        client = await self.async_client()
        try:
            acked = await self.run_async(
                "waiting for a replica of", provider_name, client.wait(1, REPLICA_ACK_MS)
            )
        except TokenStorageError as exc:
            _log.warning("%s", exc.message)
            return
        self._note_ack(provider_name, acked)

    def _note_ack(self, provider_name: str, acked: Any) -> None:
        if not int(acked):
            _log.warning(
                "No Redis replica acknowledged the write for provider '%s' within %d ms; a "
                "failover now could lose it",
                provider_name,
                REPLICA_ACK_MS,
            )

    # -- encoding --------------------------------------------------------------------------

    def _encode(self, provider_name: str, token: Token) -> bytes:
        document = dump_document(provider_name, token)
        if self._aes_key is None:
            return document
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(_NONCE_BYTES)
        aad = self.key("token", provider_name).encode()
        return _ENCRYPTED_MAGIC + nonce + AESGCM(self._aes_key).encrypt(nonce, document, aad)

    def _decode(self, provider_name: str, data: bytes) -> Token:
        key = self.key("token", provider_name)
        if data.startswith(_ENCRYPTED_MAGIC):
            if self._aes_key is None:
                raise self._unusable(
                    provider_name,
                    "it is encrypted and no auth.storage.redis.encryption_key is configured",
                )
            from cryptography.exceptions import InvalidTag
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            body = data[len(_ENCRYPTED_MAGIC) :]
            try:
                data = AESGCM(self._aes_key).decrypt(
                    body[:_NONCE_BYTES], body[_NONCE_BYTES:], key.encode()
                )
            except (InvalidTag, ValueError):
                raise self._unusable(
                    provider_name,
                    "it cannot be decrypted with the configured encryption_key (another key, "
                    "or it was tampered with)",
                ) from None
        elif self._aes_key is not None:
            raise self._unusable(
                provider_name, "it is not encrypted although an encryption_key is configured"
            )
        try:
            return parse_document(provider_name, data, Path(key))
        except TokenStorageError as exc:
            raise self._unusable(provider_name, "it is not a valid token document") from exc

    def _unusable(self, provider_name: str, problem: str) -> TokenStorageError:
        key = self.key("token", provider_name)
        return TokenStorageError(
            f"The token of provider '{provider_name}' in Redis ({self.describe()}, key {key}) "
            f"is unusable: {problem}. Delete the key ('redis-cli DEL {key}') or run "
            f"'kstlib auth login {provider_name}' to replace it.",
            path=self.safe_url,
            provider=provider_name,
        )

    # -- the four operations ---------------------------------------------------------------

    def _save_keys(self, provider_name: str) -> tuple[list[str], list[str]]:
        lock, token, gen = (self.key(k, provider_name) for k in ("lock", "token", "gen"))
        return [lock, token, gen], [token, gen]

    def _check_fenced(self, provider_name: str, held: list[str], result: Any) -> None:
        outcome = int(result)
        if outcome >= 0:
            with self._leases_guard:
                current = self._leases.get(provider_name)
                if current is not None and current[0] == held[0]:
                    current[1] = str(outcome)
            return
        why = (
            "another worker holds the lease now"
            if outcome == -1
            else "another worker saved a newer token since this lease was taken"
        )
        raise TokenStorageError(
            f"Not saving the token of provider '{provider_name}' at {self.describe()}: this "
            f"worker's lease expired while it worked and {why} (lock_ttl "
            f"{self.lock_ttl:g} s). The newer token in Redis stays; the next call uses it.",
            path=self.safe_url,
            provider=provider_name,
        )

    def save(self, provider_name: str, token: Token) -> None:
        """Store the token (fenced when this process holds the provider's lease).

        In Sentinel mode a save that meets a failover (connection lost, the primary
        read-only) is retried until a new primary takes it, for up to ``failover_timeout``
        seconds: a token the IdP has just rotated is not lost.
        """
        value = self._encode(provider_name, token)
        fenced_keys, plain_keys = self._save_keys(provider_name)
        held = self._held_lease(provider_name)
        deadline = time.monotonic() + self.failover_timeout
        pause = 0.05
        retried = False
        while True:
            try:
                if held is not None:
                    result = self.run_sync(
                        "saving the token of",
                        provider_name,
                        lambda client: self.script(client, _FENCED_SAVE)(
                            keys=fenced_keys, args=[held[0], value, held[1]]
                        ),
                    )
                    if retried and int(result) == -2 and self._stored_is(provider_name, value):
                        result = 0  # the first attempt was applied; its answer was lost
                    self._check_fenced(provider_name, held, result)
                else:
                    self.run_sync(
                        "saving the token of",
                        provider_name,
                        lambda client: self.script(client, _SAVE)(keys=plain_keys, args=[value]),
                    )
                break
            except TokenStorageError as exc:
                if not self._failover_retry(exc, deadline):
                    raise
                _log.warning("%s; retrying while Sentinel fails over", exc.message)
                time.sleep(pause)
                pause = min(pause * 2, 1.0)
                retried = True
        self.wait_for_replica_sync(provider_name)

    def _failover_retry(self, exc: TokenStorageError, deadline: float) -> bool:
        cause = exc.__dict__.get("redis_cause")
        retryable = (
            self._redis.exceptions.ConnectionError,
            self._redis.exceptions.TimeoutError,
            self._redis.exceptions.ReadOnlyError,
        )
        return (
            bool(self._sentinels) and isinstance(cause, retryable) and (time.monotonic() < deadline)
        )

    def _stored_is(self, provider_name: str, value: bytes) -> bool:
        key = self.key("token", provider_name)
        stored = self.run_sync("checking the token of", provider_name, lambda c: c.get(key))
        return stored is not None and bytes(stored) == value

    async def asave(self, provider_name: str, token: Token) -> None:
        """Async :meth:`save` (redis.asyncio), with the same failover retry."""
        import asyncio

        value = self._encode(provider_name, token)
        fenced_keys, plain_keys = self._save_keys(provider_name)
        held = self._held_lease(provider_name)
        deadline = time.monotonic() + self.failover_timeout
        pause = 0.05
        retried = False
        while True:
            client = await self.async_client()
            try:
                if held is not None:
                    result = await self.run_async(
                        "saving the token of",
                        provider_name,
                        self.script(client, _FENCED_SAVE)(
                            keys=fenced_keys, args=[held[0], value, held[1]]
                        ),
                    )
                    if retried and int(result) == -2:
                        stored = await self.run_async(
                            "checking the token of",
                            provider_name,
                            client.get(self.key("token", provider_name)),
                        )
                        if stored is not None and bytes(stored) == value:
                            result = 0
                    self._check_fenced(provider_name, held, result)
                else:
                    await self.run_async(
                        "saving the token of",
                        provider_name,
                        self.script(client, _SAVE)(keys=plain_keys, args=[value]),
                    )
                break
            except TokenStorageError as exc:
                if not self._failover_retry(exc, deadline):
                    raise
                _log.warning("%s; retrying while Sentinel fails over", exc.message)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                retried = True
        await self.await_replica(provider_name)

    def load(self, provider_name: str) -> Token | None:
        """The stored token (validated, decrypted), or None."""
        key = self.key("token", provider_name)
        data = self.run_sync("loading the token of", provider_name, lambda c: c.get(key))
        return None if data is None else self._decode(provider_name, bytes(data))

    async def aload(self, provider_name: str) -> Token | None:
        """Async :meth:`load` (redis.asyncio)."""
        key = self.key("token", provider_name)
        client = await self.async_client()
        data = await self.run_async("loading the token of", provider_name, client.get(key))
        return None if data is None else self._decode(provider_name, bytes(data))

    def delete(self, provider_name: str) -> bool:
        """Delete the stored token; True if there was one."""
        _, keys = self._save_keys(provider_name)
        deleted = self.run_sync(
            "deleting the token of",
            provider_name,
            lambda client: self.script(client, _DELETE)(keys=keys),
        )
        return bool(int(deleted))

    async def adelete(self, provider_name: str) -> bool:
        """Async :meth:`delete` (redis.asyncio)."""
        _, keys = self._save_keys(provider_name)
        client = await self.async_client()
        deleted = await self.run_async(
            "deleting the token of", provider_name, self.script(client, _DELETE)(keys=keys)
        )
        return bool(int(deleted))

    def exists(self, provider_name: str) -> bool:
        """True if a token is stored for the provider."""
        key = self.key("token", provider_name)
        return bool(self.run_sync("checking the token of", provider_name, lambda c: c.exists(key)))

    # -- shared metadata -------------------------------------------------------------------

    def metadata_store(
        self, *, ssl_verify: bool = True, ssl_ca_bundle: str | None = None
    ) -> RedisMetadataStore | None:
        """The shared discovery/JWKS store in this Redis (None without ``share_metadata``),
        for clients with these TLS settings."""
        if not self.share_metadata:
            return None
        from kstlib.auth.token._redis_metadata import RedisMetadataStore, tls_namespace

        return RedisMetadataStore(self, tls_namespace(ssl_verify, ssl_ca_bundle))


def _start_guard(guard: AsyncGenerator[None, None]) -> None:
    """Run ``guard`` to its first ``yield`` now, so the running loop starts tracking it."""
    step = guard.asend(None).__await__()
    try:
        step.send(None)
    except StopIteration:
        return
    raise RuntimeError("the loop guard awaited before its first yield")  # pragma: no cover
