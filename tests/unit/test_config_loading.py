"""kstlib.conf.yml: search order, merge, KSTLIB_CONFIG, SOPS files, provenance, no leaks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kstlib.auth.errors import ConfigurationError
from kstlib.config import (
    CONFIG_ENV_VAR,
    LoadedConfig,
    config_search_path,
    load_config,
    packaged_defaults_path,
)
from tests.hypothesis_support import examples
from tests.sops_support import AgeIdentity, make_age_identity
from tests.unit.test_secrets import SECRET, sops_encrypt


def origin(loaded: LoadedConfig, *keys: str) -> Path | None:
    """The file that set ``keys``."""
    source = loaded.source_of(*keys)
    assert source is not None
    return source.path


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture
def layers(tmp_path: Path) -> dict[str, Path]:
    """The five searched locations, inside the isolated HOME/XDG dirs/cwd."""
    home = Path(os.environ["HOME"])
    return {
        "site": tmp_path / "etc-xdg" / "kstlib" / "kstlib.conf.yml",
        "user": Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib.conf.yml",
        "xdg": Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib" / "kstlib.conf.yml",
        "home": home / "kstlib.conf.yml",
        "cwd": tmp_path / "kstlib.conf.yml",
    }


def trust_cwd(layers: dict[str, Path]) -> None:
    """List the working directory in trust.directories of the site layer (a trusted file)."""
    write(layers["site"], {"trust": {"directories": [str(layers["cwd"].parent)]}})


def test_only_packaged_defaults_without_files() -> None:
    loaded = load_config()
    assert [s.path for s in loaded.sources] == [packaged_defaults_path()]
    assert loaded["auth"]["token_storage"] == "file"
    assert loaded["auth"]["providers"] == {}
    assert origin(loaded, "auth", "token_storage") == packaged_defaults_path()


def test_search_path_order(layers: dict[str, Path]) -> None:
    assert config_search_path() == [
        packaged_defaults_path(),
        layers["site"],
        layers["user"],
        layers["xdg"],
        layers["home"],
        layers["cwd"],
    ]


def test_merge_priority_and_provenance(layers: dict[str, Path]) -> None:
    for name, path in layers.items():
        write(
            path, {"auth": {"discovery_ttl": len(name), "providers": {name: {"client_id": name}}}}
        )
    write(
        layers["site"],
        {
            "auth": {"default_provider": "site", "discovery_ttl": 1},
            "trust": {"directories": [str(layers["cwd"].parent)]},
        },
    )
    loaded = load_config()
    assert [s.path for s in loaded.sources] == [
        packaged_defaults_path(),
        layers["site"],
        layers["user"],
        layers["xdg"],
        layers["home"],
        layers["cwd"],
    ]
    assert all(source.trusted for source in loaded.sources)
    auth = loaded["auth"]
    assert auth["discovery_ttl"] == len("cwd")  # highest priority wins
    assert auth["default_provider"] == "site"  # lower layers fill the gaps
    assert auth["token_storage"] == "file"  # packaged default
    assert list(auth["providers"]) == ["user", "xdg", "home", "cwd"]
    for name in ("user", "xdg", "home", "cwd"):
        assert origin(loaded, "auth", "providers", name) == layers[name]
        assert origin(loaded, "auth", "providers", name, "client_id") == layers[name]
    assert origin(loaded, "auth", "default_provider") == layers["site"]
    assert origin(loaded, "auth", "discovery_ttl") == layers["cwd"]
    assert origin(loaded, "auth", "providers", "cwd", "absent") == layers["cwd"]


def test_deep_merge_semantics(layers: dict[str, Path]) -> None:
    trust_cwd(layers)
    write(
        layers["user"],
        {
            "auth": {
                "providers": {"corp": {"client_id": "a", "scopes": ["x", "y"], "pkce": False}},
                "trace": {"extra_sensitive_keys": ["k1"]},
            }
        },
    )
    write(
        layers["cwd"],
        {
            "auth": {
                "providers": {"corp": {"scopes": ["z"], "pkce": None}},
                "trace": {"pretty": False},
            }
        },
    )
    loaded = load_config()
    corp = loaded["auth"]["providers"]["corp"]
    assert corp == {"client_id": "a", "scopes": ["z"], "pkce": None}  # lists/null replace
    assert loaded["auth"]["trace"] == {
        "pretty": False,
        "max_body_length": 10000,
        "extra_sensitive_keys": ["k1"],
    }
    assert origin(loaded, "auth", "providers", "corp", "client_id") == layers["user"]
    assert origin(loaded, "auth", "providers", "corp", "scopes") == layers["cwd"]


def test_xdg_config_dirs_first_entry_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    monkeypatch.setenv("XDG_CONFIG_DIRS", f"{first}{os.pathsep}{second}")
    write(first / "kstlib" / "kstlib.conf.yml", {"auth": {"discovery_ttl": 1}})
    write(
        second / "kstlib" / "kstlib.conf.yml",
        {"auth": {"discovery_ttl": 2, "token_storage": "sops"}},
    )
    loaded = load_config()
    assert loaded["auth"]["discovery_ttl"] == 1
    assert loaded["auth"]["token_storage"] == "sops"


def test_xdg_config_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = tmp_path / "custom-config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(custom))
    write(custom / "kstlib.conf.yml", {"auth": {"discovery_ttl": 7}})
    assert load_config()["auth"]["discovery_ttl"] == 7
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")  # XDG: relative paths are ignored
    write(Path(os.environ["HOME"]) / ".config" / "kstlib.conf.yml", {"auth": {"discovery_ttl": 8}})
    assert load_config()["auth"]["discovery_ttl"] == 8


def test_home_and_cwd_being_the_same_file_load_once(
    layers: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write(layers["home"], {"auth": {"discovery_ttl": 5}})
    monkeypatch.chdir(layers["home"].parent)
    loaded = load_config()
    assert [s.path for s in loaded.sources] == [packaged_defaults_path(), layers["home"]]


def test_explicit_env_file_replaces_the_search(
    layers: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(layers["cwd"], {"auth": {"default_provider": "from-cwd", "discovery_ttl": 1}})
    explicit = write(tmp_path / "elsewhere" / "mine.yml", {"auth": {"discovery_ttl": 42}})
    monkeypatch.setenv(CONFIG_ENV_VAR, str(explicit))
    loaded = load_config()
    assert loaded["auth"]["discovery_ttl"] == 42
    assert loaded["auth"]["default_provider"] is None  # cwd file ignored, packaged default
    assert [s.path for s in loaded.sources] == [packaged_defaults_path(), explicit]


def test_explicit_path_argument_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = write(tmp_path / "env.yml", {"auth": {"discovery_ttl": 1}})
    from_arg = write(tmp_path / "arg.yml", {"auth": {"discovery_ttl": 2}})
    monkeypatch.setenv(CONFIG_ENV_VAR, str(from_env))
    assert load_config(path=from_arg)["auth"]["discovery_ttl"] == 2
    assert load_config(path="arg.yml")["auth"]["discovery_ttl"] == 2  # relative to the cwd


def test_explicit_file_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "nope.yml"))
    with pytest.raises(ConfigurationError) as err:
        load_config()
    assert "nope.yml" in str(err.value) and CONFIG_ENV_VAR in str(err.value)
    assert err.value.file == str(tmp_path / "nope.yml")
    with pytest.raises(ConfigurationError, match="empty path"):
        load_config(path="")


def test_yaml_syntax_error_names_file_and_line(layers: dict[str, Path]) -> None:
    write(
        layers["user"],
        f"auth:\n  providers:\n    corp:\n      client_secret: {SECRET}\n   bad: [\n",
    )
    with pytest.raises(ConfigurationError) as err:
        load_config()
    message = str(err.value)
    assert f"{layers['user']}:5:" in message
    assert "invalid YAML" in message
    assert SECRET not in message  # the offending line is never quoted
    assert err.value.file == str(layers["user"])


@pytest.mark.parametrize("content", ["- a\n- b\n", "just a string\n", "# comment\n\n42\n"])
def test_top_level_must_be_a_mapping(layers: dict[str, Path], content: str) -> None:
    write(layers["cwd"], content)
    with pytest.raises(ConfigurationError) as err:
        load_config()
    expected_line = 3 if content.startswith("#") else 1
    assert f"{layers['cwd']}:{expected_line}:" in str(err.value)
    assert "must be a mapping" in str(err.value)


def test_empty_file_is_an_empty_layer(layers: dict[str, Path]) -> None:
    write(layers["cwd"], "# nothing yet\n")
    assert load_config()["auth"]["token_storage"] == "file"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"auth: \xff\xfe\n", "not UTF-8"),
        (b"auth:\n  when: 2024-13-45\n", "invalid YAML"),
        (b"a: 1\n---\nb: 2\n", "invalid YAML"),
        (b"a: !!python/object:os.system x\n", "invalid YAML"),
    ],
)
def test_unreadable_content(layers: dict[str, Path], raw: bytes, fragment: str) -> None:
    layers["cwd"].write_bytes(raw)
    with pytest.raises(ConfigurationError) as err:
        load_config()
    assert fragment in str(err.value)
    assert str(layers["cwd"]) in str(err.value)


def test_no_leak_between_loads(layers: dict[str, Path], tmp_path: Path) -> None:
    first = write(tmp_path / "first.yml", {"auth": {"providers": {"a": {"scopes": ["x"]}}}})
    second = write(tmp_path / "second.yml", {"auth": {"discovery_ttl": 9}})
    loaded = load_config(path=first)
    loaded["auth"]["providers"]["a"]["scopes"].append("leaked")
    loaded["auth"]["trace"]["extra_sensitive_keys"].append("leaked")
    loaded["auth"]["token_storage"] = "leaked"
    loaded["ssl"]["verify"] = "leaked"
    again = load_config(path=second)
    assert "a" not in again["auth"]["providers"]
    assert again["auth"]["trace"]["extra_sensitive_keys"] == []
    assert again["auth"]["token_storage"] == "file"
    assert again["ssl"]["verify"] is True
    assert load_config(path=first)["auth"]["providers"]["a"]["scopes"] == ["x"]
    assert "leaked" not in packaged_defaults_path().read_text()


def test_from_mapping_copies_its_input() -> None:
    source = {"auth": {"providers": {"a": {"scopes": ("x",)}}}}
    loaded = LoadedConfig.from_mapping(source)
    loaded["auth"]["providers"]["a"]["scopes"].append("y")
    assert source == {"auth": {"providers": {"a": {"scopes": ("x",)}}}}
    mapping_source = loaded.source_of("auth", "providers", "a")
    assert mapping_source is not None and mapping_source.label == "config mapping"
    assert origin(loaded, "auth") is None


def test_repr_shows_sources_not_values(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yml", {"auth": {"providers": {"a": {"client_secret": SECRET}}}})
    loaded = load_config(path=path)
    assert SECRET not in repr(loaded) and SECRET not in str(loaded)
    assert str(path) in repr(loaded)


# --------------------------------------------------------------------------- SOPS files


def test_sops_config_file_is_decrypted(
    tmp_path: Path, age_identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {"auth": {"providers": {"corp": {"client_id": "app", "client_secret": SECRET}}}}
    (tmp_path / "conf").mkdir()
    encrypted = sops_encrypt(
        document, tmp_path / "conf" / "kstlib.sops.yml", age_identity.recipient
    )
    monkeypatch.setenv(CONFIG_ENV_VAR, str(encrypted))
    loaded = load_config()
    assert loaded["auth"]["providers"]["corp"]["client_secret"] == SECRET
    assert origin(loaded, "auth", "providers", "corp") == encrypted
    assert SECRET not in repr(loaded)


def test_sops_config_file_with_yaml_suffix(tmp_path: Path, age_identity: AgeIdentity) -> None:
    encrypted = sops_encrypt(
        {"auth": {"discovery_ttl": 11}}, tmp_path / "c.sops.yaml", age_identity.recipient
    )
    assert load_config(path=encrypted)["auth"]["discovery_ttl"] == 11


def test_sops_config_file_without_the_key(
    tmp_path: Path, age_identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    encrypted = sops_encrypt(
        {"auth": {"x": SECRET}}, tmp_path / "c.sops.yml", age_identity.recipient
    )
    stranger = make_age_identity(tmp_path / "stranger")
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(stranger.key_file))
    with pytest.raises(ConfigurationError) as err:
        load_config(path=encrypted)
    assert str(encrypted) in str(err.value)
    assert "sops failed" in str(err.value)
    assert err.value.file == str(encrypted)
    assert SECRET not in str(err.value)


def test_sops_config_file_without_sops(
    tmp_path: Path, age_identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    encrypted = sops_encrypt({"auth": {}}, tmp_path / "c.sops.yml", age_identity.recipient)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(ConfigurationError) as err:
        load_config(path=encrypted)
    assert str(encrypted) in str(err.value)
    assert "sops binary 'sops' not found" in str(err.value)


# --------------------------------------------------------------------------- import cost


def test_importing_config_modules_does_not_import_yaml_or_platformdirs() -> None:
    code = (
        "import sys, kstlib.config, kstlib.secrets, kstlib.auth.config\n"
        "heavy = ('yaml', 'platformdirs', 'httpx', 'kstlib.auth.token')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- property


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    content=st.text(alphabet=st.sampled_from(list("ab:- \n[]{}'\"#!&*|>%@`,?\t1.")), max_size=80)
)
def test_any_file_content_loads_or_raises_configuration_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "fuzz.yml"
    path.write_text(content)
    try:
        loaded = load_config(path=path)
    except ConfigurationError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(loaded.data, dict)
