"""Security profiles a provider can name in ``profile``: their client rules, in one place.

``profile: fapi2`` turns on and enforces the client side of the FAPI 2.0 Security Profile
(https://openid.net/specs/fapi-security-profile-2_0.html):

* pushed authorization requests (``par`` true; ``par: false`` is refused);
* PKCE with S256 (``pkce: false`` is refused; kstlib only sends S256);
* ``private_key_jwt`` client authentication: a ``client_key`` is needed, a
  ``client_secret`` and any other ``token_endpoint_auth_method`` are refused;
* signatures with PS256, ES256 or EdDSA only (``client_assertion_alg``, the request
  object, and the ID tokens accepted: ``id_token_signing_alg_values``);
* sender-constrained tokens: DPoP (RFC 9449) is turned on, its key signing with one of
  those algorithms (``dpop_alg``; mTLS-bound tokens, the other FAPI 2.0 choice, are not
  supported);
* an ``issuer`` (client assertions name it as their ``aud``; the ``iss`` authorization
  response parameter of RFC 9207 is required and compared with it).

:func:`fapi2_problems` lists what a configuration lacks (each item names the setting);
:func:`apply_profile` fills in what the profile decides and raises one
:class:`~kstlib.auth.errors.ConfigurationError` naming every problem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from kstlib.auth._config.values import _FieldError, _set

if TYPE_CHECKING:
    from kstlib.auth._config.provider import AuthProviderConfig

__all__ = ["FAPI2_ALGORITHMS", "apply_profile", "fapi2_problems"]

#: The only signing algorithms of FAPI 2.0 (Security Profile 5.4.1).
FAPI2_ALGORITHMS: Final[tuple[str, ...]] = ("PS256", "ES256", "EdDSA")


def fapi2_problems(config: AuthProviderConfig) -> list[str]:
    """What ``config`` lacks to meet FAPI 2.0's client rules (empty: nothing).

    Every item names the setting to change and how.
    """
    problems: list[str] = []
    if config.client_key is None:
        problems.append("client_key is missing (private_key_jwt needs the client's private key)")
    if config.client_secret is not None:
        problems.append("client_secret must not be set (FAPI 2.0 refuses shared secrets)")
    method = config.token_endpoint_auth_method
    if method not in (None, "private_key_jwt"):
        problems.append(f"token_endpoint_auth_method must be private_key_jwt, not {method}")
    if config.par is False:
        problems.append("par must not be false (pushed authorization requests are required)")
    if not config.pkce:
        problems.append("pkce must not be false (PKCE with S256 is required)")
    alg = config.client_assertion_alg
    if alg is not None and alg not in FAPI2_ALGORITHMS:
        problems.append(
            f"client_assertion_alg must be one of {', '.join(FAPI2_ALGORITHMS)}, not {alg}"
        )
    other = [a for a in config.id_token_signing_alg_values or [] if a not in FAPI2_ALGORITHMS]
    if other:
        problems.append(
            f"id_token_signing_alg_values may only list {', '.join(FAPI2_ALGORITHMS)} "
            f"(not {', '.join(other)})"
        )
    if not config.issuer:
        problems.append(
            "issuer is missing (client assertions name it and the authorization response's "
            "iss is checked against it)"
        )
    # Sender-constrained tokens: FAPI 2.0 allows DPoP or mTLS; kstlib does DPoP, which the
    # profile turns on (apply_profile), with one of the profile's algorithms.
    if config.dpop_alg not in FAPI2_ALGORITHMS:
        problems.append(
            f"dpop_alg must be one of {', '.join(FAPI2_ALGORITHMS)}, not {config.dpop_alg}"
        )
    return problems


def apply_profile(config: AuthProviderConfig) -> None:
    """Turn on what ``config.profile`` decides, after refusing a configuration that fails it.

    Raises:
        ConfigurationError: (key ``profile``) naming every missing or refused setting.
    """
    if config.profile != "fapi2":
        return
    problems = fapi2_problems(config)
    if problems:
        raise _FieldError("profile", "fapi2 (FAPI 2.0) cannot be met: " + "; ".join(problems))
    _set(config, "par", True)
    _set(config, "dpop", True)
    _set(config, "token_endpoint_auth_method", "private_key_jwt")
    if config.id_token_signing_alg_values is None:
        _set(config, "id_token_signing_alg_values", list(FAPI2_ALGORITHMS))
