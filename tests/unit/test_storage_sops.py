"""SOPSTokenStorage with the real ``sops`` binary and real age keys."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kstlib.auth.errors import ConfigurationError, TokenStorageError
from kstlib.auth.models import Token
from kstlib.auth.token import SOPSTokenStorage, get_token_storage
from tests.sops_support import AgeIdentity, make_age_identity, sops_path

PROVIDER = "corp.example"
SECRETS = ("access-secret-value", "refresh-secret-value", "id-secret-value")


def make_token(n: int = 1) -> Token:
    return Token(
        access_token=f"{SECRETS[0]}-{n}",
        refresh_token=f"{SECRETS[1]}-{n}",
        id_token=f"{SECRETS[2]}-{n}",
        expires_at=datetime(2031, 1, 1, tzinfo=UTC),
        issued_at=datetime(2030, 12, 31, tzinfo=UTC),
        scope=["openid"],
        metadata={"n": n, "ratio": 0.5, "flag": True, "none": None, "list": [], "obj": {}},
    )


def all_bytes_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture
def storage(tmp_path: Path, age_identity: AgeIdentity) -> SOPSTokenStorage:
    return SOPSTokenStorage(tmp_path / "tokens", age_recipients=[age_identity.recipient])


@pytest.fixture
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR for sops (and anything else) during the test, to prove it stays empty."""
    directory = tmp_path / "system-tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    return directory


def test_real_sops_binary_is_used() -> None:
    assert os.access(sops_path(), os.X_OK)


def test_round_trip(storage: SOPSTokenStorage) -> None:
    assert storage.load(PROVIDER) is None
    storage.save(PROVIDER, make_token(1))
    assert storage.exists(PROVIDER)
    assert storage.load(PROVIDER) == make_token(1)
    storage.save(PROVIDER, make_token(2))
    assert storage.load(PROVIDER) == make_token(2)
    assert storage.delete(PROVIDER) is True
    assert storage.load(PROVIDER) is None


def test_ciphertext_on_disk_holds_no_secret(storage: SOPSTokenStorage, tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        storage.save(PROVIDER, make_token())
    finally:
        os.umask(previous)
    path = storage.token_path(PROVIDER)
    assert path.name == "corp%2Eexample.sops.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["token"]["access_token"].startswith("ENC[AES256_GCM,")
    assert "age" in document["sops"]
    everything = all_bytes_under(tmp_path)
    for secret in SECRETS:
        assert secret.encode() not in everything


def test_no_plaintext_file_anywhere(
    storage: SOPSTokenStorage, tmp_path: Path, private_tmpdir: Path
) -> None:
    storage.save(PROVIDER, make_token())
    assert storage.load(PROVIDER) == make_token()
    assert list(private_tmpdir.iterdir()) == []
    entries = sorted(p.name for p in storage.directory.iterdir())
    assert entries == ["corp%2Eexample.sops.json"]
    everything = all_bytes_under(tmp_path)
    for secret in SECRETS:
        assert secret.encode() not in everything


def test_recipients_from_environment(
    tmp_path: Path, age_identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOPS_AGE_RECIPIENTS", age_identity.recipient)
    storage = SOPSTokenStorage(tmp_path / "tokens")
    storage.save(PROVIDER, make_token())
    assert storage.load(PROVIDER) == make_token()


def test_recipients_as_comma_separated_string(tmp_path: Path, age_identity: AgeIdentity) -> None:
    other = make_age_identity(tmp_path / "other")
    storage = SOPSTokenStorage(
        tmp_path / "tokens",
        age_recipients=f"{age_identity.recipient}, {other.recipient}",
    )
    storage.save(PROVIDER, make_token())
    recipients = {
        r["recipient"] for r in json.loads(storage.token_path(PROVIDER).read_text())["sops"]["age"]
    }
    assert recipients == {age_identity.recipient, other.recipient}


def test_recipients_from_sops_yaml_in_token_directory(
    tmp_path: Path, age_identity: AgeIdentity
) -> None:
    directory = tmp_path / "tokens"
    directory.mkdir(mode=0o700)
    (directory / ".sops.yaml").write_text(
        f"creation_rules:\n  - path_regex: \\.sops\\.json$\n    age: {age_identity.recipient}\n"
    )
    storage = SOPSTokenStorage(directory)
    storage.save(PROVIDER, make_token())
    assert storage.load(PROVIDER) == make_token()


def test_unrelated_sops_yaml_in_cwd_does_not_break_explicit_recipients(
    storage: SOPSTokenStorage, tmp_path: Path
) -> None:
    (tmp_path / ".sops.yaml").write_text("creation_rules:\n  - path_regex: nothing-matches$\n")
    storage.save(PROVIDER, make_token())
    assert storage.load(PROVIDER) == make_token()


def test_missing_recipients_error_explains_configuration(
    tmp_path: Path, age_identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SOPS_AGE_RECIPIENTS", raising=False)
    storage = SOPSTokenStorage(tmp_path / "tokens")
    with pytest.raises(TokenStorageError) as info:
        storage.save(PROVIDER, make_token())
    message = str(info.value)
    assert "auth.storage.sops.age_recipients" in message
    assert "SOPS_AGE_RECIPIENTS" in message and ".sops.yaml" in message
    assert not storage.exists(PROVIDER)


def test_failed_encryption_keeps_previous_token(storage: SOPSTokenStorage, tmp_path: Path) -> None:
    storage.save(PROVIDER, make_token(1))
    before = storage.token_path(PROVIDER).read_bytes()
    broken = SOPSTokenStorage(storage.directory, age_recipients=["age1invalid"])
    with pytest.raises(TokenStorageError, match="could not encrypt") as info:
        broken.save(PROVIDER, make_token(2))
    assert "unchanged" in str(info.value)
    assert storage.token_path(PROVIDER).read_bytes() == before
    assert storage.load(PROVIDER) == make_token(1)
    assert sorted(p.name for p in storage.directory.iterdir()) == ["corp%2Eexample.sops.json"]


def test_wrong_key_error_names_file_and_key_variable(
    storage: SOPSTokenStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.save(PROVIDER, make_token())
    stranger = make_age_identity(tmp_path / "stranger")
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(stranger.key_file))
    with pytest.raises(TokenStorageError) as info:
        storage.load(PROVIDER)
    path = storage.token_path(PROVIDER)
    assert str(path) in str(info.value) and info.value.path == str(path)
    assert "SOPS_AGE_KEY_FILE" in str(info.value)
    assert path.exists()


def test_missing_key_error(
    storage: SOPSTokenStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.save(PROVIDER, make_token())
    monkeypatch.delenv("SOPS_AGE_KEY_FILE")
    with pytest.raises(TokenStorageError, match="SOPS_AGE_KEY_FILE"):
        storage.load(PROVIDER)


def test_missing_binary_error(tmp_path: Path, age_identity: AgeIdentity) -> None:
    storage = SOPSTokenStorage(
        tmp_path / "tokens",
        sops_binary="kstlib-no-such-sops",
        age_recipients=[age_identity.recipient],
    )
    with pytest.raises(TokenStorageError, match="sops binary 'kstlib-no-such-sops' not found"):
        storage.save(PROVIDER, make_token())
    assert not storage.exists(PROVIDER)


def test_sops_binary_given_as_a_path(tmp_path: Path, age_identity: AgeIdentity) -> None:
    storage = SOPSTokenStorage(
        tmp_path / "tokens", sops_binary=sops_path(), age_recipients=[age_identity.recipient]
    )
    storage.save(PROVIDER, make_token())
    assert storage.load(PROVIDER) == make_token()


def test_sops_timeout_is_reported(tmp_path: Path, age_identity: AgeIdentity) -> None:
    storage = SOPSTokenStorage(
        tmp_path / "tokens", age_recipients=[age_identity.recipient], timeout=0.0001
    )
    with pytest.raises(TokenStorageError, match="did not finish within"):
        storage.save(PROVIDER, make_token())
    assert not storage.exists(PROVIDER)


def test_plaintext_json_file_is_refused(storage: SOPSTokenStorage) -> None:
    path = storage.token_path(PROVIDER)
    content = json.dumps({"version": 1, "provider": PROVIDER, "token": make_token().to_dict()})
    path.write_text(content)
    with pytest.raises(TokenStorageError, match="not a SOPS-encrypted") as info:
        storage.load(PROVIDER)
    assert "kstlib auth login corp.example" in str(info.value)
    assert path.read_text() == content


def test_tampered_file_is_reported_not_deleted(storage: SOPSTokenStorage) -> None:
    storage.save(PROVIDER, make_token())
    path = storage.token_path(PROVIDER)
    document = json.loads(path.read_text())
    value = document["token"]["access_token"]
    data_start = value.index("data:") + len("data:")
    flipped = "A" if value[data_start] != "A" else "B"
    document["token"]["access_token"] = value[:data_start] + flipped + value[data_start + 1 :]
    path.write_text(json.dumps(document))
    with pytest.raises(TokenStorageError, match="could not decrypt") as info:
        storage.load(PROVIDER)
    assert info.value.path == str(path)
    assert path.exists()


def test_sops_configuration_leaving_the_token_in_clear_is_refused(
    tmp_path: Path, age_identity: AgeIdentity
) -> None:
    directory = tmp_path / "tokens"
    directory.mkdir(mode=0o700)
    (directory / ".sops.yaml").write_text(
        "creation_rules:\n"
        "  - path_regex: \\.sops\\.json$\n"
        f"    age: {age_identity.recipient}\n"
        "    unencrypted_regex: ^access_token$\n"
    )
    storage = SOPSTokenStorage(directory)
    with pytest.raises(TokenStorageError, match="did not encrypt"):
        storage.save(PROVIDER, make_token())
    assert not storage.exists(PROVIDER)
    assert SECRETS[0].encode() not in all_bytes_under(tmp_path)


def test_stderr_in_errors_is_redacted_and_short(tmp_path: Path, age_identity: AgeIdentity) -> None:
    bogus = "age1" + "q" * 2000
    storage = SOPSTokenStorage(tmp_path / "tokens", age_recipients=[bogus])
    with pytest.raises(TokenStorageError) as info:
        storage.save(PROVIDER, make_token())
    assert len(str(info.value)) < 1200
    assert "\n" not in str(info.value)


def test_symlinked_sops_file_is_refused(storage: SOPSTokenStorage, tmp_path: Path) -> None:
    real = tmp_path / "real.sops.json"
    real.write_text("{}")
    storage.token_path(PROVIDER).symlink_to(real)
    with pytest.raises(TokenStorageError, match="symbolic link"):
        storage.load(PROVIDER)
    with pytest.raises(TokenStorageError, match="symbolic link"):
        storage.save(PROVIDER, make_token())
    assert real.read_text() == "{}"


def test_describe_and_factory(tmp_path: Path, age_identity: AgeIdentity) -> None:
    storage = get_token_storage(
        "sops", directory=tmp_path / "tokens", age_recipients=[age_identity.recipient]
    )
    assert isinstance(storage, SOPSTokenStorage)
    assert storage.backend_name == "sops"
    assert storage.describe() == f"sops:{tmp_path / 'tokens'}"
    storage.save(PROVIDER, make_token())
    assert storage.load(PROVIDER) == make_token()


def test_non_string_recipient_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="age recipients"):
        SOPSTokenStorage(tmp_path, age_recipients=[42])  # type: ignore[list-item]
