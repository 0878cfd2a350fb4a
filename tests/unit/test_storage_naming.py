"""Provider name -> file name encoding: injective, safe, reversible."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kstlib.auth.errors import TokenStorageError
from kstlib.auth.models import Token
from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage
from kstlib.auth.token._naming import (
    MAX_ENCODED_LENGTH,
    decode_provider_name,
    encode_provider_name,
)

# The reference stored a.b, a/b and a_b in the same file.
TRICKY_NAMES = [
    "a.b",
    "a/b",
    "a_b",
    "a-b",
    "a%2Eb",
    "a%2eb",
    "A",
    "a",
    "..",
    ".",
    "%",
    " ",
    "\t",
    "a\x00b",
    "é",
    "e\u0301",
    "\u00c9",
    "名前",
    "\udcff",
    "../../etc/passwd",
    "CON",
    "x.json",
    "x.sops",
]
SAFE_STEM = re.compile(r"[a-z0-9_%A-F-]+")
ANY_TEXT = st.text(
    alphabet=st.characters(exclude_categories=()),  # surrogates included
    min_size=1,
    max_size=15,  # 15 x 4 UTF-8 bytes x 3 = MAX_ENCODED_LENGTH
)


def test_tricky_names_get_distinct_safe_stems() -> None:
    stems = [encode_provider_name(name) for name in TRICKY_NAMES]
    assert len(set(stems)) == len(TRICKY_NAMES)
    for stem in stems:
        assert SAFE_STEM.fullmatch(stem), stem
        assert stem not in {".", ".."}
        assert "/" not in stem and "." not in stem


def test_stems_stay_distinct_on_case_insensitive_file_systems() -> None:
    folded = {encode_provider_name(name).lower() for name in TRICKY_NAMES}
    assert len(folded) == len(TRICKY_NAMES)


def test_examples() -> None:
    assert encode_provider_name("corporate") == "corporate"
    assert encode_provider_name("a.b") == "a%2Eb"
    assert encode_provider_name("a/b") == "a%2Fb"
    assert encode_provider_name("A") == "%41"
    assert encode_provider_name("%") == "%25"


@given(ANY_TEXT)
def test_decode_inverts_encode(name: str) -> None:
    stem = encode_provider_name(name)
    assert SAFE_STEM.fullmatch(stem)
    assert decode_provider_name(stem) == name


@given(ANY_TEXT, ANY_TEXT)
def test_encoding_is_injective(first: str, second: str) -> None:
    if first != second:
        assert encode_provider_name(first) != encode_provider_name(second)


@pytest.mark.parametrize("stem", ["%2", "%2e", "%61", "a.b", "A", "%+1", "é"])
def test_decode_rejects_stems_encode_never_produces(stem: str) -> None:
    with pytest.raises(ValueError):
        decode_provider_name(stem)


def test_tricky_names_are_separate_files(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path / "tokens")
    for index, name in enumerate(TRICKY_NAMES):
        storage.save(name, Token(access_token=f"token-{index}"))
    for index, name in enumerate(TRICKY_NAMES):
        token = storage.load(name)
        assert token is not None and token.access_token == f"token-{index}"
    files = [p for p in (tmp_path / "tokens").iterdir() if p.name != ".locks"]
    assert len(files) == len(TRICKY_NAMES)
    assert all(p.parent == tmp_path / "tokens" for p in files)
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("storage_kind", ["memory", "file"])
def test_empty_provider_name_is_rejected(tmp_path: Path, storage_kind: str) -> None:
    storage = MemoryTokenStorage() if storage_kind == "memory" else FileTokenStorage(tmp_path)
    for call in (
        lambda: storage.save("", Token(access_token="x")),
        lambda: storage.load(""),
        lambda: storage.exists(""),
        lambda: storage.delete(""),
    ):
        with pytest.raises(TokenStorageError, match="non-empty string"):
            call()


def test_too_long_name_is_rejected_clearly(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path)
    assert len(encode_provider_name("a" * MAX_ENCODED_LENGTH)) == MAX_ENCODED_LENGTH
    with pytest.raises(TokenStorageError, match="too long") as info:
        storage.save("é" * 40, Token(access_token="x"))
    assert info.value.provider == "é" * 40
