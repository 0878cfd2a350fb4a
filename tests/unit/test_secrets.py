"""Secret references: sops:// (real sops + age), env://, file://, and every way they fail."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kstlib.auth.errors import ConfigurationError
from kstlib.secrets import is_secret_reference, resolve_secret, resolve_secrets
from tests.sops_support import AgeIdentity, make_age_identity, sops_path

SECRET = "s3cr3t-VALUE-9f8e7d"


def sops_encrypt(data: Any, target: Path, recipient: str) -> Path:
    """Write ``data`` to ``target`` encrypted with the real sops binary to an age recipient."""
    fmt = "json" if target.suffix == ".json" else "yaml"
    plain = target.with_name(target.name + ".plain")
    plain.write_text(json.dumps(data) if fmt == "json" else yaml.safe_dump(data))
    try:
        encrypted = subprocess.run(
            [
                sops_path(),
                "--encrypt",
                "--age",
                recipient,
                "--input-type",
                fmt,
                "--output-type",
                fmt,
                str(plain),
            ],
            check=True,
            capture_output=True,
        ).stdout
    finally:
        plain.unlink()
    target.write_bytes(encrypted)
    assert SECRET.encode() not in encrypted
    return target


def resolve(value: str, base_dir: Path | None = None, **kwargs: Any) -> str:
    return resolve_secret(value, base_dir=base_dir, what="auth.providers.p.client_secret", **kwargs)


def test_plain_strings_are_returned_as_they_are() -> None:
    assert resolve("just a value") == "just a value"
    assert resolve("https://example.com/x#y") == "https://example.com/x#y"
    assert not is_secret_reference("https://example.com")
    assert not is_secret_reference(3)
    assert is_secret_reference("SOPS://x#y")


# --------------------------------------------------------------------------- env://


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KST_TEST_SECRET", SECRET)
    assert resolve("env://KST_TEST_SECRET") == SECRET
    assert resolve("ENV://KST_TEST_SECRET") == SECRET


def test_env_reference_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KST_TEST_SECRET", raising=False)
    with pytest.raises(ConfigurationError) as err:
        resolve("env://KST_TEST_SECRET", source="/etc/kstlib.conf.yml", provider="p")
    message = str(err.value)
    assert "env://KST_TEST_SECRET" in message
    assert "not set" in message
    assert "/etc/kstlib.conf.yml" in message
    assert "auth.providers.p.client_secret" in message
    assert err.value.file == "/etc/kstlib.conf.yml"
    assert err.value.provider == "p"
    assert err.value.key == "auth.providers.p.client_secret"


def test_env_reference_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KST_TEST_SECRET", "")
    with pytest.raises(ConfigurationError, match="is empty"):
        resolve("env://KST_TEST_SECRET")
    with pytest.raises(ConfigurationError, match="no variable name"):
        resolve("env://")


# --------------------------------------------------------------------------- file://


def test_file_reference_strips_exactly_one_newline(tmp_path: Path) -> None:
    (tmp_path / "one").write_text(SECRET + "\n")
    (tmp_path / "two").write_text(SECRET + "\n\n")
    (tmp_path / "crlf").write_bytes(SECRET.encode() + b"\r\n")
    (tmp_path / "none").write_text(SECRET)
    assert resolve("file://one", tmp_path) == SECRET
    assert resolve("file://two", tmp_path) == SECRET + "\n"
    assert resolve("file://crlf", tmp_path) == SECRET
    assert resolve(f"file://{tmp_path / 'none'}") == SECRET


def test_file_reference_is_relative_to_base_dir_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "secret.txt").write_text(SECRET)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert resolve("file://secret.txt", conf_dir) == SECRET
    with pytest.raises(ConfigurationError, match="not found"):
        resolve("file://secret.txt")  # no base dir: the cwd


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("missing", "not found"),
        ("empty", "is empty"),
        ("newline-only", "is empty"),
        ("directory", "is a directory"),
        ("binary", "not UTF-8"),
    ],
)
def test_file_reference_failures(tmp_path: Path, setup: str, reason: str) -> None:
    target = tmp_path / "secret"
    if setup == "empty":
        target.write_text("")
    elif setup == "newline-only":
        target.write_text("\n")
    elif setup == "directory":
        target.mkdir()
    elif setup == "binary":
        target.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigurationError) as err:
        resolve("file://secret", tmp_path)
    assert reason in str(err.value)
    assert "file://secret" in str(err.value)


# --------------------------------------------------------------------------- sops://


def test_sops_reference_walks_dotted_keys(tmp_path: Path, age_identity: AgeIdentity) -> None:
    document = {"github": {"secret": SECRET, "ids": ["zero", "one"], "pin": 1234}}
    sops_encrypt(document, tmp_path / "secrets.yaml", age_identity.recipient)
    assert resolve("sops://secrets.yaml#github.secret", tmp_path) == SECRET
    assert resolve("sops://secrets.yaml#github.ids.1", tmp_path) == "one"
    assert resolve("sops://secrets.yaml#github.pin", tmp_path) == "1234"
    absolute = tmp_path / "secrets.yaml"
    assert resolve(f"sops://{absolute}#github.secret") == SECRET


def test_sops_reference_json_document(tmp_path: Path, age_identity: AgeIdentity) -> None:
    sops_encrypt({"a": {"b": SECRET}}, tmp_path / "secrets.json", age_identity.recipient)
    assert resolve("sops://secrets.json#a.b", tmp_path) == SECRET


def test_sops_document_decrypted_once_per_call_and_never_written(
    tmp_path: Path, age_identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    sops_encrypt({"a": SECRET, "b": "other"}, tmp_path / "s.yaml", age_identity.recipient)
    calls: list[list[str]] = []
    real_run = subprocess.run

    def counting_run(args: list[str], **kwargs: Any) -> Any:
        calls.append(args)
        return real_run(args, **kwargs)

    monkeypatch.setattr("subprocess.run", counting_run)  # _sops imports it when it runs
    before = sorted(p.name for p in tmp_path.rglob("*"))
    data = {"client_secret": "sops://s.yaml#a", "headers": {"X-Other": "sops://s.yaml#b"}}
    resolved = resolve_secrets(data, base_dir=tmp_path, what="auth.providers.p")
    assert resolved == {"client_secret": SECRET, "headers": {"X-Other": "other"}}
    assert len(calls) == 1
    assert calls[0][1] == "--decrypt"
    resolve_secrets(data, base_dir=tmp_path, what="auth.providers.p")
    assert len(calls) == 2  # the cache lives for one call only
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_sops_missing_key_names_the_missing_part_without_values(
    tmp_path: Path, age_identity: AgeIdentity
) -> None:
    sops_encrypt({"github": {"secret": SECRET}}, tmp_path / "s.yaml", age_identity.recipient)
    with pytest.raises(ConfigurationError) as err:
        resolve("sops://s.yaml#github.client_secret", tmp_path, source="/x/kstlib.conf.yml")
    message = str(err.value)
    assert "sops://s.yaml#github.client_secret" in message
    assert "no 'client_secret' under 'github'" in message
    assert "/x/kstlib.conf.yml" in message
    assert SECRET not in message and SECRET not in repr(err.value)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("github", "holds a mapping"),
        ("items", "holds a list"),
        ("flag", "holds a boolean"),
        ("blank", "empty value"),
        ("nothing", "empty value"),
        ("items.7", "not found"),
    ],
)
def test_sops_reference_to_a_non_value(
    tmp_path: Path, age_identity: AgeIdentity, key: str, reason: str
) -> None:
    document = {
        "github": {"secret": SECRET},
        "items": [SECRET],
        "flag": True,
        "blank": "",
        "nothing": None,
    }
    sops_encrypt(document, tmp_path / "s.yaml", age_identity.recipient)
    with pytest.raises(ConfigurationError) as err:
        resolve(f"sops://s.yaml#{key}", tmp_path)
    assert reason in str(err.value)
    assert SECRET not in str(err.value)


def test_sops_reference_without_key_or_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="names no key"):
        resolve("sops://secrets.yaml", tmp_path)
    with pytest.raises(ConfigurationError, match="names no key"):
        resolve("sops://secrets.yaml#", tmp_path)
    with pytest.raises(ConfigurationError, match="not found"):
        resolve("sops://absent.yaml#a", tmp_path)
    with pytest.raises(ConfigurationError, match="no file path"):
        resolve("sops://#a", tmp_path)


def test_sops_failure_with_the_wrong_key_is_reported_redacted_and_short(
    tmp_path: Path, age_identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    sops_encrypt({"a": SECRET}, tmp_path / "s.yaml", age_identity.recipient)
    stranger = make_age_identity(tmp_path / "other-key")
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(stranger.key_file))
    with pytest.raises(ConfigurationError) as err:
        resolve("sops://s.yaml#a", tmp_path)
    message = str(err.value)
    assert "sops failed" in message
    assert "sops://s.yaml#a" in message
    assert SECRET not in message
    assert "\n" not in message
    assert len(message) < 700


def test_sops_binary_missing(
    tmp_path: Path, age_identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    sops_encrypt({"a": SECRET}, tmp_path / "s.yaml", age_identity.recipient)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ConfigurationError, match="sops binary .sops. not found"):
        resolve("sops://s.yaml#a", tmp_path)


def test_undecryptable_plain_file(tmp_path: Path, age_identity: AgeIdentity) -> None:
    (tmp_path / "plain.yaml").write_text(f"a: {SECRET}\n")  # not a sops file at all
    with pytest.raises(ConfigurationError) as err:
        resolve("sops://plain.yaml#a", tmp_path)
    assert "sops failed" in str(err.value)
    assert SECRET not in str(err.value)


# --------------------------------------------------------------------------- recursion


def test_resolve_secrets_walks_mappings_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KST_A", "alpha")
    data: dict[str, Any] = {
        "n": 3,
        "flag": True,
        "none": None,
        "s": "plain",
        "nested": {"list": ["env://KST_A", {"deep": "env://KST_A"}]},
    }
    resolved = resolve_secrets(data, base_dir=None, what="root")
    assert resolved == {
        "n": 3,
        "flag": True,
        "none": None,
        "s": "plain",
        "nested": {"list": ["alpha", {"deep": "alpha"}]},
    }
    assert data["nested"]["list"][0] == "env://KST_A"  # input untouched


def test_resolve_secrets_error_names_the_nested_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KST_MISSING", raising=False)
    with pytest.raises(ConfigurationError) as err:
        resolve_secrets({"headers": {"X-Key": "env://KST_MISSING"}}, base_dir=None, what="auth.p")
    assert err.value.key == "auth.p.headers.X-Key"
