"""Provider name to file name encoding shared by the file-backed storages.

Every UTF-8 byte outside ``[a-z0-9_-]`` is written as ``%XX`` (upper-case hex),
including ``%`` itself, ``.``, ``/`` and upper-case letters. The encoding is
therefore injective, never produces ``.``/``..``/path separators, and stays
injective on case-insensitive file systems (``A`` -> ``%41``, ``a`` -> ``a``).
Lone surrogates are encoded with ``surrogatepass`` so that every ``str`` has
exactly one encoding.
"""

from __future__ import annotations

from kstlib.auth.errors import TokenStorageError

__all__ = [
    "MAX_ENCODED_LENGTH",
    "check_provider_name",
    "decode_provider_name",
    "encode_provider_name",
]

#: Longest encoded name accepted, leaving room for suffixes and temp-file decorations
#: under the usual 255-byte file name limit.
MAX_ENCODED_LENGTH = 180

_SAFE_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
_HEX_DIGITS = frozenset("0123456789ABCDEF")


def check_provider_name(provider_name: str) -> str:
    """Return ``provider_name`` if it is a non-empty string, else raise TokenStorageError."""
    if not isinstance(provider_name, str) or not provider_name:
        raise TokenStorageError(
            "A provider name must be a non-empty string (got "
            f"{type(provider_name).__name__} {provider_name!r}).",
            provider=provider_name if isinstance(provider_name, str) else None,
        )
    return provider_name


def encode_provider_name(provider_name: str) -> str:
    """Encode a provider name as a safe, unique file name stem.

    Raises:
        TokenStorageError: If the name is empty or too long to encode.
    """
    raw = check_provider_name(provider_name).encode("utf-8", "surrogatepass")
    encoded = "".join(chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in raw)
    if len(encoded) > MAX_ENCODED_LENGTH:
        raise TokenStorageError(
            f"Provider name is too long to be used as a file name ({len(raw)} bytes in UTF-8; "
            f"its encoded form must not exceed {MAX_ENCODED_LENGTH} characters). "
            "Use a shorter provider name.",
            provider=provider_name,
        )
    return encoded


def decode_provider_name(stem: str) -> str:
    """Invert :func:`encode_provider_name`; raises ValueError for a stem it cannot produce."""
    out = bytearray()
    index = 0
    while index < len(stem):
        char = stem[index]
        if char == "%":
            hex_digits = stem[index + 1 : index + 3]
            if len(hex_digits) != 2 or not set(hex_digits) <= _HEX_DIGITS:
                raise ValueError(f"invalid escape in encoded provider name {stem!r}")
            value = int(hex_digits, 16)
            if value in _SAFE_BYTES:
                raise ValueError(f"needless escape in encoded provider name {stem!r}")
            out.append(value)
            index += 3
        elif ord(char) < 128 and ord(char) in _SAFE_BYTES:
            out.append(ord(char))
            index += 1
        else:
            raise ValueError(f"unexpected character in encoded provider name {stem!r}")
    return out.decode("utf-8", "surrogatepass")
