"""kstlib._fastjson gives exactly json's results (values, text and errors), without ``json``."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kstlib import _fastjson
from kstlib.cli._fast import _b64url_decode
from tests.hypothesis_support import examples

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(alphabet=st.characters(codec="utf-8"))
    | st.text()  # lone surrogates and all
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_DOCUMENTS, st.sampled_from([None, 0, 2, 4]))
@settings(max_examples=examples(100))
def test_dumps_is_json_dumps(value: object, indent: int | None) -> None:
    assert _fastjson.dumps(value, indent=indent) == json.dumps(value, indent=indent)


@given(_DOCUMENTS)
@settings(max_examples=examples(100))
def test_loads_of_valid_json_is_json_loads(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, indent=2, ensure_ascii=False)):
        for document in (text, f" \n\t{text}\r\n ", text.encode("utf-8", "surrogatepass")):
            assert repr(_fastjson.loads(document)) == repr(json.loads(document))


def _outcome(function: object, document: str | bytes) -> tuple[str, str]:
    try:
        return "value", repr(function(document))  # type: ignore[operator]
    except (ValueError, RecursionError, TypeError) as exc:
        return type(exc).__name__, str(exc)


@given(st.text(alphabet='{}[]",:0123456789.eE+- \t\nabcfnlrstu\\\ufeff\x00') | st.text())
@settings(max_examples=examples(500))
def test_loads_of_any_text_is_json_loads_value_or_error(text: str) -> None:
    assert _outcome(_fastjson.loads, text) == _outcome(json.loads, text)


@pytest.mark.parametrize(
    "document",
    [
        b'\xef\xbb\xbf{"a": 1}',  # UTF-8 BOM
        '{"a": 1}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-32-le"),
        b'{"a": "\xff"}',  # not UTF-8
        "\ufeff[1]",  # a BOM in text: json refuses it
        "[1] [2]",  # extra data
        "",
        "NaN",
        "[-Infinity, 1e400, 12345678901234567890]",
        "[" * 100_000,  # json's recursion limit
    ],
)
def test_the_unusual_cases_are_json_loads(document: str | bytes) -> None:
    fast, reference = _outcome(_fastjson.loads, document), _outcome(json.loads, document)
    if fast[0] == "value" and "nan" in fast[1]:
        assert math.isnan(_fastjson.loads(document))
    else:
        assert fast == reference


def test_unsupported_values_are_json_dumps_own() -> None:
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        _fastjson.dumps(circular)
    assert _fastjson.dumps({1: True, "x": [1.5, math.inf]}) == json.dumps(
        {1: True, "x": [1.5, math.inf]}
    )
    with pytest.raises(TypeError):
        _fastjson.dumps({"when": object()})


@given(st.text(alphabet="ABCxyz019-_+/=.é", max_size=40))
@settings(max_examples=examples(300))
def test_b64url_decode_is_base64s(part: str) -> None:
    padded = part + "=" * (-len(part) % 4)
    try:
        expected: bytes | str = base64.urlsafe_b64decode(padded)
    except ValueError:
        expected = "ValueError"
    try:
        got: bytes | str = _b64url_decode(part)
    except ValueError:
        got = "ValueError"
    assert got == expected


def test_importing_it_loads_neither_json_nor_re() -> None:
    code = (
        "import sys; from kstlib import _fastjson; _fastjson.loads('{\"a\": [1, 2.5, null]}'); "
        "_fastjson.dumps({'a': ['b', 1, None]}, indent=2); "
        "print(sorted(m for m in ('json', 're', 'typing') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
