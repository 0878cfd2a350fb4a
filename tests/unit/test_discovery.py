"""kstlib.auth._discovery: URL policy, discovery/JWKS caching, kid re-fetch cooldown, verify_jwt.

Runs against the real threaded HTTP server of tests/jwks_server.py; respx only
for a timeout, which a local server cannot produce quickly.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import pytest
import respx

from kstlib.auth._discovery import (
    MetadataCache,
    check_jwks_uri,
    discovery_url,
    oauth_metadata_url,
    require_https_or_loopback,
    shared_cache,
    verify_jwt,
)
from kstlib.auth._http import RetryPolicy
from kstlib.auth._jose import ALLOWED_ALGORITHMS, JOSEError, decode_jws
from kstlib.auth.errors import DiscoveryError
from tests import jwt_factory as f
from tests import loopback_http
from tests.jwks_server import JWKSServer, Route

pytestmark = pytest.mark.usefixtures("server")

FAST_RETRY = RetryPolicy(max_retries=2, backoff=0.01, max_backoff=0.02)
DISCOVERY = "/issuer/.well-known/openid-configuration"
JWKS = "/issuer/jwks"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> MetadataCache:
    return MetadataCache(clock=clock, retry=FAST_RETRY)


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- URL policy


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example.com",
        "https://idp.example.com:8443/realms/x",
        "http://127.0.0.1:8080/x",
        "http://127.9.9.9/x",
        "http://[::1]:9000/",
        "http://localhost/x",
        "http://LOCALHOST:80",
    ],
)
def test_https_or_loopback_accepts(url: str) -> None:
    require_https_or_loopback(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://idp.example.com",
        "http://10.0.0.1/",
        "http://169.254.169.254/latest",
        "http://localhost.evil.com/",
        "ftp://idp.example.com",
        "file:///etc/passwd",
        "https://user:pw@idp.example.com",
        "https://idp.example.com/#frag",
        "https://idp.example.com:99999/",
        "https://",
        "not a url",
        "",
    ],
)
def test_https_or_loopback_refuses(url: str) -> None:
    with pytest.raises(DiscoveryError):
        require_https_or_loopback(url)


def test_check_jwks_uri_policy() -> None:
    check_jwks_uri("https://keys.example.com/jwks", issuer="https://idp.example.com")
    check_jwks_uri("http://127.0.0.1:1/jwks", issuer="https://idp.example.com")
    check_jwks_uri("http://keycloak:8080/certs", issuer="http://keycloak:8080/realms/dev")
    with pytest.raises(DiscoveryError, match="plain http"):
        check_jwks_uri("http://keys.example.com/jwks", issuer="https://idp.example.com")
    with pytest.raises(DiscoveryError, match="plain http"):
        check_jwks_uri("http://other:8080/certs", issuer="http://keycloak:8080/realms/dev")


@pytest.mark.parametrize(
    ("issuer", "oidc", "oauth"),
    [
        (
            "https://a.example/realms/x",
            "https://a.example/realms/x/.well-known/openid-configuration",
            "https://a.example/.well-known/oauth-authorization-server/realms/x",
        ),
        (
            "https://a.example/realms/x/",
            "https://a.example/realms/x/.well-known/openid-configuration",
            "https://a.example/.well-known/oauth-authorization-server/realms/x",
        ),
        (
            "https://a.example",
            "https://a.example/.well-known/openid-configuration",
            "https://a.example/.well-known/oauth-authorization-server",
        ),
    ],
)
def test_well_known_urls(issuer: str, oidc: str, oauth: str) -> None:
    assert discovery_url(issuer) == oidc
    assert oauth_metadata_url(issuer) == oauth


# --------------------------------------------------------------------------- discovery


def test_discovery_fetches_once_and_caches(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.set_issuer("/issuer")
    doc = cache.discovery(client, issuer)
    assert doc["issuer"] == issuer
    assert cache.discovery(client, issuer) == doc
    assert server.count(DISCOVERY) == 1
    found = cache.discovered(client, issuer)
    assert found.url == server.url(DISCOVERY)


def test_discovery_returns_a_private_copy(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.set_issuer("/issuer")
    doc = cache.discovery(client, issuer)
    doc["jwks_uri"] = "https://evil.example/jwks"
    doc["id_token_signing_alg_values_supported"].append("none")
    fresh = cache.discovery(client, issuer)
    assert fresh["jwks_uri"] == server.url(JWKS)
    assert "none" not in fresh["id_token_signing_alg_values_supported"]


def test_discovery_force_refetches(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.set_issuer("/issuer")
    cache.discovery(client, issuer)
    cache.discovery(client, issuer, force=True)
    assert server.count(DISCOVERY) == 2


def test_discovery_ttl_default_and_explicit(
    server: JWKSServer, client: httpx.Client, clock: FakeClock
) -> None:
    cache = MetadataCache(default_ttl=100, clock=clock)
    issuer = server.set_issuer("/issuer")
    cache.discovery(client, issuer)
    clock.now += 99
    cache.discovery(client, issuer)
    assert server.count(DISCOVERY) == 1
    clock.now += 2
    cache.discovery(client, issuer)
    assert server.count(DISCOVERY) == 2
    cache.discovery(client, issuer, ttl=10, force=True)
    clock.now += 11
    cache.discovery(client, issuer, ttl=10)
    assert server.count(DISCOVERY) == 4


@pytest.mark.parametrize(
    ("cache_control", "lives"),
    [("max-age=300", 300), ("public, max-age=5", 60), ("no-cache", 60), ("max-age=999999", 86400)],
)
def test_discovery_honours_max_age_within_bounds(
    server: JWKSServer, client: httpx.Client, clock: FakeClock, cache_control: str, lives: int
) -> None:
    cache = MetadataCache(default_ttl=3600, min_ttl=60, max_ttl=86400, clock=clock)
    issuer = server.set_issuer("/issuer", headers={"Cache-Control": cache_control})
    cache.discovery(client, issuer)
    clock.now += lives - 1
    cache.discovery(client, issuer)
    assert server.count(DISCOVERY) == 1
    clock.now += 2
    cache.discovery(client, issuer)
    assert server.count(DISCOVERY) == 2


def test_discovery_issuer_must_match_exactly(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.set_issuer("/issuer", extra={"issuer": server.url("/issuer/")})
    with pytest.raises(DiscoveryError, match="must be identical") as info:
        cache.discovery(client, issuer)
    assert info.value.issuer == issuer
    assert info.value.reason == "issuer mismatch"


def test_discovery_of_another_issuer_is_refused(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.set_issuer("/issuer", extra={"issuer": "https://accounts.example.com"})
    with pytest.raises(DiscoveryError, match="accounts.example.com"):
        cache.discovery(client, issuer)


@pytest.mark.parametrize("body", [[1, 2], "text", None, 42])
def test_discovery_must_be_an_object(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache, body: Any
) -> None:
    server.set_json(DISCOVERY, body)
    with pytest.raises(DiscoveryError, match="not a JSON object"):
        cache.discovery(client, server.url("/issuer"))


def test_discovery_jwks_uri_must_be_a_string(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.set_issuer("/issuer", extra={"jwks_uri": ["x"]})
    with pytest.raises(DiscoveryError, match="jwks_uri"):
        cache.discovery(client, issuer)


def test_discovery_falls_back_to_rfc8414_on_404(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.url("/issuer")
    server.set_json("/.well-known/oauth-authorization-server/issuer", {"issuer": issuer})
    found = cache.discovered(client, issuer)
    assert found.url == server.url("/.well-known/oauth-authorization-server/issuer")
    assert server.count(DISCOVERY) == 1


def test_discovery_404_without_fallback(server: JWKSServer, client: httpx.Client) -> None:
    cache = MetadataCache(rfc8414_fallback=False)
    with pytest.raises(DiscoveryError, match="HTTP 404") as info:
        cache.discovery(client, server.url("/issuer"))
    assert info.value.status_code == 404
    assert server.count() == 1


def test_discovery_404_everywhere_reports_the_oidc_error(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    with pytest.raises(DiscoveryError, match="openid-configuration") as info:
        cache.discovery(client, server.url("/issuer"))
    assert info.value.status_code == 404
    assert server.count() == 2


def test_discovery_retries_5xx_then_succeeds(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.set_issuer("/issuer")
    good = server._routes[DISCOVERY]
    server.set_route(DISCOVERY, Route(body=good.body, headers=good.headers, then=[Route(503)]))
    assert cache.discovery(client, issuer)["issuer"] == issuer
    assert server.count(DISCOVERY) == 2


def test_discovery_persistent_5xx(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    server.set_json(DISCOVERY, {"error": "down"}, status=500)
    with pytest.raises(DiscoveryError, match="HTTP 500") as info:
        cache.discovery(client, server.url("/issuer"))
    assert info.value.status_code == 500
    assert server.count(DISCOVERY) == 3  # 1 + 2 retries


def test_discovery_never_follows_redirects(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    server.set_issuer("/evil")
    server.set_route(DISCOVERY, Route(302, b"", {"Location": server.url("/evil/x")}))
    with pytest.raises(DiscoveryError, match="redirect"):
        cache.discovery(client, server.url("/issuer"))
    assert server.count("/evil/.well-known/openid-configuration") == 0


def test_discovery_html_answer(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    server.set_route(DISCOVERY, Route(200, b"<html>login</html>", {"Content-Type": "text/html"}))
    with pytest.raises(DiscoveryError, match="HTML"):
        cache.discovery(client, server.url("/issuer"))


def test_discovery_oversized_answer(server: JWKSServer, client: httpx.Client) -> None:
    cache = MetadataCache(max_bytes=1000)
    server.set_issuer("/issuer", extra={"padding": "x" * 2000})
    with pytest.raises(DiscoveryError, match="too large"):
        cache.discovery(client, server.url("/issuer"))


def test_discovery_connection_refused(client: httpx.Client, cache: MetadataCache) -> None:
    with pytest.raises(DiscoveryError, match="cannot connect"):
        cache.discovery(client, _closed_port_url() + "/issuer")


def test_discovery_server_hangs_up(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    server.set_route(DISCOVERY, Route(hang_up=True))
    with pytest.raises(DiscoveryError, match="cannot fetch"):
        cache.discovery(client, server.url("/issuer"))


def test_discovery_timeout(cache: MetadataCache) -> None:
    with respx.mock:
        respx.get("https://slow.example.com/.well-known/openid-configuration").mock(
            side_effect=httpx.ReadTimeout("slow")
        )
        with loopback_http.client() as c, pytest.raises(DiscoveryError, match="timed out"):
            cache.discovery(c, "https://slow.example.com")


@pytest.mark.parametrize(
    "issuer", ["ftp://x.example", "https://x.example?q=1", "https://u:p@x.example", ""]
)
def test_discovery_refuses_malformed_issuers(
    client: httpx.Client, cache: MetadataCache, issuer: str
) -> None:
    with pytest.raises(DiscoveryError):
        cache.discovery(client, issuer)


def test_discovery_single_flight_under_concurrency(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.set_issuer("/issuer")
    barrier = threading.Barrier(16)
    results: list[str] = []

    def worker() -> None:
        barrier.wait()
        results.append(cache.discovery(client, issuer)["issuer"])

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [issuer] * 16
    assert server.count(DISCOVERY) == 1


def test_cache_is_bounded(server: JWKSServer, client: httpx.Client) -> None:
    cache = MetadataCache(max_entries=2)
    issuers = [server.set_issuer(f"/i{n}") for n in range(3)]
    for issuer in issuers:
        cache.discovery(client, issuer)
    cache.discovery(client, issuers[2])
    cache.discovery(client, issuers[0])  # evicted: fetched again
    assert server.count("/i0/.well-known/openid-configuration") == 2
    assert server.count("/i2/.well-known/openid-configuration") == 1


def test_clear_forgets_everything(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    issuer = server.set_issuer("/issuer", jwks=f.jwks(f.rsa_key()))
    cache.discovery(client, issuer)
    cache.jwks(client, server.url(JWKS))
    cache.clear()
    cache.discovery(client, issuer)
    cache.jwks(client, server.url(JWKS))
    assert server.count() == 4


def test_shared_cache_is_one_instance() -> None:
    assert shared_cache() is shared_cache()


# --------------------------------------------------------------------------- JWKS


def test_jwks_cached_with_max_age(
    server: JWKSServer, client: httpx.Client, clock: FakeClock, cache: MetadataCache
) -> None:
    server.set_issuer(
        "/issuer", jwks=f.jwks(f.rsa_key()), jwks_headers={"Cache-Control": "max-age=120"}
    )
    keys = cache.jwks(client, server.url(JWKS))
    assert [k.kid for k in keys.keys] == ["rsa-1"]
    assert cache.jwks(client, server.url(JWKS)) is keys
    clock.now += 121
    assert cache.jwks(client, server.url(JWKS)) is not keys
    assert server.count(JWKS) == 2


def test_jwks_without_usable_keys(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    server.set_json(JWKS, f.jwks(f.rsa_key(1024)))
    with pytest.raises(DiscoveryError, match="too weak"):
        cache.jwks(client, server.url(JWKS))


def test_jwks_http_error(server: JWKSServer, client: httpx.Client, cache: MetadataCache) -> None:
    server.set_json(JWKS, {"error": "nope"}, status=403)
    with pytest.raises(DiscoveryError, match="HTTP 403") as info:
        cache.jwks(client, server.url(JWKS))
    assert info.value.status_code == 403


# --------------------------------------------------------------------------- kid re-fetch


def _token_for(key: f.TestKey, **kwargs: Any) -> Any:
    return decode_jws(key.sign(f.claims("https://i"), **kwargs))


def test_unknown_kid_refetches_once_after_rotation(
    server: JWKSServer, client: httpx.Client, clock: FakeClock, cache: MetadataCache
) -> None:
    old, new = f.rsa_key(kid="old"), f.rsa_key(kid="new", slot=1)
    server.set_json(JWKS, f.jwks(old))
    url = server.url(JWKS)
    cache.jwks(client, url)
    clock.now += 31
    server.set_json(JWKS, f.jwks(old, new))
    found = cache.key_candidates(client, url, _token_for(new))
    assert [k.kid for k in found] == ["new"]
    assert server.count(JWKS) == 2
    assert cache.key_candidates(client, url, _token_for(new))[0].kid == "new"
    assert server.count(JWKS) == 2


def test_unknown_kid_right_after_the_first_fetch_refetches_once(
    server: JWKSServer, client: httpx.Client, clock: FakeClock, cache: MetadataCache
) -> None:
    """A key rotated in right after start: the first fetch does not start the cooldown."""
    old, new = f.rsa_key(kid="old"), f.rsa_key(kid="new", slot=1)
    server.set_json(JWKS, f.jwks(old))
    url = server.url(JWKS)
    cache.jwks(client, url)
    server.set_json(JWKS, f.jwks(old, new))  # rotated within the cooldown of the first fetch
    assert [k.kid for k in cache.key_candidates(client, url, _token_for(new))] == ["new"]
    assert server.count(JWKS) == 2
    # that re-fetch (for an unknown kid) starts the cooldown: the next unknown kid waits
    assert cache.key_candidates(client, url, _token_for(f.rsa_key(kid="zzz"))) == []
    assert server.count(JWKS) == 2
    clock.now += 31
    assert cache.key_candidates(client, url, _token_for(f.rsa_key(kid="zzz"))) == []
    assert server.count(JWKS) == 3


def test_unknown_kid_flood_is_rate_limited(
    server: JWKSServer, client: httpx.Client, clock: FakeClock, cache: MetadataCache
) -> None:
    server.set_json(JWKS, f.jwks(f.rsa_key(kid="a")))
    url = server.url(JWKS)
    cache.jwks(client, url)
    clock.now += 31
    for n in range(50):
        assert cache.key_candidates(client, url, _token_for(f.rsa_key(kid=f"forged-{n}"))) == []
    assert server.count(JWKS) == 2
    clock.now += 31
    cache.key_candidates(client, url, _token_for(f.rsa_key(kid="forged-late")))
    assert server.count(JWKS) == 3


def test_unknown_kid_flood_from_threads(
    server: JWKSServer, client: httpx.Client, clock: FakeClock, cache: MetadataCache
) -> None:
    server.set_json(JWKS, f.jwks(f.rsa_key(kid="a")))
    url = server.url(JWKS)
    cache.jwks(client, url)
    clock.now += 31
    barrier = threading.Barrier(20)

    def worker(n: int) -> None:
        barrier.wait()
        cache.key_candidates(client, url, _token_for(f.rsa_key(kid=f"t{n}")))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert server.count(JWKS) == 2


def test_known_kid_of_wrong_type_does_not_refetch(
    server: JWKSServer, client: httpx.Client, clock: FakeClock, cache: MetadataCache
) -> None:
    server.set_json(JWKS, f.jwks(f.rsa_key(kid="shared")))
    url = server.url(JWKS)
    cache.jwks(client, url)
    clock.now += 31
    assert cache.key_candidates(client, url, _token_for(f.ec_key(kid="shared"))) == []
    assert server.count(JWKS) == 1


def test_no_kid_and_no_key_of_the_type_refetches(
    server: JWKSServer, client: httpx.Client, clock: FakeClock, cache: MetadataCache
) -> None:
    ec = f.ec_key(kid=None)
    server.set_json(JWKS, f.jwks(f.rsa_key(kid="a")))
    url = server.url(JWKS)
    cache.jwks(client, url)
    clock.now += 31
    server.set_json(JWKS, f.jwks(f.rsa_key(kid="a"), ec))
    found = cache.key_candidates(client, url, _token_for(ec, kid=False))
    assert [k.fingerprint for k in found] == [ec.spki_sha256]


# --------------------------------------------------------------------------- verify_jwt


def _verify(
    client: httpx.Client, cache: MetadataCache, server: JWKSServer, token: str, **kw: Any
) -> Any:
    options: dict[str, Any] = {
        "cache": cache,
        "jwks_uri": server.url(JWKS),
        "issuer": server.url("/issuer"),
        "audience": "my-app",
        "allowed_algs": ALLOWED_ALGORITHMS,
        "leeway": 60.0,
    }
    options.update(kw)
    return verify_jwt(client, token, **options)


def test_verify_jwt_success(server: JWKSServer, client: httpx.Client, cache: MetadataCache) -> None:
    key = f.ec_key(kid="e")
    issuer = server.set_issuer("/issuer", jwks=f.jwks(f.rsa_key(), key))
    jws, used = _verify(client, cache, server, key.sign(f.claims(issuer)))
    assert used.kid == "e"
    assert jws.payload["iss"] == issuer


def test_verify_jwt_checks_issuer_and_algorithm_before_network(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    key = f.rsa_key()
    server.set_issuer("/issuer", jwks=f.jwks(key))
    with pytest.raises(JOSEError) as info:
        _verify(client, cache, server, key.sign(f.claims("https://evil.example.com")))
    assert info.value.claim == "iss"
    with pytest.raises(JOSEError, match="not allowed"):
        _verify(client, cache, server, f.hs256(f.claims(server.url("/issuer")), key.public_pem))
    assert server.count() == 0


@pytest.mark.parametrize(
    ("claims_changes", "claim"), [({"exp": None}, "exp"), ({"aud": "other"}, "aud")]
)
def test_verify_jwt_claims(
    server: JWKSServer,
    client: httpx.Client,
    cache: MetadataCache,
    claims_changes: dict[str, Any],
    claim: str,
) -> None:
    key = f.rsa_key()
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    with pytest.raises(JOSEError) as info:
        _verify(client, cache, server, key.sign(f.claims(issuer, **claims_changes)))
    assert info.value.claim == claim


def test_verify_jwt_bad_signature_and_unknown_kid(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    key, other = f.rsa_key(), f.rsa_key(slot=1)
    issuer = server.set_issuer("/issuer", jwks=f.jwks(key))
    with pytest.raises(JOSEError, match="invalid"):
        _verify(client, cache, server, other.sign(f.claims(issuer)))  # same kid, other key
    with pytest.raises(JOSEError, match="kid 'nope'"):
        _verify(client, cache, server, other.sign(f.claims(issuer), kid="nope"))


def test_verify_jwt_several_candidates(
    server: JWKSServer, client: httpx.Client, cache: MetadataCache
) -> None:
    first, second = f.rsa_key(kid=None), f.rsa_key(kid=None, slot=1)
    issuer = server.set_issuer("/issuer", jwks=f.jwks(first, second))
    _, used = _verify(client, cache, server, second.sign(f.claims(issuer), kid=False))
    assert used.fingerprint == second.spki_sha256
    stranger = f.rsa_key(kid=None, slot=2)
    with pytest.raises(JOSEError, match="any of the 2 candidate keys"):
        _verify(client, cache, server, stranger.sign(f.claims(issuer), kid=False))


def test_verify_jwt_jwks_unreachable(client: httpx.Client, cache: MetadataCache) -> None:
    key = f.rsa_key()
    base = _closed_port_url()
    with pytest.raises(DiscoveryError, match="cannot connect"):
        verify_jwt(
            client,
            key.sign(f.claims(base)),
            cache=cache,
            jwks_uri=base + "/jwks",
            issuer=base,
            audience=None,
            allowed_algs=ALLOWED_ALGORITHMS,
            leeway=60,
        )
