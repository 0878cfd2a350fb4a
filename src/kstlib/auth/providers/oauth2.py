"""``OAuth2Provider``: authorization code (+ PKCE), refresh, revocation, userinfo."""

from __future__ import annotations

import hmac
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Self, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from kstlib.auth._clientauth import (
    ClientAuthentication,
    JWTClientAssertion,
    PrivateKeyJWT,
    select_client_authentication,
)
from kstlib.auth._dpop import (
    DPoPKey,
    NonceBook,
    check_binding,
    is_nonce_challenge,
    nonce_loop_error,
)
from kstlib.auth._http import (
    HTTPFailure,
    HTTPTraceLogger,
    JSONResponse,
    RawResponse,
    RetryPolicy,
    build_http_client,
    oauth_error_fields,
    request,
    request_json,
)
from kstlib.auth._names import METADATA_ENDPOINTS
from kstlib.auth._pkce import code_challenge, new_code_verifier, new_state
from kstlib.auth.errors import (
    AuthError,
    AuthorizationError,
    ConfigurationError,
    DiscoveryError,
    PushedAuthorizationExpiredError,
    RefreshedTokenInvalidError,
    TokenError,
    TokenExchangeError,
    TokenRefreshError,
    TokenValidationError,
)
from kstlib.auth.models import (
    AuthFlow,
    PreflightReport,
    PreflightResult,
    PreflightStatus,
    Token,
    TokenType,
)
from kstlib.auth.providers.base import REFRESH_REJECTED_KEY, AbstractAuthProvider
from kstlib.auth.redaction import fingerprint, get_logger, redact_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from kstlib.auth._device import DeviceAuthorization
    from kstlib.auth.callback import CallbackServer
    from kstlib.auth.config import AuthProviderConfig, CallbackServerSettings
    from kstlib.auth.token import AbstractTokenStorage

__all__ = ["OAuth2Provider"]

_log = get_logger("kstlib.auth.providers.oauth2")

#: Pending authorizations older than this are forgotten.
PENDING_TTL = 900.0
#: At most this many authorizations may be pending at once (oldest dropped first).
MAX_PENDING = 32

#: OAuth error codes after which trying again later may work / never works.
#: ``authorization_pending`` / ``slow_down`` (RFC 8628 3.5) tell a polling grant to wait;
#: ``use_dpop_nonce`` (RFC 9449 8) to send again with the server's nonce.
POLL_ERRORS = frozenset({"authorization_pending", "slow_down", "use_dpop_nonce"})
_RETRYABLE_ERRORS = frozenset({"temporarily_unavailable", "server_error", *POLL_ERRORS})
_FATAL_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})

_ENDPOINT_FIELDS = METADATA_ENDPOINTS

#: issue 14: seconds a request object is valid; the longest request_uri life accepted.
REQUEST_OBJECT_LIFETIME = 60
MAX_REQUEST_URI_LIFETIME = 3600
# -- grants for services (issue 13) --
#: ``flow`` values of the grants that need no user, and the :class:`AuthFlow` of each.
_SERVICE_FLOWS: Final[Mapping[str, AuthFlow]] = {
    "client_credentials": AuthFlow.CLIENT_CREDENTIALS,
    "token_exchange": AuthFlow.TOKEN_EXCHANGE,
}
#: Endpoints some servers list only in their RFC 8414 metadata, not in openid-configuration.
ELSEWHERE_ENDPOINTS: Final = frozenset(
    {"revocation_endpoint", "introspection_endpoint", "device_authorization_endpoint"}
)


def no_user_error(name: str, flow: str, what: str) -> ConfigurationError:
    """The error of a browser login asked of provider ``name`` whose ``flow`` has no user."""
    how = (
        "the client authenticates itself"
        if flow == "client_credentials"
        else "its token is exchanged from another provider's login"
    )
    return ConfigurationError(
        f"Provider '{name}' uses flow {flow}: it cannot {what} ({how}); "
        f"'kstlib auth token {name}' (or provider.get_token()) gets its token",
        provider=name,
        key="flow",
    )


#: RFC 8693 names.
TOKEN_EXCHANGE_GRANT: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"
#: Issued token types accepted when none was requested (both are sent as bearer tokens).
USABLE_ISSUED_TYPES: Final = (ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)
# -- end of grants for services --
#: Marks a request already replayed for a DPoP nonce (a second challenge is a loop).
_DPOP_REPLAYED = "kstlib_dpop_nonce_replayed"

#: What a token-endpoint call is, for its error type and message.
GrantKind = Literal["exchange", "refresh", "grant"]
_R = TypeVar("_R", JSONResponse, RawResponse)


@dataclass
class _PendingAuthorization:
    """What must be remembered between the authorization URL and the code exchange."""

    state: str
    code_verifier: str | None
    nonce: str | None
    redirect_uri: str
    created: float
    #: issue 14: monotonic time after which the pushed request_uri is dead (None: no PAR).
    request_uri_deadline: float | None = None
    #: DPoP: the key of this login (its thumbprint went out as ``dpop_jkt``).
    dpop_key: DPoPKey | None = None

    def __repr__(self) -> str:
        return f"_PendingAuthorization(redirect_uri={self.redirect_uri!r})"


def _server_message(failure: HTTPFailure | JSONResponse) -> tuple[str, str | None, str | None]:
    """(one-line reason, error code, description) from a failed IdP answer."""
    if isinstance(failure, HTTPFailure):
        code, desc = failure.error_code, failure.error_description
        reason = failure.reason
    else:
        fields = oauth_error_fields(failure.data)
        code, desc = fields["error_code"], fields["error_description"]
        reason = f"HTTP {failure.status_code}"
    if desc:
        desc = redact_text(desc)
    if code:
        reason = f"{code}: {desc}" if desc else code
    return reason, code, desc


class OAuth2Provider(AbstractAuthProvider):
    """OAuth2 Authorization Code flow provider (RFC 6749, RFC 7636, RFC 7009).

    Example:
        >>> from kstlib.auth.providers import OAuth2Provider, AuthProviderConfig
        >>> from kstlib.auth.token import MemoryTokenStorage
        >>> config = AuthProviderConfig(
        ...     client_id="my-app",
        ...     client_secret="secret",
        ...     authorize_url="https://auth.example.com/authorize",
        ...     token_url="https://auth.example.com/token",
        ...     scopes=["read", "write"],
        ... )
        >>> provider = OAuth2Provider("example", config, MemoryTokenStorage())
        >>> url, state = provider.get_authorization_url()
    """

    def __init__(
        self,
        name: str,
        config: AuthProviderConfig,
        token_storage: AbstractTokenStorage,
        *,
        http_client: httpx.Client | None = None,
        tracer: HTTPTraceLogger | None = None,
    ) -> None:
        super().__init__(name, config, token_storage)
        self._http_client = http_client
        self._owns_client = http_client is None
        self._tracer = tracer
        self._client_lock = threading.Lock()
        self._pending: OrderedDict[str, _PendingAuthorization] = OrderedDict()
        self._pending_lock = threading.Lock()
        self._client_auth: ClientAuthentication | None = None
        #: True once the server refused an assertion for an endpoint and took it for the
        #: issuer: later assertions name the issuer at once (see _post_with_auth).
        self._issuer_audience = False
        self._jar_signer: JWTClientAssertion | None = None  # issue 14
        self._retry = RetryPolicy(max_retries=config.max_retries)
        #: ``auth.callback_server`` settings, and the loopback redirect URI built from them
        #: when the provider sets none (both set by :meth:`from_config`).
        self._callback_settings: CallbackServerSettings | None = None
        self._default_login_redirect_uri: str | None = None
        # issue 13: flow token_exchange builds its subject provider from the same configuration
        self._subject_provider: AbstractAuthProvider | None = None
        self._built_subject: AbstractAuthProvider | None = None  # built here: closed here
        self._loaded_config: Mapping[str, Any] | None = None
        #: DPoP: the last ``DPoP-Nonce`` of each origin (token endpoint, resource servers).
        self._dpop_nonces = NonceBook()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        provider_name: str,
        *,
        config: Mapping[str, Any] | None = None,
        http_client: httpx.Client | None = None,
        **overrides: Any,
    ) -> Self:
        """Create a provider of this class from ``kstlib.conf.yml`` (``auth.providers.<name>``).

        ``overrides`` replace configured values (``client_id="override-id"``).

        Example:
            >>> provider = OAuth2Provider.from_config("github")  # doctest: +SKIP
            >>> provider = OIDCProvider.from_config("corp", client_id="other")  # doctest: +SKIP
        """
        from kstlib.auth._config.loading import _load
        from kstlib.auth.config import get_provider_config, load_provider_setup

        loaded = _load(config)
        setup = load_provider_setup(provider_name, config=loaded, **overrides)
        trace = setup.trace
        tracer = HTTPTraceLogger(
            pretty=trace.pretty,
            max_body_length=trace.max_body_length,
            extra_sensitive_keys=trace.extra_sensitive_keys,
        )
        provider = cls(
            setup.name,
            setup.config,
            setup.token_storage,
            http_client=http_client,
            tracer=tracer,
        )
        provider._callback_settings = setup.callback_server
        provider._loaded_config = loaded  # issue 13: the subject provider of a token exchange
        written = get_provider_config(setup.name, config=loaded) or {}
        if overrides.get("redirect_uri") is None and not written.get("redirect_uri"):
            provider._default_login_redirect_uri = _loopback_uri(setup.callback_server)
        return provider

    # -- properties ------------------------------------------------------------------------

    @property
    def flow(self) -> AuthFlow:
        """The provider's ``flow``: authorization code (with PKCE when enabled), client
        credentials or token exchange."""
        service = _SERVICE_FLOWS.get(self.config.flow)
        if service is not None:
            return service
        return AuthFlow.AUTHORIZATION_CODE_PKCE if self.config.pkce else AuthFlow.AUTHORIZATION_CODE

    @property
    def tracer(self) -> HTTPTraceLogger:
        """HTTP trace logger (TRACE level, redacted)."""
        if self._tracer is None:
            self._tracer = HTTPTraceLogger()
        return self._tracer

    @property
    def http_client(self) -> httpx.Client:
        """The client used for identity-provider calls (configured headers, TLS, timeouts)."""
        client = self._http_client
        if client is None:
            with self._client_lock:
                client = self._http_client
                if client is None:
                    client = build_http_client(
                        headers=self.config.headers,
                        ssl_verify=self.config.ssl_verify,
                        ssl_ca_bundle=self.config.ssl_ca_bundle,
                        timeout=self.config.timeout,
                        tracer=self.tracer,
                    )
                    # A provider nobody closes still closes the client it built once it is
                    # garbage: its pooled sockets must not outlive it (an unclosed socket).
                    weakref.finalize(self, client.close)
                    self._http_client = client
        return client

    def close(self) -> None:
        """Close the HTTP client (when this provider created it), and the subject provider
        of a token exchange when this provider built it."""
        with self._client_lock:
            if self._http_client is not None and self._owns_client:
                self._http_client.close()
                self._http_client = None
        subject, self._built_subject = self._built_subject, None  # issue 13
        if subject is not None:
            subject.close()

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        """Close the HTTP client and forget pending authorizations."""
        with self._pending_lock:
            self._pending.clear()
        super().__exit__(exc_type, exc_val, exc_tb)

    # -- endpoints -------------------------------------------------------------------------

    def _server_metadata(self) -> dict[str, Any]:
        """Server metadata (discovery); plain OAuth2 has none."""
        return {}

    def endpoint(self, name: str) -> str | None:
        """An endpoint URL: the configured one wins, else the server's metadata.

        A discovered endpoint passes the rule of a configured one (absolute https, or
        http on a loopback host): an IdP behind a TLS-terminating proxy that advertises
        ``http://`` endpoints must not receive secrets or serve keys in clear text.

        Raises:
            DiscoveryError: the discovered URL breaks the rule (the message names the
                metadata field and the configuration key that overrides it).
        """
        field_name = _ENDPOINT_FIELDS[name]
        explicit = getattr(self.config, field_name, None)
        if explicit:
            return str(explicit)
        value = self._server_metadata().get(name)
        if (not isinstance(value, str) or not value) and name in ELSEWHERE_ENDPOINTS:
            # issue 13 (item 6): some servers list it only in their RFC 8414 metadata
            value = self._other_metadata().get(name)
        if not isinstance(value, str) or not value:
            return None
        self._check_discovered_url(name, value)
        return value

    def _other_metadata(self) -> dict[str, Any]:
        """The issuer's RFC 8414 document, consulted for :data:`ELSEWHERE_ENDPOINTS` missing
        from the server metadata (OIDC overrides; plain OAuth2 has none)."""
        return {}

    def _check_discovered_url(self, name: str, url: str) -> None:
        from kstlib.auth._config.values import _FieldError, _url

        try:
            _url(name, url)
        except _FieldError as exc:
            raise DiscoveryError(
                f"Provider '{self.name}': the discovery document's {name} {exc.problem}; "
                f"fix the URL the IdP advertises (behind a proxy: its public https URL) or "
                f"set '{_ENDPOINT_FIELDS[name]}' explicitly in the provider's configuration",
                issuer=self.config.issuer,
                reason=f"insecure {name}",
            ) from None

    def _require_endpoint(self, name: str) -> str:
        url = self.endpoint(name)
        if url is None:
            raise ConfigurationError(
                f"Provider '{self.name}' has no {name}: set "
                f"'{_ENDPOINT_FIELDS[name]}' in its configuration",
                provider=self.name,
                key=_ENDPOINT_FIELDS[name],
            )
        return url

    def client_authentication(self) -> ClientAuthentication:
        """How this client authenticates at the token endpoint (chosen once)."""
        if self._client_auth is None:
            supported = self._server_metadata().get("token_endpoint_auth_methods_supported")
            self._client_auth = select_client_authentication(
                self.config.client_id,
                self.config.client_secret,
                configured=self.config.token_endpoint_auth_method,
                server_supported=supported if isinstance(supported, list) else None,
                provider_name=self.name,
                client_key=self.config.client_key,
                client_key_id=self.config.client_key_id,
                assertion_alg=self.config.client_assertion_alg,
            )
            self._restrict_algorithms(self._client_auth)
        return self._client_auth

    def _restrict_algorithms(self, auth: ClientAuthentication) -> None:
        """Under ``profile: fapi2`` a JWT signer may only use PS256/ES256/EdDSA (issue 14)."""
        if self.config.profile == "fapi2" and isinstance(auth, JWTClientAssertion):
            from kstlib.auth._config.profiles import FAPI2_ALGORITHMS

            auth.allowed_algorithms = frozenset(FAPI2_ALGORITHMS)

    # -- authenticated back-channel requests -------------------------------------------------

    def _assertion_audience(self, endpoint: str) -> str:
        """The ``aud`` of a client assertion sent to ``endpoint``: the endpoint (RFC 7523),
        or the issuer under ``profile: fapi2`` or once the server has shown it wants that
        (FAPI 2.0, RFC 7523bis)."""
        issuer = self.config.issuer
        wants_issuer = self._issuer_audience or self.config.profile == "fapi2"
        return issuer if issuer and wants_issuer else endpoint

    def _post_json(
        self,
        endpoint: str,
        data: Mapping[str, str | list[str]],
        headers: dict[str, str],
        *,
        prepare: Callable[[httpx.Request], None] | None = None,
    ) -> JSONResponse:
        return request_json(
            self.http_client,
            "POST",
            endpoint,
            data=data,
            headers=headers,
            tracer=self.tracer,
            prepare=prepare,
        )

    def _post_raw(
        self, endpoint: str, data: Mapping[str, str | list[str]], headers: dict[str, str]
    ) -> RawResponse:
        return request(
            self.http_client, "POST", endpoint, data=data, headers=headers, tracer=self.tracer
        )

    def _post_with_auth(
        self,
        endpoint: str,
        data: Mapping[str, str | list[str]],
        send: Callable[[str, Mapping[str, str | list[str]], dict[str, str]], _R],
        refused: Callable[[_R], bool],
    ) -> _R:
        """POST ``data`` to a back-channel endpoint (token, PAR, revocation, introspection)
        with this client's authentication: the one door of every authenticated request.

        ``send`` is :meth:`_post_json` or :meth:`_post_raw` (the bounded reader; HTTPFailure
        as it raises), ``refused`` tells an ``invalid_client`` answer. With a JWT assertion
        method, a server that refuses the client while the assertion's ``aud`` was the
        endpoint gets one more request, with a fresh assertion (new ``jti``) for the issuer;
        when that one is accepted, later assertions name the issuer at once. Never more
        than one retry; other methods are never retried.
        """
        auth = self.client_authentication()

        def attempt(audience: str | None) -> _R:
            form: dict[str, Any] = dict(data)
            headers: dict[str, str] = {}
            if audience is not None and isinstance(auth, JWTClientAssertion):
                auth.apply_assertion(form, headers, audience=audience)
            else:
                auth.apply(form, headers, endpoint=endpoint)
            return send(endpoint, form, headers)

        audience = self._assertion_audience(endpoint)
        answer = attempt(audience)
        issuer = self.config.issuer
        if (
            isinstance(auth, JWTClientAssertion)
            and issuer
            and audience != issuer
            and refused(answer)
        ):
            _log.debug(
                "'%s' refused the client assertion for %s; sending one for the issuer",
                self.name,
                endpoint,
            )
            answer = attempt(issuer)
            if not refused(answer):
                self._issuer_audience = True
        return answer

    # -- authorization request -------------------------------------------------------------

    def _authorize_extra(self) -> dict[str, str]:
        extra = self.config.extra.get("authorize_params") or {}
        return {str(k): str(v) for k, v in dict(extra).items()}

    def _new_nonce(self) -> str | None:
        """OIDC adds a nonce; plain OAuth2 sends none."""
        return None

    def _scopes(self) -> list[str]:
        return list(self.config.scopes)

    def get_authorization_url(self, state: str | None = None) -> tuple[str, str]:
        """Build the authorization URL (PKCE S256, state, nonce) and remember it as pending.

        Several authorizations may be pending at once; each is consumed by
        one :meth:`exchange_code`.
        """
        return self._authorization_url(state, self.config.redirect_uri)

    def _authorization_url(self, state: str | None, redirect_uri: str) -> tuple[str, str]:
        """:meth:`get_authorization_url` for ``redirect_uri`` (a login's bound loopback URI)."""
        self._require_user_flow("log in through the browser")
        endpoint = self._require_endpoint("authorization_endpoint")
        if state is not None and not state:
            raise AuthorizationError("state must not be empty", reason="empty state")
        state = state or new_state()
        verifier = new_code_verifier() if self.config.pkce else None
        pending = _PendingAuthorization(
            state=state,
            code_verifier=verifier,
            nonce=self._new_nonce(),
            redirect_uri=redirect_uri,
            created=time.monotonic(),
            dpop_key=self._new_dpop_key(),  # a new login, a new key (None without DPoP)
        )
        params = self._authorize_extra()
        params.update(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": pending.redirect_uri,
                "scope": " ".join(self._scopes()),
                "state": state,
            }
        )
        if verifier is not None:
            params["code_challenge"] = code_challenge(verifier)
            params["code_challenge_method"] = "S256"
        if pending.nonce is not None:
            params["nonce"] = pending.nonce
        if pending.dpop_key is not None:
            params["dpop_jkt"] = pending.dpop_key.thumbprint  # RFC 9449 10: code bound to key
        front = self._request_parameters(params, pending)
        self._remember(pending)
        separator = "&" if urlsplit(endpoint).query else "?"
        return endpoint + separator + urlencode(front, doseq=True), state

    # -- issue 14: resource indicators, signed request objects, pushed requests -----------

    def _request_parameters(
        self, params: dict[str, str], pending: _PendingAuthorization
    ) -> dict[str, str | list[str]]:
        """The authorization request as it travels: plain, signed (JAR), pushed (PAR).

        ``resource`` (RFC 8707) joins the parameters; with ``request_object`` they are
        signed into ``request`` (RFC 9101) beside ``client_id``; with PAR (RFC 9126) they
        go to the PAR endpoint and the URL carries only ``client_id`` and ``request_uri``
        (``pending`` learns when that dies).
        """
        request: dict[str, str | list[str]] = dict(params)
        if self.config.resource:
            request["resource"] = list(self.config.resource)
        if self.config.request_object:
            request = {
                "client_id": self.config.client_id,
                "request": self._request_object(request),
            }
        if not self._use_par():
            return request
        request_uri, lifetime = self._push_authorization_request(request)
        pending.request_uri_deadline = time.monotonic() + lifetime
        return {"client_id": self.config.client_id, "request_uri": request_uri}

    def _use_par(self) -> bool:
        """``par: true``, or (unset) the server requires pushed authorization requests."""
        if self.config.par is not None:
            return self.config.par
        return self._server_metadata().get("require_pushed_authorization_requests") is True

    def _request_signer(self) -> JWTClientAssertion:
        """The signer of request objects: the client's key, as for ``private_key_jwt``."""
        auth = self.client_authentication()
        if isinstance(auth, PrivateKeyJWT):
            return auth
        signer = self._jar_signer
        if signer is None:
            signer = PrivateKeyJWT(
                self.config.client_id,
                client_key=self.config.client_key,
                client_key_id=self.config.client_key_id,
                assertion_alg=self.config.client_assertion_alg,
                provider_name=self.name,
            )
            self._restrict_algorithms(signer)
            self._jar_signer = signer
        return signer

    def _request_object(self, params: Mapping[str, str | list[str]]) -> str:
        """The authorization request as a signed JWT (RFC 9101 4), valid for one minute."""
        from kstlib.auth._signing import SigningError, sign_jws

        signer = self._request_signer()
        now = int(time.time())
        claims: dict[str, Any] = dict(params)
        claims.update(
            {
                "iss": self.config.client_id,
                "aud": self.config.issuer or self._require_endpoint("authorization_endpoint"),
                "iat": now,
                "nbf": now,
                "exp": now + REQUEST_OBJECT_LIFETIME,
                "jti": new_state(),
            }
        )
        key, alg = signer.signing_key(), signer.algorithm()
        try:
            return sign_jws(claims, key, alg, {"typ": "oauth-authz-req+jwt"})
        except SigningError as exc:
            raise ConfigurationError(
                f"Provider '{self.name}': client_key cannot sign the request object: {exc.reason}",
                provider=self.name,
                key="client_key",
            ) from None

    def _push_authorization_request(
        self, request: Mapping[str, str | list[str]]
    ) -> tuple[str, float]:
        """POST the request to the PAR endpoint; its ``request_uri`` and lifetime (s)."""
        endpoint = self._require_endpoint("pushed_authorization_request_endpoint")
        what = f"Pushed authorization request to '{self.name}' failed"
        try:
            response = self._post_with_auth(endpoint, request, self._post_json, _json_refused)
        except HTTPFailure as failure:
            raise AuthorizationError(
                f"{what}: {failure.reason}", reason="pushed request failed"
            ) from None
        if not response.is_success:
            reason, code, desc = _server_message(response)
            raise AuthorizationError(
                f"{what}: {reason}",
                reason="pushed request refused",
                error_code=code,
                error_description=desc,
            )
        data = response.data if isinstance(response.data, dict) else {}
        request_uri = data.get("request_uri")
        lifetime = data.get("expires_in")
        if not isinstance(request_uri, str) or not _printable_token(request_uri):
            raise AuthorizationError(
                f"{what}: the answer has no usable request_uri (RFC 9126 2.2)",
                reason="bad pushed response",
            )
        if (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or not 0 < lifetime <= MAX_REQUEST_URI_LIFETIME
        ):
            raise AuthorizationError(
                f"{what}: the answer's expires_in is not a positive number of seconds up to "
                f"{MAX_REQUEST_URI_LIFETIME} (RFC 9126 2.2)",
                reason="bad pushed response",
            )
        return request_uri, float(lifetime)

    def _check_request_uri_alive(self, state: str) -> None:
        """Before waiting for the browser: a pushed request that already died ends the
        login with :class:`PushedAuthorizationExpiredError` (its pending entry dropped)."""
        with self._pending_lock:
            pending = self._pending.get(state)
        deadline = pending.request_uri_deadline if pending is not None else None
        if deadline is not None and time.monotonic() >= deadline:
            self._take_pending(state)
            raise PushedAuthorizationExpiredError(
                f"The pushed authorization request of '{self.name}' expired before the "
                "browser opened it; start the login again",
                reason="request_uri expired",
                error_code="invalid_request_uri",
            )

    def _remember(self, pending: _PendingAuthorization) -> None:
        with self._pending_lock:
            self._prune_pending()
            self._pending[pending.state] = pending
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)

    def _prune_pending(self) -> None:
        cutoff = time.monotonic() - PENDING_TTL
        for key in [k for k, p in self._pending.items() if p.created < cutoff]:
            del self._pending[key]

    def _take_pending(self, state: str) -> _PendingAuthorization | None:
        """Find and consume the pending authorization for ``state`` (constant-time compare)."""
        with self._pending_lock:
            self._prune_pending()
            found: str | None = None
            for key in self._pending:
                if hmac.compare_digest(key.encode(), state.encode()):
                    found = key
            return self._pending.pop(found) if found is not None else None

    # -- interactive login (RFC 8252 loopback redirect) ------------------------------------

    def _login_settings(self) -> CallbackServerSettings:
        if self._callback_settings is None:
            from kstlib.auth.config import CallbackServerSettings

            self._callback_settings = CallbackServerSettings()
        return self._callback_settings

    def _new_login_server(self) -> CallbackServer:
        """The loopback server of one login, for the redirect URI of this provider."""
        from kstlib.auth.callback import CallbackServer

        settings = self._login_settings()
        return CallbackServer.from_redirect_uri(
            self._default_login_redirect_uri or self.config.redirect_uri,
            port_range=settings.port_range,
            deferred_reply=True,
        )

    def login(
        self,
        *,
        open_browser: bool = True,
        timeout: float | None = None,
        on_url: Callable[[str, bool], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> Token:
        """Log the user in through the browser and a loopback redirect; store and return the token.

        Starts a :class:`~kstlib.auth.callback.CallbackServer` on the redirect URI's
        loopback host and port (``auth.callback_server.port_range`` when it is busy),
        builds the authorization URL (state, PKCE, nonce) for the bound address, opens
        it in the browser when ``open_browser`` (never a console browser), waits for the
        redirect, checks its state (and ``iss``), exchanges the code, and validates and
        stores the tokens. The browser's page says "Login complete" only after that
        succeeded; otherwise it shows an error page.

        Args:
            open_browser: Open the authorization URL in the user's browser.
            timeout: Seconds to wait for the redirect (``auth.callback_server.timeout``,
                120 s by default).
            on_url: Called with the authorization URL and whether a browser was opened
                for it, before the wait (print the URL when it was not).
            on_tick: Called about every 0.2 s with the seconds left (a progress display).

        Raises:
            CallbackServerError: the server cannot listen, or no redirect arrived in time.
            AuthorizationError: the user or the server refused, or ``iss`` does not match.
            TokenExchangeError, TokenValidationError: the code exchange failed.
        """
        self._require_user_flow("log in through the browser")
        with self._new_login_server() as server:
            return self._login_with(server, open_browser, timeout, on_url, on_tick)

    async def alogin(
        self,
        *,
        open_browser: bool = True,
        timeout: float | None = None,
        on_url: Callable[[str, bool], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> Token:
        """:meth:`login` without blocking the event loop (the waits run in worker threads).

        ``on_url`` and ``on_tick`` are called from a worker thread. Cancelling the task
        stops the loopback server, which ends the wait.
        """
        import asyncio

        self._require_user_flow("log in through the browser")
        server = self._new_login_server()
        await asyncio.to_thread(server.start)
        try:
            return await asyncio.to_thread(
                self._login_with, server, open_browser, timeout, on_url, on_tick
            )
        finally:
            await asyncio.shield(asyncio.to_thread(server.stop))

    def _login_with(
        self,
        server: CallbackServer,
        open_browser: bool,
        timeout: float | None,
        on_url: Callable[[str, bool], None] | None,
        on_tick: Callable[[float], None] | None,
    ) -> Token:
        server.start()
        state = new_state()
        server.expect_state(state)
        redirect_uri = server.redirect_uri
        try:
            url, _ = self._authorization_url(state, redirect_uri)
            opened = open_browser and _open_in_background(url, server)
            if on_url is not None:
                on_url(url, opened)
            if server.result is None:
                self._check_request_uri_alive(state)  # issue 14
            wait = self._login_settings().timeout if timeout is None else timeout
            result = server.wait_for_callback(wait, on_tick=on_tick)
            _raise_for_callback_error(result.raise_for_error)
            token = self.exchange_code(f"{redirect_uri}?{urlencode(result.raw_params)}", state)
        except BaseException as exc:
            self._take_pending(state)
            server.report_outcome(type(exc).__name__)
            raise
        server.report_outcome(None)
        return token

    # -- RP-initiated logout ---------------------------------------------------------------

    def logout_url(
        self,
        *,
        id_token_hint: str | None = None,
        post_logout_redirect_uri: str | None = None,
        state: str | None = None,
    ) -> str | None:
        """The end-session URL that ends the user's session at the provider (RP-initiated logout).

        Args:
            id_token_hint: The ID token to send as the hint; by default the stored
                token's ID token (none when nothing is stored); ``""`` sends none. The
                hint is a credential: hand the URL to a browser, do not print or log it.
            post_logout_redirect_uri: Where the provider sends the browser afterwards;
                by default the provider's ``post_logout_redirect_uri``.
            state: Opaque value the provider returns with that redirect.

        Returns:
            The URL, or None when the provider has no ``end_session_endpoint`` (configured
            or discovered).
        """
        endpoint = self.endpoint("end_session_endpoint")
        if not endpoint:
            return None
        if id_token_hint is None:
            stored = self.token_storage.load(self.name)
            id_token_hint = stored.id_token if stored is not None else None
        params = {"client_id": self.config.client_id}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        redirect = post_logout_redirect_uri or self.config.post_logout_redirect_uri
        if redirect:
            params["post_logout_redirect_uri"] = redirect
        if state:
            params["state"] = state
        separator = "&" if urlsplit(endpoint).query else "?"
        return f"{endpoint}{separator}{urlencode(params)}"

    async def alogout_url(
        self,
        *,
        id_token_hint: str | None = None,
        post_logout_redirect_uri: str | None = None,
        state: str | None = None,
    ) -> str | None:
        """:meth:`logout_url` for asyncio callers (discovery and the storage read run in a
        worker thread)."""
        import asyncio
        import functools

        return await asyncio.to_thread(
            functools.partial(
                self.logout_url,
                id_token_hint=id_token_hint,
                post_logout_redirect_uri=post_logout_redirect_uri,
                state=state,
            )
        )

    # -- code exchange ---------------------------------------------------------------------

    def exchange_code(
        self,
        code: str,
        state: str,
        *,
        code_verifier: str | None = None,
        iss: str | None = None,
    ) -> Token:
        """Exchange an authorization code for tokens; validate, then store them.

        ``code`` may also be the full callback URL (``...?code=...&state=...&iss=...``),
        in which case its ``state`` and ``iss`` are checked too. ``state`` must
        match a pending authorization of this provider, unless the caller
        supplies ``code_verifier`` itself (state kept elsewhere). Under ``profile: fapi2``
        the ``iss`` response parameter is required, also with a bare code.

        Raises:
            AuthorizationError: state mismatch, an error returned to the
                redirect URI, or an ``iss`` that does not match (RFC 9207).
            TokenExchangeError: the token endpoint refused the code.
            TokenValidationError: the returned tokens failed validation.
        """
        self._require_user_flow("exchange an authorization code")
        from_redirect = False
        if "?" in code or code.startswith(("http://", "https://")):
            code, url_state, iss = self._parse_callback_url(code, iss)
            if url_state is not None and not hmac.compare_digest(url_state, state):
                raise AuthorizationError(
                    "The state in the callback URL does not match; start the login again",
                    reason="state mismatch",
                )
            from_redirect = True
        if not code:
            raise AuthorizationError("No authorization code given", reason="missing code")
        pending = self._take_pending(state)
        if pending is None and code_verifier is None:
            raise AuthorizationError(
                f"The state does not match any pending authorization of '{self.name}' "
                "(expired, already used, or forged); start the login again",
                reason="state mismatch",
            )
        # profile fapi2: the iss parameter is required even with a bare code (issue 14)
        fapi2 = self.config.profile == "fapi2"
        self._check_response_issuer(iss, required=from_redirect or fapi2)
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri if pending else self.config.redirect_uri,
        }
        verifier = code_verifier or (pending.code_verifier if pending else None)
        if verifier:
            data["code_verifier"] = verifier
        dpop_key = pending.dpop_key if pending is not None else self._new_dpop_key()
        raw = self._token_request(data, kind="exchange", dpop_key=dpop_key)
        token = self._token_from_response(raw, kind="exchange", dpop_key=dpop_key)
        token = self._validate_new_token(token, nonce=pending.nonce if pending else None)
        self.save_token(token)
        _log.info("Logged in to '%s'", self.name)
        return token

    @staticmethod
    def _parse_callback_url(url: str, iss: str | None) -> tuple[str, str | None, str | None]:
        query = urlsplit(url).query if "://" in url else url.split("?", 1)[-1]
        params = parse_qs(query, keep_blank_values=True)

        def one(key: str) -> str | None:
            values = params.get(key)
            return values[0] if values else None

        if one("error") == "invalid_request_uri":  # issue 14
            raise _expired_request_uri(redact_text(one("error_description") or "") or None)
        if one("error"):
            raise AuthorizationError(
                f"The authorization server returned an error: {one('error')}",
                reason="authorization denied",
                error_code=one("error"),
                error_description=redact_text(one("error_description") or "") or None,
            )
        return one("code") or "", one("state"), iss if iss is not None else one("iss")

    def _expected_issuer(self) -> str | None:
        return self.config.issuer

    def _check_response_issuer(self, iss: str | None, *, required: bool) -> None:
        """RFC 9207: the ``iss`` sent with the code must be our issuer."""
        expected = self._expected_issuer()
        advertised = bool(
            self._server_metadata().get("authorization_response_iss_parameter_supported")
        )
        if iss is not None and expected is not None:
            if not hmac.compare_digest(iss.encode(), expected.encode()):
                raise AuthorizationError(
                    "The authorization response comes from another issuer "
                    f"({iss!r}, expected {expected!r}): possible mix-up attack; login aborted",
                    reason="issuer mismatch",
                )
        elif iss is None and required and self.config.profile == "fapi2":  # issue 14
            raise AuthorizationError(
                "The authorization response has no 'iss'; profile fapi2 requires it "
                "(RFC 9207); login aborted",
                reason="missing iss",
            )
        elif iss is None and required and advertised:
            raise AuthorizationError(
                "The authorization response has no 'iss' although the server advertises "
                "authorization_response_iss_parameter_supported (RFC 9207); login aborted",
                reason="missing iss",
            )

    # -- device authorization grant (RFC 8628; issue #13 item 1) ---------------------------

    def _device_endpoint(self) -> str:
        url = self.endpoint("device_authorization_endpoint")
        if url is None:
            raise ConfigurationError(
                f"Provider '{self.name}' has no device_authorization_endpoint (RFC 8628), "
                "neither configured nor in the server's metadata: set "
                "'device_authorization_endpoint' in its configuration, or log in with the "
                "browser ('kstlib auth login' without --device)",
                provider=self.name,
                key="device_authorization_endpoint",
            )
        return url

    def start_device_authorization(self) -> DeviceAuthorization:
        """Ask the device authorization endpoint for a device code and a user code (RFC 8628 3.1).

        The client authenticates as at the token endpoint and asks for the provider's
        scopes. Show the user ``verification_uri`` and ``user_code`` (or
        ``verification_uri_complete``), then call :meth:`poll_device_authorization`.

        Raises:
            ConfigurationError: no ``device_authorization_endpoint`` configured or discovered
                (``key`` names the setting that supplies it).
            DeviceAuthorizationError: the server refused (``error_code``) or answered
                without a usable device code, user code, verification URI or lifetime.
        """
        from kstlib.auth._device import parse_device_authorization
        from kstlib.auth.errors import DeviceAuthorizationError

        self._require_user_flow("log in with a device code")  # issue 13: a service flow
        endpoint = self._device_endpoint()
        data = {"scope": " ".join(self._scopes())}
        headers: dict[str, str] = {}
        self.client_authentication().apply(data, headers, endpoint=endpoint)
        data.setdefault("client_id", self.config.client_id)  # RFC 8628 3.1
        what = f"Device authorization request to '{self.name}' failed"
        try:
            response = request_json(
                self.http_client, "POST", endpoint, data=data, headers=headers, tracer=self.tracer
            )
        except HTTPFailure as failure:
            raise DeviceAuthorizationError(
                f"{what}: {failure.reason}", reason=failure.reason
            ) from None
        if not response.is_success:
            reason, code, desc = _server_message(response)
            raise DeviceAuthorizationError(
                f"{what}: {reason}", reason=reason, error_code=code, error_description=desc
            )
        authorization = parse_device_authorization(self.name, response.data)
        _log.info(
            "Device login to '%s' started: code valid %d s, polling every %d s",
            self.name,
            authorization.expires_in,
            authorization.interval,
        )
        return authorization

    def poll_device_authorization(
        self,
        authorization: DeviceAuthorization,
        *,
        timeout: float | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> Token:
        """Wait until the user approved ``authorization``; store and return the token.

        Polls the token endpoint (:meth:`token_request`, grant
        ``urn:ietf:params:oauth:grant-type:device_code``) every ``interval`` seconds,
        5 s longer after each ``slow_down``; ``authorization_pending`` keeps waiting. The
        token is validated (an ID token is verified), then stored under the storage's
        lock. Nothing is stored when the wait fails.

        Args:
            authorization: What :meth:`start_device_authorization` returned.
            timeout: Seconds to wait at most (None: until the codes expire).
            on_tick: Called about every 0.2 s with the seconds left (a progress display).

        Raises:
            DeviceAuthorizationDeniedError: the user refused (``access_denied``).
            DeviceCodeExpiredError: the codes expired first (``expired_token`` or
                ``expires_in`` passed).
            DeviceAuthorizationError: ``timeout`` passed (``reason="timeout"``), or the
                server answered another error.
            TokenValidationError: the issued token failed validation.
        """
        from kstlib.auth._device import DEVICE_CODE_GRANT, DevicePoll

        poll = DevicePoll(self.name, authorization, timeout)
        while True:
            _pause(poll.next_wait(), poll.seconds_left, on_tick)
            poll.check()
            try:
                token = self.token_request(DEVICE_CODE_GRANT, device_code=authorization.device_code)
            except TokenExchangeError as exc:
                poll.failed(exc)
                continue
            with self.refresh_guard():
                self.save_token(token)
            _log.info("Logged in to '%s' (device authorization)", self.name)
            return token

    async def astart_device_authorization(self) -> DeviceAuthorization:
        """:meth:`start_device_authorization` for asyncio callers (runs in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.start_device_authorization)

    async def apoll_device_authorization(
        self,
        authorization: DeviceAuthorization,
        *,
        timeout: float | None = None,
        on_tick: Callable[[float], None] | None = None,
    ) -> Token:
        """:meth:`poll_device_authorization` for asyncio callers; never blocks the event loop.

        Waits with ``asyncio.sleep`` (cancelling the task ends the wait, nothing stored);
        each token request runs in a worker thread; the token is stored under the
        provider's asyncio lock and the storage's cross-process lock.
        """
        import asyncio

        from kstlib.auth._device import DEVICE_CODE_GRANT, DevicePoll
        from kstlib.auth.providers.base import REFRESH_LOCK_TIMEOUT

        poll = DevicePoll(self.name, authorization, timeout)
        while True:
            await _apause(poll.next_wait(), poll.seconds_left, on_tick)
            poll.check()
            try:
                token = await self.atoken_request(
                    DEVICE_CODE_GRANT, device_code=authorization.device_code
                )
            except TokenExchangeError as exc:
                poll.failed(exc)
                continue
            async with (
                self._async_lock(),
                self.token_storage.alock(self.name, timeout=REFRESH_LOCK_TIMEOUT),
            ):
                await asyncio.to_thread(self._save_holding_lock, token)
            _log.info("Logged in to '%s' (device authorization)", self.name)
            return token

    def _save_holding_lock(self, token: Token) -> None:
        """:meth:`save_token` from a worker thread whose asyncio caller holds the locks."""
        self._guard_state.depth = 1
        try:
            self.save_token(token)
        finally:
            self._guard_state.depth = 0

    # -- end of the device authorization block ---------------------------------------------

    # -- token endpoint --------------------------------------------------------------------

    def token_request(self, grant_type: str, **params: str) -> Token:
        """Send one grant to the token endpoint; return the validated token, NOT stored.

        The one door of every grant (authorization code, refresh, device code, client
        credentials, token exchange...): ``grant_type`` and ``params`` form the body; the
        client authenticates as configured (``token_endpoint_auth_method``); the answer
        is read through the bounded reader (size limit, total deadline of ``timeout``);
        OAuth errors become typed errors; the token is validated (an ID token in the
        answer is verified by an OIDC provider) before it is returned. Storing it is the
        caller's decision (:meth:`save_token`): a grant that logs a user in stores, a
        one-off exchange may not.

        A POST is never retried (a code or device code is single-use).

        Raises:
            TokenExchangeError: the server refused, or the request failed. ``error_code``
                carries the OAuth error; ``authorization_pending``, ``slow_down`` and
                ``use_dpop_nonce`` come with ``retryable=True`` so a polling grant
                (device flow) waits and asks again.
            TokenValidationError: the returned token failed validation.
            ConfigurationError: no token endpoint, or unusable client credentials.
        """
        if not isinstance(grant_type, str) or not grant_type.strip():
            raise ValueError("grant_type must be a non-empty string")
        data = {"grant_type": grant_type}
        for name, value in params.items():
            if name == "grant_type" or not isinstance(value, str):
                raise ValueError(f"token_request parameter {name!r} must be a string")
            data[name] = value
        dpop_key = self._new_dpop_key()
        raw = self._token_request(data, kind="grant", dpop_key=dpop_key)
        token = self._token_from_response(raw, kind="grant", dpop_key=dpop_key)
        return self._validate_granted(token)

    async def atoken_request(self, grant_type: str, **params: str) -> Token:
        """:meth:`token_request` for asyncio callers; runs in a worker thread (the
        provider's one HTTP client and its bounded reader), never blocking the loop."""
        import asyncio  # loaded by the running loop already; not at import (#16 item 4)

        return await asyncio.to_thread(self.token_request, grant_type, **params)

    def _validate_granted(self, token: Token) -> Token:
        """Check a token from :meth:`token_request` (OIDC verifies an ID token in it)."""
        return token

    def _token_request(
        self, data: dict[str, str], *, kind: GrantKind, dpop_key: DPoPKey | None = None
    ) -> dict[str, Any]:
        """POST a grant to the token endpoint with client authentication; return its JSON.

        The configured ``resource`` indicators (RFC 8707) go with every grant whose
        parameters name none. With ``dpop_key``, every attempt carries a fresh DPoP proof;
        a ``use_dpop_nonce`` answer is retried once with the server's nonce (and a new
        client assertion, :meth:`_post_with_auth` building one per attempt).
        """
        endpoint = self._require_endpoint("token_endpoint")
        form: dict[str, str | list[str]] = dict(data)
        if self.config.resource and "resource" not in form:  # issue 14
            form["resource"] = list(self.config.resource)
        prepare = self._dpop_prepare(dpop_key)

        def send(
            url: str, body: Mapping[str, str | list[str]], headers: dict[str, str]
        ) -> JSONResponse:
            return self._post_json(url, body, headers, prepare=prepare)

        for attempt in range(2):
            try:
                response = self._post_with_auth(endpoint, form, send, _json_refused)
            except HTTPFailure as failure:
                raise self._grant_error(kind, failure) from None
            if dpop_key is None or not self._dpop_retry(
                endpoint,
                response,
                challenged=not response.is_success
                and oauth_error_fields(response.data)["error_code"] == "use_dpop_nonce",
                retried=attempt > 0,
                where="The token endpoint",
            ):
                break
        if not response.is_success:
            raise self._grant_error(kind, response)
        if not isinstance(response.data, dict):
            raise self._grant_error(
                kind, HTTPFailure("the token response is not a JSON object", status_code=200)
            )
        return response.data

    def _grant_error(self, kind: GrantKind, failure: HTTPFailure | JSONResponse) -> TokenError:
        reason, code, desc = _server_message(failure)
        status = failure.status_code
        retryable = (
            (isinstance(failure, HTTPFailure) and failure.retryable)
            or (status is not None and status >= 500)
            or code in _RETRYABLE_ERRORS
        ) and code not in _FATAL_ERRORS
        if kind == "refresh":
            hint = f"; run 'kstlib auth login {self.name}'" if code in _FATAL_ERRORS else ""
            return TokenRefreshError(
                f"Token refresh for '{self.name}' failed: {reason}{hint}",
                reason=reason,
                retryable=retryable,
                error_code=code,
                status_code=status,
            )
        details: dict[str, Any] = {}
        if desc:
            details["error_description"] = desc
        if isinstance(failure, JSONResponse) and code in POLL_ERRORS:
            details.update(_poll_details(failure))
        return TokenExchangeError(
            f"Token request to '{self.name}' failed: {reason}",
            reason=reason,
            error_code=code,
            status_code=status,
            retryable=retryable,
            details=details or None,
        )

    #: Token types this provider can send (a DPoP-bound or MAC token needs per-request proof
    #: this provider does not make: such a token is refused, never stored nor sent as Bearer).
    usable_token_types: frozenset[TokenType] = frozenset({TokenType.BEARER})

    def _token_from_response(
        self, raw: dict[str, Any], *, kind: GrantKind, dpop_key: DPoPKey | None = None
    ) -> Token:
        try:
            token = Token.from_response(raw)
            if dpop_key is not None:  # DPoP asked: a bound token or nothing (never Bearer)
                check_binding(
                    str(token.token_type), token.access_token, dpop_key, provider=self.name
                )
                token.dpop_key = dpop_key
                return token
            if token.token_type not in self.usable_token_types:
                usable = ", ".join(sorted(t.value for t in self.usable_token_types))
                raise TokenValidationError(
                    f"the server issued a token of token_type {str(token.token_type)!r} this "
                    f"client cannot use (it uses {usable})",
                    claim="token_type",
                )
            return token
        except TokenValidationError as exc:
            message = f"'{self.name}' returned an unusable token response: {exc.reason}"
            if kind == "refresh":
                raise TokenRefreshError(message, reason=exc.reason, retryable=False) from None
            raise TokenExchangeError(message, reason=exc.reason) from None

    def _validate_new_token(self, token: Token, *, nonce: str | None) -> Token:
        """Check a token from a code exchange before it is stored (OIDC checks the ID token)."""
        return token

    def _validate_refreshed(self, token: Token, *, previous: Token) -> Token:
        """Check a refreshed token before it is stored (OIDC checks a new ID token)."""
        return token

    # -- refresh ---------------------------------------------------------------------------

    def refresh(self, token: Token | None = None) -> Token:
        """Refresh a token (the stored one by default), validate it, store it, return it.

        Holds the provider's refresh lock and the storage's cross-process lock,
        so concurrent callers never spend a rotating refresh token twice. A
        refresh token the server refused (``invalid_grant``) is never sent again.

        Raises:
            TokenRefreshError: no usable refresh token, or the refresh failed
                (``retryable=False`` for ``invalid_grant``; True for network
                errors, 5xx, and an unreachable discovery/JWKS, checked before
                the refresh token is spent). The stored token is left as it was.
        """
        with self.refresh_guard():
            current = token if token is not None else self.token_storage.load(self.name)
            if current is None:
                raise TokenRefreshError(
                    f"No token stored for '{self.name}'; run 'kstlib auth login {self.name}'",
                    reason="no token",
                )
            if self.refresh_token_rejected(current):
                raise self._no_renewal(current)
            return self._renew_recording(current, self.config.refresh_skew).token

    def _prepare_refresh(self) -> None:
        """Load what validating the refreshed tokens needs, before the refresh token is spent.

        Plain OAuth2 needs nothing; OIDC loads discovery and the JWKS (cached).
        """

    def _refresh_failure(
        self, exc: AuthError, *, spent: bool, rotated: bool = False
    ) -> TokenRefreshError:
        """A failure of the refresh path that is not the grant's own, as a TokenRefreshError."""
        status = getattr(exc, "status_code", None)
        transient = str(exc).startswith("cannot fetch") and (
            status is None or status >= 500 or status == 429
        )
        if spent:
            what = "the refreshed tokens could not be validated"
            hint = f"; run 'kstlib auth login {self.name}'" if rotated else ""
            retryable = transient and not rotated
        else:
            what = "not sent (nothing was spent)"
            hint = ""
            retryable = transient
        return TokenRefreshError(
            f"Token refresh for '{self.name}' failed, {what}: {exc}{hint}",
            reason=str(exc),
            retryable=retryable,
            status_code=status if isinstance(status, int) else None,
        )

    def _refresh_and_store(self, token: Token) -> Token:
        if not token.refresh_token:
            raise TokenRefreshError(
                f"The token of '{self.name}' has no refresh token; "
                f"run 'kstlib auth login {self.name}'",
                reason="no refresh token",
            )
        try:
            self._prepare_refresh()
            self._require_endpoint("token_endpoint")
        except (TokenRefreshError, ConfigurationError):
            raise
        except AuthError as exc:  # discovery or keys unreachable: keep the refresh token
            raise self._refresh_failure(exc, spent=False) from None
        dpop_key = token.dpop_key or self._new_dpop_key()  # a refresh keeps the login's key
        raw = self._token_request(
            {"grant_type": "refresh_token", "refresh_token": token.refresh_token},
            kind="refresh",
            dpop_key=dpop_key,
        )
        new = self._token_from_response(raw, kind="refresh", dpop_key=dpop_key)
        new.metadata.pop(REFRESH_REJECTED_KEY, None)  # a mark is ours, never the server's
        rotated = new.refresh_token is not None and new.refresh_token != token.refresh_token
        if new.refresh_token is None:
            new.refresh_token = token.refresh_token
            if "refresh_expires_at" in token.metadata:
                new.metadata.setdefault("refresh_expires_at", token.metadata["refresh_expires_at"])
        if not new.scope:
            new.scope = list(token.scope)
        try:
            new = self._validate_refreshed(new, previous=token)
        except TokenValidationError as exc:  # every refresh failure is a TokenRefreshError
            raise RefreshedTokenInvalidError(
                f"Token refresh for '{self.name}' failed: {exc.message}; the stored token is kept",
                reason=exc.reason,
                claim=exc.claim,
            ) from None
        except (TokenError, ConfigurationError):
            raise
        except AuthError as exc:  # e.g. a key rotation whose new JWKS cannot be fetched
            raise self._refresh_failure(exc, spent=True, rotated=rotated) from None
        if new.id_token is None:
            new.id_token = token.id_token
        self.save_token(new)
        _log.debug("Refreshed the token of '%s'", self.name)
        return new

    # -- revocation ------------------------------------------------------------------------

    def revoke(self, token: Token | None = None) -> bool:
        """Revoke the refresh token, then the access token (RFC 7009).

        Returns False when the server has no revocation endpoint (or there is
        no token). Raises :class:`AuthError` when the server refuses.
        """
        token = token if token is not None else self.token_storage.load(self.name)
        if token is None:
            return False
        endpoint = self.endpoint("revocation_endpoint")
        if endpoint is None:
            return False
        for value, hint in (
            (token.refresh_token, "refresh_token"),
            (token.access_token, "access_token"),
        ):
            if value:
                self._revoke_one(endpoint, value, hint)
        _log.info("Revoked the tokens of '%s'", self.name)
        return True

    def _revoke_one(self, endpoint: str, value: str, hint: str) -> None:
        data = {"token": value, "token_type_hint": hint}
        what = f"Revocation of the {hint.replace('_', ' ')} at '{self.name}' failed"
        try:
            answer = self._post_with_auth(endpoint, data, self._post_raw, _raw_refused)
        except HTTPFailure as failure:
            raise AuthError(f"{what}: {failure.reason}", details={"endpoint": endpoint}) from None
        if answer.status_code != 200:
            reason, code, _ = _server_message(
                JSONResponse(answer.status_code, answer.headers, answer.json_or_none())
            )
            raise AuthError(
                f"{what}: {reason}",
                details={"status_code": answer.status_code, "error": code},
            )

    # -- introspection ---------------------------------------------------------------------

    def introspect(
        self, token: str | Token | None = None, *, token_type_hint: str | None = None
    ) -> dict[str, Any]:
        """Ask the introspection endpoint (RFC 7662) about ``token``; return its answer.

        ``token`` is a token value or a :class:`Token` (its access token); by default the
        stored access token of this provider (with the hint ``access_token``). The client
        authenticates as at the token endpoint; the answer is read through the bounded
        reader and must be a JSON object with a boolean ``active``.

        Raises:
            ConfigurationError: no introspection endpoint is configured or discovered
                (the message names ``introspection_url``).
            TokenExpiredError: no token given and none is stored.
            AuthError: the request failed or the answer is not an introspection response.
        """
        endpoint = self._require_endpoint("introspection_endpoint")
        if token is None:
            stored = self.token_storage.load(self.name)
            if stored is None:
                raise self._not_logged_in()
            token = stored.access_token
            token_type_hint = token_type_hint or "access_token"
        elif isinstance(token, Token):
            token = token.access_token
        if not isinstance(token, str) or not token:
            raise ValueError("introspect: token must be a non-empty string or a Token")
        data = {"token": token}
        if token_type_hint:
            data["token_type_hint"] = token_type_hint
        what = f"Introspection at '{self.name}' failed"
        try:
            response = self._post_with_auth(endpoint, data, self._post_json, _json_refused)
        except HTTPFailure as failure:
            raise AuthError(f"{what}: {failure.reason}") from None
        if not response.is_success:
            reason, code, _ = _server_message(response)
            raise AuthError(
                f"{what}: {reason}", details={"status_code": response.status_code, "error": code}
            )
        if not isinstance(response.data, dict) or not isinstance(response.data.get("active"), bool):
            raise AuthError(f"{what}: the answer has no boolean 'active' (RFC 7662 2.2)")
        return response.data

    async def aintrospect(
        self, token: str | Token | None = None, *, token_type_hint: str | None = None
    ) -> dict[str, Any]:
        """:meth:`introspect` for asyncio callers (runs in a worker thread)."""
        import asyncio

        return await asyncio.to_thread(self.introspect, token, token_type_hint=token_type_hint)

    # -- userinfo --------------------------------------------------------------------------

    def _token_for_call(self, token: Token | None) -> Token:
        token = token if token is not None else self.get_token()
        if token is None:
            raise TokenError(f"Not logged in to '{self.name}'; run 'kstlib auth login {self.name}'")
        return token

    def get_userinfo(self, token: Token | None = None) -> dict[str, Any]:
        """Fetch the user's claims from the UserInfo endpoint.

        The access token is sent with its own type (``Bearer``, or ``DPoP`` with the
        proof :meth:`authorize_request` adds), through the bounded reader.

        Raises:
            ConfigurationError: no userinfo endpoint is configured or discovered.
            AuthError: the request failed.
        """
        token = self._token_for_call(token)
        endpoint = self._require_endpoint("userinfo_endpoint")
        scheme = str(getattr(token.token_type, "value", token.token_type)) or "Bearer"
        for attempt in range(2):
            try:
                response = request_json(
                    self.http_client,
                    "GET",
                    endpoint,
                    headers={"Authorization": f"{scheme} {token.access_token}"},
                    tracer=self.tracer,
                    prepare=lambda sent: self.authorize_request(sent, token),
                )
            except HTTPFailure as failure:
                raise AuthError(
                    f"UserInfo request to '{self.name}' failed: {failure.reason}"
                ) from None
            if token.dpop_key is None or not self._dpop_retry(
                endpoint,
                response,
                challenged=is_nonce_challenge(
                    response.status_code, response.headers.get_list("www-authenticate")
                ),
                retried=attempt > 0,
                where="The UserInfo endpoint",
            ):
                break
        if not response.is_success or not isinstance(response.data, dict):
            reason, _, _ = _server_message(response)
            raise AuthError(f"UserInfo request to '{self.name}' failed: {reason}")
        return response.data

    # -- DPoP (RFC 9449, issue 14 item 2) --------------------------------------------------

    def _new_dpop_key(self) -> DPoPKey | None:
        """A new DPoP key pair for a new login or grant (None when ``dpop`` is off)."""
        return DPoPKey.generate(self.config.dpop_alg) if self.config.dpop else None

    def _dpop_prepare(self, dpop_key: DPoPKey | None) -> Callable[[httpx.Request], None] | None:
        """The ``prepare`` hook that adds a fresh proof to a token-endpoint request."""
        if dpop_key is None:
            return None
        nonces = self._dpop_nonces

        def add_proof(request: httpx.Request) -> None:
            url = str(request.url)
            request.headers["DPoP"] = dpop_key.proof(request.method, url, nonce=nonces.get(url))

        return add_proof

    def _dpop_retry(
        self, url: str, response: JSONResponse, *, challenged: bool, retried: bool, where: str
    ) -> bool:
        """Keep the server's ``DPoP-Nonce``; True when a nonce challenge asks to send again.

        Raises:
            DPoPNonceError: the challenge has no usable nonce, or comes a second time.
        """
        nonce = response.headers.get("dpop-nonce")
        if not challenged:
            self._dpop_nonces.record(url, nonce)
            return False
        if retried:
            raise nonce_loop_error(url, provider=self.name, where=where)
        self._dpop_nonces.take_challenge(url, nonce, provider=self.name, where=where)
        return True

    def authorize_request(self, request: httpx.Request, token: Token) -> None:
        """Add a DPoP proof (``htm``, ``htu``, ``ath``, the origin's nonce) for a bound token."""
        key = token.dpop_key
        if key is None:
            return
        url = str(request.url)
        request.headers["DPoP"] = key.proof(
            request.method, url, access_token=token.access_token, nonce=self._dpop_nonces.get(url)
        )

    def wants_replay(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Keep a resource server's ``DPoP-Nonce``; True (once) on a ``use_dpop_nonce``.

        Raises:
            DPoPNonceError: the challenge has no usable nonce, or the replay got one too.
        """
        nonce = response.headers.get("dpop-nonce")
        if (nonce is None and response.status_code != 401) or "dpop" not in request.headers:
            return False  # the common case, decided without parsing anything
        url = str(request.url)
        challenges = response.headers.get_list("www-authenticate")
        if not is_nonce_challenge(response.status_code, challenges):
            self._dpop_nonces.record(url, nonce)
            return False
        where = f"The resource server {request.url.host}"
        # a loop: challenged again for the same request with the same token (a replay with a
        # renewed token after a 401 is another attempt)
        attempt = fingerprint(request.headers.get("authorization"))
        if request.extensions.get(_DPOP_REPLAYED) == attempt:
            raise nonce_loop_error(url, provider=self.name, where=where)
        self._dpop_nonces.take_challenge(url, nonce, provider=self.name, where=where)
        request.extensions[_DPOP_REPLAYED] = attempt
        return True

    # -- preflight -------------------------------------------------------------------------

    def _preflight_steps(self) -> list[tuple[str, Callable[[], PreflightResult]]]:
        steps: list[tuple[str, Callable[[], PreflightResult]]] = [
            ("config", self._preflight_config),
            ("authorization_endpoint", lambda: self._preflight_reach("authorization_endpoint")),
            ("token_endpoint", lambda: self._preflight_reach("token_endpoint")),
            # ---- #16 item 7 (wt-clitools): the client itself, cheaply
            ("client_id", self._preflight_client_id),
            ("client_auth", self._preflight_client_auth),
            # ---- end #16 item 7
        ]
        if self.config.flow in _SERVICE_FLOWS:  # issue 13: no browser, no authorization endpoint
            steps = [
                step for step in steps if step[0] not in ("authorization_endpoint", "client_id")
            ]
        return steps

    def preflight(self) -> PreflightReport:
        """Check configuration, discovery, keys, scopes and endpoint reachability.

        Each step records its status and duration; a failing step never
        raises (the report says what failed).
        """
        report = PreflightReport(provider_name=self.name)
        broken: dict[str, str] = {}  # #16 item 7: failed step -> the failure it hinges on
        for step, run in self._preflight_steps():
            started = time.perf_counter()
            blocker = next(
                (broken[need] for need in _PREFLIGHT_NEEDS.get(step, ()) if need in broken), None
            )
            if blocker is not None:  # a dependent step: not six copies of one error
                result = PreflightResult(
                    step, PreflightStatus.SKIPPED, f"skipped: {blocker} failed"
                )
                broken[step] = blocker
            else:
                try:
                    result = run()
                except (AuthError, HTTPFailure, httpx.HTTPError) as exc:
                    result = PreflightResult(step, PreflightStatus.FAILURE, str(exc))
                if result.status is PreflightStatus.FAILURE:
                    broken[step] = step
            result.duration_ms = (time.perf_counter() - started) * 1000
            report.results.append(result)
        from datetime import UTC, datetime

        report.completed_at = datetime.now(UTC)
        return report

    def _preflight_config(self) -> PreflightResult:
        try:
            method = self.client_authentication().method
        except (DiscoveryError, HTTPFailure, httpx.HTTPError):
            # #16 item 7: the server's metadata is out of reach, which is the discovery
            # step's failure, not the configuration's: check the settings offline
            method = select_client_authentication(
                self.config.client_id,
                self.config.client_secret,
                configured=self.config.token_endpoint_auth_method,
                server_supported=None,
                provider_name=self.name,
                client_key=self.config.client_key,
                client_key_id=self.config.client_key_id,
                assertion_alg=self.config.client_assertion_alg,
            ).method
        return PreflightResult(
            "config",
            PreflightStatus.SUCCESS,
            f"client '{self.config.client_id}', auth method {method}, flow {self.flow.value}",
            details={"client_auth": method, "redirect_uri": self.config.redirect_uri},
        )

    # ---- #16 item 7 (wt-clitools): client id and client authentication, checked cheaply

    def _preflight_redirect_uri(self) -> str:
        """The redirect URI a login would send (a loopback port 0 becomes the default port)."""
        uri = self._default_login_redirect_uri or self.config.redirect_uri
        parts = urlsplit(uri)
        if parts.port == 0:
            port = self._login_settings().port
            uri = parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{port}").geturl()
        return uri

    def _preflight_client_id(self) -> PreflightResult:
        """GET the authorization URL a login would open, without following it: a server
        that does not know the client (or its redirect URI) answers with an error page."""
        state = new_state()
        url, _ = self._authorization_url(state, self._preflight_redirect_uri())
        self._take_pending(state)  # no login follows
        client = self.config.client_id
        response: RawResponse = request(self.http_client, "GET", url, tracer=self.tracer)
        status = response.status_code
        location = response.headers.get("location", "")
        error = parse_qs(urlsplit(location).query).get("error", [None])[0]
        text = response.body[:65536].decode("utf-8", "replace").lower()
        known = next((c for c in _CLIENT_ERRORS if c in text), None)
        if status >= 400 or known is not None or (300 <= status < 400 and error):
            why = error or known or f"HTTP {status}"
            return PreflightResult(
                "client_id",
                PreflightStatus.FAILURE,
                f"the authorization endpoint refused client '{client}' ({why}): check "
                "client_id and that the redirect URI is registered",
                details={"status_code": status, "error": error or known},
            )
        return PreflightResult(
            "client_id",
            PreflightStatus.SUCCESS,
            f"client '{client}' accepted by the authorization endpoint (HTTP {status})",
            details={"status_code": status},
        )

    def _preflight_client_auth(self) -> PreflightResult:
        """Redeem a dummy code: ``invalid_grant`` means the client authenticated (its secret
        or key is right), ``invalid_client`` that it did not."""
        method = self.client_authentication().method
        try:
            self.token_request(
                "authorization_code",
                code="kstlib-preflight-not-a-code",
                redirect_uri=self._preflight_redirect_uri(),
                code_verifier=new_code_verifier(),
            )
        except TokenExchangeError as exc:
            if exc.status_code is None:  # no answer: the request failed
                raise
            code = exc.error_code
            if code == "invalid_grant":
                return PreflightResult(
                    "client_auth",
                    PreflightStatus.SUCCESS,
                    f"client authentication ({method}) accepted (a dummy code was refused "
                    "with invalid_grant, as expected)",
                    details={"client_auth": method},
                )
            if code == "unauthorized_client":  # RFC 6749 5.2: authenticated, grant not allowed
                return PreflightResult(
                    "client_auth",
                    PreflightStatus.WARNING,
                    f"client authentication ({method}) accepted, but the client may not use "
                    "the authorization code grant (unauthorized_client)",
                    details={"client_auth": method, "error": code},
                )
            if code == "invalid_client":
                return PreflightResult(
                    "client_auth",
                    PreflightStatus.FAILURE,
                    f"client authentication ({method}) refused by the token endpoint ({code}): "
                    "check client_id and client_secret (or the client key)",
                    details={"client_auth": method, "error": code},
                )
            return PreflightResult(
                "client_auth",
                PreflightStatus.WARNING,
                f"unexpected answer to a dummy code: {exc.reason or code}",
                details={"client_auth": method, "error": code},
            )
        return PreflightResult(
            "client_auth",
            PreflightStatus.WARNING,
            "the token endpoint accepted a dummy code",
            details={"client_auth": method},
        )

    # ---- end #16 item 7

    def _preflight_reach(self, name: str) -> PreflightResult:
        url = self.endpoint(name)
        if url is None:
            return PreflightResult(name, PreflightStatus.FAILURE, f"no {name} configured")
        method = "POST" if name == "token_endpoint" else "GET"
        response: RawResponse = request(self.http_client, method, url, tracer=self.tracer)
        if response.status_code >= 500:
            return PreflightResult(
                name, PreflightStatus.FAILURE, f"{url} answered HTTP {response.status_code}"
            )
        return PreflightResult(
            name,
            PreflightStatus.SUCCESS,
            f"{url} reachable (HTTP {response.status_code})",
            details={"url": url, "status_code": response.status_code},
        )

    # -- grants for services (issue 13): client credentials, token exchange ---------------

    def _require_user_flow(self, what: str) -> None:
        """Refuse a browser login (or code exchange) on a provider whose flow has no user."""
        if self.config.flow in _SERVICE_FLOWS:
            raise no_user_error(self.name, self.config.flow, what)

    def can_obtain(self) -> bool:
        """A client-credentials or token-exchange provider gets its first token itself."""
        return self.config.flow in _SERVICE_FLOWS

    def can_renew(self, token: Token) -> bool:
        """A client-credentials or token-exchange provider can always get a new token."""
        if self.config.flow in _SERVICE_FLOWS:
            return True
        return super().can_renew(token)

    def _renew(self, token: Token | None) -> Token:
        flow = self.config.flow
        if flow == "client_credentials":
            return self._service_grant("client credentials grant", self._client_credentials)
        if flow == "token_exchange":
            return self._service_grant("token exchange", self._exchange_subject)
        return super()._renew(token)

    def _service_grant(self, what: str, grant: Callable[[], Token]) -> Token:
        """Run ``grant`` (the caller holds the locks), then store its token.

        A failure is a :class:`TokenRefreshError` (the pipeline's renewal failure: shared
        with the callers queued behind, a still-valid token kept); nothing is stored.
        """
        try:
            token = grant()
        except TokenExchangeError as exc:
            raise TokenRefreshError(
                f"The {what} of '{self.name}' failed: {exc.reason}",
                reason=exc.reason,
                retryable=exc.retryable,
                error_code=exc.error_code,
                status_code=exc.status_code,
            ) from None
        except TokenValidationError as exc:
            raise TokenRefreshError(
                f"The {what} of '{self.name}' returned an invalid token: {exc.reason}",
                reason=exc.reason,
                retryable=False,
            ) from None
        self.save_token(token)
        _log.debug("Got a new token for '%s' (%s)", self.name, what)
        return token

    def _grant_target(self) -> dict[str, str]:
        """``scope`` and ``audience`` of a service grant, from the config.

        ``openid`` is never sent: it asks for an ID token about a user, and these grants
        have none.
        """
        params: dict[str, str] = {}
        scopes = [scope for scope in self.config.scopes if scope != "openid"]
        if scopes:
            params["scope"] = " ".join(scopes)
        if self.config.audience:
            params["audience"] = self.config.audience
        return params  # the configured ``resource`` indicators: token_request adds them

    def _client_credentials(self) -> Token:
        """The client credentials grant (RFC 6749 4.4): a token for the client itself."""
        return self.token_request("client_credentials", **self._grant_target())

    # -- token exchange (RFC 8693) --

    @property
    def subject_provider(self) -> AbstractAuthProvider:
        """``flow: token_exchange``: the provider whose token is exchanged (built on first use
        from the same configuration; assignable, e.g. to share one provider object).

        Raises:
            ConfigurationError: the provider's flow is not token_exchange.
        """
        subject = self._subject_provider
        if subject is None:
            name = self.config.subject_provider
            if self.config.flow != "token_exchange" or not name:
                raise ConfigurationError(
                    f"Provider '{self.name}' has no subject_provider (only flow "
                    "token_exchange has one)",
                    provider=self.name,
                    key="subject_provider",
                )
            from kstlib.auth.config import get_provider

            subject = get_provider(name, config=self._loaded_config)
            self._subject_provider = self._built_subject = subject
        return subject

    @subject_provider.setter
    def subject_provider(self, provider: AbstractAuthProvider) -> None:
        self._subject_provider = provider

    def _exchange_subject(self) -> Token:
        """``flow: token_exchange``: exchange the subject provider's access token (renewed
        first when stale, by that provider's own pipeline)."""
        subject = self.subject_provider.acquire().token
        return self.exchange_token(subject.access_token, **self._exchange_target())

    def _exchange_target(self) -> dict[str, Any]:
        params = self._grant_target()
        return {
            "audience": params.get("audience"),
            "resource": params.get("resource"),
            "scope": params.get("scope"),
        }

    def exchange_token(
        self,
        subject_token: str,
        subject_token_type: str = ACCESS_TOKEN_TYPE,
        *,
        audience: str | None = None,
        resource: str | None = None,
        scope: str | None = None,
        requested_token_type: str | None = None,
        actor_token: str | None = None,
        actor_token_type: str | None = None,
        store_as: str | None = None,
    ) -> Token:
        """Exchange ``subject_token`` for another token (RFC 8693); return it.

        The answer must carry an ``issued_token_type``: the ``requested_token_type`` when
        one was asked for, else an access token or a JWT (usable as a bearer token);
        anything else is refused. The token is not stored unless ``store_as`` names the
        storage entry to save it under (another provider's name, say).

        Raises:
            ValueError: an empty or non-string argument; ``actor_token`` without
                ``actor_token_type``.
            TokenExchangeError: the server refused, or issued another token type (nothing
                stored).
            TokenValidationError: the issued token is not a usable token response.
            ConfigurationError: no token endpoint, or unusable client credentials.
        """
        params = {"subject_token": subject_token, "subject_token_type": subject_token_type}
        optional = {
            "audience": audience,
            "resource": resource,
            "scope": scope,
            "requested_token_type": requested_token_type,
            "actor_token": actor_token,
            "actor_token_type": actor_token_type,
        }
        for name, value in [*params.items(), *optional.items()]:
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"exchange_token: {name} must be a non-empty string")
        if (actor_token is None) != (actor_token_type is None):
            raise ValueError("exchange_token: actor_token and actor_token_type go together")
        params.update({name: value for name, value in optional.items() if value is not None})
        token = self.token_request(TOKEN_EXCHANGE_GRANT, **params)
        issued = token.metadata.get("issued_token_type")
        accepted = (requested_token_type,) if requested_token_type else USABLE_ISSUED_TYPES
        if issued not in accepted:
            shown = issued if isinstance(issued, str) and len(issued) <= 100 else "none"
            raise TokenExchangeError(
                f"Token exchange at '{self.name}' returned issued_token_type {shown!r}, "
                f"expected {' or '.join(accepted)}; the token was refused (not stored)",
                reason="wrong issued_token_type",
            )
        if store_as is not None:
            self.token_storage.save(store_as, token)
        return token

    async def aexchange_token(
        self,
        subject_token: str,
        subject_token_type: str = ACCESS_TOKEN_TYPE,
        *,
        audience: str | None = None,
        resource: str | None = None,
        scope: str | None = None,
        requested_token_type: str | None = None,
        actor_token: str | None = None,
        actor_token_type: str | None = None,
        store_as: str | None = None,
    ) -> Token:
        """:meth:`exchange_token` for asyncio callers (runs in a worker thread)."""
        import asyncio
        import functools

        return await asyncio.to_thread(
            functools.partial(
                self.exchange_token,
                subject_token,
                subject_token_type,
                audience=audience,
                resource=resource,
                scope=scope,
                requested_token_type=requested_token_type,
                actor_token=actor_token,
                actor_token_type=actor_token_type,
                store_as=store_as,
            )
        )

    # -- end of grants for services --


def _printable_token(value: object) -> bool:
    """A server-made opaque value safe to put in a URL: short printable ASCII, no space."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 2048
        and value.isascii()
        and value.isprintable()
        and not any(char.isspace() for char in value)
    )


def _expired_request_uri(description: str | None) -> PushedAuthorizationExpiredError:
    return PushedAuthorizationExpiredError(
        "The authorization server no longer knows the pushed authorization request "
        "(invalid_request_uri: expired or already used); start the login again",
        reason="request_uri expired",
        error_code="invalid_request_uri",
        error_description=description,
    )


def _raise_for_callback_error(check: Callable[[], str]) -> None:
    """``CallbackResult.raise_for_error``, an ``invalid_request_uri`` made typed (issue 14)."""
    try:
        check()
    except PushedAuthorizationExpiredError:
        raise
    except AuthorizationError as exc:
        if exc.error_code == "invalid_request_uri":
            raise _expired_request_uri(exc.error_description) from None
        raise


def _json_refused(response: JSONResponse) -> bool:
    """The server refused the client's authentication (RFC 6749 5.2 ``invalid_client``)."""
    return (
        response.status_code in (400, 401)
        and oauth_error_fields(response.data)["error_code"] == "invalid_client"
    )


def _raw_refused(response: RawResponse) -> bool:
    return response.status_code in (400, 401) and (
        oauth_error_fields(response.json_or_none())["error_code"] == "invalid_client"
    )


def _poll_details(response: JSONResponse) -> dict[str, Any]:
    """What a polling grant needs from an error answer: the new ``interval`` (slow_down,
    RFC 8628 3.5) and the server's ``DPoP-Nonce`` (use_dpop_nonce, RFC 9449 8)."""
    details: dict[str, Any] = {}
    data = response.data if isinstance(response.data, dict) else {}
    interval = data.get("interval")
    if isinstance(interval, int) and not isinstance(interval, bool) and 0 < interval <= 3600:
        details["interval"] = interval
    nonce = response.headers.get("dpop-nonce")
    if nonce and len(nonce) <= 512 and nonce.isascii() and nonce.isprintable():
        details["dpop_nonce_header"] = nonce
    return details


#: Seconds a login waits for the browser command to say whether it opened the URL.
BROWSER_START_TIMEOUT = 10.0


def _open_in_background(url: str, server: CallbackServer) -> bool:
    """Open ``url`` in the browser from a worker thread; True once it opened it.

    Some browser commands only return when the browser exits (and an in-process one may
    follow the redirect before returning): the login must not wait for them. The answer
    is True as soon as the redirect arrived, False when the command failed or did not
    answer within :data:`BROWSER_START_TIMEOUT` (the caller then shows the URL).
    """
    from kstlib.auth.callback import open_in_browser

    answer: list[bool] = []
    finished = threading.Event()

    def run() -> None:
        try:
            answer.append(open_in_browser(url))
        except Exception as exc:  # a broken browser command: show the URL instead
            _log.debug("Opening the browser failed (%s)", type(exc).__name__)
        finally:
            finished.set()

    threading.Thread(target=run, name="kstlib-browser", daemon=True).start()
    deadline = time.monotonic() + BROWSER_START_TIMEOUT
    while not finished.wait(0.05):
        if server.result is not None:
            return True
        if time.monotonic() > deadline:
            return False
    return bool(answer and answer[0])


def _loopback_uri(settings: CallbackServerSettings) -> str:
    """The redirect URI of ``auth.callback_server`` (for a provider that sets none)."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/callback"


# -- device authorization grant: the waits between polls (issue #13 item 1) -----------------

#: Seconds between two progress callbacks while a device login waits.
_TICK = 0.2


def _pause(
    seconds: float, left: Callable[[], float], on_tick: Callable[[float], None] | None
) -> None:
    """Sleep ``seconds`` in short steps (Ctrl-C ends it at once), reporting the time left."""
    end = time.monotonic() + seconds
    while (remaining := end - time.monotonic()) > 0:
        if on_tick is not None:
            on_tick(left())
        time.sleep(min(_TICK, remaining))


async def _apause(
    seconds: float, left: Callable[[], float], on_tick: Callable[[float], None] | None
) -> None:
    """:func:`_pause` for the event loop."""
    import asyncio

    end = time.monotonic() + seconds
    while (remaining := end - time.monotonic()) > 0:
        if on_tick is not None:
            on_tick(left())
        await asyncio.sleep(min(_TICK, remaining))


# ---- #16 item 7 (wt-clitools)
#: Which earlier preflight steps each step needs: when one of them failed, it is skipped.
_PREFLIGHT_NEEDS: dict[str, tuple[str, ...]] = {
    "discovery": ("config",),
    "jwks": ("discovery",),
    "scopes": ("discovery",),
    "authorization_endpoint": ("config", "discovery"),
    "token_endpoint": ("config", "discovery"),
    "client_id": ("authorization_endpoint",),
    "client_auth": ("token_endpoint",),
}
#: OAuth errors on an authorization endpoint's error page that name the client as the problem.
_CLIENT_ERRORS = ("invalid_client", "unauthorized_client", "invalid_redirect_uri")
# ---- end #16 item 7
