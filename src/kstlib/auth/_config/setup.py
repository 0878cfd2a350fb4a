"""``ProviderSetup``: everything a provider class needs to build itself (public as
:class:`kstlib.auth.config.ProviderSetup`, made when a provider is built)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kstlib.auth._config.settings import SSLSettings

if TYPE_CHECKING:
    from kstlib.auth._config.provider import AuthProviderConfig
    from kstlib.auth._config.settings import (
        CallbackServerSettings,
        StatusSettings,
        TraceSettings,
    )
    from kstlib.auth._config.values import ProviderType
    from kstlib.auth.token import AbstractTokenStorage

__all__ = ["ProviderSetup"]


@dataclass(frozen=True)
class ProviderSetup:
    """Everything a provider class needs to build itself from the configuration.

    ``OAuth2Provider.from_config`` is ``setup = load_provider_setup(name, config=config,
    **overrides)`` then ``cls(setup.name, setup.config, setup.token_storage, ...)``.
    """

    name: str
    provider_type: ProviderType
    config: AuthProviderConfig
    token_storage: AbstractTokenStorage
    token_storage_type: str
    trace: TraceSettings
    callback_server: CallbackServerSettings
    status: StatusSettings
    source: str | None = None

    @property
    def ssl(self) -> SSLSettings:
        """The provider's effective TLS settings (its own, else the global ``ssl:`` section)."""
        return SSLSettings(verify=self.config.ssl_verify, ca_bundle=self.config.ssl_ca_bundle)


ProviderSetup.__module__ = "kstlib.auth.config"  # where users import it from
