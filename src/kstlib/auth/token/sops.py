"""SOPS-encrypted token storage, using the ``sops`` command line tool.

Plaintext never touches the disk: the JSON document goes to ``sops`` on
stdin and the ciphertext comes back on stdout, then is written with the same
atomic ``0600`` write as :class:`FileTokenStorage`. Decryption feeds the file
(opened with ``O_NOFOLLOW``) to ``sops`` on stdin and reads stdout. The
command lines (``sops`` 3.9+)::

    sops [--config /dev/null] encrypt --input-type json --output-type json \\
         --filename-override <token file> [--age <r1,r2>]      # stdin -> stdout
    sops --config /dev/null decrypt --input-type json --output-type json \\
         --filename-override <token file>                      # stdin -> stdout

``sops`` runs in the token directory. Recipients come from ``age_recipients``,
else ``SOPS_AGE_RECIPIENTS``; with either, ``--config /dev/null`` stops an
unrelated ``.sops.yaml`` from interfering. With neither, ``sops`` applies the
creation rules of a ``.sops.yaml`` found from the token directory upwards (or
``SOPS_CONFIG``); without one it fails and the error says how to configure
recipients. The decryption key comes from the usual ``sops`` sources
(``SOPS_AGE_KEY_FILE``, ``SOPS_AGE_KEY``, ``~/.config/sops/age/keys.txt``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kstlib._sops import DEFAULT_SOPS_BINARY, DEFAULT_SOPS_TIMEOUT, SopsRunError, run_sops
from kstlib._sops import stderr_excerpt as _stderr_excerpt
from kstlib.auth.errors import ConfigurationError, TokenStorageError
from kstlib.auth.token._directory import DirectoryTokenStorage
from kstlib.auth.token._document import dump_document, parse_document, unusable_file_error
from kstlib.auth.token._settings import StorageSetting, parse_path, parse_string_list, parse_text
from kstlib.auth.token.file import default_token_directory

if TYPE_CHECKING:
    import subprocess

    from kstlib.auth.models import Token

__all__ = ["SOPSTokenStorage"]

#: ``sops`` exit status when no master key could decrypt the data key.
_EXIT_COULD_NOT_RETRIEVE_KEY = 128
_JSON_IO = ("--input-type", "json", "--output-type", "json")
_NO_RECIPIENT_MARKERS = ("no creation rules", "no matching creation rules", "no keys provided")
_SECRET_FIELDS = ("access_token", "refresh_token", "id_token")


class SOPSTokenStorage(DirectoryTokenStorage):
    """SOPS-encrypted token storage (``<encoded provider name>.sops.json`` files).

    Same directory, naming, atomic writes and locks as :class:`FileTokenStorage`.
    A failed encryption leaves the previous token file untouched.

    Args:
        directory: The token directory.
        sops_binary: Name (looked up on ``PATH``) or path of the ``sops`` executable.
        age_recipients: age public keys to encrypt to (a list, or a
            comma-separated string); defaults to ``SOPS_AGE_RECIPIENTS``, then
            to ``.sops.yaml`` creation rules.
        timeout: Seconds after which a ``sops`` run is killed and reported.
    """

    backend_name = "sops"
    file_suffix = ".sops.json"
    storage_settings = (
        StorageSetting(
            "directory",
            parse_path,
            default_factory=default_token_directory,
            path=True,
            doc="the token directory",
        ),
        StorageSetting(
            "age_recipients",
            parse_string_list,
            default=(),
            doc="age public keys the token files are encrypted to",
        ),
        StorageSetting(
            "sops_binary",
            parse_text,
            default=DEFAULT_SOPS_BINARY,
            doc="name (on PATH) or path of the sops executable",
        ),
    )

    def __init__(
        self,
        directory: Path | str,
        *,
        sops_binary: str = DEFAULT_SOPS_BINARY,
        age_recipients: Sequence[str] | None = None,
        timeout: float = DEFAULT_SOPS_TIMEOUT,
    ) -> None:
        """Initialize SOPS storage (creates or tightens the directory)."""
        super().__init__(directory)
        self._sops_binary = sops_binary
        self._age_recipients = _split_recipients(age_recipients)
        self._timeout = timeout

    # -- format ----------------------------------------------------------------------------

    def _encode(self, provider_name: str, token: Token, path: Path) -> bytes:
        recipients = self._age_recipients or _split_recipients(
            os.environ.get("SOPS_AGE_RECIPIENTS")
        )
        args = ["--config", os.devnull] if recipients else []
        args += ["encrypt", *_JSON_IO, "--filename-override", str(path)]
        if recipients:
            args += ["--age", ",".join(recipients)]
        plaintext = dump_document(provider_name, token)
        result = self._run(args, plaintext, provider_name, path, action="encrypting")
        if result.returncode != 0:
            raise self._encryption_error(result, provider_name, path)
        _check_encrypted(result.stdout, provider_name, path)
        return result.stdout

    def _decode(self, provider_name: str, data: bytes, path: Path) -> Token:
        _check_sops_file(data, provider_name, path)
        args = ["--config", os.devnull, "decrypt", *_JSON_IO, "--filename-override", str(path)]
        result = self._run(args, data, provider_name, path, action="decrypting")
        if result.returncode != 0:
            raise _decryption_error(result, provider_name, path)
        return parse_document(provider_name, result.stdout, path)

    # -- running sops ----------------------------------------------------------------------

    def _run(
        self, args: list[str], stdin: bytes, provider_name: str, path: Path, *, action: str
    ) -> subprocess.CompletedProcess[bytes]:
        try:
            return run_sops(
                args,
                binary=self._sops_binary,
                stdin=stdin,
                cwd=self.directory,
                timeout=self._timeout,
            )
        except SopsRunError as exc:
            raise TokenStorageError(
                f"{exc} (while {action} {path}).", path=str(path), provider=provider_name
            ) from None

    def _encryption_error(
        self, result: subprocess.CompletedProcess[bytes], provider_name: str, path: Path
    ) -> TokenStorageError:
        stderr = _stderr_excerpt(result.stderr)
        if any(marker in stderr.lower() for marker in _NO_RECIPIENT_MARKERS):
            return TokenStorageError(
                f"No SOPS recipients for the token of provider '{provider_name}' ({path}): set "
                "auth.storage.sops.age_recipients in kstlib.conf.yml, export "
                "SOPS_AGE_RECIPIENTS, or add a .sops.yaml creation rule matching '*.sops.json' "
                f"in {self.directory} or a parent directory. sops said: {stderr}",
                path=str(path),
                provider=provider_name,
            )
        return TokenStorageError(
            f"sops could not encrypt the token of provider '{provider_name}' for {path} "
            f"(exit {result.returncode}): {stderr}. The previous token file, if any, is unchanged.",
            path=str(path),
            provider=provider_name,
        )


def _split_recipients(value: Sequence[str] | None) -> tuple[str, ...]:
    """Recipients from a list or a comma-separated string, blanks dropped."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise ConfigurationError(
            "age recipients must be strings (age1... public keys).",
            key="auth.storage.sops.age_recipients",
        )
    return tuple(part.strip() for item in items for part in item.split(",") if part.strip())


def _load_json_object(data: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _check_sops_file(data: bytes, provider_name: str, path: Path) -> None:
    """Refuse a file that is not a SOPS JSON document before handing it to sops."""
    document = _load_json_object(data)
    if document is None or not isinstance(document.get("sops"), dict):
        raise unusable_file_error(path, provider_name, "it is not a SOPS-encrypted JSON file")


def _check_encrypted(ciphertext: bytes, provider_name: str, path: Path) -> None:
    """Refuse to write sops output in which a token secret is still in clear text."""
    document = _load_json_object(ciphertext)
    token = document.get("token") if document is not None else None
    encrypted = (
        document is not None
        and isinstance(document.get("sops"), dict)
        and isinstance(token, dict)
        and all(
            token.get(field) is None or str(token.get(field)).startswith("ENC[")
            for field in _SECRET_FIELDS
        )
    )
    if not encrypted:
        raise TokenStorageError(
            f"sops did not encrypt the token of provider '{provider_name}' ({path}); nothing "
            "was written. Check encrypted_regex / unencrypted_suffix settings in .sops.yaml.",
            path=str(path),
            provider=provider_name,
        )


def _decryption_error(
    result: subprocess.CompletedProcess[bytes], provider_name: str, path: Path
) -> TokenStorageError:
    stderr = _stderr_excerpt(result.stderr)
    if result.returncode == _EXIT_COULD_NOT_RETRIEVE_KEY:
        return TokenStorageError(
            f"Cannot decrypt token file {path}: no available age key matches its recipients. "
            "Set SOPS_AGE_KEY_FILE (or SOPS_AGE_KEY) to the age identity it was encrypted for, "
            f"or delete the file and log in again. sops said: {stderr}",
            path=str(path),
            provider=provider_name,
        )
    return unusable_file_error(
        path, provider_name, f"sops could not decrypt it (exit {result.returncode}: {stderr})"
    )
