"""In-memory token storage (one process, lost at exit)."""

from __future__ import annotations

import copy
import dataclasses
import threading

from kstlib.auth.models import Token
from kstlib.auth.token._naming import check_provider_name
from kstlib.auth.token.base import AbstractTokenStorage

__all__ = ["MemoryTokenStorage"]


def _validated_copy(token: Token) -> Token:
    """An independent copy that went through the same checks as a token read from a file."""
    validated = Token.from_dict(token.to_dict())  # copies one level: nested metadata below
    if validated.metadata:
        validated.metadata = copy.deepcopy(validated.metadata)
    return validated


def _copy(token: Token) -> Token:
    """An independent copy of a stored (already validated) token: its mutable parts are copied."""
    metadata = copy.deepcopy(token.metadata) if token.metadata else {}
    return dataclasses.replace(token, scope=list(token.scope), metadata=metadata)


class MemoryTokenStorage(AbstractTokenStorage):
    """In-memory token storage (for development/testing).

    Tokens are kept in a dictionary and lost when the process exits. Tokens
    are copied in and out, so mutating a saved or loaded token never changes
    what is stored. The lock is process-local. The async helpers run inline
    (no worker thread): every operation is a dictionary access.
    """

    backend_name = "memory"
    storage_settings = ()

    def __init__(self) -> None:
        """Initialize empty storage."""
        self._tokens: dict[str, Token] = {}
        self._guard = threading.Lock()

    def save(self, provider_name: str, token: Token) -> None:
        """Store a copy of the token."""
        stored = _validated_copy(token)
        with self._guard:
            self._tokens[check_provider_name(provider_name)] = stored

    def load(self, provider_name: str) -> Token | None:
        """Return a copy of the stored token, or None."""
        with self._guard:
            token = self._tokens.get(check_provider_name(provider_name))
        return None if token is None else _copy(token)

    def delete(self, provider_name: str) -> bool:
        """Remove the token; True if there was one."""
        with self._guard:
            return self._tokens.pop(check_provider_name(provider_name), None) is not None

    def exists(self, provider_name: str) -> bool:
        """True if a token is stored for the provider."""
        with self._guard:
            return check_provider_name(provider_name) in self._tokens

    def clear_all(self) -> None:
        """Remove every token."""
        with self._guard:
            self._tokens.clear()

    async def aload(self, provider_name: str) -> Token | None:
        """Same as :meth:`load` (no thread hop)."""
        return self.load(provider_name)

    async def asave(self, provider_name: str, token: Token) -> None:
        """Same as :meth:`save` (no thread hop)."""
        self.save(provider_name, token)

    async def adelete(self, provider_name: str) -> bool:
        """Same as :meth:`delete` (no thread hop)."""
        return self.delete(provider_name)
