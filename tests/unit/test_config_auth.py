"""The auth: section and the config helpers: settings, providers from files, secrets, storage."""

from __future__ import annotations

import os
import types
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

import kstlib.auth.config as auth_config
from kstlib.auth.config import (
    AuthSettings,
    ConfigWarning,
    SSLSettings,
    build_provider_config,
    get_auth_settings,
    get_default_provider_name,
    get_provider,
    get_provider_config,
    get_provider_type,
    get_ssl_settings,
    get_token_storage_for_provider,
    list_configured_providers,
    load_provider_setup,
    resolve_provider_name,
)
from kstlib.auth.errors import ConfigurationError
from kstlib.config import load_config
from tests.sops_support import AgeIdentity
from tests.unit.test_secrets import SECRET, sops_encrypt

ISSUER = "https://idp.example.com/realms/main"


def user_file() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib.conf.yml"


def write_config(data: dict[str, Any], path: Path | None = None) -> Path:
    path = path or user_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def providers(**entries: Any) -> dict[str, Any]:
    return {"auth": {"providers": entries}}


def corp(**extra: Any) -> dict[str, Any]:
    return {"issuer": ISSUER, "client_id": "app", **extra}


# --------------------------------------------------------------------------- settings


def test_packaged_defaults_match_the_code_defaults() -> None:
    from_files = get_auth_settings()
    assert from_files == get_auth_settings(config={})
    assert from_files == AuthSettings()
    assert from_files.token_storage == "file"
    assert from_files.callback_server.timeout == 120
    assert (
        from_files.storage.file.directory
        == Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib" / "auth" / "tokens"
    )
    assert from_files.storage.sops.directory == from_files.storage.file.directory
    assert get_ssl_settings() == SSLSettings(verify=True, ca_bundle=None)


def test_settings_from_a_file(tmp_path: Path) -> None:
    path = write_config(
        {
            "ssl": {"verify": False},
            "auth": {
                "default_provider": "corp",
                "token_storage": "SOPS",
                "discovery_ttl": 60,
                "storage": {
                    "file": {"directory": "tokens"},
                    "sops": {"directory": "~/enc", "age_recipients": "age1aaa, age1bbb"},
                },
                "callback_server": {"port": 9000, "port_range": [9000, 9010], "timeout": 600},
                "trace": {"pretty": False, "max_body_length": 10, "extra_sensitive_keys": ["x"]},
                "status": {"expiring_soon_threshold": 30},
                "providers": {"corp": corp()},
            },
        }
    )
    settings = get_auth_settings()
    assert settings.default_provider == "corp"
    assert settings.token_storage == "sops"
    assert settings.discovery_ttl == 60
    assert settings.storage.file.directory == path.parent / "tokens"  # relative to the file
    assert settings.storage.sops.directory == Path(os.environ["HOME"]) / "enc"
    assert settings.storage.sops.age_recipients == ("age1aaa", "age1bbb")
    assert set(settings.storage.backends) >= {"memory", "file", "sops"}
    assert settings.callback_server.port_range == (9000, 9010)
    assert settings.callback_server.timeout == 600
    assert settings.trace.extra_sensitive_keys == ("x",)
    assert settings.status.expiring_soon_threshold == 30
    assert settings.providers == {"corp": corp()}
    assert get_ssl_settings().verify is False


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"token_storage": "floppy"}, "auth.token_storage"),
        ({"discovery_ttl": "1h"}, "auth.discovery_ttl"),
        ({"callback_server": {"timeout": 601}}, "auth.callback_server.timeout"),
        ({"callback_server": {"port": 70000}}, "auth.callback_server.port"),
        ({"callback_server": {"port_range": [9010, 9000]}}, "auth.callback_server.port_range"),
        ({"callback_server": "127.0.0.1:8400"}, "auth.callback_server"),
        ({"trace": {"pretty": "yes"}}, "auth.trace.pretty"),
        ({"status": {"expiring_soon_threshold": -5}}, "auth.status.expiring_soon_threshold"),
        ({"storage": {"sops": {"age_recipients": [1]}}}, "auth.storage.sops.age_recipients"),
        ({"storage": {"file": {"directory": 3}}}, "auth.storage.file.directory"),
        ({"providers": ["corp"]}, "auth.providers"),
        ({"providers": {5: {}}}, "auth.providers"),
    ],
)
def test_wrong_settings_name_file_and_key(section: dict[str, Any], key: str) -> None:
    path = user_file()
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump({"auth": section}))
    with pytest.raises(ConfigurationError) as err:
        get_auth_settings()
    assert str(err.value).startswith(f"{path}: {key}: ")
    assert err.value.file == str(path)
    assert err.value.key == key


def test_port_range_as_a_string() -> None:
    settings = get_auth_settings(config={"callback_server": {"port_range": "8400-8410"}})
    assert settings.callback_server.port_range == (8400, 8410)


def test_non_loopback_callback_host_warns() -> None:
    with pytest.warns(ConfigWarning, match="non-loopback"):
        get_auth_settings(config={"callback_server": {"host": "0.0.0.0"}})


def test_ssl_ca_bundle_relative_to_its_file_and_checked(tmp_path: Path) -> None:
    path = write_config({"ssl": {"ca_bundle": "ca.pem"}})
    with pytest.raises(ConfigurationError) as err:
        get_ssl_settings()
    assert err.value.key == "ssl.ca_bundle" and err.value.file == str(path)
    (path.parent / "ca.pem").write_text("PEM")
    assert get_ssl_settings().ca_bundle == str(path.parent / "ca.pem")


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("auth", "key", "suggestion"),
    [
        ({"default_provder": "x"}, "auth.default_provder", "default_provider"),
        ({"storage": {"fiel": {}}}, "auth.storage.fiel", "file"),
        (
            {"storage": {"sops": {"age_recipient": []}}},
            "auth.storage.sops.age_recipient",
            "age_recipients",
        ),
        ({"callback_server": {"prot": 1}}, "auth.callback_server.prot", "port"),
        ({"trace": {"max_body_len": 1}}, "auth.trace.max_body_len", "max_body_length"),
        ({"status": {"expiring_soon": 1}}, "auth.status.expiring_soon", "expiring_soon_threshold"),
    ],
)
def test_unknown_keys_warn_with_file_and_suggestion(
    auth: dict[str, Any], key: str, suggestion: str
) -> None:
    path = write_config({"auth": auth})
    with pytest.warns(ConfigWarning) as record:
        get_auth_settings()
    messages = [str(w.message) for w in record]
    assert any(
        str(path) in m and key in m and f"did you mean '{suggestion}'" in m for m in messages
    ), messages


def test_unknown_provider_key_warns_and_is_ignored() -> None:
    path = write_config(providers(corp=corp(clientsecret="x", scope="a b")))
    with pytest.warns(ConfigWarning) as record:
        config = build_provider_config("corp")
    messages = [str(w.message) for w in record]
    assert any(
        str(path) in m and "auth.providers.corp.clientsecret" in m and "'client_secret'" in m
        for m in messages
    )
    assert any("auth.providers.corp.scope" in m and "'scopes'" in m for m in messages)
    assert config.client_secret is None


def test_unknown_top_level_sections_are_left_alone() -> None:
    write_config({"logging": {"level": "debug"}, **providers(corp=corp())})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_provider_config("corp").client_id == "app"


# --------------------------------------------------------------------------- providers


def test_provider_from_file_with_defaults() -> None:
    write_config(
        {
            "ssl": {"verify": True},
            "auth": {"discovery_ttl": 120, "providers": {"corp": corp()}},
        }
    )
    config = build_provider_config("corp")
    assert config.scopes == ["openid", "profile", "email"]
    assert config.discovery_ttl == 120
    assert config.issuer == ISSUER
    assert config.pkce is True


def test_provider_values_win_over_section_defaults(tmp_path: Path) -> None:
    path = write_config(
        {
            "ssl": {"verify": True},
            "auth": {
                "discovery_ttl": 120,
                "providers": {
                    "corp": corp(
                        discovery_ttl=5, scopes="openid offline_access", ssl_ca_bundle="ca.pem"
                    )
                },
            },
        }
    )
    (path.parent / "ca.pem").write_text("PEM")
    config = build_provider_config("corp")
    assert config.discovery_ttl == 5
    assert config.scopes == ["openid", "offline_access"]
    assert config.ssl_ca_bundle == str(path.parent / "ca.pem")


def test_ssl_defaults_come_from_the_global_section(tmp_path: Path) -> None:
    path = write_config(
        {
            "ssl": {"verify": False, "ca_bundle": "corp-ca.pem"},
            **providers(corp=corp(), strict=corp(ssl_verify=True)),
        }
    )
    (path.parent / "corp-ca.pem").write_text("PEM")
    with pytest.warns(ConfigWarning, match="verification is disabled"):
        relaxed = build_provider_config("corp")
    assert relaxed.ssl_verify is False
    assert relaxed.ssl_ca_bundle == str(path.parent / "corp-ca.pem")
    strict = build_provider_config("strict")
    assert strict.ssl_verify is True
    assert strict.ssl_ca_bundle == str(path.parent / "corp-ca.pem")


def test_missing_provider_ca_bundle() -> None:
    path = write_config(providers(corp=corp(ssl_ca_bundle="absent.pem")))
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corp")
    assert err.value.file == str(path) and err.value.key == "auth.providers.corp.ssl_ca_bundle"


@pytest.mark.parametrize(
    ("alias", "field_name"),
    [
        ("authorization_endpoint", "authorize_url"),
        ("token_endpoint", "token_url"),
        ("revocation_endpoint", "revoke_url"),
        ("userinfo_endpoint", "userinfo_url"),
        ("introspection_endpoint", "introspection_url"),
        ("device_authorization_endpoint", "device_authorization_url"),
    ],
)
def test_both_endpoint_spellings(alias: str, field_name: str) -> None:
    url = "https://idp.example.com/endpoint"
    for key in (alias, field_name):
        config = build_provider_config("corp", config=providers(corp=corp(**{key: url})))
        assert getattr(config, field_name) == url
    same = build_provider_config(
        "corp", config=providers(corp=corp(**{alias: url, field_name: url}))
    )
    assert getattr(same, field_name) == url


def test_conflicting_endpoint_spellings() -> None:
    path = write_config(
        providers(
            gh=corp(
                token_endpoint="https://a.example.com/token",
                token_url="https://b.example.com/token",
            )
        )
    )
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("gh")
    assert "token_endpoint" in str(err.value) and "token_url" in str(err.value)
    assert err.value.file == str(path) and err.value.provider == "gh"


def test_oauth2_provider_with_config_spellings() -> None:
    config = build_provider_config(
        "github",
        config=providers(
            github={
                "type": "oauth2",
                "authorization_endpoint": "https://github.com/login/oauth/authorize",
                "token_endpoint": "https://github.com/login/oauth/access_token",
                "client_id": "my-app",
                "client_secret": SECRET,
            }
        ),
    )
    assert config.authorize_url == "https://github.com/login/oauth/authorize"
    assert config.token_url == "https://github.com/login/oauth/access_token"
    assert config.client_secret == SECRET


def test_wrong_type_names_file_provider_and_key() -> None:
    path = write_config(providers(corp=corp(pkce="yes", client_secret=SECRET)))
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corp")
    message = str(err.value)
    assert message.startswith(f"{path}: auth.providers.corp.pkce: ")
    assert "true or false" in message
    assert (err.value.file, err.value.provider, err.value.key) == (
        str(path),
        "corp",
        "auth.providers.corp.pkce",
    )
    assert SECRET not in message and SECRET not in repr(err.value)


def test_errors_use_the_spelling_of_the_file() -> None:
    path = write_config(providers(corp=corp(token_endpoint="http://idp.example.com/token")))
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corp")
    assert err.value.key == "auth.providers.corp.token_endpoint"
    assert str(path) in str(err.value) and "must use https" in str(err.value)


def test_error_names_the_file_that_set_the_key(tmp_path: Path) -> None:
    write_config({**providers(corp=corp()), "trust": {"directories": [str(tmp_path)]}})
    cwd_file = write_config(
        providers(corp={"redirect_uri": "https://app.example.com/cb"}), tmp_path / "kstlib.conf.yml"
    )
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corp")
    assert err.value.file == str(cwd_file)
    assert "server_side" in str(err.value)


def test_missing_client_id() -> None:
    path = write_config(providers(corp={"issuer": ISSUER}, empty=None))
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corp")
    assert err.value.key == "auth.providers.corp.client_id" and err.value.file == str(path)
    with pytest.raises(ConfigurationError, match="client_id"):
        build_provider_config("empty")


def test_provider_that_is_not_a_mapping() -> None:
    path = write_config(providers(corp="https://idp.example.com"))
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corp")
    assert err.value.file == str(path) and "expected a mapping" in str(err.value)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (None, "oidc"),
        ("oidc", "oidc"),
        ("OpenID", "oidc"),
        ("openidconnect", "oidc"),
        ("openid-connect", "oidc"),
        ("oauth2", "oauth2"),
        ("OAuth", "oauth2"),
    ],
)
def test_provider_types(written: str | None, expected: str) -> None:
    entry = corp() if written is None else corp(type=written)
    assert get_provider_type("corp", config=providers(corp=entry)) == expected


@pytest.mark.parametrize("written", ["saml", 2, ["oidc"]])
def test_invalid_provider_type(written: Any) -> None:
    path = write_config(providers(corp=corp(type=written)))
    with pytest.raises(ConfigurationError) as err:
        get_provider_type("corp")
    assert "valid types: oidc" in str(err.value) and "oauth2" in str(err.value)
    assert err.value.file == str(path) and err.value.key == "auth.providers.corp.type"


def test_overrides_use_field_names_or_config_spellings() -> None:
    config = providers(corp=corp(client_secret=SECRET))
    built = build_provider_config(
        "corp",
        config=config,
        client_id="override-id",
        token_endpoint="https://idp.example.com/other-token",
        client_secret=None,  # None keeps the configured value
        scopes=["openid"],
    )
    assert built.client_id == "override-id"
    assert built.token_url == "https://idp.example.com/other-token"
    assert built.client_secret == SECRET
    assert built.scopes == ["openid"]
    assert config["auth"]["providers"]["corp"]["client_id"] == "app"  # input untouched


def test_bad_overrides() -> None:
    config = providers(corp=corp())
    with pytest.raises(
        ConfigurationError, match="override clent_id: unknown setting .*'client_id'"
    ):
        build_provider_config("corp", config=config, clent_id="x")
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corp", config=config, token_url="http://idp.example.com/t")
    assert "override token_url" in str(err.value) and err.value.file is None


def test_unknown_provider_lists_configured_names() -> None:
    write_config(providers(corporate=corp(), github=corp()))
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corprate")
    assert "corporate, github" in str(err.value) and "did you mean 'corporate'" in str(err.value)
    with pytest.raises(ConfigurationError, match="no provider is configured"):
        build_provider_config("x", config={})


# --------------------------------------------------------------------------- secrets


def test_sops_client_secret_is_resolved_not_dropped(
    tmp_path: Path, age_identity: AgeIdentity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference silently dropped sops:// client secrets, turning the client public."""
    conf_dir = user_file().parent
    conf_dir.mkdir(parents=True)
    sops_encrypt({"github": {"secret": SECRET}}, conf_dir / "secrets.yaml", age_identity.recipient)
    write_config(providers(github=corp(client_secret="sops://secrets.yaml#github.secret")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the config file, not the cwd
    config = build_provider_config("github")
    assert config.client_secret == SECRET
    assert not config.is_public_client
    assert SECRET not in repr(config)
    raw = get_provider_config("github")
    assert raw is not None and raw["client_secret"] == "sops://secrets.yaml#github.secret"


def test_broken_sops_client_secret_is_an_error_not_a_public_client(
    age_identity: AgeIdentity,
) -> None:
    conf_dir = user_file().parent
    conf_dir.mkdir(parents=True)
    sops_encrypt({"github": {"secret": SECRET}}, conf_dir / "secrets.yaml", age_identity.recipient)
    path = write_config(providers(github=corp(client_secret="sops://secrets.yaml#github.typo")))
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("github")
    assert "sops://secrets.yaml#github.typo" in str(err.value)
    assert err.value.file == str(path)
    assert err.value.provider == "github"
    assert err.value.key == "auth.providers.github.client_secret"
    assert SECRET not in str(err.value)


def test_a_broken_reference_only_breaks_its_own_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KST_UNSET", raising=False)
    write_config(providers(broken=corp(client_secret="env://KST_UNSET", pkce="bad"), good=corp()))
    assert list_configured_providers() == ["broken", "good"]
    assert build_provider_config("good").client_id == "app"
    assert get_auth_settings().providers["broken"]["client_secret"] == "env://KST_UNSET"
    with pytest.raises(ConfigurationError, match="KST_UNSET is not set"):
        build_provider_config("broken")


def test_every_string_of_a_provider_is_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KST_CLIENT_ID", "from-env")
    monkeypatch.setenv("KST_API_KEY", SECRET)
    path = write_config(
        providers(
            corp=corp(
                client_id="env://KST_CLIENT_ID",
                client_secret="file://client.secret",
                headers={"X-Api-Key": "env://KST_API_KEY"},
                extra={"authorize_params": {"acr_values": "env://KST_CLIENT_ID"}},
            )
        )
    )
    (path.parent / "client.secret").write_text(SECRET + "\n")
    config = build_provider_config("corp")
    assert config.client_id == "from-env"
    assert config.client_secret == SECRET
    assert config.headers == {"X-Api-Key": SECRET}
    assert config.extra["authorize_params"] == {"acr_values": "from-env"}
    assert SECRET not in repr(config)


def test_secret_in_overrides_is_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KST_SECRET", SECRET)
    config = build_provider_config(
        "corp", config=providers(corp=corp()), client_secret="env://KST_SECRET"
    )
    assert config.client_secret == SECRET


# --------------------------------------------------------------------------- raw config & names


def test_get_provider_config_is_a_raw_copy() -> None:
    write_config(
        providers(
            corp=corp(client_secret="env://WHATEVER", token_endpoint="https://x.example.com/t")
        )
    )
    raw = get_provider_config("corp")
    assert raw == corp(client_secret="env://WHATEVER", token_endpoint="https://x.example.com/t")
    assert raw is not None
    raw["client_id"] = "mutated"
    assert get_provider_config("corp") == corp(
        client_secret="env://WHATEVER", token_endpoint="https://x.example.com/t"
    )
    assert get_provider_config("absent") is None


def test_default_provider_is_validated() -> None:
    config = {"auth": {"default_provider": "corp", "providers": {"corp": corp(), "b": corp()}}}
    assert get_default_provider_name(config=config) == "corp"
    assert get_default_provider_name(config=providers(a=corp())) is None
    path = write_config({"auth": {"default_provider": "missing", "providers": {"corp": corp()}}})
    with pytest.raises(ConfigurationError) as err:
        get_default_provider_name()
    assert "'missing'" in str(err.value) and "corp" in str(err.value)
    assert err.value.file == str(path) and err.value.key == "auth.default_provider"


def test_resolve_provider_name_order() -> None:
    two = providers(a=corp(), b=corp())
    assert resolve_provider_name("b", config=two) == "b"
    with_default = {"auth": {**two["auth"], "default_provider": "a"}}
    assert resolve_provider_name(None, config=with_default) == "a"
    assert resolve_provider_name(None, config=providers(only=corp())) == "only"
    with pytest.raises(ConfigurationError, match=r"Several providers are configured \(a, b\)"):
        resolve_provider_name(None, config=two)
    with pytest.raises(ConfigurationError, match="No provider is configured"):
        resolve_provider_name(None, config={})
    with pytest.raises(ConfigurationError, match="configured providers: a, b"):
        resolve_provider_name("c", config=two)


# --------------------------------------------------------------------------- config= forms


def test_config_mapping_forms() -> None:
    write_config(providers(from_file=corp()))  # ignored whenever config= is given
    whole = {"ssl": {"verify": False}, "auth": {"providers": {"x": corp()}}}
    section = {"providers": {"x": corp()}, "discovery_ttl": 5}
    ssl_only = {"ssl": {"verify": False}}
    assert list_configured_providers(config=whole) == ["x"]
    assert list_configured_providers(config=section) == ["x"]
    assert get_auth_settings(config=section).discovery_ttl == 5
    assert list_configured_providers(config=ssl_only) == []
    assert get_ssl_settings(config=ssl_only).verify is False
    assert list_configured_providers() == ["from_file"]
    with pytest.raises(ConfigurationError, match="must be a mapping"):
        list_configured_providers(config=["not", "a", "mapping"])  # type: ignore[arg-type]


def test_loaded_config_keeps_provenance() -> None:
    path = write_config(providers(corp=corp(pkce="no")))
    loaded = load_config()
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corp", config=loaded)
    assert err.value.file == str(path)


def test_mapping_errors_have_no_file() -> None:
    with pytest.raises(ConfigurationError) as err:
        build_provider_config("corp", config=providers(corp=corp(pkce="no")))
    assert err.value.file is None
    assert str(err.value).startswith("auth.providers.corp.pkce: ")


# --------------------------------------------------------------------------- storage & setup


class StorageRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, storage_type: str = "file", **kwargs: Any) -> object:
        self.calls.append((storage_type, kwargs))
        return types.SimpleNamespace(kind=storage_type, **kwargs)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> StorageRecorder:
    import kstlib.auth.token

    fake = StorageRecorder()
    monkeypatch.setattr(kstlib.auth.token, "get_token_storage", fake)
    return fake


def test_storage_defaults_to_file_in_the_user_config_dir(recorder: StorageRecorder) -> None:
    get_token_storage_for_provider("corp", config=providers(corp=corp()))
    expected = Path(os.environ["XDG_CONFIG_HOME"]) / "kstlib" / "auth" / "tokens"
    assert recorder.calls == [("file", {"directory": expected})]


def test_storage_per_provider_override_and_sops_recipients(recorder: StorageRecorder) -> None:
    config = {
        "auth": {
            "token_storage": "memory",
            "storage": {"sops": {"directory": "/var/tokens", "age_recipients": ["age1xyz"]}},
            "providers": {"enc": corp(token_storage="sops"), "mem": corp()},
        }
    }
    get_token_storage_for_provider("enc", config=config)
    get_token_storage_for_provider("mem", config=config)
    assert recorder.calls == [
        (
            "sops",
            {
                "directory": Path("/var/tokens"),
                "age_recipients": ("age1xyz",),
                "sops_binary": "sops",
            },
        ),
        ("memory", {}),
    ]


def test_storage_pass_through_backend_options(
    recorder: StorageRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Options of a backend that declares no settings (a stand-in "redis") pass through."""
    from kstlib.auth.token import factory

    undeclared = factory.StorageBackend("redis", factory._memory, settings=None)
    monkeypatch.setitem(factory._REGISTRY, "redis", undeclared)
    config = {
        "auth": {
            "token_storage": "redis",
            "storage": {"redis": {"url": "redis://127.0.0.1:6379/0"}},
            "providers": {"corp": corp()},
        }
    }
    get_token_storage_for_provider("corp", config=config)
    assert recorder.calls == [("redis", {"url": "redis://127.0.0.1:6379/0"})]


def test_invalid_provider_token_storage() -> None:
    path = write_config(providers(corp=corp(token_storage="floppy")))
    with pytest.raises(ConfigurationError) as err:
        get_token_storage_for_provider("corp")
    assert err.value.key == "auth.providers.corp.token_storage" and err.value.file == str(path)
    assert "file, keyring, memory, redis, sops" in str(err.value)


def test_real_token_storage_is_built() -> None:
    from kstlib.auth.token import FileTokenStorage, MemoryTokenStorage

    assert isinstance(
        get_token_storage_for_provider("c", config=providers(c=corp())), FileTokenStorage
    )
    memory = providers(c=corp(token_storage="memory"))
    assert isinstance(get_token_storage_for_provider("c", config=memory), MemoryTokenStorage)


def test_load_provider_setup(recorder: StorageRecorder) -> None:
    path = write_config(
        {
            "auth": {
                "trace": {"pretty": False},
                "callback_server": {"port": 9001},
                "providers": {"gh": corp(type="oauth", token_storage="memory")},
            }
        }
    )
    setup = load_provider_setup(None, client_id="override")
    assert setup.name == "gh"
    assert setup.provider_type == "oauth2"
    assert setup.config.client_id == "override"
    assert setup.token_storage_type == "memory"
    assert setup.token_storage.kind == "memory"  # type: ignore[attr-defined]
    assert setup.trace.pretty is False
    assert setup.callback_server.port == 9001
    assert setup.source == str(path)
    assert setup.ssl == SSLSettings(verify=True, ca_bundle=None)
    overridden = load_provider_setup("gh", token_storage="file", type="oidc")
    assert (overridden.token_storage_type, overridden.provider_type) == ("file", "oidc")


class FakeProvider:
    built: list[tuple[str, Any, dict[str, Any]]] = []

    @classmethod
    def from_config(cls, name: str, *, config: Any = None, **overrides: Any) -> FakeProvider:
        cls.built.append((name, config, overrides))
        return cls()


class FakeOIDC(FakeProvider):
    pass


class FakeOAuth2(FakeProvider):
    pass


@pytest.fixture
def fake_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeProvider.built = []
    monkeypatch.setitem(auth_config._PROVIDER_CLASSES, "oidc", (__name__, "FakeOIDC"))
    monkeypatch.setitem(auth_config._PROVIDER_CLASSES, "oauth2", (__name__, "FakeOAuth2"))


@pytest.mark.usefixtures("fake_classes")
def test_get_provider_picks_the_class_by_type() -> None:
    path = write_config(
        {
            "auth": {
                "default_provider": "corp",
                "providers": {"corp": corp(), "gh": corp(type="oauth2")},
            }
        }
    )
    assert isinstance(get_provider(), FakeOIDC)
    assert isinstance(get_provider("gh", client_id="x"), FakeOAuth2)
    assert isinstance(get_provider("gh", type="oidc"), FakeOIDC)
    name, config, overrides = FakeProvider.built[1]
    assert name == "gh" and overrides == {"client_id": "x"}
    assert config.source_of("auth", "providers", "gh").path == path  # provenance passed on


@pytest.mark.usefixtures("fake_classes")
def test_get_provider_errors() -> None:
    with pytest.raises(ConfigurationError, match="Unknown provider 'nope'"):
        get_provider("nope", config=providers(corp=corp()))
    with pytest.raises(ConfigurationError, match="valid types"):
        get_provider("corp", config=providers(corp=corp(type="saml")))
    path = write_config(providers(corp=corp()))
    with pytest.raises(ConfigurationError, match="override type: unknown provider type") as err:
        get_provider("corp", type="saml")
    assert err.value.file is None and str(path) not in str(err.value)
    assert FakeProvider.built == []
