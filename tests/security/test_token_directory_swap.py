"""The token directory is checked on every read, and its ancestors at construction (item 13).

A long-running process keeps a storage object for hours. If another user replaces the
token directory under it (or puts a token file of theirs in it), loading must refuse, not
hand a forged token to the application. Another user's uid is real (``chown``) when the
tests run as root; otherwise the current user is made to look like another one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kstlib.auth.errors import TokenStorageError
from kstlib.auth.models import Token
from kstlib.auth.token import FileTokenStorage, SOPSTokenStorage

OTHER_UID = 4242


def _as_other_user(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` (and what is inside it) belong to another user than the current one."""
    if os.geteuid() == 0:
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(Path(root) / name, OTHER_UID, OTHER_UID)
        os.chown(path, OTHER_UID, OTHER_UID)
    else:
        uid = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: uid + OTHER_UID)


def _forged(directory: Path) -> None:
    """Another user's directory, 0700, with a valid-looking token for 'corp'."""
    other = FileTokenStorage(directory)
    other.save("corp", Token(access_token="forged-by-someone-else"))


def test_a_directory_swapped_after_construction_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = tmp_path / "tokens"
    storage = FileTokenStorage(tokens)
    storage.save("corp", Token(access_token="mine"))
    tokens.rename(tmp_path / "moved-away")
    _forged(tokens)
    _as_other_user(tokens, monkeypatch)
    with pytest.raises(TokenStorageError, match="owned by uid") as info:
        storage.load("corp")
    assert "forged" not in str(info.value)


def test_a_token_file_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FileTokenStorage(tmp_path / "tokens")
    storage.save("corp", Token(access_token="planted"))
    path = storage.token_path("corp")
    _as_other_user(path, monkeypatch)
    with pytest.raises(TokenStorageError, match="owned by uid"):
        storage.load("corp")


def test_a_loosened_directory_mode_is_tightened_on_read(tmp_path: Path) -> None:
    storage = FileTokenStorage(tmp_path / "tokens")
    storage.save("corp", Token(access_token="mine"))
    storage.directory.chmod(0o755)
    assert storage.load("corp") is not None
    assert storage.directory.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("storage_class", [FileTokenStorage, SOPSTokenStorage])
def test_a_parent_writable_by_others_is_refused_at_construction(
    tmp_path: Path, storage_class: type[FileTokenStorage]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anybody may rename our directory away and put theirs instead
    with pytest.raises(TokenStorageError, match="writable by other users") as info:
        storage_class(shared / "tokens")
    assert str(shared) in str(info.value)


def test_a_sticky_world_writable_parent_is_accepted(tmp_path: Path) -> None:
    shared = tmp_path / "sticky"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: others cannot rename what is ours
    FileTokenStorage(shared / "tokens").save("corp", Token(access_token="mine"))


def test_a_parent_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    _as_other_user(theirs, monkeypatch)
    with pytest.raises(TokenStorageError, match="owned by uid"):
        FileTokenStorage(theirs / "tokens")
