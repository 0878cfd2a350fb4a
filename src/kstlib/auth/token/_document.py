"""The on-disk token document shared by the file-backed storages.

``{"version": 1, "provider": <name>, "token": Token.to_dict()}`` as UTF-8 JSON.

Reading one (:func:`parse_stored`, the command line's fast path) loads neither
:mod:`json` (its C scanner is driven by :mod:`kstlib._fastjson`) nor the ``Token``
dataclass; :func:`parse_document` builds a :class:`~kstlib.auth.models.Token` from the
same checked document.
"""

from __future__ import annotations

from kstlib import _fastjson
from kstlib.auth._tokendata import StoredToken
from kstlib.auth.errors import TokenStorageError, TokenValidationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from kstlib.auth.models import Token

__all__ = [
    "FORMAT_VERSION",
    "dump_document",
    "parse_document",
    "parse_stored",
    "unusable_file_error",
]

FORMAT_VERSION = 1


def dump_document(provider_name: str, token: Token) -> bytes:
    """Serialise ``token`` as the JSON document of ``provider_name``.

    Raises:
        TokenStorageError: If the token holds a value JSON cannot represent.
    """
    import json

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


def parse_document(provider_name: str, data: bytes, path: Path | str) -> Token:
    """Validate a stored document and return its token.

    Raises:
        TokenStorageError: Naming ``path`` and what to do, if it is not a valid
            token document for ``provider_name``.
    """
    from kstlib.auth.models import Token

    document = _parse_json_object(provider_name, data, path)
    token_data = _token_section(provider_name, document, path)
    try:
        return Token.from_dict(token_data)
    except TokenValidationError as exc:
        raise unusable_file_error(path, provider_name, exc.message) from exc


def parse_stored(provider_name: str, data: bytes, path: Path | str) -> StoredToken:
    """:func:`parse_document`'s checks, giving a :class:`~kstlib.auth._tokendata.StoredToken`
    (the fields, validated alike, without the ``Token`` dataclass; a DPoP key is not loaded).

    Raises:
        TokenStorageError: as :func:`parse_document`.
    """
    document = _parse_json_object(provider_name, data, path)
    token_data = _token_section(provider_name, document, path)
    try:
        return StoredToken(token_data)
    except TokenValidationError as exc:
        raise unusable_file_error(path, provider_name, exc.message) from exc


def _parse_json_object(provider_name: str, data: bytes, path: Path | str) -> dict[str, Any]:
    try:
        document = _fastjson.loads(data.decode("utf-8", "surrogatepass"))
    except UnicodeDecodeError as exc:
        raise unusable_file_error(path, provider_name, "it is not UTF-8 text") from exc
    except ValueError as exc:
        import json  # the error is json.loads's own (see kstlib._fastjson)

        if not isinstance(exc, json.JSONDecodeError):
            raise
        raise unusable_file_error(
            path, provider_name, f"it is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from exc
    if not isinstance(document, dict):
        raise unusable_file_error(path, provider_name, "it is not a JSON object")
    return document


def _token_section(
    provider_name: str, document: dict[str, Any], path: Path | str
) -> dict[str, Any]:
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


def unusable_file_error(path: Path | str, provider_name: str, problem: str) -> TokenStorageError:
    """The error for a token file that exists but cannot be used (never deleted for the user)."""
    import shlex

    return TokenStorageError(
        f"Token file {path} for provider '{provider_name}' is unusable: {problem}. "
        f"Delete it, or run 'kstlib auth login {shlex.quote(provider_name)}' to replace it.",
        path=str(path),
        provider=provider_name,
    )
