"""The on-disk token document shared by the file-backed storages.

``{"version": 1, "provider": <name>, "token": Token.to_dict()}`` as UTF-8 JSON.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from kstlib.auth.errors import TokenStorageError, TokenValidationError
from kstlib.auth.models import Token

__all__ = ["FORMAT_VERSION", "dump_document", "parse_document", "unusable_file_error"]

FORMAT_VERSION = 1


def dump_document(provider_name: str, token: Token) -> bytes:
    """Serialise ``token`` as the JSON document of ``provider_name``.

    Raises:
        TokenStorageError: If the token holds a value JSON cannot represent.
    """
    document = {"version": FORMAT_VERSION, "provider": provider_name, "token": token.to_dict()}
    try:
        text = json.dumps(document, ensure_ascii=False, allow_nan=False, indent=2, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TokenStorageError(
            f"The token of provider '{provider_name}' cannot be stored: its metadata holds a "
            f"value that is not JSON ({type(exc).__name__}).",
            provider=provider_name,
        ) from exc
    return text.encode("utf-8", "surrogatepass") + b"\n"


def parse_document(provider_name: str, data: bytes, path: Path) -> Token:
    """Validate a stored document and return its token.

    Raises:
        TokenStorageError: Naming ``path`` and what to do, if it is not a valid
            token document for ``provider_name``.
    """
    document = _parse_json_object(provider_name, data, path)
    token_data = _token_section(provider_name, document, path)
    try:
        return Token.from_dict(token_data)
    except TokenValidationError as exc:
        raise unusable_file_error(path, provider_name, exc.message) from exc


def _parse_json_object(provider_name: str, data: bytes, path: Path) -> dict[str, Any]:
    try:
        document = json.loads(data.decode("utf-8", "surrogatepass"))
    except UnicodeDecodeError as exc:
        raise unusable_file_error(path, provider_name, "it is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise unusable_file_error(
            path, provider_name, f"it is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from exc
    if not isinstance(document, dict):
        raise unusable_file_error(path, provider_name, "it is not a JSON object")
    return document


def _token_section(provider_name: str, document: dict[str, Any], path: Path) -> dict[str, Any]:
    version = document.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise TokenStorageError(
            f"Token file {path} was written by a newer kstlib (format version {version}); "
            "upgrade kstlib to read it.",
            path=str(path),
            provider=provider_name,
        )
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise unusable_file_error(path, provider_name, "it has no supported 'version'")
    if document.get("provider") != provider_name:
        raise unusable_file_error(path, provider_name, "it belongs to another provider")
    token_data = document.get("token")
    if not isinstance(token_data, dict):
        raise unusable_file_error(path, provider_name, "it has no 'token' object")
    return token_data


def unusable_file_error(path: Path, provider_name: str, problem: str) -> TokenStorageError:
    """The error for a token file that exists but cannot be used (never deleted for the user)."""
    return TokenStorageError(
        f"Token file {path} for provider '{provider_name}' is unusable: {problem}. "
        f"Delete it, or run 'kstlib auth login {shlex.quote(provider_name)}' to replace it.",
        path=str(path),
        provider=provider_name,
    )
