"""``OAuth2Provider``: authorization code (+ PKCE), refresh, revocation, userinfo."""

from __future__ import annotations

import hmac
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from kstlib.auth._clientauth import ClientAuthentication, select_client_authentication
from kstlib.auth._http import (
    HTTPFailure,
    HTTPTraceLogger,
    JSONResponse,
    RetryPolicy,
    build_http_client,
    oauth_error_fields,
    request_json,
)
from kstlib.auth._names import METADATA_ENDPOINTS
from kstlib.auth._pkce import code_challenge, new_code_verifier, new_state
from kstlib.auth.errors import (
    AuthError,
    AuthorizationError,
    ConfigurationError,
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
)
from kstlib.auth.providers.base import AbstractAuthProvider
from kstlib.auth.redaction import get_logger, redact_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.token import AbstractTokenStorage

__all__ = ["OAuth2Provider"]

_log = get_logger("kstlib.auth.providers.oauth2")

#: Pending authorizations older than this are forgotten.
PENDING_TTL = 900.0
#: At most this many authorizations may be pending at once (oldest dropped first).
MAX_PENDING = 32

#: OAuth error codes after which trying again later may work / never works.
_RETRYABLE_ERRORS = frozenset({"temporarily_unavailable", "server_error", "slow_down"})
_FATAL_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})

_ENDPOINT_FIELDS = METADATA_ENDPOINTS


@dataclass
class _PendingAuthorization:
    """What must be remembered between the authorization URL and the code exchange."""

    state: str
    code_verifier: str | None
    nonce: str | None
    redirect_uri: str
    created: float

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
        self._retry = RetryPolicy(max_retries=config.max_retries)

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
        from kstlib.auth.config import load_provider_setup

        setup = load_provider_setup(provider_name, config=config, **overrides)
        trace = setup.trace
        tracer = HTTPTraceLogger(
            pretty=trace.pretty,
            max_body_length=trace.max_body_length,
            extra_sensitive_keys=trace.extra_sensitive_keys,
        )
        return cls(
            setup.name,
            setup.config,
            setup.token_storage,
            http_client=http_client,
            tracer=tracer,
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def flow(self) -> AuthFlow:
        """Authorization code, with PKCE when enabled."""
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
        """Close the HTTP client (when this provider created it)."""
        with self._client_lock:
            if self._http_client is not None and self._owns_client:
                self._http_client.close()
                self._http_client = None

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
        """An endpoint URL: the configured one wins, else the server's metadata."""
        field_name = _ENDPOINT_FIELDS[name]
        explicit = getattr(self.config, field_name, None)
        if explicit:
            return str(explicit)
        value = self._server_metadata().get(name)
        return value if isinstance(value, str) and value else None

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
            )
        return self._client_auth

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
        endpoint = self._require_endpoint("authorization_endpoint")
        if state is not None and not state:
            raise AuthorizationError("state must not be empty", reason="empty state")
        state = state or new_state()
        verifier = new_code_verifier() if self.config.pkce else None
        pending = _PendingAuthorization(
            state=state,
            code_verifier=verifier,
            nonce=self._new_nonce(),
            redirect_uri=self.config.redirect_uri,
            created=time.monotonic(),
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
        self._remember(pending)
        separator = "&" if urlsplit(endpoint).query else "?"
        return endpoint + separator + urlencode(params), state

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
        supplies ``code_verifier`` itself (state kept elsewhere).

        Raises:
            AuthorizationError: state mismatch, an error returned to the
                redirect URI, or an ``iss`` that does not match (RFC 9207).
            TokenExchangeError: the token endpoint refused the code.
            TokenValidationError: the returned tokens failed validation.
        """
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
        self._check_response_issuer(iss, required=from_redirect)
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": pending.redirect_uri if pending else self.config.redirect_uri,
        }
        verifier = code_verifier or (pending.code_verifier if pending else None)
        if verifier:
            data["code_verifier"] = verifier
        raw = self._token_request(data, kind="exchange")
        token = self._token_from_response(raw, kind="exchange")
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
        elif iss is None and required and advertised:
            raise AuthorizationError(
                "The authorization response has no 'iss' although the server advertises "
                "authorization_response_iss_parameter_supported (RFC 9207); login aborted",
                reason="missing iss",
            )

    # -- token endpoint --------------------------------------------------------------------

    def _token_request(
        self, data: dict[str, str], *, kind: Literal["exchange", "refresh"]
    ) -> dict[str, Any]:
        """POST a grant to the token endpoint with client authentication; return its JSON."""
        endpoint = self._require_endpoint("token_endpoint")
        headers: dict[str, str] = {}
        self.client_authentication().apply(data, headers, endpoint=endpoint)
        try:
            response = request_json(
                self.http_client, "POST", endpoint, data=data, headers=headers, tracer=self.tracer
            )
        except HTTPFailure as failure:
            raise self._grant_error(kind, failure) from None
        if not response.is_success:
            raise self._grant_error(kind, response)
        if not isinstance(response.data, dict):
            raise self._grant_error(
                kind, HTTPFailure("the token response is not a JSON object", status_code=200)
            )
        return response.data

    def _grant_error(
        self, kind: Literal["exchange", "refresh"], failure: HTTPFailure | JSONResponse
    ) -> TokenError:
        reason, code, desc = _server_message(failure)
        status = failure.status_code
        retryable = (
            (isinstance(failure, HTTPFailure) and failure.retryable)
            or (status is not None and status >= 500)
            or code in _RETRYABLE_ERRORS
        ) and code not in _FATAL_ERRORS
        if kind == "refresh":
            hint = f"; run `kstlib auth login {self.name}`" if code in _FATAL_ERRORS else ""
            return TokenRefreshError(
                f"Token refresh for '{self.name}' failed: {reason}{hint}",
                reason=reason,
                retryable=retryable,
                error_code=code,
                status_code=status,
            )
        return TokenExchangeError(
            f"Token request to '{self.name}' failed: {reason}",
            reason=reason,
            error_code=code,
            status_code=status,
            retryable=retryable,
            details={"error_description": desc} if desc else None,
        )

    def _token_from_response(
        self, raw: dict[str, Any], *, kind: Literal["exchange", "refresh"]
    ) -> Token:
        try:
            return Token.from_response(raw)
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
        so concurrent callers never spend a rotating refresh token twice.

        Raises:
            TokenRefreshError: no refresh token, or the server refused
                (``retryable=False`` for ``invalid_grant``; True for network
                errors and 5xx). The stored token is left as it was.
        """
        with self.refresh_guard():
            current = token if token is not None else self.token_storage.load(self.name)
            if current is None:
                raise TokenRefreshError(
                    f"No token stored for '{self.name}'; run `kstlib auth login {self.name}`",
                    reason="no token",
                )
            return self._refresh_and_store(current)

    def _refresh_and_store(self, token: Token) -> Token:
        if not token.refresh_token:
            raise TokenRefreshError(
                f"The token of '{self.name}' has no refresh token; "
                f"run `kstlib auth login {self.name}`",
                reason="no refresh token",
            )
        raw = self._token_request(
            {"grant_type": "refresh_token", "refresh_token": token.refresh_token}, kind="refresh"
        )
        new = self._token_from_response(raw, kind="refresh")
        if new.refresh_token is None:
            new.refresh_token = token.refresh_token
            if "refresh_expires_at" in token.metadata:
                new.metadata.setdefault("refresh_expires_at", token.metadata["refresh_expires_at"])
        if not new.scope:
            new.scope = list(token.scope)
        new = self._validate_refreshed(new, previous=token)
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
        headers: dict[str, str] = {}
        self.client_authentication().apply(data, headers, endpoint=endpoint)
        try:
            response = self.http_client.post(endpoint, data=data, headers=headers)
        except httpx.TransportError as exc:
            raise AuthError(
                f"Revocation at '{self.name}' failed: {type(exc).__name__}",
                details={"endpoint": endpoint},
            ) from None
        if response.status_code != 200:
            reason, code, _ = _server_message(
                JSONResponse(response.status_code, response.headers, _safe_json(response))
            )
            raise AuthError(
                f"Revocation of the {hint.replace('_', ' ')} at '{self.name}' failed: {reason}",
                details={"status_code": response.status_code, "error": code},
            )

    # -- userinfo --------------------------------------------------------------------------

    def _token_for_call(self, token: Token | None) -> Token:
        token = token if token is not None else self.get_token()
        if token is None:
            raise TokenError(f"Not logged in to '{self.name}'; run `kstlib auth login {self.name}`")
        return token

    def get_userinfo(self, token: Token | None = None) -> dict[str, Any]:
        """Fetch the user's claims from the UserInfo endpoint (Bearer access token).

        Raises:
            ConfigurationError: no userinfo endpoint is configured or discovered.
            AuthError: the request failed.
        """
        token = self._token_for_call(token)
        endpoint = self._require_endpoint("userinfo_endpoint")
        try:
            response = request_json(
                self.http_client,
                "GET",
                endpoint,
                headers={"Authorization": f"Bearer {token.access_token}"},
                tracer=self.tracer,
            )
        except HTTPFailure as failure:
            raise AuthError(f"UserInfo request to '{self.name}' failed: {failure.reason}") from None
        if not response.is_success or not isinstance(response.data, dict):
            reason, _, _ = _server_message(response)
            raise AuthError(f"UserInfo request to '{self.name}' failed: {reason}")
        return response.data

    # -- preflight -------------------------------------------------------------------------

    def _preflight_steps(self) -> list[tuple[str, Callable[[], PreflightResult]]]:
        return [
            ("config", self._preflight_config),
            ("authorization_endpoint", lambda: self._preflight_reach("authorization_endpoint")),
            ("token_endpoint", lambda: self._preflight_reach("token_endpoint")),
        ]

    def preflight(self) -> PreflightReport:
        """Check configuration, discovery, keys, scopes and endpoint reachability.

        Each step records its status and duration; a failing step never
        raises (the report says what failed).
        """
        report = PreflightReport(provider_name=self.name)
        for step, run in self._preflight_steps():
            started = time.perf_counter()
            try:
                result = run()
            except (AuthError, HTTPFailure, httpx.HTTPError) as exc:
                result = PreflightResult(step, PreflightStatus.FAILURE, str(exc))
            result.duration_ms = (time.perf_counter() - started) * 1000
            report.results.append(result)
        from datetime import UTC, datetime

        report.completed_at = datetime.now(UTC)
        return report

    def _preflight_config(self) -> PreflightResult:
        auth = self.client_authentication()
        return PreflightResult(
            "config",
            PreflightStatus.SUCCESS,
            f"client '{self.config.client_id}', auth method {auth.method}, flow {self.flow.value}",
            details={"client_auth": auth.method, "redirect_uri": self.config.redirect_uri},
        )

    def _preflight_reach(self, name: str) -> PreflightResult:
        url = self.endpoint(name)
        if url is None:
            return PreflightResult(name, PreflightStatus.FAILURE, f"no {name} configured")
        method = "POST" if name == "token_endpoint" else "GET"
        response = self.http_client.request(method, url)
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


def _safe_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
