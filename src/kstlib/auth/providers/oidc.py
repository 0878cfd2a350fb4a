"""``OIDCProvider``: discovery, nonce, ID token validation before storage, userinfo checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kstlib.auth._discovery import MetadataCache, oauth_metadata_url, shared_cache
from kstlib.auth._idtoken import IDTokenPolicy, narrow_algorithms, verify_id_token
from kstlib.auth._jose import ALLOWED_ALGORITHMS, JOSEError, decode_jws
from kstlib.auth._names import ENDPOINT_FIELDS
from kstlib.auth._pkce import new_nonce
from kstlib.auth.errors import AuthError, TokenValidationError
from kstlib.auth.models import PreflightResult, PreflightStatus, Token
from kstlib.auth.providers.oauth2 import OAuth2Provider
from kstlib.auth.redaction import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    import httpx

    from kstlib.auth._http import HTTPTraceLogger
    from kstlib.auth.config import AuthProviderConfig
    from kstlib.auth.token import AbstractTokenStorage

__all__ = ["OIDCProvider"]

_log = get_logger("kstlib.auth.providers.oidc")


class OIDCProvider(OAuth2Provider):
    """OpenID Connect provider with discovery, PKCE and ID token validation.

    Three configuration modes:

    * auto: only ``issuer``; endpoints come from
      ``{issuer}/.well-known/openid-configuration``;
    * hybrid: ``issuer`` plus some explicit endpoints, which win;
    * manual: no ``issuer``; every endpoint explicit; no network call for discovery.

    Every ID token (from a code exchange or a refresh) is verified before
    the token set is stored: signature against the issuer's JWKS with an
    algorithm allow-list, ``iss``, ``aud``, ``azp``, ``exp``/``iat``/``nbf``
    with a leeway, ``nonce`` and ``at_hash``.

    Example:
        >>> from kstlib.auth.providers import OIDCProvider, AuthProviderConfig
        >>> from kstlib.auth.token import MemoryTokenStorage
        >>> config = AuthProviderConfig(
        ...     client_id="my-app",
        ...     issuer="https://auth.example.com",
        ...     scopes=["openid", "profile", "email"],
        ...     pkce=True,
        ... )
        >>> provider = OIDCProvider("example", config, MemoryTokenStorage())
        >>> url, state = provider.get_authorization_url()  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str,
        config: AuthProviderConfig,
        token_storage: AbstractTokenStorage,
        *,
        http_client: httpx.Client | None = None,
        tracer: HTTPTraceLogger | None = None,
        metadata_cache: MetadataCache | None = None,
    ) -> None:
        super().__init__(name, config, token_storage, http_client=http_client, tracer=tracer)
        if metadata_cache is None:
            # Documents are shared only between clients that trust TLS alike: by the TLS
            # settings of the client built from the config; an injected client (whose
            # settings are its own) gets a cache of its own.
            metadata_cache = (
                _fleet_cache(config, token_storage)
                or shared_cache(ssl_verify=config.ssl_verify, ssl_ca_bundle=config.ssl_ca_bundle)
                if http_client is None
                else MetadataCache()
            )
        self._cache = metadata_cache

    # -- discovery -------------------------------------------------------------------------

    @property
    def discovery_mode(self) -> str:
        """``"auto"``, ``"hybrid"`` or ``"manual"``."""
        if not self.config.issuer:
            return "manual"
        if any(getattr(self.config, f, None) for f in ENDPOINT_FIELDS):
            return "hybrid"
        return "auto"

    def discover(self, *, force: bool = False) -> dict[str, Any]:
        """Fetch (or return the cached) discovery document; ``{}`` in manual mode.

        The document's ``issuer`` must equal the configured issuer exactly,
        else :class:`DiscoveryError`. Cached for ``discovery_ttl`` seconds.
        """
        issuer = self.config.issuer
        if not issuer:
            return {}
        return self._cache.discovery(
            self.http_client,
            issuer,
            ttl=self.config.discovery_ttl,
            force=force,
            retry=self._retry,
            tracer=self.tracer,
        )

    def _server_metadata(self) -> dict[str, Any]:
        return self.discover()

    def _expected_issuer(self) -> str | None:
        return self.config.issuer

    def _other_metadata(self) -> dict[str, Any]:
        """issue 13 (item 6): the issuer's RFC 8414 document (same issuer, cached; ``{}``
        in manual mode, when the server publishes none, or when discovery already came
        from it)."""
        issuer = self.config.issuer
        if not issuer:
            return {}
        found = self._cache.discovered(
            self.http_client,
            issuer,
            ttl=self.config.discovery_ttl,
            retry=self._retry,
            tracer=self.tracer,
        )
        if found.url == oauth_metadata_url(issuer):
            return {}
        return self._cache.oauth_metadata(
            self.http_client,
            issuer,
            ttl=self.config.discovery_ttl,
            retry=self._retry,
            tracer=self.tracer,
        )

    # -- authorization request -------------------------------------------------------------

    def _new_nonce(self) -> str | None:
        return new_nonce()

    def _scopes(self) -> list[str]:
        scopes = list(self.config.scopes)
        return scopes if "openid" in scopes else ["openid", *scopes]

    # -- ID token validation ---------------------------------------------------------------

    def _allowed_algorithms(self) -> frozenset[str]:
        allowed = narrow_algorithms(ALLOWED_ALGORITHMS, self._server_metadata())
        if self.config.id_token_signing_alg_values:
            allowed &= frozenset(self.config.id_token_signing_alg_values)
        if not allowed:
            raise TokenValidationError(
                f"No acceptable ID token signing algorithm for '{self.name}' "
                f"(allowed: {', '.join(sorted(ALLOWED_ALGORITHMS))})",
                claim="alg",
            )
        return allowed

    def _verify_id_token(
        self, id_token: str, *, nonce: str | None = None, access_token: str | None = None
    ) -> dict[str, Any]:
        """Verify the ID token with the one validation of :mod:`kstlib.auth._idtoken`."""
        jwks_uri = self.endpoint("jwks_uri")
        if jwks_uri is None:
            raise TokenValidationError(
                f"Cannot validate the ID token of '{self.name}': no jwks_uri configured "
                "or discovered",
                claim=None,
            )
        # Manual mode has no configured issuer: the keys are pinned by the configured
        # jwks_uri instead, so the token's own iss is accepted once its signature verifies.
        policy = IDTokenPolicy(
            issuer=self.config.issuer or self._unverified_issuer(id_token),
            audience=self.config.client_id,
            nonce=nonce,
            allowed_algorithms=self._allowed_algorithms(),
            leeway=self.config.leeway,
        )
        try:
            jws, _key = verify_id_token(
                self.http_client,
                id_token,
                policy,
                cache=self._cache,
                jwks_uri=jwks_uri,
                access_token=access_token,
                retry=self._retry,
                tracer=self.tracer,
            )
        except JOSEError as exc:
            raise TokenValidationError(
                f"The ID token from '{self.name}' is invalid: {exc.reason}",
                reason=exc.reason,
                claim=exc.claim,
            ) from None
        return jws.payload

    @staticmethod
    def _unverified_issuer(id_token: str) -> str:
        try:
            iss = decode_jws(id_token).payload.get("iss")
        except JOSEError as exc:
            raise TokenValidationError(f"The ID token is malformed: {exc.reason}") from None
        if not isinstance(iss, str) or not iss:
            raise TokenValidationError("The ID token has no 'iss'", claim="iss")
        return iss

    def _validate_id_token(self, token: Token, *, nonce: str | None) -> dict[str, Any]:
        """Verify the ID token of ``token``; ``nonce`` (when known) must match, and its
        ``at_hash`` (when present) must match ``token.access_token``.
        """
        return self._verify_id_token(
            token.id_token or "", nonce=nonce, access_token=token.access_token
        )

    def _validate_new_token(self, token: Token, *, nonce: str | None) -> Token:
        if token.id_token is None:
            raise TokenValidationError(
                f"'{self.name}' returned no ID token although 'openid' was requested",
                claim="id_token",
            )
        self._validate_id_token(token, nonce=nonce)
        return token

    def _validate_granted(self, token: Token) -> Token:
        """An ID token in the answer to :meth:`token_request` is verified like at login
        (no nonce: only the authorization code flow has one)."""
        if token.id_token is not None:
            self._validate_id_token(token, nonce=None)
        return token

    def _prepare_refresh(self) -> None:
        """Before the refresh token is spent: discovery and the JWKS are loaded (cached).

        A refreshed ID token is verified against these keys; were they unreachable
        after the grant, the new token set would be lost with the spent refresh token.
        """
        jwks_uri = self.endpoint("jwks_uri")
        if jwks_uri is not None:
            self._cache.jwks(self.http_client, jwks_uri, retry=self._retry, tracer=self.tracer)

    def _validate_refreshed(self, token: Token, *, previous: Token) -> Token:
        """A refreshed ID token keeps the ``iss``, ``sub``, ``aud`` and nonce of the first."""
        if token.id_token is None or token.id_token == previous.id_token:
            return token
        before = decode_jws(previous.id_token).payload if previous.id_token else {}
        claims = self._validate_id_token(token, nonce=None)
        for claim in ("iss", "sub", "aud"):
            if before and claims.get(claim) != before.get(claim):
                raise TokenValidationError(
                    f"The refreshed ID token of '{self.name}' has another '{claim}' than "
                    "the one issued at login (OIDC Core 12.2); refused",
                    claim=claim,
                )
        if "nonce" in claims and "nonce" in before and claims["nonce"] != before["nonce"]:
            raise TokenValidationError(
                f"The refreshed ID token of '{self.name}' carries another nonce; refused",
                claim="nonce",
            )
        return token

    # -- userinfo --------------------------------------------------------------------------

    def get_userinfo(self, token: Token | None = None) -> dict[str, Any]:
        """UserInfo claims; the ``sub`` must equal the ID token's (OIDC Core 5.3.2)."""
        token = self._token_for_call(token)
        info = super().get_userinfo(token)
        if token.id_token:
            expected = decode_jws(token.id_token).payload.get("sub")
            if info.get("sub") != expected:
                raise AuthError(
                    f"UserInfo of '{self.name}' is about another subject than the ID token; "
                    "refused",
                    details={"claim": "sub"},
                )
        return info

    # -- preflight -------------------------------------------------------------------------

    def _preflight_steps(self) -> list[tuple[str, Callable[[], PreflightResult]]]:
        steps = super()._preflight_steps()
        return [
            steps[0],
            ("discovery", self._preflight_discovery),
            ("jwks", self._preflight_jwks),
            ("scopes", self._preflight_scopes),
            *steps[1:],
        ]

    def _preflight_discovery(self) -> PreflightResult:
        if self.discovery_mode == "manual":
            return PreflightResult("discovery", PreflightStatus.SKIPPED, "manual mode (no issuer)")
        doc = self.discover(force=True)
        return PreflightResult(
            "discovery",
            PreflightStatus.SUCCESS,
            f"{self.discovery_mode} discovery of {self.config.issuer}",
            details={"endpoints": sorted(k for k in doc if k.endswith(("_endpoint", "_uri")))},
        )

    def _preflight_jwks(self) -> PreflightResult:
        jwks_uri = self.endpoint("jwks_uri")
        if jwks_uri is None:
            return PreflightResult(
                "jwks", PreflightStatus.WARNING, "no jwks_uri: ID tokens cannot be verified"
            )
        keys = self._cache.jwks(
            self.http_client, jwks_uri, force=True, retry=self._retry, tracer=self.tracer
        )
        return PreflightResult(
            "jwks",
            PreflightStatus.SUCCESS,
            f"{len(keys.keys)} usable signing key(s) at {jwks_uri}",
            details={"kids": [k.kid for k in keys.keys]},
        )

    def _preflight_scopes(self) -> PreflightResult:
        supported = self._server_metadata().get("scopes_supported")
        if not isinstance(supported, list):
            return PreflightResult(
                "scopes", PreflightStatus.SKIPPED, "server does not list scopes_supported"
            )
        unknown = [s for s in self._scopes() if s not in supported]
        if unknown:
            return PreflightResult(
                "scopes",
                PreflightStatus.WARNING,
                f"scopes not advertised by the server: {', '.join(unknown)}",
                details={"unsupported": unknown},
            )
        return PreflightResult(
            "scopes", PreflightStatus.SUCCESS, "all requested scopes are supported"
        )


# --- issue 15: a storage that shares discovery/JWKS documents (storage.redis.share_metadata)


def _fleet_cache(
    config: AuthProviderConfig, token_storage: AbstractTokenStorage
) -> MetadataCache | None:
    """The process-wide cache that shares through ``token_storage``, if it offers one."""
    offer = getattr(token_storage, "metadata_store", None)
    store = (
        offer(ssl_verify=config.ssl_verify, ssl_ca_bundle=config.ssl_ca_bundle)
        if callable(offer)
        else None
    )
    if store is None:
        return None
    return shared_cache(
        ssl_verify=config.ssl_verify,
        ssl_ca_bundle=config.ssl_ca_bundle,
        shared=store,
        shared_id=store.identity,
    )


# --- end issue 15 ---
