"""A real OpenID Provider for the tests: panva's ``oidc-provider`` (npm, 9.x).

``start_idp(tmp_dir)`` installs the node dependencies of ``tests/idp`` when
needed (``npm ci``, skipped while ``node_modules`` is up to date), starts
``node tests/idp/server.mjs`` on 127.0.0.1 on a free port and returns an
:class:`IdP`. Server output goes to ``tmp_dir/idp-server.log``.

``browser_login(authorize_url)`` plays the user's browser against the
provider's development login/consent pages and returns the callback URL the
provider redirects to (``code``, ``state``, ``iss``).

Notes on the provider (see tests/idp/server.mjs for the configuration):

* every client is ``application_type: native``: a registered loopback redirect
  URI (``http://127.0.0.1:8400/callback`` or ``http://localhost:8400/callback``)
  matches with ANY port, host name and path must match exactly. Consequence:
  oidc-provider shows the consent page on every authorization of a native
  client, so ``prompt=none`` always answers ``error=interaction_required``;
* a refresh token is issued on every authorization_code exchange (not only for
  ``offline_access``) and rotated on each use; re-using a rotated refresh token
  revokes the whole grant; revoking an ACCESS token also revokes the other
  tokens of its grant (refresh token included). Without ``offline_access`` (which the provider only
  grants together with ``prompt=consent``) tokens are bound to the login
  session: RP-initiated logout invalidates them;
* the devInteractions login accepts any login name with any password; the login
  name becomes ``sub``;
* the provider only supports PKCE ``S256``; it is required for the public client
  and optional for the confidential ones.
* client authentication is strict (test-IdP addition): a ``client_secret_basic``
  client must use HTTP Basic, a ``client_secret_post`` client the form body;
  ``IdP.configure(strict_client_auth=False)`` restores oidc-provider's
  leniency (either is accepted);
* ``start_idp(..., fapi="2.0")`` (the session fixture ``fapi_idp``) runs oidc-provider's
  FAPI 2.0 profile with PAR required: client assertions must name the issuer as ``aud``,
  PKCE is required; DPoP is not required (yet). The ``kstlib-fapi`` client
  (private_key_jwt, ES256 ID tokens) is registered on both instances;
* the session fixture ``idp`` is shared by all tests of a session (one per
  xdist worker): reset stats before counting, restore settings you change.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from tests import loopback_http

__all__ = [
    "CLIENTS",
    "CONFIDENTIAL",
    "CONFIDENTIAL_CLIENT_ID",
    "CONFIDENTIAL_CLIENT_SECRET",
    "CONFIDENTIAL_POST",
    "CONFIDENTIAL_POST_CLIENT_ID",
    "CONFIDENTIAL_POST_CLIENT_SECRET",
    "ES256",
    "ES256_CLIENT_ID",
    "ES256_CLIENT_SECRET",
    "FAPI",
    "FAPI_CLIENT_ID",
    "IDP_DIR",
    "POST_LOGOUT_REDIRECT_URI",
    "CLIENT_SECRET_JWT",
    "CLIENT_SECRET_JWT_CLIENT_ID",
    "CLIENT_SECRET_JWT_SECRET",
    "PRIVATE_KEY_JWT",
    "PRIVATE_KEY_JWT_CLIENT_ID",
    "PUBLIC",
    "PUBLIC_CLIENT_ID",
    "REDIRECT_URI",
    "REDIRECT_URI_LOCALHOST",
    "SCOPES",
    "SERVICE",
    "SERVICE_SCOPES",
    "WRONG_ISSUED_TYPE_AUDIENCE",
    "BrowserLoginError",
    "IdP",
    "IdPStartError",
    "OidcClient",
    "browser_login",
    "ensure_node_modules",
    "private_key_jwt_key",
    "start_idp",
]

IDP_DIR = Path(__file__).resolve().parent / "idp"

# Snapshot taken at import time (conftest import), before any test fixture
# monkeypatches HOME/PATH: npm and node always see the developer's environment.
_BASE_ENV = dict(os.environ)

START_TIMEOUT = 30.0
NPM_CI_TIMEOUT = 300.0

# ------------------------------------------------------------------ clients

REDIRECT_URI = "http://127.0.0.1:8400/callback"
REDIRECT_URI_LOCALHOST = "http://localhost:8400/callback"
POST_LOGOUT_REDIRECT_URI = "http://127.0.0.1:8400/logged-out"
POST_LOGOUT_REDIRECT_URI_LOCALHOST = "http://localhost:8400/logged-out"
SCOPES = ("openid", "profile", "email", "offline_access")


@dataclass(frozen=True)
class OidcClient:
    """A client registered at the test IdP."""

    client_id: str
    client_secret: str | None
    #: client_secret_basic | client_secret_post | none | private_key_jwt | client_secret_jwt
    token_endpoint_auth_method: str
    redirect_uri: str = REDIRECT_URI
    id_token_signed_response_alg: str = "RS256"
    redirect_uris: tuple[str, ...] = (REDIRECT_URI, REDIRECT_URI_LOCALHOST)
    post_logout_redirect_uris: tuple[str, ...] = (
        POST_LOGOUT_REDIRECT_URI,
        POST_LOGOUT_REDIRECT_URI_LOCALHOST,
    )
    #: Public keys registered for private_key_jwt (a JWKS), None for other methods.
    jwks: Mapping[str, Any] | None = None
    #: issue 13: a service client has other grants, no response type, no redirect.
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    response_types: tuple[str, ...] = ("code",)
    application_type: str = "native"
    #: DPoP (RFC 9449): the server issues this client DPoP-bound access tokens only.
    dpop_bound_access_tokens: bool = False

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    def metadata(self) -> dict[str, Any]:
        """oidc-provider client metadata (passed to the server as IDP_CLIENTS)."""
        meta: dict[str, Any] = {
            "client_id": self.client_id,
            # native: loopback redirect URIs match with any port
            "application_type": self.application_type,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "grant_types": list(self.grant_types),
            "response_types": list(self.response_types),
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "id_token_signed_response_alg": self.id_token_signed_response_alg,
        }
        if self.client_secret is not None:
            meta["client_secret"] = self.client_secret
        if self.jwks is not None:
            meta["jwks"] = dict(self.jwks)
        if self.dpop_bound_access_tokens:
            meta["dpop_bound_access_tokens"] = True
        return meta

    def token_auth(self, data: dict[str, str]) -> httpx.BasicAuth | None:
        """Apply this client's authentication to a token-endpoint form; return the auth to use.

        ``client_secret_basic`` -> HTTP Basic (form untouched); ``client_secret_post``
        -> ``client_id``/``client_secret`` added to the form; ``none`` -> ``client_id``.
        The JWT methods are kstlib's to prove: not supported here.
        """
        if self.token_endpoint_auth_method.endswith("_jwt"):
            raise NotImplementedError("use kstlib's client authentication for JWT methods")
        if self.token_endpoint_auth_method == "client_secret_basic":
            assert self.client_secret is not None
            return httpx.BasicAuth(self.client_id, self.client_secret)
        data["client_id"] = self.client_id
        if self.token_endpoint_auth_method == "client_secret_post":
            assert self.client_secret is not None
            data["client_secret"] = self.client_secret
        return None


CONFIDENTIAL_CLIENT_ID = "kstlib-confidential"
CONFIDENTIAL_CLIENT_SECRET = "kstlib-confidential-secret"
CONFIDENTIAL_POST_CLIENT_ID = "kstlib-confidential-post"
CONFIDENTIAL_POST_CLIENT_SECRET = "kstlib-confidential-post-secret"
PUBLIC_CLIENT_ID = "kstlib-public"
ES256_CLIENT_ID = "kstlib-es256"
ES256_CLIENT_SECRET = "kstlib-es256-secret"

CONFIDENTIAL = OidcClient(CONFIDENTIAL_CLIENT_ID, CONFIDENTIAL_CLIENT_SECRET, "client_secret_basic")
CONFIDENTIAL_POST = OidcClient(
    CONFIDENTIAL_POST_CLIENT_ID, CONFIDENTIAL_POST_CLIENT_SECRET, "client_secret_post"
)
PUBLIC = OidcClient(PUBLIC_CLIENT_ID, None, "none")
ES256 = OidcClient(
    ES256_CLIENT_ID,
    ES256_CLIENT_SECRET,
    "client_secret_basic",
    id_token_signed_response_alg="ES256",
)
# -- grants for services (issue 13) --
#: A confidential client with no user: client_credentials and RFC 8693 token exchange only.
SERVICE = OidcClient(
    "kstlib-service",
    "kstlib-service-secret",
    "client_secret_basic",
    redirect_uris=(),
    post_logout_redirect_uris=(),
    grant_types=("client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"),
    response_types=(),
    application_type="web",
)
#: Scopes the test IdP grants a service.
SERVICE_SCOPES = ("api:read", "api:write")
#: A token exchange asked for this audience gets a wrong issued_token_type (server.mjs hook).
WRONG_ISSUED_TYPE_AUDIENCE = "urn:kstlib:test:wrong-issued-token-type"
# -- end of grants for services --

#: Test-only private keys of the private_key_jwt client (its public halves are registered).
_CLIENT_KEYS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parent / "idp" / "test-client-keys.json").read_text()
)["keys"]
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def private_key_jwt_key(kid: str = "pkjwt-rsa") -> dict[str, Any]:
    """A private JWK of the private_key_jwt client (kids: pkjwt-rsa, pkjwt-p256,
    pkjwt-p384, pkjwt-p521, pkjwt-ed25519)."""
    return dict(next(key for key in _CLIENT_KEYS if key["kid"] == kid))


PRIVATE_KEY_JWT_CLIENT_ID = "kstlib-private-key-jwt"
PRIVATE_KEY_JWT = OidcClient(
    PRIVATE_KEY_JWT_CLIENT_ID,
    None,
    "private_key_jwt",
    jwks={
        "keys": [
            {name: value for name, value in key.items() if name not in _PRIVATE_MEMBERS}
            for key in _CLIENT_KEYS
        ]
    },
)
CLIENT_SECRET_JWT_CLIENT_ID = "kstlib-client-secret-jwt"
#: As long as the largest HMAC hash (HS512 needs 64 bytes); equal to server.mjs's default.
CLIENT_SECRET_JWT_SECRET = "kstlib-client-secret-jwt-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
CLIENT_SECRET_JWT = OidcClient(
    CLIENT_SECRET_JWT_CLIENT_ID, CLIENT_SECRET_JWT_SECRET, "client_secret_jwt"
)
# --- issue 14: the FAPI 2.0 client (private_key_jwt, ES256 ID tokens) ---
FAPI_CLIENT_ID = "kstlib-fapi"
FAPI = OidcClient(
    FAPI_CLIENT_ID,
    None,
    "private_key_jwt",
    id_token_signed_response_alg="ES256",
    jwks=PRIVATE_KEY_JWT.jwks,
    dpop_bound_access_tokens=True,  # FAPI 2.0: sender-constrained tokens (DPoP)
)
# --- end issue 14 ---
# -- DPoP (RFC 9449, issue 14 item 2) --
DPOP_CLIENT_ID = "kstlib-dpop"
DPOP_CLIENT_SECRET = "kstlib-dpop-secret"
DPOP = OidcClient(
    DPOP_CLIENT_ID, DPOP_CLIENT_SECRET, "client_secret_basic", dpop_bound_access_tokens=True
)
# -- end DPoP --
CLIENTS: Mapping[str, OidcClient] = {
    c.client_id: c
    for c in (
        CONFIDENTIAL,
        CONFIDENTIAL_POST,
        PUBLIC,
        ES256,
        PRIVATE_KEY_JWT,
        CLIENT_SECRET_JWT,
        FAPI,  # issue 14
        SERVICE,  # issue 13
        DPOP,
    )
}


# ------------------------------------------------------------ npm install


class IdPStartError(RuntimeError):
    """The test IdP could not be installed or started."""


def _tool(name: str) -> str:
    path = shutil.which(name, path=_BASE_ENV.get("PATH"))
    if path is None:  # tests needing the IdP must fail loudly, never skip
        raise IdPStartError(
            f"{name!r} not found on PATH: Node.js 20+ and npm are needed for the test IdP"
        )
    return path


#: Written once ``npm ci`` succeeded (here and by ./scripts/setup, with the same rule): an
#: interrupted install leaves none, and is made again.
NODE_MODULES_STAMP = IDP_DIR / "node_modules" / ".kstlib-installed"


def _node_modules_up_to_date() -> bool:
    stamp, lock = NODE_MODULES_STAMP, IDP_DIR / "package-lock.json"
    return stamp.is_file() and stamp.stat().st_mtime >= lock.stat().st_mtime


@contextlib.contextmanager
def _install_lock(timeout: float = NPM_CI_TIMEOUT) -> Iterator[None]:
    """Cross-process lock (pytest-xdist workers) around ``npm ci``: an O_EXCL lock file."""
    lock_file = IDP_DIR / ".npm-ci.lock"
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - lock_file.stat().st_mtime > timeout:  # stale: holder died
                    lock_file.unlink()
                    continue
            if time.monotonic() > deadline:
                raise IdPStartError(f"timed out waiting for {lock_file}") from None
            time.sleep(0.2)
            continue
        break
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock_file.unlink()


def ensure_node_modules() -> bool:
    """Run ``npm ci`` in tests/idp unless node_modules is up to date. Returns True if it ran."""
    if _node_modules_up_to_date():
        return False
    npm = _tool("npm")
    with _install_lock():
        if _node_modules_up_to_date():  # another worker did it meanwhile
            return False
        proc = subprocess.run(
            [npm, "ci", "--engine-strict=false", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=IDP_DIR,
            env=_BASE_ENV,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise IdPStartError(
                f"npm ci failed in {IDP_DIR} (exit {proc.returncode}):\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        NODE_MODULES_STAMP.touch()
    return True


# -------------------------------------------------------------------- IdP


def _tail(path: Path, max_chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return text[-max_chars:]


@dataclass
class IdP:
    """A running test OpenID Provider (one node process)."""

    tmp_dir: Path
    access_token_ttl: int | None = None
    #: "2.0": oidc-provider's FAPI 2.0 profile, PAR required (server.mjs IDP_FAPI).
    fapi: str | None = None
    port: int = 0
    issuer: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    startup_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.tmp_dir = Path(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.tmp_dir / "idp-server.log"
        self.state_path = self.tmp_dir / "idp-state.json"
        self._ready_path = self.tmp_dir / "idp-ready.json"
        self._http = loopback_http.client(timeout=10.0, follow_redirects=False)
        self._discovery: dict[str, Any] | None = None

    # -- lifecycle --------------------------------------------------------

    def start(self, *, timeout: float = START_TIMEOUT) -> IdP:
        """Start the node process (on ``self.port``, or a free port when 0) and wait until ready."""
        if self.process is not None and self.process.poll() is None:
            raise IdPStartError("test IdP already running")
        node = _tool("node")
        started = time.monotonic()
        self._ready_path.unlink(missing_ok=True)
        env = dict(_BASE_ENV)
        env.update(
            IDP_PORT=str(self.port),
            IDP_READY_FILE=str(self._ready_path),
            IDP_STATE_FILE=str(self.state_path),
            IDP_CLIENTS=json.dumps([c.metadata() for c in CLIENTS.values()]),
            IDP_EXIT_ON_STDIN_EOF="1",
        )
        if self.access_token_ttl is not None:
            env["IDP_ACCESS_TOKEN_TTL"] = str(self.access_token_ttl)
        if self.fapi is not None:
            env["IDP_FAPI"] = self.fapi
        env.pop("NODE_OPTIONS", None)
        env.pop("NODE_ENV", None)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== starting test IdP at {time.ctime()} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [node, "server.mjs"],
                cwd=IDP_DIR,
                env=env,
                stdin=subprocess.PIPE,  # closed by us (or by our death): the server exits
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        atexit.register(self.stop)
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _fail(self, message: str) -> IdPStartError:
        return IdPStartError(f"{message}\n--- {self.log_path} ---\n{_tail(self.log_path)}")

    def _wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        while not self._ready_path.is_file():
            if self.process.poll() is not None:
                raise self._fail(
                    f"test IdP exited with code {self.process.returncode} during startup"
                )
            if time.monotonic() > deadline:
                raise self._fail("test IdP did not start listening in time")
            time.sleep(0.05)
        ready = json.loads(self._ready_path.read_text())
        self.port = int(ready["port"])
        self.issuer = str(ready["issuer"])
        url = f"{self.issuer}/.well-known/openid-configuration"
        last_error = ""
        while True:
            if self.process.poll() is not None:
                raise self._fail(
                    f"test IdP exited with code {self.process.returncode} during startup"
                )
            try:
                resp = self._http.get(url)
                if resp.status_code == 200 and resp.json().get("issuer") == self.issuer:
                    self._discovery = resp.json()
                    return
                last_error = f"HTTP {resp.status_code}: {resp.text[:300]}"
            except httpx.HTTPError as exc:
                last_error = repr(exc)
            if time.monotonic() > deadline:
                raise self._fail(f"{url} did not answer in time (last: {last_error})")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server: SIGTERM (plus stdin EOF), then SIGKILL after 5 s. Idempotent."""
        proc = self.process
        if proc is None:
            return
        self.process = None
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
            with contextlib.suppress(OSError):
                proc.terminate()  # SIGTERM: the server flushes its state file and exits
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        elif proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def restart(self) -> None:
        """Stop and start again on the SAME port; grants, sessions, tokens and keys persist
        (the server saves its state to ``state_path``). Stats are reset."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._http.close()

    def __enter__(self) -> IdP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- metadata ---------------------------------------------------------

    def discovery(self, *, refresh: bool = False) -> dict[str, Any]:
        """The provider's ``/.well-known/openid-configuration`` (cached)."""
        if self._discovery is None or refresh:
            resp = self._http.get(f"{self.issuer}/.well-known/openid-configuration")
            resp.raise_for_status()
            self._discovery = resp.json()
        return dict(self._discovery)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def authorization_endpoint(self) -> str:
        return str(self.discovery()["authorization_endpoint"])

    @property
    def token_endpoint(self) -> str:
        return str(self.discovery()["token_endpoint"])

    @property
    def userinfo_endpoint(self) -> str:
        return str(self.discovery()["userinfo_endpoint"])

    @property
    def revocation_endpoint(self) -> str:
        return str(self.discovery()["revocation_endpoint"])

    @property
    def introspection_endpoint(self) -> str:
        return str(self.discovery()["introspection_endpoint"])

    @property
    def end_session_endpoint(self) -> str:
        return str(self.discovery()["end_session_endpoint"])

    @property
    def jwks_uri(self) -> str:
        return str(self.discovery()["jwks_uri"])

    def jwks(self) -> dict[str, Any]:
        resp = self._http.get(self.jwks_uri)
        resp.raise_for_status()
        return dict(resp.json())

    def api_url(self, path: str = "") -> str:
        """URL of the protected test API: ``{issuer}/__test__/api/{path}``."""
        return f"{self.issuer}/__test__/api/{path.lstrip('/')}"

    # -- test-only controls -------------------------------------------------

    def _test_call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self._http.request(method, f"{self.issuer}/__test__/{path}", json=body)
        if resp.status_code != 200:
            raise RuntimeError(f"{method} /__test__/{path} -> {resp.status_code}: {resp.text}")
        return resp.json()

    def stats(self) -> dict[str, int]:
        """Request counters since the last reset, e.g. ``{"token": 4,
        "token:authorization_code": 1, "token:refresh_token": 3,
        "token:refresh_token:200": 3, "revocation": 1, "revocation:200": 1,
        "api": 2, "api:200": 1, "api:401": 1, ...}``.

        Keys: ``<route>`` and ``<route>:<status>`` for every provider request
        (oidc-provider route names: discovery, jwks, authorization, resume,
        interaction, submit, token, userinfo, revocation, introspection,
        end_session, ...), ``token:<grant_type>`` and
        ``token:<grant_type>:<status>`` for the token endpoint, ``api`` /
        ``api:<status>`` for the protected API. A provider request is counted
        when its response is ready. Absent key = 0.
        """
        return {str(k): int(v) for k, v in self._test_call("GET", "stats").items()}

    def reset_stats(self) -> None:
        self._test_call("POST", "stats/reset")

    def rotate_keys(self, *, keep_old: bool = True) -> dict[str, Any]:
        """Replace the signing keys by freshly generated RS256 + ES256 keys (new kids).

        In-process: the server builds a new oidc-provider instance on the same
        adapter store and swaps it in, so grants, sessions and refresh tokens
        survive; requests already in flight finish on the old instance. With
        ``keep_old`` the previous keys stay in the JWKS marked
        ``key_ops: ["verify"]`` (never used to sign), otherwise they are dropped
        from the JWKS. Returns ``{"generation": n, "active": [{"kid", "alg",
        "kty"}, ...], "retired": [...]}``.
        """
        return dict(self._test_call("POST", "rotate-keys", {"keep_old": keep_old}))

    def keys(self) -> dict[str, Any]:
        """``{"generation", "active": [...], "retired": [...]}`` (kid/alg/kty only)."""
        return dict(self._test_call("GET", "keys"))

    def active_kid(self, alg: str = "RS256") -> str:
        return next(str(k["kid"]) for k in self.keys()["active"] if k["alg"] == alg)

    def configure(
        self,
        *,
        access_token_ttl: int | None = None,
        id_token_ttl: int | None = None,
        refresh_token_ttl: int | None = None,
        strict_client_auth: bool | None = None,
        token_delay_ms: int | None = None,
        par_ttl: int | None = None,
    ) -> dict[str, Any]:
        """Change settings at runtime: token lifetimes in seconds (for tokens issued
        from now on) and ``strict_client_auth`` (default True: a client must use
        exactly its registered client_secret_basic/_post method; False restores
        oidc-provider's leniency, which accepts either); ``token_delay_ms`` makes
        the token endpoint answer that much later (a slow IdP); ``par_ttl`` shortens the
        life of a pushed authorization request (seconds, below 60). The session-scoped
        fixture is shared: restore what you change (try/finally)."""
        update = {
            k: v
            for k, v in {
                "access_token_ttl": access_token_ttl,
                "id_token_ttl": id_token_ttl,
                "refresh_token_ttl": refresh_token_ttl,
                "strict_client_auth": strict_client_auth,
                "token_delay_ms": token_delay_ms,
                "par_ttl": par_ttl,
            }.items()
            if v is not None
        }
        return dict(self._test_call("POST", "config", update))

    def settings(self) -> dict[str, Any]:
        return dict(self._test_call("GET", "config"))

    def received_resources(self) -> dict[str, list[str]]:
        """The ``resource`` parameters (RFC 8707) of the last request of each route
        (``pushed_authorization_request``, ``authorization``, ``token``...) since the last
        :meth:`reset_resources`, as oidc-provider parsed them."""
        return {str(k): list(v) for k, v in self._test_call("GET", "resources").items()}

    def reset_resources(self) -> None:
        self._test_call("POST", "resources/reset")

    def introspect(
        self,
        token: str,
        client: OidcClient = CONFIDENTIAL,
        *,
        token_type_hint: str | None = None,
    ) -> dict[str, Any]:
        """RFC 7662 introspection with ``client``'s credentials; returns the JSON.

        oidc-provider answers ``{"active": false}`` for a token of another client
        when the caller is a public client, so use a confidential one (default).
        """
        data = {"token": token}
        if token_type_hint:
            data["token_type_hint"] = token_type_hint
        auth = client.token_auth(data)
        resp = self._http.post(
            self.introspection_endpoint, data=data, auth=auth or httpx.USE_CLIENT_DEFAULT
        )
        resp.raise_for_status()
        return dict(resp.json())

    # -- convenience ------------------------------------------------------

    def authorize_url(
        self,
        client: OidcClient,
        *,
        state: str,
        scope: str = "openid profile email",
        redirect_uri: str | None = None,
        code_challenge: str | None = None,
        nonce: str | None = None,
        **extra: str,
    ) -> str:
        """Build an authorization request URL (response_type=code)."""
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": redirect_uri or client.redirect_uri,
            "scope": scope,
            "state": state,
        }
        if code_challenge:
            params["code_challenge"] = code_challenge
            params["code_challenge_method"] = "S256"
        if nonce:
            params["nonce"] = nonce
        params.update(extra)
        return str(httpx.URL(self.authorization_endpoint, params=params))


def start_idp(
    tmp_dir: Path | str, *, access_token_ttl: int | None = None, fapi: str | None = None
) -> IdP:
    """Install the node dependencies if needed, start the test IdP, wait until it answers.

    ``fapi="2.0"`` starts it in oidc-provider's FAPI 2.0 mode (PAR required)."""
    ensure_node_modules()
    return IdP(Path(tmp_dir), access_token_ttl=access_token_ttl, fapi=fapi).start()


# -------------------------------------------------------------- browser


class BrowserLoginError(RuntimeError):
    """The login flow did not end with a redirect to the client."""


@dataclass
class _Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)  # names of all inputs


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.forms.append(_Form(a.get("action", ""), a.get("method", "get").lower()))
            self._in_form = True
        elif tag == "input" and self._in_form and a.get("name"):
            form = self.forms[-1]
            form.inputs.append(a["name"])
            if a.get("type", "text").lower() in {"hidden", "submit"} or "value" in a:
                form.fields[a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def browser_login(
    authorize_url: str,
    *,
    username: str = "alice",
    password: str = "pw",
    consent: bool = True,
    browser: httpx.Client | None = None,
    max_steps: int = 20,
) -> str:
    """Play the user's browser: log in (and consent) at the IdP; return the callback URL.

    GETs ``authorize_url``, follows redirects by hand (cookies kept), fills the
    devInteractions login form (``username``/``password``; any password is
    accepted), submits the consent form (or, with ``consent=False``, follows the
    "cancel" link so the provider answers ``error=access_denied``) and stops at
    the first redirect leaving the IdP's origin: that URL (the client's
    redirect_uri with ``code``, ``state``, ``iss`` or an error) is returned
    without being requested. Pass ``browser`` (an ``httpx.Client`` with
    ``follow_redirects=False``) to keep the IdP session cookies across logins
    (e.g. for ``prompt=none``). Raises :class:`BrowserLoginError` when the IdP
    shows an error page.
    """
    idp_origin = _origin(authorize_url)
    own = browser is None
    http = browser if browser is not None else loopback_http.client(timeout=10.0)
    try:
        resp = http.get(authorize_url, follow_redirects=False)
        for _ in range(max_steps):
            if resp.is_redirect:
                location = urljoin(str(resp.url), resp.headers["location"])
                if _origin(location) != idp_origin:
                    return location
                resp = http.get(location, follow_redirects=False)
                continue
            page = _PageParser()
            page.feed(resp.text)
            if resp.status_code != 200:
                raise BrowserLoginError(
                    f"IdP answered {resp.status_code} at {resp.url}: {' | '.join(page.text)[:1000]}"
                )
            form = next(
                (f for f in page.forms if f.fields.get("prompt") in {"login", "consent"}), None
            )
            if form is None:
                raise BrowserLoginError(
                    f"no login/consent form at {resp.url}: {' | '.join(page.text)[:1000]}"
                )
            action = urljoin(str(resp.url), form.action or str(resp.url))
            if form.fields["prompt"] == "login":
                data = dict(form.fields)
                data["login"] = username
                data["password"] = password
                resp = http.post(action, data=data, follow_redirects=False)
            elif consent:
                resp = http.post(action, data=dict(form.fields), follow_redirects=False)
            else:
                abort = next((link for link in page.links if "/abort" in link), None)
                if abort is None:
                    raise BrowserLoginError(f"no abort link on the consent page at {resp.url}")
                resp = http.get(urljoin(str(resp.url), abort), follow_redirects=False)
        raise BrowserLoginError(
            f"no redirect to the client after {max_steps} steps (last: {resp.url})"
        )
    finally:
        if own:
            http.close()
