"""``AuthProviderConfig``: one provider's validated settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kstlib._redaction import REDACTED, is_sensitive_key, redact_mapping, redact_text, redact_urls
from kstlib.auth._config.values import (
    _ENDPOINT_FIELDS,
    DEFAULT_REDIRECT_URI,
    SERVICE_FLOWS,
    _algorithms,
    _assertion_alg,
    _auth_method,
    _bool,
    _client_key,
    _extra,
    _FieldError,
    _flow,
    _headers,
    _int,
    _number,
    _optional_path,
    _optional_text,
    _optional_url,
    _profile,
    _resources,
    _scopes,
    _set,
    _text,
    _url,
)


@dataclass(frozen=True, repr=False)
class AuthProviderConfig:
    """Validated settings of one OAuth2/OIDC provider.

    Needs ``issuer`` (endpoints found by discovery) or both ``authorize_url`` and
    ``token_url``. URLs must be absolute https, or http on a loopback host; ``redirect_uri``
    must be a loopback URL unless ``server_side``. ``scopes`` also accepts a space-separated
    string. Frozen: derive a variant with :func:`dataclasses.replace`, which validates again.
    ``repr()`` never shows the client secret, the client key nor credential headers.

    Raises:
        ConfigurationError: A field has a wrong type or value; ``key`` names the field.
    """

    client_id: str
    client_secret: str | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None
    userinfo_url: str | None = None
    jwks_uri: str | None = None
    end_session_endpoint: str | None = None
    issuer: str | None = None
    scopes: list[str] = field(default_factory=lambda: ["openid"])
    redirect_uri: str = DEFAULT_REDIRECT_URI
    pkce: bool = True
    discovery_ttl: int = 3600
    headers: dict[str, str] = field(default_factory=dict)
    ssl_verify: bool = True
    ssl_ca_bundle: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    server_side: bool = False
    #: None: chosen by the provider (client_secret_basic with a secret, none without).
    token_endpoint_auth_method: str | None = None
    introspection_url: str | None = None
    device_authorization_url: str | None = None
    post_logout_redirect_uri: str | None = None
    #: Clock skew, in seconds, tolerated when checking ID token times.
    leeway: float = 60.0
    #: HTTP timeout, in seconds, of every request to the provider.
    timeout: float = 30.0
    max_retries: int = 2
    #: Seconds before expiry at which a token is refreshed.
    refresh_skew: float = 60.0
    #: Accepted ID token algorithms (None: what discovery advertises, within JWS_ALGORITHMS).
    id_token_signing_alg_values: list[str] | None = None
    #: private_key_jwt: the client's private key (PEM text, a JWK, or a secret reference).
    client_key: str | dict[str, Any] | None = None
    #: The ``kid`` of ``client_key`` sent in the assertion header (None: the JWK's own).
    client_key_id: str | None = None
    #: Algorithm of client assertions (None: from the key, HS256 for client_secret_jwt).
    client_assertion_alg: str | None = None
    # --- issue 14: PAR, JAR, resource indicators, FAPI 2.0 profile ---
    #: PAR endpoint (RFC 9126); None: the server's ``pushed_authorization_request_endpoint``.
    pushed_authorization_request_endpoint: str | None = None
    #: Push the authorization request (RFC 9126); None: when the server requires it.
    par: bool | None = None
    #: Sign the authorization request with ``client_key`` (a request object, RFC 9101).
    request_object: bool = False
    #: Resource indicators (RFC 8707) sent on authorization, token and refresh requests.
    resource: list[str] = field(default_factory=list)
    #: A security profile whose client rules are turned on and enforced (``fapi2``).
    profile: str | None = None
    # --- end issue 14 ---
    # -- grants for services (issue 13: client credentials, token exchange) --------------
    #: How the provider gets its tokens: ``authorization_code`` (a user logs in through the
    #: browser), ``client_credentials`` (the client itself, no user, no redirect) or
    #: ``token_exchange`` (RFC 8693, from the token of ``subject_provider``).
    flow: str = "authorization_code"
    #: ``flow: token_exchange``: the provider whose token is exchanged (the user's login).
    subject_provider: str | None = None
    #: ``audience`` / ``resource`` sent with the client-credentials and token-exchange grants.
    audience: str | None = None
    # (``resource`` - RFC 8707, one or a list - is the field above, sent with every grant)
    # -- end of grants for services --------------------------------------------------------
    # -- DPoP (RFC 9449, issue 14 item 2) --
    #: Sender-constrained tokens: a key pair per login, a proof on every request.
    dpop: bool = False
    #: Algorithm of the DPoP key: ES256 (default), ES384, EdDSA, PS256 or RS256.
    dpop_alg: str = "ES256"
    # -- end DPoP --

    def __post_init__(self) -> None:
        for name, value in _checked_provider_fields(self).items():
            _set(self, name, value)
        if self.profile is not None:  # issue 14: the profile's rules, one place
            from kstlib.auth._config.profiles import apply_profile

            apply_profile(self)
        if self.request_object and self.client_key is None:  # issue 14
            raise _FieldError(
                "request_object",
                "a signed request object needs a client_key (the client's private key)",
            )

    @property
    def is_public_client(self) -> bool:
        """True when the client has no secret (it then relies on PKCE)."""
        return self.client_secret is None

    def to_safe_dict(self) -> dict[str, Any]:
        """The fields as a dict that is safe to print or log (secrets replaced, and secret
        query parameters of every URL, such as a gateway's ``api_key``)."""
        values = {
            f.name: redact_urls(value) if isinstance(value, str) else value
            for f in dataclasses.fields(self)
            for value in (getattr(self, f.name),)
        }
        values["client_secret"] = None if self.client_secret is None else REDACTED
        values["client_key"] = None if self.client_key is None else REDACTED
        values["headers"] = {
            name: REDACTED if _is_secret_header(name) else redact_text(value)
            for name, value in self.headers.items()
        }
        values["extra"] = redact_mapping(self.extra)
        return values

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.to_safe_dict().items())
        return f"{type(self).__name__}({shown})"


def _is_secret_header(name: str) -> bool:
    return is_sensitive_key(name) or is_sensitive_key(name.replace("-", "_"))


def _checked_endpoints(cfg: AuthProviderConfig) -> dict[str, str | None]:
    urls = {
        name: _optional_url(name, getattr(cfg, name), issuer=name == "issuer")
        for name in _ENDPOINT_FIELDS
    }
    if _flow(cfg.flow) in SERVICE_FLOWS:  # no browser: the token endpoint is enough
        if urls["issuer"] is None and urls["token_url"] is None:
            raise _FieldError(
                "issuer",
                "set 'issuer' (endpoints found by discovery) or 'token_url' (token_endpoint)",
            )
        return urls
    if urls["issuer"] is None and (urls["authorize_url"] is None or urls["token_url"] is None):
        raise _FieldError(
            "issuer",
            "set 'issuer' (endpoints found by discovery) or both 'authorize_url' "
            "and 'token_url' (authorization_endpoint, token_endpoint)",
        )
    return urls


def _checked_provider_fields(cfg: AuthProviderConfig) -> dict[str, Any]:
    """Every field of ``cfg`` checked and normalised, in declaration order."""
    client_secret = _optional_text("client_secret", cfg.client_secret)
    client_key = _client_key(cfg.client_key)
    server_side = _bool("server_side", cfg.server_side)
    method = _auth_method(cfg.token_endpoint_auth_method, client_secret, client_key)
    return {
        "client_id": _text("client_id", cfg.client_id),
        "client_secret": client_secret,
        **_checked_endpoints(cfg),
        "scopes": _scopes(cfg.scopes),
        "redirect_uri": _url("redirect_uri", cfg.redirect_uri, loopback_only=not server_side),
        "pkce": _bool("pkce", cfg.pkce),
        "discovery_ttl": _int("discovery_ttl", cfg.discovery_ttl, 0, 30 * 86400),
        "headers": _headers(cfg.headers),
        "ssl_verify": _bool("ssl_verify", cfg.ssl_verify),
        "ssl_ca_bundle": _optional_path("ssl_ca_bundle", cfg.ssl_ca_bundle),
        "extra": _extra(cfg.extra),
        "token_endpoint_auth_method": method,
        "post_logout_redirect_uri": _optional_url(
            "post_logout_redirect_uri", cfg.post_logout_redirect_uri
        ),
        "leeway": _number("leeway", cfg.leeway, 0, 3600),
        "timeout": _number("timeout", cfg.timeout, 0, 3600, above=True),
        "max_retries": _int("max_retries", cfg.max_retries, 0, 10),
        "refresh_skew": _number("refresh_skew", cfg.refresh_skew, 0, 86400),
        "id_token_signing_alg_values": _algorithms(cfg.id_token_signing_alg_values),
        "client_key": client_key,
        "client_key_id": _optional_text("client_key_id", cfg.client_key_id),
        "client_assertion_alg": _assertion_alg(cfg.client_assertion_alg, method),
        # issue 14 (the endpoint is checked with the others)
        "par": None if cfg.par is None else _bool("par", cfg.par),
        "request_object": _bool("request_object", cfg.request_object),
        "resource": _resources(cfg.resource),
        "profile": _profile(cfg.profile),
        # -- DPoP (RFC 9449, issue 14 item 2) --
        "dpop": _bool("dpop", cfg.dpop),
        "dpop_alg": _dpop_alg(cfg.dpop_alg),
        **_checked_grant_fields(cfg, client_secret, client_key, method),
    }


# -- grants for services (issue 13) --------------------------------------------------------


def _checked_grant_fields(
    cfg: AuthProviderConfig, client_secret: str | None, client_key: object, method: str | None
) -> dict[str, Any]:
    """``flow``, ``subject_provider`` and ``audience``, checked together."""
    flow = _flow(cfg.flow)
    subject = _optional_text("subject_provider", cfg.subject_provider)
    if flow == "client_credentials":
        confidential = client_secret is not None or client_key is not None
        if method == "none" or not confidential:
            raise _FieldError(
                "flow",
                "client_credentials needs a confidential client: set 'client_secret' or "
                "'client_key' (the client authenticates itself; there is no user)",
            )
    if flow == "token_exchange" and subject is None:
        raise _FieldError(
            "subject_provider",
            "missing: flow token_exchange exchanges the token of another provider; name it "
            "in 'subject_provider'",
        )
    if flow != "token_exchange" and subject is not None:
        raise _FieldError("subject_provider", "only used with flow token_exchange")
    return {
        "flow": flow,
        "subject_provider": subject,
        "audience": _optional_text("audience", cfg.audience),
    }


def _dpop_alg(value: object) -> str:
    from kstlib.auth._names import DPOP_ALGORITHMS

    alg = _text("dpop_alg", value)
    if alg not in DPOP_ALGORITHMS:
        refused = "is never used" if alg.lower() == "none" else "is not supported"
        raise _FieldError(
            "dpop_alg", f"{alg!r} {refused} for DPoP; valid: {', '.join(DPOP_ALGORITHMS)}"
        )
    return alg
