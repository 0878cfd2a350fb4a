"""A hostile OpenID provider for the tests: a small real HTTP server on 127.0.0.1.

One :class:`Scenario` at a time decides what the server does wrong. It serves
discovery, JWKS, token (authorization_code and refresh_token grants: any code
and any refresh token are accepted), userinfo, revocation and a tiny protected
API (``/api/...``: 200 for an access token it issued, else 401). ID tokens are
signed with real keys from :mod:`tests.jwt_factory`; the claims use the
``nonce`` and ``client_id`` the test sets. Every request is counted per route
(``discovery``, ``jwks``, ``token``, ``token:<grant>``, ``userinfo``,
``revocation``, ``api``), so tests can assert how often the client called.

Threaded: every connection is served by a daemon thread; a slow scenario
sleeps on an event that :meth:`HostileIdP.reset` and :meth:`HostileIdP.stop`
set, so no thread outlives a test for long.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import json
import secrets
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kstlib.auth._discovery import MetadataCache
from kstlib.auth.config import AuthProviderConfig
from kstlib.auth.models import Token
from kstlib.auth.providers.oidc import OIDCProvider
from kstlib.auth.token import AbstractTokenStorage, MemoryTokenStorage
from tests import jwt_factory as f
from tests.jwks_server import QuietThreadingServer

CLIENT_ID = "hostile-client"
CLIENT_SECRET = "hostile-client-secret"
SUBJECT = "alice"
OTHER_SUBJECT = "mallory"
#: Body size of the "huge" token responses (10 MB).
HUGE_BODY_BYTES = 10 * 1024 * 1024


class Scenario(StrEnum):
    """What the hostile provider does wrong (one per test case)."""

    NORMAL = "normal"
    # discovery
    DISCOVERY_OTHER_ISSUER = "discovery_other_issuer"
    DISCOVERY_REDIRECT = "discovery_redirect"
    DISCOVERY_503 = "discovery_503"
    DISCOVERY_SLOW = "discovery_slow"
    # JWKS
    JWKS_UNPARSEABLE_BESIDE_GOOD = "jwks_unparseable_beside_good"
    JWKS_RSA_1024 = "jwks_rsa_1024"
    JWKS_DUPLICATE_KIDS = "jwks_duplicate_kids"
    JWKS_DUPLICATE_KIDS_FORGED = "jwks_duplicate_kids_forged"
    JWKS_503 = "jwks_503"
    # ID tokens
    ID_ALG_NONE = "id_alg_none"
    ID_HS256_WITH_PUBLIC_KEY = "id_hs256_with_public_key"
    ID_BAD_SIGNATURE = "id_bad_signature"
    ID_WRONG_ISS = "id_wrong_iss"
    ID_WRONG_AUD = "id_wrong_aud"
    ID_SEVERAL_AUD_NO_AZP = "id_several_aud_no_azp"
    ID_EXPIRED = "id_expired"
    ID_NBF_FUTURE = "id_nbf_future"
    ID_IAT_FUTURE = "id_iat_future"
    ID_NO_EXP = "id_no_exp"
    ID_NO_IAT = "id_no_iat"
    ID_NO_SUB = "id_no_sub"
    ID_WRONG_NONCE = "id_wrong_nonce"
    ID_NO_NONCE = "id_no_nonce"
    ID_BAD_AT_HASH = "id_bad_at_hash"
    ID_AZP_OTHER_CLIENT = "id_azp_other_client"
    ID_ED448 = "id_ed448"  # signed with an Ed448 key, at_hash by SHAKE256 (correct)
    ID_ED448_BAD_AT_HASH = "id_ed448_bad_at_hash"  # the same with the Ed25519 rule (SHA-512)
    ID_UNKNOWN_CRIT = "id_unknown_crit"
    ID_FOREIGN_KEY_HEADERS = "id_foreign_key_headers"
    ID_ROTATED_KID = "id_rotated_kid"
    ID_UNKNOWN_KID = "id_unknown_kid"
    # token endpoint
    TOKEN_HTML = "token_html"
    TOKEN_EMPTY = "token_empty"
    TOKEN_NOT_JSON = "token_not_json"
    TOKEN_JSON_ARRAY = "token_json_array"
    TOKEN_HUGE = "token_huge"
    TOKEN_HUGE_UNDECLARED = "token_huge_undeclared"
    TOKEN_NO_ACCESS_TOKEN = "token_no_access_token"
    TOKEN_NEGATIVE_EXPIRES_IN = "token_negative_expires_in"
    TOKEN_TEXT_EXPIRES_IN = "token_text_expires_in"
    TOKEN_HUGE_INT_EXPIRES_IN = "token_huge_int_expires_in"
    TOKEN_UNKNOWN_TYPE = "token_unknown_type"
    TOKEN_TYPE_DPOP = "token_type_dpop"
    TOKEN_TYPE_MAC = "token_type_mac"
    TOKEN_UNUSABLE_ACCESS_TOKEN = "token_unusable_access_token"
    TOKEN_DOWN = "token_down"
    TOKEN_SLOW = "token_slow"
    REFRESH_OTHER_SUB = "refresh_other_sub"
    TOKEN_ERROR = "token_error"
    TOKEN_DRIP = "token_drip"
    # userinfo
    USERINFO_OTHER_SUB = "userinfo_other_sub"
    # revocation
    REVOCATION_HUGE = "revocation_huge"
    # encodings and pace (discovery)
    DISCOVERY_GZIP_STACKED = "discovery_gzip_stacked"
    DISCOVERY_GZIP_BOMB = "discovery_gzip_bomb"
    DISCOVERY_GZIP_ONCE = "discovery_gzip_once"
    DISCOVERY_BROTLI = "discovery_brotli"
    DISCOVERY_DRIP_BODY = "discovery_drip_body"
    DISCOVERY_DRIP_HEADERS = "discovery_drip_headers"


#: Size of the decompression bombs once inflated (100 MiB of zeros).
BOMB_INFLATED_BYTES = 100 * 1024 * 1024


def _gzip_zeros(size: int) -> bytes:
    """``size`` zero bytes gzip-compressed, built without ever holding them (a few 100 KB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    parts.append(packer.flush())
    return b"".join(parts)


def _gzip(data: bytes, layers: int = 1) -> bytes:
    for _ in range(layers):
        data = gzip.compress(data, compresslevel=9)
    return data


def at_hash(access_token: str) -> str:
    """OIDC ``at_hash`` for RS256, computed here (independent of kstlib.auth._jose)."""
    digest = hashlib.sha256(access_token.encode("utf-8", "surrogatepass")).digest()
    return f.b64(digest[:16])


def ed448_at_hash(access_token: str) -> str:
    """OIDC ``at_hash`` for EdDSA over Ed448: left half of SHAKE256 with a 114-byte output."""
    return f.b64(hashlib.shake_256(access_token.encode("utf-8")).digest(114)[:57])


def sha512_at_hash(access_token: str) -> str:
    """OIDC ``at_hash`` for EdDSA over Ed25519 (left half of SHA-512)."""
    return f.b64(hashlib.sha512(access_token.encode("utf-8")).digest()[:32])


_ED448_SCENARIOS = frozenset({"id_ed448", "id_ed448_bad_at_hash"})


def _flip_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    raw = bytearray(_b64decode(signature))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{f.b64(bytes(raw))}"


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


class HostileIdP:
    """The server. Configure ``scenario`` (and ``nonce``...) per test; read ``count()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.signing_key = f.rsa_key(kid="hostile-1", slot=11)
        self.rotated_key = f.rsa_key(kid="hostile-2", slot=12)
        self.attacker_key = f.rsa_key(kid="attacker", slot=13)
        self.weak_key = f.rsa_key(1024, kid="weak-1024", slot=14)
        self.ed448_key = f.ed448_key(kid="hostile-ed448", slot=15)
        self.hits: Counter[str] = Counter()
        self._connections: set[socket.socket] = set()
        self._set_defaults()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                server._serve(self, b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                server._serve(self, self.rfile.read(length) if length else b"")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        # Clients hanging up (a passed deadline, a refused body) are expected: no traceback.
        self._httpd = QuietThreadingServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _set_defaults(self) -> None:
        self.scenario = Scenario.NORMAL
        #: The nonce put in ID tokens of authorization_code grants (None: no nonce claim).
        self.nonce: str | None = None
        self.client_id = CLIENT_ID
        self.subject = SUBJECT
        #: Base URL of an attacker's server (for redirects and jku/x5u headers).
        self.attacker_url = "http://127.0.0.1:9"
        #: Discovery entries replacing the defaults (e.g. a token_endpoint on another server).
        self.overrides: dict[str, Any] = {}
        #: Seconds a slow scenario waits before answering.
        self.delay = 3.0
        #: ``Retry-After`` value of 503 answers (None: no header).
        self.retry_after: str | None = "0"
        #: How many 503 answers before serving normally again (None: always 503).
        self.fail_times: int | None = None
        #: The JWKS answers 503 (as in JWKS_503) whatever the scenario.
        self.jwks_down = False
        #: The last token response sent (to check the very same tokens elsewhere).
        self.last_token_response: dict[str, Any] | None = None
        #: access_token lifetime in token responses.
        self.expires_in = 600
        #: The access token of TOKEN_UNUSABLE_ACCESS_TOKEN (the ID token's at_hash matches it).
        self.access_token_value = "t\u00f6ken"
        self.issued_access_tokens: set[str] = set()
        #: Bytes of the huge bodies that the client accepted, and whether the write broke off.
        self.huge_bytes_written = 0
        self.huge_write_aborted = False
        #: TOKEN_ERROR's answer: (status, JSON body, extra headers).
        self.token_error: tuple[int, dict[str, Any], dict[str, str]] = (
            400,
            {"error": "invalid_grant"},
            {},
        )
        #: Seconds between two bytes of the dripping scenarios; whether a drip got to its end.
        self.drip_interval = 0.2
        self.drip_finished = False
        #: Request headers last received, per route (lower-case names).
        self.seen_headers: dict[str, dict[str, str]] = {}
        self.hits.clear()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> HostileIdP:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut the open keep-alive connections (the IdP is really gone)."""
        self._wake.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def reset(self) -> None:
        """Back to the normal scenario with zeroed counters (wakes sleeping handlers)."""
        self._wake.set()
        with self._lock:
            self._set_defaults()
        self._wake = threading.Event()

    @property
    def issuer(self) -> str:
        host, port = self._httpd.server_address[:2]
        assert isinstance(host, str)
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.issuer + path

    def count(self, route: str | None = None) -> int:
        with self._lock:
            if route is None:
                return sum(v for k, v in self.hits.items() if ":" not in k)
            return self.hits[route]

    # ---------------------------------------------------------------- documents

    def discovery_document(self) -> dict[str, Any]:
        issuer = self.issuer
        doc: dict[str, Any] = {
            "issuer": issuer,
            "authorization_endpoint": issuer + "/authorize",
            "token_endpoint": issuer + "/token",
            "userinfo_endpoint": issuer + "/userinfo",
            "revocation_endpoint": issuer + "/revoke",
            "jwks_uri": issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            # A hostile provider advertises what it would like the client to accept.
            "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
        }
        if self.scenario is Scenario.DISCOVERY_OTHER_ISSUER:
            doc["issuer"] = "https://evil.example"
        if self.scenario in _ED448_SCENARIOS:
            doc["id_token_signing_alg_values_supported"] = ["RS256", "EdDSA"]
        doc.update(self.overrides)
        return doc

    def jwks_document(self) -> dict[str, Any]:
        good = self.signing_key.public_jwk
        match self.scenario:
            case Scenario.JWKS_UNPARSEABLE_BESIDE_GOOD:
                keys: list[Any] = [
                    {"kty": "RSA", "kid": "broken", "n": "%%%not-base64%%%", "e": "AQAB"},
                    {"kty": "oct", "kid": "shared", "k": f.b64(b"symmetric")},
                    "not-a-jwk",
                    good,
                ]
            case Scenario.JWKS_RSA_1024:
                keys = [self.weak_key.public_jwk]
            case Scenario.JWKS_DUPLICATE_KIDS | Scenario.JWKS_DUPLICATE_KIDS_FORGED:
                # Two different keys under the signing key's kid; in the forged variant the
                # real signing key is not published at all (the token cannot verify).
                twin = {**self.rotated_key.public_jwk, "kid": self.signing_key.kid}
                keys = [twin, good]
                if self.scenario is Scenario.JWKS_DUPLICATE_KIDS_FORGED:
                    keys = [twin, {**self.attacker_key.public_jwk, "kid": self.signing_key.kid}]
            case Scenario.ID_ROTATED_KID:
                keys = [good, self.rotated_key.public_jwk]
            case Scenario.ID_ED448 | Scenario.ID_ED448_BAD_AT_HASH:
                keys = [good, self.ed448_key.public_jwk]
            case _:
                keys = [good]
        return {"keys": keys}

    def _claims(self, access_token: str, *, nonce: str | None, subject: str) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 600,
            "at_hash": at_hash(access_token),
            "auth_time": now,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        match self.scenario:
            case Scenario.ID_WRONG_ISS:
                claims["iss"] = "https://evil.example"
            case Scenario.ID_WRONG_AUD:
                claims["aud"] = "another-client"
            case Scenario.ID_SEVERAL_AUD_NO_AZP:
                claims["aud"] = [self.client_id, "another-client"]
            case Scenario.ID_EXPIRED:
                claims["iat"], claims["exp"] = now - 7200, now - 3600
            case Scenario.ID_NBF_FUTURE:
                claims["nbf"] = now + 3600
            case Scenario.ID_IAT_FUTURE:
                claims["iat"] = now + 3600
            case Scenario.ID_NO_EXP:
                del claims["exp"]
            case Scenario.ID_NO_IAT:
                del claims["iat"]
            case Scenario.ID_NO_SUB:
                del claims["sub"]
            case Scenario.ID_WRONG_NONCE:
                claims["nonce"] = "nonce-of-another-login"
            case Scenario.ID_NO_NONCE:
                claims.pop("nonce", None)
            case Scenario.ID_BAD_AT_HASH:
                claims["at_hash"] = at_hash(access_token + "-other")
            case Scenario.ID_AZP_OTHER_CLIENT:
                claims["aud"] = [self.client_id, "another-client"]
                claims["azp"] = "another-client"
            case Scenario.ID_ED448:
                claims["at_hash"] = ed448_at_hash(access_token)
            case Scenario.ID_ED448_BAD_AT_HASH:
                claims["at_hash"] = sha512_at_hash(access_token)
            case _:
                pass
        return claims

    def id_token(self, access_token: str, *, nonce: str | None, subject: str) -> str:
        claims = self._claims(access_token, nonce=nonce, subject=subject)
        match self.scenario:
            case Scenario.ID_ALG_NONE:
                return f.unsigned(claims)
            case Scenario.ID_HS256_WITH_PUBLIC_KEY:
                header = {"kid": self.signing_key.kid}
                return f.hs256(claims, self.signing_key.public_pem, header=header)
            case Scenario.ID_BAD_SIGNATURE:
                return _flip_signature(self.signing_key.sign(claims))
            case Scenario.ID_UNKNOWN_CRIT:
                crit = {"crit": ["urn:hostile:must-understand"], "urn:hostile:must-understand": 1}
                return self.signing_key.sign(claims, header=crit)
            case Scenario.ID_FOREIGN_KEY_HEADERS:
                attacker = self.attacker_key
                pointers: dict[str, Any] = {
                    "jku": self.attacker_url + "/jwks.json",
                    "x5u": self.attacker_url + "/cert.pem",
                    "jwk": attacker.public_jwk,
                }
                return attacker.sign(claims, header=pointers)
            case Scenario.ID_ROTATED_KID:
                return self.rotated_key.sign(claims)
            case Scenario.ID_ED448 | Scenario.ID_ED448_BAD_AT_HASH:
                return self.ed448_key.sign(claims)
            case Scenario.ID_UNKNOWN_KID:
                return self.attacker_key.sign(claims, kid=f"kid-{secrets.token_hex(8)}")
            case Scenario.JWKS_RSA_1024:
                return self.weak_key.sign(claims)
            case _:
                return self.signing_key.sign(claims)

    def token_response(self, grant_type: str) -> dict[str, Any]:
        access_token = "at-" + secrets.token_urlsafe(24)
        if self.scenario is Scenario.TOKEN_UNUSABLE_ACCESS_TOKEN:
            access_token = self.access_token_value
        with self._lock:
            self.issued_access_tokens.add(access_token)
        refresh = grant_type == "refresh_token"
        subject = OTHER_SUBJECT if refresh and self.scenario is Scenario.REFRESH_OTHER_SUB else None
        body: dict[str, Any] = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": "rt-" + secrets.token_urlsafe(24),
            "scope": "openid profile",
            "id_token": self.id_token(
                access_token,
                nonce=None if refresh else self.nonce,
                subject=subject or self.subject,
            ),
        }
        match self.scenario:
            case Scenario.TOKEN_NO_ACCESS_TOKEN:
                del body["access_token"]
            case Scenario.TOKEN_NEGATIVE_EXPIRES_IN:
                body["expires_in"] = -3600
            case Scenario.TOKEN_TEXT_EXPIRES_IN:
                body["expires_in"] = "one hour"
            case Scenario.TOKEN_HUGE_INT_EXPIRES_IN:
                body["expires_in"] = 10**400  # valid JSON, beyond float range
            case Scenario.TOKEN_UNKNOWN_TYPE:
                body["token_type"] = "Hostile"
            case Scenario.TOKEN_TYPE_DPOP:
                body["token_type"] = "DPoP"
            case Scenario.TOKEN_TYPE_MAC:
                body["token_type"] = "MAC"
            case _:
                pass
        with self._lock:
            self.last_token_response = dict(body)
        return body

    # ---------------------------------------------------------------- serving

    def _hit(self, *routes: str) -> None:
        with self._lock:
            for route in routes:
                self.hits[route] += 1

    def _take_failure(self) -> bool:
        """Whether this request gets a 503 (counts down ``fail_times``)."""
        with self._lock:
            if self.fail_times is None:
                return True
            if self.fail_times > 0:
                self.fail_times -= 1
                return True
            return False

    def _serve(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        path = handler.path.split("?", 1)[0]
        scenario = self.scenario
        with self._lock:
            self.seen_headers[path] = {k.lower(): v for k, v in handler.headers.items()}
        if path == "/.well-known/openid-configuration":
            self._hit("discovery")
            if scenario is Scenario.DISCOVERY_REDIRECT:
                location = self.attacker_url + "/.well-known/openid-configuration"
                self._send(handler, 302, b"", {"Location": location})
            elif scenario is Scenario.DISCOVERY_503 and self._take_failure():
                self._unavailable(handler)
            elif scenario in _ENCODED_DISCOVERY:
                body, encoding = _ENCODED_DISCOVERY[scenario](self)
                headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
                self._send(handler, 200, body, headers)
            elif scenario is Scenario.DISCOVERY_DRIP_BODY:
                self._drip(handler, json.dumps(self.discovery_document()).encode(), headers=False)
            elif scenario is Scenario.DISCOVERY_DRIP_HEADERS:
                self._drip(handler, json.dumps(self.discovery_document()).encode(), headers=True)
            else:
                if scenario is Scenario.DISCOVERY_SLOW:
                    self._wake.wait(self.delay)
                self._json(handler, 200, self.discovery_document())
        elif path == "/jwks":
            self._hit("jwks")
            if (scenario is Scenario.JWKS_503 or self.jwks_down) and self._take_failure():
                self._unavailable(handler)
            else:
                self._json(handler, 200, self.jwks_document())
        elif path == "/token" and handler.command == "POST":
            self._token(handler, body)
        elif path == "/userinfo":
            self._hit("userinfo")
            sub = OTHER_SUBJECT if scenario is Scenario.USERINFO_OTHER_SUB else self.subject
            self._json(handler, 200, {"sub": sub, "name": sub.title()})
        elif path == "/revoke" and handler.command == "POST":
            self._hit("revocation")
            if scenario is Scenario.REVOCATION_HUGE:
                self._huge(handler, declared=False)
            else:
                self._send(handler, 200, b"", {})
        elif path.startswith("/api/"):
            self._api(handler, path)
        else:
            self._json(handler, 404, {"error": "not_found"})

    def _token(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        form = parse_qs(body.decode("ascii", "replace"))
        grant_type = (form.get("grant_type") or ["?"])[0]
        self._hit("token", f"token:{grant_type}")
        match self.scenario:
            case Scenario.TOKEN_DOWN:
                self._unavailable(handler)
            case Scenario.TOKEN_SLOW:
                self._wake.wait(self.delay)
                self._json(handler, 200, self.token_response(grant_type))
            case Scenario.TOKEN_HTML:
                page = b"<!DOCTYPE html><html><body><h1>Sign in</h1></body></html>"
                self._send(handler, 200, page, {"Content-Type": "text/html"})
            case Scenario.TOKEN_EMPTY:
                self._send(handler, 200, b"", {"Content-Type": "application/json"})
            case Scenario.TOKEN_NOT_JSON:
                self._send(handler, 200, b"access_token=abc&x=1", {"Content-Type": "text/plain"})
            case Scenario.TOKEN_JSON_ARRAY:
                self._json(handler, 200, [self.token_response(grant_type)])
            case Scenario.TOKEN_HUGE:
                self._huge(handler, declared=True)
            case Scenario.TOKEN_HUGE_UNDECLARED:
                self._huge(handler, declared=False)
            case Scenario.TOKEN_ERROR:
                status, doc, headers = self.token_error
                self._send(
                    handler,
                    status,
                    json.dumps(doc).encode(),
                    {"Content-Type": "application/json", **headers},
                )
            case Scenario.TOKEN_DRIP:
                self._drip(handler, json.dumps(self.token_response(grant_type)).encode())
            case _:
                self._json(handler, 200, self.token_response(grant_type))

    def _api(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        self._hit("api")
        auth = handler.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        with self._lock:
            valid = scheme.lower() == "bearer" and value in self.issued_access_tokens
        if valid:
            self._hit("api:200")
            self._json(handler, 200, {"path": path, "ok": True})
        else:
            self._hit("api:401")
            self._json(handler, 401, {"error": "invalid_token"})

    def _unavailable(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {"Content-Type": "application/json"}
        if self.retry_after is not None:
            headers["Retry-After"] = self.retry_after
        body = json.dumps({"error": "temporarily_unavailable"}).encode()
        self._send(handler, 503, body, headers)

    def _huge(self, handler: BaseHTTPRequestHandler, *, declared: bool) -> None:
        """10 MB of JSON-looking bytes; records how much the client took before hanging up."""
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if declared:
            handler.send_header("Content-Length", str(HUGE_BODY_BYTES))
        else:
            handler.send_header("Connection", "close")  # body delimited by the close
            handler.close_connection = True
        handler.end_headers()
        chunk = b'{"pad":"' + b"x" * (64 * 1024 - 8)
        written = 0
        try:
            while written < HUGE_BODY_BYTES:
                handler.wfile.write(chunk)
                written += len(chunk)
            handler.wfile.flush()
        except OSError:
            with self._lock:
                self.huge_write_aborted = True
            handler.close_connection = True
        with self._lock:
            self.huge_bytes_written = written

    def _drip(self, handler: BaseHTTPRequestHandler, body: bytes, *, headers: bool = False) -> None:
        """Send a 200 JSON answer one byte every ``drip_interval`` seconds: only the body
        (headers at once), or the header block too. Stops when the client hangs up."""
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        handler.close_connection = True
        try:
            if not headers:
                handler.wfile.write(head)
                handler.wfile.flush()
            for byte in (head if headers else b"") + body:
                if self._wake.wait(self.drip_interval):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
        except OSError:
            return
        with self._lock:
            self.drip_finished = True

    def _json(self, handler: BaseHTTPRequestHandler, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self._send(handler, status, body, {"Content-Type": "application/json"})

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except OSError:  # the client gave up (a timeout test): nothing to do
            handler.close_connection = True


@functools.cache
def _bomb() -> bytes:
    return _gzip_zeros(BOMB_INFLATED_BYTES)


def _discovery_bytes(server: HostileIdP) -> bytes:
    return json.dumps(server.discovery_document()).encode()


#: Discovery answers with a Content-Encoding: scenario -> (server -> (body, header value)).
_ENCODED_DISCOVERY: dict[Scenario, Any] = {
    # The issue's case: a few hundred bytes, three gzip layers over a huge inflated body.
    Scenario.DISCOVERY_GZIP_STACKED: lambda s: (_gzip(_bomb(), 2), "gzip, gzip, gzip"),
    # One layer, 100 MiB once inflated.
    Scenario.DISCOVERY_GZIP_BOMB: lambda s: (_bomb(), "gzip"),
    # One honest layer: accepted.
    Scenario.DISCOVERY_GZIP_ONCE: lambda s: (_gzip(_discovery_bytes(s)), "gzip"),
    Scenario.DISCOVERY_BROTLI: lambda s: (_discovery_bytes(s), "br"),
}


@contextmanager
def running_hostile_idp() -> Iterator[HostileIdP]:
    """Start a hostile provider for the duration of the block."""
    server = HostileIdP().start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- driving a provider

#: The redirect URI the provider under test is configured with (never contacted).
REDIRECT_URI = "http://127.0.0.1:8400/callback"
PROVIDER_NAME = "hostile"


class FakeClock:
    """A monotonic clock for :class:`~kstlib.auth._discovery.MetadataCache` that tests advance."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_provider(
    server: HostileIdP,
    *,
    storage: AbstractTokenStorage | None = None,
    cache: MetadataCache | None = None,
    issuer: str | None = None,
    **overrides: Any,
) -> OIDCProvider:
    """The provider under test: a confidential client of ``server`` with its own cache.

    ``issuer`` points it elsewhere (a dead port, a broken server) with the same settings.
    """
    config = AuthProviderConfig(
        client_id=server.client_id,
        client_secret=CLIENT_SECRET,
        issuer=issuer or server.issuer,
        redirect_uri=REDIRECT_URI,
        token_endpoint_auth_method="client_secret_basic",
        **overrides,
    )
    return OIDCProvider(
        PROVIDER_NAME,
        config,
        storage if storage is not None else MemoryTokenStorage(),
        metadata_cache=cache if cache is not None else MetadataCache(),
    )


def login(provider: OIDCProvider, server: HostileIdP) -> Token:
    """A code exchange without a browser: the server mints its ID token with our nonce."""
    url, state = provider.get_authorization_url()
    server.nonce = parse_qs(urlsplit(url).query)["nonce"][0]
    return provider.exchange_code("any-code", state)
