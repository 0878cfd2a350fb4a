"""PKCE (RFC 7636) and the random values of an authorization request."""

from __future__ import annotations

import base64
import hashlib
import secrets

__all__ = ["code_challenge", "new_code_verifier", "new_nonce", "new_state"]


def new_code_verifier() -> str:
    """A 86-character verifier from ``secrets`` (512 bits; RFC 7636 allows 43-128)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of ``verifier`` (the only method this library sends)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    """An opaque state value with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def new_nonce() -> str:
    """An OIDC nonce with 256 bits of entropy."""
    return secrets.token_urlsafe(32)
