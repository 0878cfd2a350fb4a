"""OpenID Connect discovery and JWKS, cached; the key lookup behind every JWT verification.

* :class:`MetadataCache` fetches and caches discovery documents (OIDC
  Discovery 1.0, with an RFC 8414 fallback) and JWKS documents: TTL from
  ``Cache-Control: max-age`` (clamped) or a default, single-flight fetches,
  bounded size, and one forced JWKS re-fetch for an unknown ``kid`` per
  cooldown window, so a flood of forged ``kid`` values cannot hammer the IdP.
* :func:`verify_jwt` is the one call a provider needs: decode, pick keys,
  verify, check claims.
* :func:`require_https_or_loopback` and :func:`check_jwks_uri` are the URL
  policies applied before fetching anything.

Every network call goes through :func:`kstlib.auth._http.request_json`
(no redirects, size limit, bounded retries).
"""

from __future__ import annotations

import functools
import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from kstlib.auth._http import (
    DEFAULT_MAX_RESPONSE_BYTES,
    HTTPFailure,
    HTTPTraceLogger,
    JSONResponse,
    RetryPolicy,
    max_age_seconds,
    request_json,
)
from kstlib.auth._jose import (
    JWS,
    Derivable,
    JOSEError,
    KeySet,
    PublicJWK,
    SignatureCheck,
    decode_jws,
    json_copy,
    signature_verifier,
    validate_claims,
)
from kstlib.auth._net import is_loopback_host
from kstlib.auth.errors import DiscoveryError
from kstlib.auth.redaction import get_logger

__all__ = [
    "DEFAULT_RETRY",
    "Discovered",
    "MetadataCache",
    "check_jwks_uri",
    "discovery_url",
    "is_loopback_host",
    "json_copy",
    "oauth_metadata_url",
    "require_https_or_loopback",
    "require_same_origin",
    "require_unpinned_issuer",
    "select_key",
    "select_verified",
    "shared_cache",
    "verify_jwt",
]

#: Retries for discovery/JWKS fetches (idempotent GETs): connect errors, 5xx, 429.
DEFAULT_RETRY: Final = RetryPolicy(max_retries=2, backoff=0.2, max_backoff=2.0)
_OIDC_WELL_KNOWN: Final = "/.well-known/openid-configuration"
_OAUTH_WELL_KNOWN: Final = "/.well-known/oauth-authorization-server"
_LOCK_STRIPES: Final = 64
_log = get_logger("kstlib.auth.discovery")

T = TypeVar("T")


# --- issue 15: a discovery/JWKS cache shared by a fleet (e.g. through Redis) ---------------


class SharedMetadata(Protocol):
    """Where a fleet of processes shares fetched documents (``storage.redis.share_metadata``).

    Values are bytes the cache wrote; they are untrusted when read back (another process,
    or whoever can write to the store, wrote them), so the cache validates them again as if
    just fetched. Any method may raise; the cache then fetches for itself.
    """

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key`` (None when absent or expired)."""

    def put(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""

    def claim(self, key: str, ttl: float) -> str | None:
        """Take the right to fetch ``key`` (for ``ttl`` s at most): a token, or None if taken."""

    def release(self, key: str, token: str) -> None:
        """Give back a claim taken by :meth:`claim`."""


#: Longest wait for another process's fetch of the same document.
SHARED_FETCH_WAIT: Final = 10.0
# --- end issue 15 ---


# --------------------------------------------------------------------------- URL policy


@functools.lru_cache(maxsize=512)
def _split_url(url: str, what: str) -> tuple[str, str]:
    """``(scheme, host)`` of an absolute http(s) URL without credentials or fragment (memoised:
    warm checks validate the same few URLs over and over).
    """
    if not isinstance(url, str) or not url:
        raise DiscoveryError(f"{what} is not a URL", reason="invalid URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise DiscoveryError(f"{what} {url!r} is not a valid URL", reason="invalid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise DiscoveryError(f"{what} {url!r} is not an http(s) URL", reason="invalid URL")
    if "@" in parts.netloc or parts.fragment:
        raise DiscoveryError(
            f"{what} {url!r} must not contain credentials or a fragment", reason="invalid URL"
        )
    return parts.scheme, host


def require_https_or_loopback(url: str, *, what: str = "URL") -> None:
    """Refuse ``url`` unless it is https, or plain http to a loopback host.

    Raises:
        DiscoveryError: the URL is malformed or would travel unencrypted.
    """
    scheme, host = _split_url(url, what)
    if scheme == "http" and not is_loopback_host(host):
        raise DiscoveryError(
            f"{what} {url!r} uses plain http; only https (or http to localhost) is allowed",
            reason="insecure URL",
        )


def check_jwks_uri(jwks_uri: str, *, issuer: str) -> None:
    """Refuse a ``jwks_uri`` that is not https/loopback, unless the (configured) issuer
    itself is plain http on the same host (a development IdP the user chose).
    """
    scheme, host = _split_url(jwks_uri, "jwks_uri")
    if scheme == "https" or is_loopback_host(host):
        return
    issuer_parts = urlsplit(issuer)
    if issuer_parts.scheme == "http" and issuer_parts.hostname == host:
        return
    raise DiscoveryError(
        f"jwks_uri {jwks_uri!r} uses plain http; keys must be fetched over https",
        issuer=issuer,
        reason="insecure jwks_uri",
    )


def require_unpinned_issuer(issuer: str, *, allow_loopback: bool = False) -> None:
    """Refuse an issuer taken from an unverified token unless it is an https URL without a
    query, off this machine; with ``allow_loopback``, a loopback issuer (http or https) too.

    The token chooses this URL: without these rules a crafted token could make the caller
    GET any address it can reach, with a chosen path and query.

    Raises:
        DiscoveryError: the issuer is malformed, not https, has a query, or is loopback.
    """
    scheme, host = _split_url(issuer, "token issuer")
    _check_issuer(issuer)
    if is_loopback_host(host):
        if allow_loopback:
            return
        raise DiscoveryError(
            f"token issuer {issuer!r} is on this machine (loopback) and the issuer is not "
            "pinned: pass the expected issuer, or allow loopback issuers explicitly",
            issuer=issuer,
            reason="loopback issuer not allowed",
        )
    if scheme != "https":
        raise DiscoveryError(
            f"token issuer {issuer!r} uses plain http; an issuer that is not pinned must be https",
            issuer=issuer,
            reason="insecure URL",
        )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def require_same_origin(url: str, *, issuer: str, what: str = "jwks_uri") -> None:
    """Refuse ``url`` unless it has the scheme, host and port of ``issuer``.

    Raises:
        DiscoveryError: ``url`` is malformed or on another origin.
    """
    _split_url(url, what)
    if _origin(url) != _origin(issuer):
        raise DiscoveryError(
            f"{what} {url!r} is not on the origin of the issuer {issuer!r}; with an issuer "
            "that is not pinned, only the issuer's own server is contacted",
            issuer=issuer,
            reason="foreign origin",
        )


def discovery_url(issuer: str) -> str:
    """The OIDC discovery URL of ``issuer`` (OIDC Discovery 4.1: trailing ``/`` removed)."""
    return issuer.rstrip("/") + _OIDC_WELL_KNOWN


def oauth_metadata_url(issuer: str) -> str:
    """The RFC 8414 metadata URL of ``issuer`` (well-known suffix inserted before the path)."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{parts.netloc}{_OAUTH_WELL_KNOWN}{path}"


@functools.lru_cache(maxsize=512)
def _check_issuer(issuer: str) -> None:
    _split_url(issuer, "issuer")
    if urlsplit(issuer).query:
        raise DiscoveryError(
            f"issuer {issuer!r} must not contain a query", issuer=issuer, reason="invalid issuer"
        )


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class Discovered(Derivable):
    """A discovery document and where it came from (shared: read it, do not mutate it)."""

    issuer: str
    url: str
    document: dict[str, Any]
    _text: str = field(default="", repr=False, compare=False)
    _derived: dict[Hashable, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, issuer: str, url: str, document: dict[str, Any]) -> Discovered:
        """Build an entry, keeping a serialised form for cheap private copies."""
        return cls(issuer, url, document, json.dumps(document))

    def document_copy(self) -> dict[str, Any]:
        """A private deep copy of the document."""
        if not self._text:
            copied: dict[str, Any] = json_copy(self.document)
            return copied
        loaded: dict[str, Any] = json.loads(self._text)
        return loaded


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    expires_at: float


class _LRU(Generic[T]):
    """A bounded map of cache entries; callers hold the owning cache's lock."""

    def __init__(self, max_entries: int) -> None:
        self._items: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._max = max_entries

    def fresh(self, key: str, now: float) -> T | None:
        entry = self._items.get(key)
        if entry is None or entry.expires_at <= now:
            return None
        self._items.move_to_end(key)
        return entry.value

    def put(self, key: str, value: T, expires_at: float) -> None:
        self._items[key] = _Entry(value, expires_at)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


# --------------------------------------------------------------------------- cache


class MetadataCache:
    """Thread-safe cache of discovery documents and JWKS, shared by providers and checkers.

    Args:
        default_ttl: Seconds an entry lives when the server sends no ``max-age``.
        jwks_refetch_cooldown: Least seconds between two JWKS re-fetches of one URL
            triggered by an unknown ``kid`` (ordinary fetches do not count).
        min_ttl / max_ttl: Bounds applied to a server's ``max-age`` (``no-cache``
            counts as 0, so ``min_ttl`` keeps a warm cache useful).
        max_entries: Most documents of each kind kept (least recently used dropped).
        retry: Default retry policy of fetches.
        rfc8414_fallback: Try ``/.well-known/oauth-authorization-server`` when the
            OIDC discovery URL answers 404.
        clock: Monotonic clock (injectable for tests).
        shared: Documents shared with other processes (e.g. a fleet's Redis): read there
            before fetching, written there after, re-validated whenever read back.
    """

    def __init__(
        self,
        *,
        default_ttl: float = 3600.0,
        jwks_refetch_cooldown: float = 30.0,
        min_ttl: float = 60.0,
        max_ttl: float = 86400.0,
        max_entries: int = 256,
        retry: RetryPolicy = DEFAULT_RETRY,
        rfc8414_fallback: bool = True,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedMetadata | None = None,
    ) -> None:
        self.default_ttl = default_ttl
        self.shared = shared  # issue 15: documents shared with other processes
        self.jwks_refetch_cooldown = jwks_refetch_cooldown
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.retry = retry
        self.rfc8414_fallback = rfc8414_fallback
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._stripes = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
        self._discovery: _LRU[Discovered] = _LRU(max_entries)
        self._jwks: _LRU[KeySet] = _LRU(max_entries)
        self._jwks_attempts: OrderedDict[str, float] = OrderedDict()
        self._max_entries = max_entries

    # ---------------------------------------------------------------- public API

    def discovery(
        self,
        client: httpx.Client,
        issuer: str,
        *,
        ttl: float | None = None,
        force: bool = False,
        retry: RetryPolicy | None = None,
        tracer: HTTPTraceLogger | None = None,
    ) -> dict[str, Any]:
        """The discovery document of ``issuer`` (a private copy; cached).

        Raises:
            DiscoveryError: fetch failed, the answer is not a JSON object, or its
                ``issuer`` is not exactly ``issuer``.
        """
        found = self.discovered(client, issuer, ttl=ttl, force=force, retry=retry, tracer=tracer)
        return found.document_copy()

    def discovered(
        self,
        client: httpx.Client,
        issuer: str,
        *,
        ttl: float | None = None,
        force: bool = False,
        retry: RetryPolicy | None = None,
        tracer: HTTPTraceLogger | None = None,
    ) -> Discovered:
        """Like :meth:`discovery`, with the URL that answered; the document is shared: do not
        mutate it.
        """
        _check_issuer(issuer)
        if not force:  # warm path first: no closures to build
            with self._lock:
                hit = self._discovery.fresh("d:" + issuer, self._clock())
            if hit is not None:
                return hit

        def fetch() -> tuple[Discovered, float]:
            return self._fetch_discovery(client, issuer, ttl, retry or self.retry, tracer)

        def revalidate(data: bytes) -> Discovered:
            return _shared_discovered(data, issuer)

        return self._cached(
            self._discovery, "d:" + issuer, fetch, force, (_dump_discovered, revalidate)
        )

    # issue 13 (item 6): endpoints a server lists only in its RFC 8414 metadata
    def oauth_metadata(
        self,
        client: httpx.Client,
        issuer: str,
        *,
        ttl: float | None = None,
        retry: RetryPolicy | None = None,
        tracer: HTTPTraceLogger | None = None,
    ) -> dict[str, Any]:
        """The RFC 8414 document of ``issuer`` (``/.well-known/oauth-authorization-server``,
        inserted before the issuer's path, RFC 8414 section 3); a private copy, cached.

        Consulted when the OIDC document lacks an endpoint a call needs: fetched once per
        TTL, its ``issuer`` must be exactly ``issuer``. A server that publishes none (404)
        gives ``{}``, cached alike (not asked again before the TTL ends).

        Raises:
            DiscoveryError: the fetch failed (other than 404), the answer is not a JSON
                object, or it names another issuer.
        """
        _check_issuer(issuer)

        def fetch() -> tuple[Discovered, float]:
            return self._fetch_oauth_metadata(client, issuer, ttl, retry or self.retry, tracer)

        return self._cached(self._discovery, "o:" + issuer, fetch, False).document_copy()

    def _fetch_oauth_metadata(
        self,
        client: httpx.Client,
        issuer: str,
        ttl: float | None,
        retry: RetryPolicy,
        tracer: HTTPTraceLogger | None,
    ) -> tuple[Discovered, float]:
        url = oauth_metadata_url(issuer)
        try:
            response = self._get(
                client, url, what="server metadata", issuer=issuer, retry=retry, tracer=tracer
            )
        except DiscoveryError as exc:
            if exc.status_code != 404:
                raise
            return Discovered.of(issuer, url, {}), self.default_ttl if ttl is None else ttl
        document = _validated_document(response.data, issuer, url)
        return Discovered.of(issuer, url, document), self._ttl(response, ttl)

    # -- end of issue 13 (item 6) --

    def jwks(
        self,
        client: httpx.Client,
        jwks_uri: str,
        *,
        force: bool = False,
        retry: RetryPolicy | None = None,
        tracer: HTTPTraceLogger | None = None,
    ) -> KeySet:
        """The usable keys published at ``jwks_uri`` (cached).

        Raises:
            DiscoveryError: fetch failed, or the JWKS holds no usable signature key.
        """
        _split_url(jwks_uri, "jwks_uri")
        if not force:  # warm path first: no closures to build
            with self._lock:
                hit = self._jwks.fresh("j:" + jwks_uri, self._clock())
            if hit is not None:
                return hit

        def fetch() -> tuple[KeySet, float]:
            return self._fetch_jwks(client, jwks_uri, retry or self.retry, tracer)

        return self._cached(self._jwks, "j:" + jwks_uri, fetch, force, (_dump_jwks, _load_jwks))

    def key_candidates(
        self,
        client: httpx.Client,
        jwks_uri: str,
        jws: JWS,
        *,
        retry: RetryPolicy | None = None,
        tracer: HTTPTraceLogger | None = None,
    ) -> list[PublicJWK]:
        """Keys of ``jwks_uri`` that may verify ``jws`` (by ``alg`` type and ``kid``).

        When no key matches because the ``kid`` is unknown (or the token has none),
        the JWKS is fetched again once, unless another re-fetch for an unknown ``kid``
        happened within the cooldown.
        """
        keys = self.jwks(client, jwks_uri, retry=retry, tracer=tracer)
        found = keys.candidates(jws.alg, jws.kid)
        if found or (jws.kid is not None and keys.has_kid(jws.kid)):
            return found
        if self._claim_refetch(jwks_uri):
            keys = self.jwks(client, jwks_uri, force=True, retry=retry, tracer=tracer)
        else:  # another thread may be re-fetching right now: wait for it, no new request
            with self._stripe("j:" + jwks_uri):
                pass
            keys = self.jwks(client, jwks_uri, retry=retry, tracer=tracer)
        return keys.candidates(jws.alg, jws.kid)

    def clear(self) -> None:
        """Forget every cached document and cooldown."""
        with self._lock:
            self._discovery.clear()
            self._jwks.clear()
            self._jwks_attempts.clear()

    # ---------------------------------------------------------------- caching

    def _cached(
        self,
        lru: _LRU[T],
        key: str,
        fetch: Callable[[], tuple[T, float]],
        force: bool,
        codec: tuple[Callable[[T], bytes], Callable[[bytes], T]] | None = None,
    ) -> T:
        if not force:
            with self._lock:
                hit = lru.fresh(key, self._clock())
            if hit is not None:
                return hit
        # Single flight: one fetch per key at a time; waiters then read the fresh entry.
        with self._stripe(key):
            started = self._clock()
            if not force:
                with self._lock:
                    hit = lru.fresh(key, started)
                if hit is not None:
                    return hit
            if self.shared is not None and codec is not None:
                value, ttl = self._shared_fetch(key, fetch, force, codec)
            else:
                value, ttl = fetch()
            with self._lock:
                lru.put(key, value, self._clock() + ttl)
        return value

    # --- issue 15: the shared layer ---------------------------------------------------

    def _shared_read(self, key: str, decode: Callable[[bytes], T]) -> tuple[T, float] | None:
        """A document another process stored, re-validated; None when absent or refused."""
        if self.shared is None:
            return None
        try:
            data = self.shared.get(key)
        except Exception as exc:  # the shared store is an optimisation: fetch on failure
            _log.warning("Shared metadata cache unavailable (%s); fetching", exc)
            return None
        if data is None:
            return None
        try:
            envelope = json.loads(data)
            left = float(envelope["expires_at"]) - time.time()
            value = decode(envelope["value"].encode("utf-8"))
        except (DiscoveryError, JOSEError, ValueError, TypeError, KeyError) as exc:
            _log.warning("Refusing a shared metadata entry (%s): fetching it again", exc)
            return None
        return (value, left) if left > 0 else None

    def _shared_fetch(
        self,
        key: str,
        fetch: Callable[[], tuple[T, float]],
        force: bool,
        codec: tuple[Callable[[T], bytes], Callable[[bytes], T]],
    ) -> tuple[T, float]:
        """Read the shared copy, else fetch once for the whole fleet and share the result."""
        shared = self.shared
        if shared is None:
            return fetch()
        encode, decode = codec
        found = None if force else self._shared_read(key, decode)
        if found is not None:
            return found
        deadline = time.monotonic() + SHARED_FETCH_WAIT
        claim: str | None = None
        while True:
            try:
                claim = shared.claim(key, SHARED_FETCH_WAIT)
            except Exception as exc:
                _log.warning("Shared metadata cache unavailable (%s); fetching", exc)
                break
            if claim is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.02)  # another process is fetching it: wait for its copy
            found = self._shared_read(key, decode)
            if found is not None:
                return found
        try:
            if claim is not None and not force:
                found = self._shared_read(key, decode)  # shared while the claim was awaited
                if found is not None:
                    return found
            value, ttl = fetch()
            envelope = {"expires_at": time.time() + ttl, "value": encode(value).decode("utf-8")}
            try:
                shared.put(key, json.dumps(envelope).encode("utf-8"), ttl)
            except Exception as exc:
                _log.warning("Could not share a metadata document (%s)", exc)
            return value, ttl
        finally:
            if claim is not None:
                try:
                    shared.release(key, claim)
                except Exception as exc:
                    _log.debug("releasing a shared metadata claim: %s", exc)

    def _stripe(self, key: str) -> threading.Lock:
        return self._stripes[zlib.crc32(key.encode()) % _LOCK_STRIPES]

    def _claim_refetch(self, jwks_uri: str) -> bool:
        """Atomically take the right to re-fetch ``jwks_uri`` for an unknown ``kid``.

        Only such re-fetches start the cooldown: the first fetch (or one after the TTL)
        does not, so a key rotated in right after a process started is found at once.
        """
        now = self._clock()
        with self._lock:
            last = self._jwks_attempts.get(jwks_uri)
            if last is not None and now - last < self.jwks_refetch_cooldown:
                return False
            self._note_attempt(jwks_uri, now)
            return True

    def _note_attempt(self, jwks_uri: str, now: float) -> None:
        self._jwks_attempts[jwks_uri] = now
        self._jwks_attempts.move_to_end(jwks_uri)
        while len(self._jwks_attempts) > self._max_entries:
            self._jwks_attempts.popitem(last=False)

    def _ttl(self, response: JSONResponse, fallback: float | None) -> float:
        max_age = max_age_seconds(response.headers)
        if max_age is None:
            return self.default_ttl if fallback is None else fallback
        return min(self.max_ttl, max(self.min_ttl, max_age))

    # ---------------------------------------------------------------- fetching

    def _get(
        self,
        client: httpx.Client,
        url: str,
        *,
        what: str,
        issuer: str | None,
        retry: RetryPolicy,
        tracer: HTTPTraceLogger | None,
    ) -> JSONResponse:
        try:
            response = request_json(
                client, "GET", url, retry=retry, tracer=tracer, max_bytes=self.max_bytes
            )
        except HTTPFailure as exc:
            raise DiscoveryError(
                f"cannot fetch the {what} at {url}: {exc.reason}",
                issuer=issuer,
                reason=exc.reason,
                status_code=exc.status_code,
            ) from None
        if not response.is_success:
            raise DiscoveryError(
                f"cannot fetch the {what} at {url}: HTTP {response.status_code}",
                issuer=issuer,
                reason=f"HTTP {response.status_code}",
                status_code=response.status_code,
            )
        return response

    def _fetch_discovery(
        self,
        client: httpx.Client,
        issuer: str,
        ttl: float | None,
        retry: RetryPolicy,
        tracer: HTTPTraceLogger | None,
    ) -> tuple[Discovered, float]:
        url = discovery_url(issuer)
        try:
            response = self._get(
                client, url, what="discovery document", issuer=issuer, retry=retry, tracer=tracer
            )
        except DiscoveryError as exc:
            if not (self.rfc8414_fallback and exc.status_code == 404):
                raise
            url = oauth_metadata_url(issuer)
            try:
                response = self._get(
                    client, url, what="server metadata", issuer=issuer, retry=retry, tracer=tracer
                )
            except DiscoveryError:
                raise exc from None
        document = _validated_document(response.data, issuer, url)
        return Discovered.of(issuer, url, document), self._ttl(response, ttl)

    def _fetch_jwks(
        self,
        client: httpx.Client,
        jwks_uri: str,
        retry: RetryPolicy,
        tracer: HTTPTraceLogger | None,
    ) -> tuple[KeySet, float]:
        response = self._get(client, jwks_uri, what="JWKS", issuer=None, retry=retry, tracer=tracer)
        try:
            keys = KeySet.from_jwks(response.data)
        except JOSEError as exc:
            raise DiscoveryError(
                f"the JWKS at {jwks_uri} is unusable: {exc.reason}", reason=exc.reason
            ) from None
        return keys, self._ttl(response, None)


def _validated_document(data: Any, issuer: str, url: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise DiscoveryError(
            f"the discovery document at {url} is not a JSON object",
            issuer=issuer,
            reason="not a JSON object",
        )
    named = data.get("issuer")
    if named != issuer:
        raise DiscoveryError(
            f"the discovery document at {url} names issuer {named!r}, not {issuer!r}; "
            "they must be identical (OpenID Connect Discovery 4.3)",
            issuer=issuer,
            reason="issuer mismatch",
        )
    jwks_uri = data.get("jwks_uri")
    if jwks_uri is not None and not isinstance(jwks_uri, str):
        raise DiscoveryError(
            f"the discovery document at {url} has a non-string jwks_uri",
            issuer=issuer,
            reason="invalid jwks_uri",
        )
    return data


# --- issue 15: what a shared entry holds, and its re-validation when read back ------------


def _dump_discovered(found: Discovered) -> bytes:
    return json.dumps({"url": found.url, "document": found.document}).encode("utf-8")


def _shared_discovered(data: bytes, issuer: str) -> Discovered:
    """A discovery document read back from the shared store, checked as if just fetched."""
    entry = json.loads(data)
    url = entry.get("url") if isinstance(entry, dict) else None
    if url not in (discovery_url(issuer), oauth_metadata_url(issuer)):
        raise DiscoveryError("a shared discovery entry names another URL", reason="shared")
    require_https_or_loopback(url, what="discovery URL")
    document = _validated_document(entry.get("document"), issuer, url)
    return Discovered.of(issuer, url, document)


def _dump_jwks(keys: KeySet) -> bytes:
    return keys._public_text.encode("utf-8")


def _load_jwks(data: bytes) -> KeySet:
    return KeySet.from_jwks(json.loads(data))


# --- end issue 15 ---


#: The process-wide caches, one per TLS trust setting (verify, CA bundle).
_SHARED: dict[tuple[bool, str | None], MetadataCache] = {}
_SHARED_LOCK = threading.Lock()


def shared_cache(
    *,
    ssl_verify: bool = True,
    ssl_ca_bundle: str | None = None,
    shared: SharedMetadata | None = None,
    shared_id: str = "",
) -> MetadataCache:
    """The process-wide cache of clients with these TLS settings (created on first use).

    The TLS settings are part of the key: a document fetched without certificate
    verification, or trusting another CA bundle, is never served to a client that
    verifies differently. ``shared`` (with ``shared_id`` naming it) is a store the cache
    also shares documents through (one cache per store and TLS setting; issue 15).
    """
    key = (True, ssl_ca_bundle) if ssl_verify else (False, None)
    if shared is not None:
        with _SHARED_LOCK:
            found = _FLEET.get((*key, shared_id))
            if found is None:
                found = _FLEET[(*key, shared_id)] = MetadataCache(shared=shared)
            return found
    with _SHARED_LOCK:
        cache = _SHARED.get(key)
        if cache is None:
            cache = _SHARED[key] = MetadataCache()
        return cache


#: issue 15: the process-wide caches that share through a store, by TLS setting and store.
_FLEET: dict[tuple[bool, str | None, str], MetadataCache] = {}


# --------------------------------------------------------------------------- verification


def verify_jwt(
    client: httpx.Client,
    token: str,
    *,
    cache: MetadataCache,
    jwks_uri: str,
    issuer: str,
    audience: str | None,
    allowed_algs: frozenset[str],
    leeway: float,
    now: float | None = None,
    require: Iterable[str] = ("exp", "iat"),
    retry: RetryPolicy | None = None,
    tracer: HTTPTraceLogger | None = None,
) -> tuple[JWS, PublicJWK]:
    """Decode, verify and claim-check a JWT against the keys of ``jwks_uri``.

    The algorithm and issuer are checked before any network call. Returns the
    decoded token and the key that verified it.

    Raises:
        JOSEError: malformed token, refused algorithm, no matching key, bad
            signature, or a failing claim (``claim`` names it).
        DiscoveryError: the JWKS could not be fetched or holds no usable key.
    """
    jws = decode_jws(token)
    if jws.alg not in allowed_algs:
        raise JOSEError(f"algorithm {jws.alg!r} is not allowed")
    if jws.payload.get("iss") != issuer:
        raise JOSEError(f"token issuer {jws.payload.get('iss')!r} is not {issuer!r}", claim="iss")
    candidates = cache.key_candidates(client, jwks_uri, jws, retry=retry, tracer=tracer)
    key = select_key(jws, candidates, allowed_algs)
    validate_claims(
        jws.payload, issuer=issuer, audience=audience, leeway=leeway, now=now, require=require
    )
    return jws, key


def select_key(jws: JWS, candidates: list[PublicJWK], allowed_algs: frozenset[str]) -> PublicJWK:
    """The first candidate whose signature check passes.

    Raises:
        JOSEError: no candidate, or none verifies.
    """
    alg = jws.alg
    return select_verified(
        jws, [(key, signature_verifier(key, alg, allowed=allowed_algs)) for key in candidates]
    )


def select_verified(jws: JWS, candidates: Sequence[tuple[PublicJWK, SignatureCheck]]) -> PublicJWK:
    """Like :func:`select_key`, with each candidate's :func:`signature_verifier` for the
    token's algorithm already made (e.g. kept by a caller that sees the key again).

    Raises:
        JOSEError: no candidate, or none verifies.
    """
    if not candidates:
        kid = f"kid {jws.kid!r}" if jws.kid is not None else "no kid"
        raise JOSEError(f"no key in the JWKS can verify this {jws.alg} token ({kid})")
    signature, signing_input = jws.signature, jws.signing_input
    if len(candidates) == 1:
        key, verify = candidates[0]
        verify(signature, signing_input)
        return key
    for key, verify in candidates:
        try:
            verify(signature, signing_input)
        except JOSEError:
            continue
        return key
    raise JOSEError(f"signature does not verify with any of the {len(candidates)} candidate keys")
