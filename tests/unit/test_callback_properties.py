"""Property tests: callback query parsing and request handling raise only typed errors."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from kstlib.auth.callback import (
    CallbackServer,
    parse_callback_params,
    parse_pasted_redirect,
)
from kstlib.auth.errors import CallbackServerError
from tests.hypothesis_support import examples

_URLISH = st.text(alphabet=string.printable + "%éà\x00\xff", max_size=300)


@given(_URLISH)
def test_parse_callback_params_returns_a_dict_or_a_typed_error(text: str) -> None:
    try:
        params = parse_callback_params(text)
    except CallbackServerError as exc:
        assert exc.reason == "malformed query"
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())


@given(_URLISH)
def test_parse_pasted_redirect_returns_a_result_or_a_typed_error(text: str) -> None:
    try:
        result = parse_pasted_redirect(text)
    except CallbackServerError as exc:
        assert exc.reason == "malformed query"
    else:
        assert result.code is None or isinstance(result.code, str)


@settings(max_examples=examples(300))
@given(target=_URLISH, host=st.one_of(st.none(), st.text(max_size=40)))
def test_request_handling_never_raises_and_never_completes_without_the_state(
    target: str, host: str | None
) -> None:
    """Whatever the target and Host header, no exception, and no completion with a wrong state."""
    server = CallbackServer(port=0, expected_state="the-real-state")
    reply = server._handle(target, host)
    assert reply.status in {200, 400, 404, 409, 414}
    if server.result is not None:
        assert server.result.state == "the-real-state"
