"""The tests' own HTTP calls (to the IdP, the callback, the API stand-ins on 127.0.0.1).

Each client gets the process's shared verifying SSL context
(:func:`kstlib.auth._http.shared_ssl_context`), not one of its own: httpx's default loads the
whole CA bundle for every client (25-40 ms of CPU), and the suite builds thousands of them.
"""

from __future__ import annotations

from typing import Any

import httpx

from kstlib.auth._http import shared_ssl_context


def client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(**kwargs)`` with the shared SSL context."""
    return httpx.Client(verify=shared_ssl_context(), **kwargs)


def async_client(**kwargs: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**kwargs)`` with the shared SSL context."""
    return httpx.AsyncClient(verify=shared_ssl_context(), **kwargs)


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """``httpx.request``: one request on a client of its own, closed before returning."""
    with client() as http:
        return http.request(method, url, **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    """``httpx.get``."""
    return request("GET", url, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    """``httpx.post``."""
    return request("POST", url, **kwargs)
