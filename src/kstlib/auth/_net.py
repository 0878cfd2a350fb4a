"""Small network predicates shared by config validation, discovery and the callback server."""

from __future__ import annotations

import functools

__all__ = ["is_loopback_host"]


@functools.lru_cache(maxsize=256)
def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address (127.0.0.0/8, ``::1``).

    IPv6 literals may keep their URL brackets (``[::1]``).
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        import ipaddress  # only for a literal address (#16 item 4: not at import)

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
