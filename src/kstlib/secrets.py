"""Secret references in configuration values.

A string value may name where its secret lives instead of holding it:

- ``sops://path/file.yaml#dotted.key``: decrypted with the ``sops`` binary
  (``sops --decrypt``; the binary named by ``auth.storage.sops.sops_binary`` of the
  trusted configuration, else ``sops`` on ``PATH``), parsed as YAML/JSON, then walked
  key by key (a number indexes a list);
- ``env://VAR``: an environment variable;
- ``file://path``: a regular file's content (at most 64 KiB), minus one trailing newline;
  a device, a FIFO or a directory is refused without being read.

Relative paths are relative to the directory of the configuration file that holds the
reference (the current directory when there is none). A reference that cannot be resolved
raises :class:`~kstlib.auth.errors.ConfigurationError` naming the reference, the key, the
file and why; it never resolves to None or to an empty string. The reference itself is not a
secret and is quoted in errors; the value never is. Decrypted documents are kept only in a
per-call cache (``SopsCache``), in memory, never on disk.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from kstlib._errors import ConfigurationError
from kstlib._sops import DEFAULT_SOPS_BINARY, SopsRunError, run_sops, stderr_excerpt

__all__ = [
    "SECRET_SCHEMES",
    "SopsCache",
    "is_secret_reference",
    "resolve_secret",
    "resolve_secrets",
    "sops_decrypt",
]

SECRET_SCHEMES = ("sops", "env", "file")
_REFERENCE_RE = re.compile(r"^(sops|env|file)://", re.IGNORECASE)
#: Largest secret read through ``file://``: a key or a password, never a disk image.
MAX_SECRET_FILE_BYTES = 64 * 1024

#: Decrypted SOPS documents by absolute path, shared by the references of one resolution.
SopsCache = dict[Path, Any]


class _SopsFailure(Exception):
    """``sops`` could not decrypt a file; the message is safe to show."""


def is_secret_reference(value: object) -> bool:
    """True when ``value`` is a string starting with ``sops://``, ``env://`` or ``file://``."""
    return isinstance(value, str) and _REFERENCE_RE.match(value) is not None


@dataclass(frozen=True)
class _Reference:
    """One reference being resolved, with everything an error message needs."""

    text: str
    target: str
    what: str
    base_dir: Path | None
    source: str | None
    provider: str | None
    sops_binary: str = DEFAULT_SOPS_BINARY

    def fail(self, reason: str) -> NoReturn:
        prefix = f"{self.source}: " if self.source else ""
        raise ConfigurationError(
            f"{prefix}{self.what}: cannot resolve secret reference {self.text!r}: {reason}.",
            file=self.source,
            provider=self.provider,
            key=self.what,
        )

    def path(self, text: str) -> Path:
        if not text:
            self.fail("no file path after the scheme")
        path = Path(text).expanduser()
        return path if path.is_absolute() else (self.base_dir or Path.cwd()) / path


def resolve_secret(
    value: str,
    *,
    base_dir: Path | None,
    what: str,
    source: str | None = None,
    provider: str | None = None,
    cache: SopsCache | None = None,
    sops_binary: str = DEFAULT_SOPS_BINARY,
) -> str:
    """Return the secret that ``value`` refers to, or ``value`` itself when it is no reference.

    Args:
        value: A configuration string.
        base_dir: Directory that relative paths are relative to (None: the current directory).
        what: The key holding the value, for error messages (``auth.providers.x.client_secret``).
        source: The configuration file holding the value, for error messages.
        provider: The provider the value belongs to, for error messages.
        cache: Decrypted SOPS documents shared between the references of one resolution.
        sops_binary: The ``sops`` executable (name on ``PATH`` or path), from trusted
            configuration only (``auth.storage.sops.sops_binary``).

    Raises:
        ConfigurationError: The reference cannot be resolved or resolves to an empty value.
    """
    match = _REFERENCE_RE.match(value)
    if match is None:
        return value
    ref = _Reference(value, value[match.end() :], what, base_dir, source, provider, sops_binary)
    scheme = match.group(1).lower()
    if scheme == "env":
        return _from_env(ref)
    if scheme == "file":
        return _from_file(ref)
    return _from_sops(ref, {} if cache is None else cache)


def resolve_secrets(
    data: Mapping[str, Any],
    *,
    base_dir: Path | None,
    what: str,
    source: str | None = None,
    provider: str | None = None,
    cache: SopsCache | None = None,
    sops_binary: str = DEFAULT_SOPS_BINARY,
) -> dict[str, Any]:
    """A copy of ``data`` with every reference in its strings (nested too) resolved.

    ``what`` is the dotted key of ``data`` itself; nested keys are appended to it in errors.
    ``sops_binary`` is that of :func:`resolve_secret`.
    """
    shared: SopsCache = {} if cache is None else cache

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, str):
            return resolve_secret(
                value,
                base_dir=base_dir,
                what=where,
                source=source,
                provider=provider,
                cache=shared,
                sops_binary=sops_binary,
            )
        if isinstance(value, Mapping):
            return {
                key: walk(item, f"{where}.{key}" if where else str(key))
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [walk(item, f"{where}[{index}]") for index, item in enumerate(value)]
        return value

    resolved: dict[str, Any] = walk(data, what)
    return resolved


def _from_env(ref: _Reference) -> str:
    name = ref.target
    if not name:
        ref.fail("no variable name after 'env://'")
    value = os.environ.get(name)
    if value is None:
        ref.fail(f"environment variable {name} is not set")
    if not value:
        ref.fail(f"environment variable {name} is empty")
    return value


def _from_file(ref: _Reference) -> str:
    path = ref.path(ref.target)
    raw = _read_secret_file(ref, path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        ref.fail(f"file {path} is not UTF-8 text")
    value = text.removesuffix("\n").removesuffix("\r") if text.endswith("\n") else text
    if not value:
        ref.fail(f"file {path} is empty")
    return value


def _read_secret_file(ref: _Reference, path: Path) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_SECRET_FILE_BYTES`.

    Opened non-blocking (a FIFO cannot hang the open), then checked with ``fstat`` on the
    open descriptor (no race between the check and the read): only regular files are read,
    so ``/dev/zero``, ``/dev/stdin``, sockets and FIFOs are refused.
    """
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        ref.fail(f"file {path} not found")
    except IsADirectoryError:
        ref.fail(f"{path} is a directory, not a file")
    except OSError as exc:
        ref.fail(f"cannot read {path} ({exc.strerror or type(exc).__name__})")
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            ref.fail(f"{path} is a directory, not a file")
        if not stat.S_ISREG(status.st_mode):
            ref.fail(f"{path} is not a regular file (a device, FIFO or socket is never read)")
        if status.st_size > MAX_SECRET_FILE_BYTES:
            ref.fail(f"file {path} is too large for a secret (limit {MAX_SECRET_FILE_BYTES} bytes)")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_SECRET_FILE_BYTES:
            chunk = os.read(fd, MAX_SECRET_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        ref.fail(f"cannot read {path} ({exc.strerror or type(exc).__name__})")
    finally:
        os.close(fd)
    if size > MAX_SECRET_FILE_BYTES:
        ref.fail(f"file {path} is too large for a secret (limit {MAX_SECRET_FILE_BYTES} bytes)")
    return b"".join(chunks)


def _from_sops(ref: _Reference, cache: SopsCache) -> str:
    file_part, hash_sign, key = ref.target.rpartition("#")
    if not hash_sign or not key:
        ref.fail("it names no key: expected sops://file.yaml#dotted.key")
    path = ref.path(file_part).absolute()
    if path not in cache:
        cache[path] = _decrypt_document(ref, path)
    return _leaf(ref, _walk(ref, cache[path], key, path))


def _decrypt_document(ref: _Reference, path: Path) -> Any:
    if not path.is_file():
        ref.fail(f"file {path} not found")
    try:
        text = _decrypt_file(path, ref.sops_binary)
    except _SopsFailure as exc:
        ref.fail(str(exc))
    try:
        document = json.loads(text) if path.suffix == ".json" else _safe_load(text)
    except ValueError:
        ref.fail(f"the decrypted content of {path} is not valid YAML/JSON")
    if not isinstance(document, Mapping):
        ref.fail(f"the decrypted content of {path} is not a mapping")
    return document


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` raising ValueError (without quoting the content) on any failure."""
    import yaml

    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise ValueError(type(exc).__name__) from None


def _walk(ref: _Reference, document: Any, key: str, path: Path) -> Any:
    node = document
    walked: list[str] = []
    for part in key.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            under = f" under '{'.'.join(walked)}'" if walked else ""
            ref.fail(f"key '{key}' not found in {path} (no '{part}'{under})")
        walked.append(part)
    return node


def _leaf(ref: _Reference, value: Any) -> str:
    """The walked value as a string; containers, booleans and empty values are refused."""
    if isinstance(value, bool):
        ref.fail("the key holds a boolean, not a secret")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, Mapping | list):
        ref.fail(
            f"the key holds a {'mapping' if isinstance(value, Mapping) else 'list'}, not a value"
        )
    if not isinstance(value, str) or not value:
        ref.fail("the key holds an empty value")
    return value


def sops_decrypt(
    path: Path,
    *,
    what: str,
    source: str | None = None,
    provider: str | None = None,
    sops_binary: str = DEFAULT_SOPS_BINARY,
) -> str:
    """Decrypt ``path`` with ``sops --decrypt`` and return the plaintext.

    Raises:
        ConfigurationError: ``sops`` is missing, fails (its stderr is redacted and
            truncated in the message), or times out.
    """
    try:
        return _decrypt_file(path, sops_binary)
    except _SopsFailure as exc:
        prefix = f"{source}: " if source else ""
        raise ConfigurationError(
            f"{prefix}cannot decrypt {what} {path}: {exc}.",
            file=source or str(path),
            provider=provider,
        ) from None


def _decrypt_file(path: Path, sops_binary: str) -> str:
    try:
        result = run_sops(["--decrypt", str(path.absolute())], binary=sops_binary)
    except SopsRunError as exc:
        raise _SopsFailure(str(exc)) from None
    if result.returncode != 0:
        raise _SopsFailure(
            f"sops failed (exit {result.returncode}): {stderr_excerpt(result.stderr)}"
        )
    try:
        return result.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise _SopsFailure("sops output is not UTF-8 text") from None
