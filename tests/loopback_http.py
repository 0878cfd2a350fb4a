"""The tests' own HTTP calls (to the IdP, the callback, the API stand-ins on 127.0.0.1).

Each client gets one verifying SSL context built once per process (httpx's own default,
``httpx.create_ssl_context()``), not one of its own: httpx loads the whole CA bundle for every
client (25-40 ms of CPU), and the suite builds thousands of them. Nothing here comes from
kstlib: the IdP harness (tests/idp_support.py) uses it from the bench's kstlib 3.8.2 venv and
the built wheel's venv too.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context, built once per process."""
    return httpx.create_ssl_context()


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
