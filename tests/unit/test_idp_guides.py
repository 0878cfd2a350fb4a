"""The identity provider guides (``docs/idps/``) stay true to this project's configuration.

Every ``kstlib.conf.yml`` block of a guide is written to a file and loaded by the real
loader (:func:`kstlib.config.load_config`), with a :class:`ConfigWarning` (an unknown or
misspelt key) turned into an error; every provider in it is validated
(:func:`build_provider_config`, its ``env://`` references resolved) and built with
:func:`get_provider` (no network: discovery is lazy). Then what each guide promises about
its identity provider is checked on the loaded settings: the redirect URI it tells you to
register is the one the configuration uses, the clients are public (Google's desktop
client aside), and the quirks (Auth0's trailing slash, no ``common`` issuer for Entra,
Google's ``access_type=offline``, no ``offline_access`` for Google and GitLab, Okta's custom
authorization server, Keycloak's realm URL) are in the configuration, not only in the prose.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import yaml

from kstlib.auth import AuthProviderConfig, OAuth2Provider, OIDCProvider, get_provider
from kstlib.auth.config import (
    ConfigWarning,
    build_provider_config,
    get_auth_settings,
    get_default_provider_name,
    get_provider_type,
    get_ssl_settings,
    get_token_storage_for_provider,
    list_configured_providers,
)
from kstlib.config import load_config
from tests.integration.test_docs_examples import Block, extract_blocks

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GUIDES = DOCS / "idps"
EXPECTED = ("keycloak", "entra", "okta", "google", "auth0", "gitlab")
_SECTIONS = frozenset({"auth", "ssl"})


def _config_blocks(page: Path) -> list[Block]:
    """The blocks of ``page`` that are a ``kstlib.conf.yml``."""
    found = []
    for block in extract_blocks(page):
        if block.language != "yaml":
            continue
        data = yaml.safe_load(block.text)
        if isinstance(data, dict) and data and set(data) <= _SECTIONS:
            found.append(block)
    return found


def _load_guide(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, AuthProviderConfig]:
    """Load every configuration block of guide ``name``; its providers' validated settings."""
    configs: dict[str, AuthProviderConfig] = {}
    blocks = _config_blocks(GUIDES / f"{name}.md")
    assert blocks, f"docs/idps/{name}.md has no configuration block"
    for block in blocks:
        where = f"docs/idps/{name}.md:{block.line}"
        assert "sops://" not in block.text and "file://" not in block.text, where
        for variable in re.findall(r"env://([A-Za-z_][A-Za-z0-9_]*)", block.text):
            monkeypatch.setenv(variable, f"guide-example-{variable.lower()}")
        path = tmp_path / f"{name}-{block.line}.kstlib.conf.yml"
        path.write_text(block.text, encoding="utf-8")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", ConfigWarning)
                loaded = load_config(path=path)
                get_auth_settings(config=loaded)
                get_ssl_settings(config=loaded)
                get_default_provider_name(config=loaded)
                names = list_configured_providers(config=loaded)
                assert names, f"{where}: no provider"
                for provider_name in names:
                    assert provider_name not in configs, f"{where}: {provider_name} twice"
                    configs[provider_name] = build_provider_config(provider_name, config=loaded)
                    assert get_provider_type(provider_name, config=loaded) == "oidc"
                    get_token_storage_for_provider(provider_name, config=loaded)
                    with get_provider(provider_name, config=loaded) as provider:
                        assert isinstance(provider, OIDCProvider), where
                        assert isinstance(provider, OAuth2Provider)
        except Exception as exc:
            raise AssertionError(f"{where}: this configuration fails: {exc}") from exc
    return configs


def _prose(name: str) -> str:
    """The guide's text outside its configuration blocks."""
    text = (GUIDES / f"{name}.md").read_text(encoding="utf-8")
    for block in _config_blocks(GUIDES / f"{name}.md"):
        text = text.replace(block.text, "")
    return text


def test_one_guide_per_identity_provider_all_in_the_toctree() -> None:
    pages = {page.stem for page in GUIDES.glob("*.md")}
    assert pages == {*EXPECTED, "index"}
    index = (GUIDES / "index.md").read_text(encoding="utf-8")
    toctree = index[index.index("```{toctree}") :]
    toctree = toctree[: toctree.index("\n```", 3)]
    assert [line for line in toctree.splitlines() if line in EXPECTED] == list(EXPECTED)
    assert "\nidps/index\n" in (DOCS / "index.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", EXPECTED)
def test_guide_configuration_loads_and_matches_what_it_tells_you_to_register(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = _load_guide(name, tmp_path, monkeypatch)
    prose = _prose(name)
    for provider_name, config in configs.items():
        # the loopback redirect URI (RFC 8252) the guide tells you to register, port included
        loopback = r"http://(127\.0\.0\.1|localhost|\[::1\]):\d+/callback"
        assert re.fullmatch(loopback, config.redirect_uri), config.redirect_uri
        assert f"`{config.redirect_uri}`" in prose, f"{provider_name}: {config.redirect_uri}"
        if config.post_logout_redirect_uri:
            assert f"`{config.post_logout_redirect_uri}`" in prose
        assert config.pkce
        # a command-line client is public; only Google's desktop client carries a secret
        assert config.is_public_client == (name != "google"), provider_name
        # secrets never written in a guide's file
        assert config.client_secret is None or config.client_secret.startswith("guide-example-")


def test_keycloak_issuer_is_the_realm_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (config,) = _load_guide("keycloak", tmp_path, monkeypatch).values()
    assert config.issuer is not None and re.search(r"/realms/[^/]+$", config.issuer)
    assert "offline_access" in config.scopes


def test_entra_never_uses_a_common_issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = _load_guide("entra", tmp_path, monkeypatch)
    tenant = configs["entra"]
    assert tenant.issuer is not None
    assert re.fullmatch(
        r"https://login\.microsoftonline\.com/[0-9a-f-]{36}/v2\.0", tenant.issuer
    ), "a single-tenant issuer names the tenant's GUID and ends in /v2.0"
    # the multi-tenant client: manual mode (no issuer), keys pinned by jwks_uri
    (multi,) = [c for c in configs.values() if c.issuer is None]
    assert multi.jwks_uri == "https://login.microsoftonline.com/common/discovery/v2.0/keys"
    assert multi.authorize_url and multi.token_url
    for config in configs.values():
        for tenantless in ("/common/v2.0", "/organizations/v2.0", "/consumers/v2.0"):
            assert tenantless not in (config.issuer or "")
        assert config.redirect_uri.startswith("http://localhost:")  # registrable in the portal


def test_okta_uses_a_custom_authorization_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config,) = _load_guide("okta", tmp_path, monkeypatch).values()
    assert config.issuer is not None and re.search(r"/oauth2/[^/]+$", config.issuer)
    assert not config.issuer.endswith("/")
    assert "offline_access" in config.scopes


def test_google_desktop_client_secret_and_offline_access_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config,) = _load_guide("google", tmp_path, monkeypatch).values()
    assert config.issuer == "https://accounts.google.com"
    assert config.client_secret == "guide-example-google_client_secret"  # from env://
    assert "offline_access" not in config.scopes  # Google answers invalid_scope
    assert config.extra["authorize_params"] == {"access_type": "offline", "prompt": "consent"}


def test_auth0_issuer_keeps_its_trailing_slash_and_names_an_audience(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (config,) = _load_guide("auth0", tmp_path, monkeypatch).values()
    assert config.issuer is not None and config.issuer.endswith(".auth0.com/")
    assert config.extra["authorize_params"]["audience"].startswith("https://")
    assert "offline_access" in config.scopes


def test_gitlab_scopes_are_gitlab_scopes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (config,) = _load_guide("gitlab", tmp_path, monkeypatch).values()
    assert config.issuer == "https://gitlab.com"
    assert "offline_access" not in config.scopes
    assert {"openid", "read_api", "read_repository"} <= set(config.scopes)
    prose = _prose("gitlab")
    for scope in config.scopes:  # each one is among those the guide says to select
        assert f"`{scope}`" in prose, scope
