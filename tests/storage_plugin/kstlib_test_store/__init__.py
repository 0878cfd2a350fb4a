"""A third-party token storage, shipped the way a plugin distribution ships one.

``kstlib_test_store-1.0.dist-info/entry_points.txt`` registers it in the
``kstlib.auth.storage`` entry point group as ``teststore``; the tests put this directory
on ``sys.path`` of a subprocess, which makes it an installed distribution there.
"""

from __future__ import annotations

from pathlib import Path

from kstlib.auth.models import Token
from kstlib.auth.token import AbstractTokenStorage, StorageSetting, parse_number, parse_path

IMPORTED = True


class TestStore(AbstractTokenStorage):
    """Tokens in a dict, labelled with the settings it was built with."""

    __test__ = False  # not a pytest test class
    backend_name = "teststore"
    storage_settings = (
        StorageSetting("label", default="plugin", doc="a name shown by describe()"),
        StorageSetting("root", parse_path, path=True, doc="a path, relative to its file"),
        StorageSetting("limit", parse_number, default=10.0, doc="a number"),
    )

    def __init__(self, *, label: str, root: Path | None = None, limit: float = 10.0) -> None:
        self.label, self.root, self.limit = label, root, limit
        self.tokens: dict[str, Token] = {}

    def describe(self) -> str:
        return f"teststore:{self.label}:{self.root}:{self.limit:g}"

    def save(self, provider_name: str, token: Token) -> None:
        self.tokens[provider_name] = token

    def load(self, provider_name: str) -> Token | None:
        return self.tokens.get(provider_name)

    def delete(self, provider_name: str) -> bool:
        return self.tokens.pop(provider_name, None) is not None

    def exists(self, provider_name: str) -> bool:
        return provider_name in self.tokens
