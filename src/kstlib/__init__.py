"""kstlib: config-driven OAuth2 / OpenID Connect client layer (``kstlib.auth``).

Distributed as ``kstlib-auth``. The PyPI project named ``kstlib`` is an older, unrelated
library that installs the same ``kstlib`` package: the two cannot share an environment (their
files would mix), so importing this package next to it fails loudly with the fix.
"""

from __future__ import annotations

import os

__all__ = ["__version__"]

#: The version, written only here (the package metadata reads it; ``kstlib --version`` shows it).
__version__ = "0.1.0"


def _refuse_a_mixed_install() -> None:
    """Raise ImportError when the unrelated ``kstlib`` distribution shares our directory."""
    site = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        entries = os.listdir(site)
    except OSError:
        return
    for entry in entries:
        if entry.startswith("kstlib-") and entry.endswith((".dist-info", ".egg-info")):
            other = entry.removeprefix("kstlib-").rsplit(".", 1)[0]
            raise ImportError(
                f"The unrelated PyPI project 'kstlib' ({other}) is installed in {site} next to "
                "kstlib-auth: both install the 'kstlib' package and their files are now mixed. "
                "Use separate virtual environments, or run: pip uninstall -y kstlib kstlib-auth "
                "and install kstlib-auth again."
            )


_refuse_a_mixed_install()
