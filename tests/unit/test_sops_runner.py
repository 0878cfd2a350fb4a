"""One way to run sops: the configured binary everywhere, one redacted stderr excerpt."""

from __future__ import annotations

from pathlib import Path

import pytest

from kstlib._sops import STDERR_EXCERPT_LENGTH, configured_sops_binary, run_sops, stderr_excerpt
from kstlib.auth.config import build_provider_config
from kstlib.auth.errors import ConfigurationError, TokenStorageError
from kstlib.auth.models import Token
from kstlib.auth.token import SOPSTokenStorage
from kstlib.secrets import resolve_secret
from tests.sops_support import AgeIdentity, sops_path
from tests.unit.test_secrets import SECRET, sops_encrypt

#: A JWT-shaped value sops could echo in an error: it must never be quoted.
LEAKED = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"


def _script(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(0o700)
    return path


def _config(secrets_file: Path, sops_binary: str) -> dict[str, object]:
    return {
        "auth": {
            "token_storage": "memory",
            "storage": {"sops": {"sops_binary": sops_binary}},
            "providers": {
                "corp": {
                    "issuer": "https://idp.example",
                    "client_id": "app",
                    "client_secret": f"sops://{secrets_file}#a",
                }
            },
        }
    }


def test_secret_references_use_the_configured_sops_binary(
    tmp_path: Path, age_identity: AgeIdentity
) -> None:
    """Before: secrets.py ran whatever 'sops' was on PATH, ignoring sops_binary."""
    secrets_file = sops_encrypt({"a": SECRET}, tmp_path / "s.yaml", age_identity.recipient)
    marker = tmp_path / "wrapper-ran"
    wrapper = _script(tmp_path / "bin", "my-sops", f'touch {marker}\nexec {sops_path()} "$@"')
    config = build_provider_config("corp", config=_config(secrets_file, str(wrapper)))
    assert config.client_secret == SECRET
    assert marker.exists()


def test_a_configured_binary_that_is_missing_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-sops")
    (tmp_path / "s.yaml").write_text("a: b\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"sops binary '.*no-such-sops' not found"):
        build_provider_config("corp", config=_config(tmp_path / "s.yaml", missing))


def test_secrets_and_token_storage_quote_the_same_redacted_excerpt(tmp_path: Path) -> None:
    """Before: two excerpt functions (300 and 400 characters, different markers)."""
    noisy = _script(
        tmp_path / "bin",
        "noisy-sops",
        f'cat >/dev/null\necho "Bearer {LEAKED} $(printf "x%.0s" $(seq 1 900))" >&2\nexit 3',
    )
    (tmp_path / "s.yaml").write_text("a: b\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as from_secret:
        resolve_secret("sops://s.yaml#a", base_dir=tmp_path, what="x", sops_binary=str(noisy))
    storage = SOPSTokenStorage(tmp_path / "tokens", sops_binary=str(noisy), age_recipients=["a"])
    with pytest.raises(TokenStorageError) as from_storage:
        storage.save("corp", Token(access_token="t"))
    excerpt = stderr_excerpt(run_sops([], binary=str(noisy)).stderr)
    assert LEAKED not in excerpt and len(excerpt) <= STDERR_EXCERPT_LENGTH + 3
    assert excerpt in str(from_secret.value)
    assert excerpt in str(from_storage.value)
    assert LEAKED not in str(from_secret.value) + str(from_storage.value)


def test_configured_sops_binary_reads_the_merged_configuration() -> None:
    assert configured_sops_binary(None) == "sops"
    assert configured_sops_binary(
        {"auth": {"storage": {"sops": {"sops_binary": " /x/sops "}}}}
    ) == ("/x/sops")
    assert configured_sops_binary({"auth": {"storage": {"sops": {"sops_binary": 3}}}}) == "sops"
