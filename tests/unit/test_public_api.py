"""The reference's import paths, names, argument names and defaults are a contract."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys

import pytest

# (module, name) for every name the reference page documents, at its documented path.
DOCUMENTED = [
    ("kstlib.auth", "OIDCProvider"),
    ("kstlib.auth", "OAuth2Provider"),
    ("kstlib.auth", "AuthSession"),
    ("kstlib.auth", "get_provider"),
    ("kstlib.auth.providers", "OIDCProvider"),
    ("kstlib.auth.providers", "OAuth2Provider"),
    ("kstlib.auth.providers", "AuthProviderConfig"),
    ("kstlib.auth.providers.base", "AbstractAuthProvider"),
    ("kstlib.auth.token", "SOPSTokenStorage"),
    ("kstlib.auth.token", "FileTokenStorage"),
    ("kstlib.auth.token", "MemoryTokenStorage"),
    ("kstlib.auth.token", "AbstractTokenStorage"),
    ("kstlib.auth.check", "TokenChecker"),
    ("kstlib.auth.check", "TokenCheckReport"),
    ("kstlib.auth.check", "ValidationStep"),
    ("kstlib.auth.models", "Token"),
    ("kstlib.auth.config", "get_provider_config"),
    ("kstlib.auth.config", "list_configured_providers"),
    ("kstlib.auth.requests", "ProviderAuth"),  # extra kstlib[requests] (#16 item 3)
]


@pytest.mark.parametrize(("module", "name"), DOCUMENTED)
def test_documented_names_import(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


def test_kstlib_auth_all_resolves() -> None:
    import kstlib.auth

    for name in kstlib.auth.__all__:
        assert getattr(kstlib.auth, name) is not None, name
    with pytest.raises(AttributeError):
        kstlib.auth.no_such_name  # noqa: B018


def params(obj: object) -> list[tuple[str, object, str]]:
    sig = inspect.signature(obj)  # type: ignore[arg-type]
    return [(p.name, p.default, p.kind.name) for p in sig.parameters.values() if p.name != "self"]


E = inspect.Parameter.empty


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "kstlib.auth.OIDCProvider.__init__",
            [("name", E), ("config", E), ("token_storage", E), ("http_client", None)],
        ),
        (
            "kstlib.auth.OAuth2Provider.__init__",
            [("name", E), ("config", E), ("token_storage", E), ("http_client", None)],
        ),
        (
            "kstlib.auth.OIDCProvider.from_config",
            [("provider_name", E), ("config", None), ("http_client", None)],
        ),
        ("kstlib.auth.OIDCProvider.discover", [("force", False)]),
        ("kstlib.auth.OIDCProvider.get_authorization_url", [("state", None)]),
        (
            "kstlib.auth.OIDCProvider.exchange_code",
            [("code", E), ("state", E), ("code_verifier", None)],
        ),
        ("kstlib.auth.OIDCProvider.refresh", [("token", None)]),
        ("kstlib.auth.OIDCProvider.revoke", [("token", None)]),
        ("kstlib.auth.OIDCProvider.get_userinfo", [("token", None)]),
        ("kstlib.auth.OIDCProvider.get_token", [("auto_refresh", True)]),
        ("kstlib.auth.OIDCProvider.save_token", [("token", E)]),
        (
            "kstlib.auth.AuthSession.__init__",
            [
                ("provider", E),
                ("timeout", 30.0),
                ("auto_refresh", True),
                ("retry_on_401", True),
                ("ssl_verify", None),
                ("ssl_ca_bundle", None),
            ],
        ),
        (
            "kstlib.auth.token.SOPSTokenStorage.__init__",
            [("directory", E), ("sops_binary", "sops"), ("age_recipients", None)],
        ),
        ("kstlib.auth.token.FileTokenStorage.__init__", [("directory", None)]),
        (
            "kstlib.auth.check.TokenChecker.__init__",
            [("http_client", E), ("expected_issuer", None), ("expected_audience", None)],
        ),
        ("kstlib.auth.check.TokenChecker.check", [("token_str", E), ("token_type", "id_token")]),
        ("kstlib.auth.check.ValidationStep.__init__", [("name", E), ("passed", E), ("message", E)]),
        ("kstlib.auth.config.get_provider_config", [("provider_name", E), ("config", None)]),
    ],
)
def test_signatures_match_the_reference(path: str, expected: list[tuple[str, object]]) -> None:
    module, _, attr = path.rpartition(".")
    owner_path, _, cls_name = module.rpartition(".")
    try:
        owner = getattr(importlib.import_module(owner_path), cls_name)
    except (ImportError, AttributeError, ValueError):
        owner = importlib.import_module(module)
    obj = getattr(owner, attr)
    got = params(obj)
    # the documented parameters come first, in order, with their defaults (extras may follow)
    assert [(n, d) for n, d, _ in got[: len(expected)]] == expected


def test_token_check_report_fields_and_defaults() -> None:
    from kstlib.auth.check import TokenCheckReport

    report = TokenCheckReport()
    assert report.token_type == "id_token" and report.valid is False and report.steps == []
    for name in ("header", "payload", "discovery_data", "jwks_data", "x509_info"):
        assert getattr(report, name) == {}
    for name in (
        "signature_algorithm",
        "key_id",
        "discovery_url",
        "jwks_uri",
        "public_key_pem",
        "key_fingerprint",
        "key_type",
        "key_size_bits",
        "issuer_match",
        "audience_match",
        "error",
    ):
        assert getattr(report, name) is None


def test_import_is_cheap() -> None:
    """import kstlib.auth loads neither httpx nor cryptography (they load on first use)."""
    heavy = "('httpx', 'cryptography', 'yaml', 'typer', 'rich')"
    code = f"import sys, kstlib.auth; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def _loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    probe = f"import sys\n{code}\nprint(sorted(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return list(ast.literal_eval(out.strip()))


def test_import_kstlib_auth_loads_nothing_costly() -> None:
    """import kstlib.auth loads not even typing, re or json (the CLI's fast path is below it)."""
    names = ("typing", "re", "json", "dataclasses", "enum", "pathlib", "kstlib.auth.errors")
    assert _loaded_after("import kstlib.auth", names) == []


def test_the_realistic_import_leaves_the_configuration_parts_for_the_first_call() -> None:
    """from kstlib.auth import OIDCProvider, AuthSession, get_provider builds no settings class;
    the configuration loader and its typed settings load when a call needs them."""
    parts = (
        "kstlib.config",
        "kstlib.auth._config.builder",
        "kstlib.auth._config.loading",
        "kstlib.auth._config.provider",
        "kstlib.auth._config.settings",
        "kstlib.auth._config.values",
        "yaml",
    )
    line = "from kstlib.auth import OIDCProvider, AuthSession, get_provider"
    assert _loaded_after(line, parts) == []
    called = f"{line}\nfrom kstlib.auth.config import get_auth_settings\nget_auth_settings()"
    assert set(_loaded_after(called, parts)) >= {"kstlib.config", "kstlib.auth._config.settings"}


def test_default_algorithms_are_asymmetric_only() -> None:
    from kstlib.auth._jose import ALLOWED_ALGORITHMS, SUPPORTED_ALGORITHMS

    assert set(ALLOWED_ALGORITHMS) <= set(SUPPORTED_ALGORITHMS)
    assert not any(a.startswith("HS") or a.lower() == "none" for a in ALLOWED_ALGORITHMS)


def test_config_storage_types_come_from_the_registry() -> None:
    """A name becomes a valid token_storage when registered, and stops being one when removed."""
    from kstlib.auth.config import get_auth_settings
    from kstlib.auth.errors import ConfigurationError
    from kstlib.auth.token import MemoryTokenStorage, factory, register_token_storage

    with pytest.raises(ConfigurationError, match="unknown token storage 'api-test-store'"):
        get_auth_settings(config={"auth": {"token_storage": "api-test-store"}})
    register_token_storage("api-test-store", MemoryTokenStorage)
    try:
        settings = get_auth_settings(config={"auth": {"token_storage": "API-Test-Store"}})
        assert settings.token_storage == "api-test-store"
        assert settings.storage.backends["api-test-store"].values == {}
    finally:
        del factory._REGISTRY["api-test-store"]
    with pytest.raises(ConfigurationError, match="valid: .*file"):
        get_auth_settings(config={"auth": {"token_storage": "api-test-store"}})
