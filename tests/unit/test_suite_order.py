"""The suite's own scheduling aid (tests/conftest.py): the longest tests are collected first."""

from __future__ import annotations

from pathlib import Path

from tests import conftest

ROOT = Path(__file__).resolve().parents[2]


def test_every_file_named_longest_first_exists() -> None:
    """A renamed or deleted file would silently drop out of the list."""
    missing = [path for path in conftest._LONGEST_FIRST if not (ROOT / path).is_file()]
    assert not missing


def test_the_longest_files_come_first_and_the_rest_keep_their_order() -> None:
    items = [f"tests/unit/test_{name}.py::test_x" for name in ("a", "b", "c")]
    items.insert(1, f"{conftest._LONGEST_FIRST[1]}::test_y")
    items.insert(3, f"{conftest._LONGEST_FIRST[0]}::test_z")

    class Item:
        def __init__(self, nodeid: str) -> None:
            self.nodeid = nodeid

    collected = [Item(nodeid) for nodeid in items]
    conftest.pytest_collection_modifyitems(collected)  # type: ignore[arg-type]
    assert [item.nodeid for item in collected] == [
        f"{conftest._LONGEST_FIRST[0]}::test_z",
        f"{conftest._LONGEST_FIRST[1]}::test_y",
        "tests/unit/test_a.py::test_x",
        "tests/unit/test_b.py::test_x",
        "tests/unit/test_c.py::test_x",
    ]
