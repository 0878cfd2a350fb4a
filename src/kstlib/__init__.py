"""kstlib: config-driven OAuth2 / OpenID Connect client layer (``kstlib.auth``)."""

__version__ = "0.1.0"
