"""The bounded reader of kstlib.auth._http against a real local server (tests/jwks_server.py):
encodings, the byte budget on the wire and after decompression, the total budget."""

from __future__ import annotations

import functools
import gzip
import json
import zlib

import httpx
import pytest

from kstlib.auth._http import (
    DEFAULT_REQUEST_BUDGET,
    HTTPFailure,
    request,
    request_budget,
    request_json,
)
from tests import loopback_http
from tests.jwks_server import JWKSServer, Route

# mtime=0: the same bytes in every process (pytest-xdist workers collect the same tests).
_compress = functools.partial(gzip.compress, mtime=0)
DOC = {"issuer": "https://idp.example.com", "keys": ["x" * 50] * 20}
BODY = json.dumps(DOC).encode()


def _serve(server: JWKSServer, body: bytes, encoding: str | None) -> str:
    headers = {"Content-Type": "application/json"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    server.set_route("/doc", Route(body=body, headers=headers))
    return server.url("/doc")


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (BODY, None),
        (BODY, "identity"),
        (_compress(BODY), "gzip"),
        (_compress(BODY), "GZIP"),
        (zlib.compress(BODY), "deflate"),
        (_compress(BODY), "identity, gzip"),
    ],
    ids=["plain", "identity", "gzip", "GZIP", "deflate", "identity-then-gzip"],
)
def test_identity_and_one_layer_are_read(
    server: JWKSServer, client: httpx.Client, body: bytes, encoding: str | None
) -> None:
    url = _serve(server, body, encoding)
    assert request_json(client, "GET", url).data == DOC


@pytest.mark.parametrize(
    ("body", "encoding", "fragment"),
    [
        (_compress(_compress(BODY)), "gzip, gzip", "only identity or one gzip/deflate"),
        (BODY, "br", "Content-Encoding 'br'"),
        (BODY, "zstd", "Content-Encoding 'zstd'"),
        (BODY, "compress", "Content-Encoding 'compress'"),
        (_compress(BODY)[:-20], "gzip", "truncated compressed body"),
        (b"\x1f\x8b garbage that is not gzip", "gzip", "corrupt compressed body"),
        (_compress(BODY) + b"trailing", "gzip", "data after the end"),
    ],
    ids=["stacked", "br", "zstd", "compress", "truncated", "corrupt", "trailing"],
)
def test_bad_encodings_are_refused(
    server: JWKSServer, client: httpx.Client, body: bytes, encoding: str, fragment: str
) -> None:
    url = _serve(server, body, encoding)
    with pytest.raises(HTTPFailure) as err:
        request_json(client, "GET", url)
    assert fragment in err.value.reason


def test_the_budget_counts_decompressed_bytes(server: JWKSServer, client: httpx.Client) -> None:
    inflated = b'{"pad": "' + b"x" * 5000 + b'"}'
    url = _serve(server, _compress(inflated), "gzip")
    assert len(_compress(inflated)) < 1000
    with pytest.raises(HTTPFailure, match="over 4096 bytes once decompressed"):
        request_json(client, "GET", url, max_bytes=4096)
    assert request_json(client, "GET", url, max_bytes=len(inflated)).data["pad"]


def test_the_budget_counts_wire_bytes_too(server: JWKSServer, client: httpx.Client) -> None:
    url = _serve(server, BODY, None)
    with pytest.raises(HTTPFailure, match="too large"):
        request_json(client, "GET", url, max_bytes=len(BODY) - 1)


def test_non_json_answers_are_read_raw_and_bounded(
    server: JWKSServer, client: httpx.Client
) -> None:
    server.set_route("/revoke", Route(body=b"", headers={}))
    answer = request(client, "POST", server.url("/revoke"))
    assert answer.status_code == 200 and answer.body == b"" and answer.json_or_none() is None
    server.set_route("/page", Route(status=404, body=b"<html>" + b"x" * 5000))
    with pytest.raises(HTTPFailure, match="too large"):
        request(client, "GET", server.url("/page"), max_bytes=1000)


def test_the_budget_comes_from_the_client_timeout() -> None:
    with loopback_http.client(timeout=httpx.Timeout(7.0, connect=2.0)) as client:
        assert request_budget(client) == 7.0
    with loopback_http.client(timeout=None) as client:
        assert request_budget(client) == DEFAULT_REQUEST_BUDGET
