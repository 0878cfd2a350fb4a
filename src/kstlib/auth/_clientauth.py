"""Client authentication at the token endpoint, as one pluggable step.

Every request a provider sends to the token, revocation or introspection
endpoint goes through :meth:`ClientAuthentication.apply`, which adds the
client's credentials to the form body and headers. The methods, all in the one
registry :data:`CLIENT_AUTH_METHODS` (the configuration validates
``token_endpoint_auth_method`` against it):

* ``client_secret_basic`` / ``client_secret_post`` (RFC 6749 2.3.1);
* ``none`` (public clients: only ``client_id``);
* ``client_secret_jwt`` (RFC 7523): a JWT signed with HS256/384/512 keyed with the
  client secret;
* ``private_key_jwt`` (RFC 7523): a JWT signed with the client's private key
  (``client_key``, its id ``client_key_id``).

The assertion of the JWT methods has ``iss`` = ``sub`` = the client id, ``aud`` = the
endpoint it is sent to (the token endpoint for grants) or, where the server wants it
(FAPI 2.0, RFC 7523bis), the issuer, a unique ``jti``, ``iat`` and ``exp`` one minute
later, so a captured assertion is useless elsewhere and soon. The provider sends every
back-channel request through one helper that retries once with the issuer as ``aud``
when the server refuses the client (``invalid_client``). The signing module (and
``cryptography``) is imported on first use only.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import quote

from kstlib.auth.errors import ConfigurationError

if TYPE_CHECKING:
    from kstlib.auth._signing import SigningKey

__all__ = [
    "ASSERTION_TYPE",
    "CLIENT_ASSERTION_ALGORITHMS",
    "CLIENT_AUTH_METHODS",
    "CLIENT_AUTH_REQUIREMENTS",
    "HMAC_ASSERTION_ALGORITHMS",
    "KEY_METHODS",
    "METHOD_PREFERENCE",
    "SECRET_METHODS",
    "ClientAuthentication",
    "ClientSecretBasic",
    "ClientSecretJWT",
    "ClientSecretPost",
    "JWTClientAssertion",
    "NoClientAuthentication",
    "PrivateKeyJWT",
    "register_client_authentication",
    "select_client_authentication",
]

#: ``client_assertion_type`` of RFC 7523 2.2.
ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Algorithms of ``client_secret_jwt`` assertions.
HMAC_ASSERTION_ALGORITHMS: Final[frozenset[str]] = frozenset({"HS256", "HS384", "HS512"})
#: Algorithms a client assertion may be signed with (``client_assertion_alg``); kept equal
#: to ``kstlib.auth._signing.SIGNING_ALGORITHMS`` (a test checks), standard library only
#: here so the configuration can validate without loading ``cryptography``.
CLIENT_ASSERTION_ALGORITHMS: Final[frozenset[str]] = frozenset(
    {
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
        "EdDSA", "Ed25519", "Ed448", *HMAC_ASSERTION_ALGORITHMS,
    }
)  # fmt: skip
#: Seconds a client assertion is valid.
ASSERTION_LIFETIME: Final = 60


class ClientAuthentication:
    """Base class: adds client credentials to one token-endpoint request.

    ``requires`` names the setting the method cannot work without (``client_secret``,
    ``client_key``, or None).
    """

    method: ClassVar[str] = ""
    requires: ClassVar[str | None] = None

    def __init__(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        client_key: str | Mapping[str, Any] | None = None,
        client_key_id: str | None = None,
        assertion_alg: str | None = None,
        provider_name: str | None = None,
    ) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self._client_key = client_key
        self.client_key_id = client_key_id
        self.assertion_alg = assertion_alg
        self.provider_name = provider_name

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        """Mutate ``data`` (form body) and ``headers`` for a request to ``endpoint``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.client_id!r})"


class NoClientAuthentication(ClientAuthentication):
    """Public client (``none``): only ``client_id`` in the body."""

    method = "none"

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        data["client_id"] = self.client_id


class ClientSecretBasic(ClientAuthentication):
    """HTTP Basic with the form-urlencoded id and secret (RFC 6749 2.3.1)."""

    method = "client_secret_basic"
    requires = "client_secret"

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        user = quote(self.client_id, safe="")
        password = quote(self._client_secret or "", safe="")
        raw = f"{user}:{password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")


class ClientSecretPost(ClientAuthentication):
    """``client_id`` and ``client_secret`` in the form body."""

    method = "client_secret_post"
    requires = "client_secret"

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        data["client_id"] = self.client_id
        data["client_secret"] = self._client_secret or ""


class _JWTAssertion(ClientAuthentication):
    """A signed JWT in ``client_assertion`` (RFC 7521 4.2, RFC 7523 3)."""

    default_alg: ClassVar[str] = ""

    def __init__(self, client_id: str, client_secret: str | None = None, **kwargs: Any) -> None:
        super().__init__(client_id, client_secret, **kwargs)
        self._key: SigningKey | None = None
        self._key_lock = threading.Lock()

    def signing_key(self) -> SigningKey:
        """The key assertions are signed with (loaded once; errors name the setting)."""
        with self._key_lock:
            if self._key is None:
                from kstlib.auth._signing import SigningError

                try:
                    self._key = self._load_key()
                except SigningError as exc:
                    raise self._config_error(self.requires or "client_key", exc.reason) from None
            return self._key

    def _load_key(self) -> SigningKey:
        raise NotImplementedError

    #: When set (a security profile), the only algorithms this client may sign with.
    allowed_algorithms: frozenset[str] | None = None

    def algorithm(self) -> str:
        """The configured algorithm, else the key's own; within :attr:`allowed_algorithms`
        (an RSA key then signs PS256 rather than RS256)."""
        alg = self.assertion_alg or self.default_alg or self.signing_key().default_algorithm
        allowed = self.allowed_algorithms
        if allowed is None or alg in allowed:
            return alg
        if self.assertion_alg is None and alg.startswith("RS") and "PS256" in allowed:
            return "PS256"
        raise self._config_error(
            "client_key",
            f"it signs {alg}, and the profile allows only {', '.join(sorted(allowed))}",
        )

    def _config_error(self, key: str, problem: str) -> ConfigurationError:
        return ConfigurationError(
            f"Provider '{self.provider_name}': {key} cannot be used for {self.method}: {problem}",
            provider=self.provider_name,
            key=key,
        )

    def assertion(self, audience: str) -> str:
        """A fresh client assertion for ``audience`` (the endpoint it is sent to)."""
        from kstlib.auth._signing import SigningError, sign_jws

        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        key = self.signing_key()
        try:
            return sign_jws(claims, key, self.algorithm())
        except SigningError as exc:
            raise self._config_error(self.requires or "client_key", exc.reason) from None

    def apply(self, data: dict[str, str], headers: dict[str, str], *, endpoint: str) -> None:
        self.apply_assertion(data, headers, audience=endpoint)

    def apply_assertion(
        self, data: dict[str, str], headers: dict[str, str], *, audience: str
    ) -> None:
        """Add a fresh assertion whose ``aud`` is ``audience`` (an endpoint or the issuer)."""
        data["client_assertion_type"] = ASSERTION_TYPE
        data["client_assertion"] = self.assertion(audience)


#: The JWT assertion methods (their ``aud`` can be chosen: :meth:`apply_assertion`).
JWTClientAssertion = _JWTAssertion


class ClientSecretJWT(_JWTAssertion):
    """``client_secret_jwt``: the assertion is an HMAC keyed with the client secret."""

    method = "client_secret_jwt"
    requires = "client_secret"
    default_alg = "HS256"

    def _load_key(self) -> SigningKey:
        from kstlib.auth._signing import hmac_key

        return hmac_key(self._client_secret or "")


class PrivateKeyJWT(_JWTAssertion):
    """``private_key_jwt``: the assertion is signed with the client's private key."""

    method = "private_key_jwt"
    requires = "client_key"

    def _load_key(self) -> SigningKey:
        from kstlib.auth._signing import SigningError, load_signing_key

        if self._client_key is None:
            raise SigningError("no client_key is configured")
        key = load_signing_key(self._client_key, kid=self.client_key_id)
        if key.kty == "oct":
            raise SigningError("an HMAC secret is not a private key; use client_secret_jwt")
        return key


CLIENT_AUTH_METHODS: dict[str, type[ClientAuthentication]] = {
    cls.method: cls
    for cls in (
        NoClientAuthentication,
        ClientSecretBasic,
        ClientSecretPost,
        ClientSecretJWT,
        PrivateKeyJWT,
    )
}
#: Method -> the setting it cannot work without (None: nothing).
CLIENT_AUTH_REQUIREMENTS: dict[str, str | None] = {
    name: cls.requires for name, cls in CLIENT_AUTH_METHODS.items()
}


def register_client_authentication(
    cls: type[ClientAuthentication], *, replace: bool = False
) -> type[ClientAuthentication]:
    """Make ``token_endpoint_auth_method: <cls.method>`` choose ``cls`` (usable as a decorator).

    ``cls`` subclasses :class:`ClientAuthentication`, names its ``method`` and, in
    ``requires``, the setting it cannot work without (``client_secret``, ``client_key`` or
    None). Register before the configuration is read: the configuration validates the
    method against this registry.

    Raises:
        ValueError: ``method`` is empty, or already registered and ``replace`` is false.
    """
    name = cls.method
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError("a client authentication class needs a non-empty 'method' name")
    if name in CLIENT_AUTH_METHODS and not replace:
        raise ValueError(f"client authentication method {name!r} is already registered")
    if cls.requires not in (None, "client_secret", "client_key"):
        raise ValueError("'requires' must be None, 'client_secret' or 'client_key'")
    CLIENT_AUTH_METHODS[name] = cls
    CLIENT_AUTH_REQUIREMENTS[name] = cls.requires
    return cls


#: Methods that authenticate with the client secret.
SECRET_METHODS: frozenset[str] = frozenset(
    name for name, needs in CLIENT_AUTH_REQUIREMENTS.items() if needs == "client_secret"
)
#: Methods that authenticate with a private key.
KEY_METHODS: frozenset[str] = frozenset(
    name for name, needs in CLIENT_AUTH_REQUIREMENTS.items() if needs == "client_key"
)


#: The automatic choice, best first, among the methods the credentials allow and the
#: server advertises: a private key is never sent; of the secret methods, HTTP Basic is
#: RFC 8414's default (a server advertising several accepts it for most clients), then the
#: form body, then ``client_secret_jwt`` (chosen only when the server offers no other
#: secret method: a client registered for it says so with ``token_endpoint_auth_method``).
METHOD_PREFERENCE: Final[tuple[str, ...]] = (
    "private_key_jwt",
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
)


def _automatic_method(
    client_secret: str | None,
    client_key: object,
    server_supported: Sequence[str] | None,
    provider_name: str | None,
) -> str:
    """The best method the server advertises for the credentials given (see the caller)."""
    usable = [
        name
        for name in METHOD_PREFERENCE
        if (client_key is not None if name in KEY_METHODS else bool(client_secret))
    ]
    if not usable:
        return "none"
    advertised = [str(name) for name in server_supported or [] if isinstance(name, str)]
    if not advertised:
        return usable[0]
    for name in usable:
        if name in advertised:
            return name
    held = {"client_key": client_key is not None, "client_secret": bool(client_secret)}
    given = " and ".join(name for name, present in held.items() if present)
    raise ConfigurationError(
        f"Provider '{provider_name}': the server's token_endpoint_auth_methods_supported "
        f"({', '.join(advertised)}) has no method the {given} can be used with "
        f"({', '.join(usable)}); set token_endpoint_auth_method, or the credentials the "
        "server registered this client with",
        provider=provider_name,
        key="token_endpoint_auth_method",
    )


def select_client_authentication(
    client_id: str,
    client_secret: str | None,
    *,
    configured: str | None = None,
    server_supported: Sequence[str] | None = None,
    provider_name: str | None = None,
    client_key: str | Mapping[str, Any] | None = None,
    client_key_id: str | None = None,
    assertion_alg: str | None = None,
) -> ClientAuthentication:
    """Choose how this client authenticates.

    The configured method wins. Otherwise the best method (:data:`METHOD_PREFERENCE`) the
    credentials allow (``private_key_jwt`` with a ``client_key``; the secret methods with
    a ``client_secret``) among those the server's ``token_endpoint_auth_methods_supported``
    lists (all of them when the server lists none); ``none`` without credentials.

    Raises:
        ConfigurationError: an unknown or unusable configured method, or a server that
            advertises no method the credentials can be used with.
    """
    options: dict[str, Any] = {
        "client_key": client_key,
        "client_key_id": client_key_id,
        "assertion_alg": assertion_alg,
        "provider_name": provider_name,
    }
    if configured:
        cls = CLIENT_AUTH_METHODS.get(configured)
        if cls is None:
            raise ConfigurationError(
                f"Provider '{provider_name}': unsupported token_endpoint_auth_method "
                f"'{configured}' (supported: {', '.join(sorted(CLIENT_AUTH_METHODS))})",
                provider=provider_name,
                key="token_endpoint_auth_method",
            )
        needed = cls.requires
        if (
            needed is not None
            and not {"client_secret": client_secret, "client_key": client_key}[needed]
        ):
            raise ConfigurationError(
                f"Provider '{provider_name}': token_endpoint_auth_method '{configured}' "
                f"needs a {needed}",
                provider=provider_name,
                key=needed,
            )
        return cls(client_id, client_secret, **options)
    method = _automatic_method(client_secret, client_key, server_supported, provider_name)
    return CLIENT_AUTH_METHODS[method](client_id, client_secret, **options)
