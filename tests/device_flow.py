"""The user's side of a device login (RFC 8628) at the test IdP, played over plain HTTP.

:func:`approve_device` / :func:`deny_device` do what a person does on their phone: open the
verification page (with the code filled in, or typing it), confirm the code, log in with the
devInteractions form and consent, or abort at the confirmation. No browser binary: the same
form-posting approach as :func:`tests.idp_support.browser_login`, with httpx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import httpx

from tests import loopback_http
from tests.idp_support import CONFIDENTIAL_CLIENT_ID, OidcClient

DEVICE = OidcClient("kstlib-device", "kstlib-device-secret", "client_secret_basic")
DEVICE_PUBLIC = OidcClient("kstlib-device-public", None, "none")
#: Its device codes live 2 s at the IdP (DEVICE_SHORT_TTL in tests/idp/server.mjs).
DEVICE_SHORT = OidcClient(
    "kstlib-device-short", "kstlib-device-short-secret", "client_secret_basic"
)
#: The interval the test IdP announces (DEVICE_INTERVAL in tests/idp/server.mjs).
IDP_INTERVAL = 1
#: A client the IdP does not allow the device grant (the code flow clients).
NOT_A_DEVICE_CLIENT_ID = CONFIDENTIAL_CLIENT_ID


#: What the IdP's verification page says once it is done with a code (besides success).
_OUTCOMES = (
    "Sign-in Success",
    "was interrupted",
    "code you entered is incorrect",
    "error processing",
)


class DeviceVerificationError(RuntimeError):
    """The verification pages did not end where a user would expect."""


@dataclass
class _Form:
    id: str
    action: str
    fields: dict[str, str] = field(default_factory=dict)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.text: list[str] = []
        self._open = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.forms.append(_Form(a.get("id", ""), a.get("action", "")))
            self._open = True
        elif tag == "input" and self._open and a.get("name"):
            self.forms[-1].fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = False

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def _parse(response: httpx.Response) -> _Page:
    page = _Page()
    page.feed(response.text)
    return page


def _submit(http: httpx.Client, response: httpx.Response, form: _Form, **values: str) -> Any:
    action = urljoin(str(response.url), form.action or str(response.url))
    return http.post(action, data={**form.fields, **values}, follow_redirects=False)


def _verify(
    verification_uri: str,
    user_code: str | None,
    *,
    approve: bool,
    username: str,
    max_steps: int = 20,
) -> str:
    """Walk the verification pages; return the final page's text."""
    with loopback_http.client(timeout=10.0) as http:
        response = http.get(verification_uri, follow_redirects=False)
        for _ in range(max_steps):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                response = http.get(location, follow_redirects=False)
                continue
            page = _parse(response)
            text = " | ".join(page.text)
            forms = {form.id: form for form in page.forms}
            if any(marker in text for marker in _OUTCOMES):  # the IdP's last word
                return text
            if "op.deviceInputForm" in forms:  # the user types the code
                if user_code is None:
                    raise DeviceVerificationError(f"the IdP asks for a code: {text[:500]}")
                response = _submit(http, response, forms["op.deviceInputForm"], user_code=user_code)
            elif "op.deviceConfirmForm" in forms:
                confirm = forms["op.deviceConfirmForm"]
                if approve:
                    response = _submit(http, response, confirm)
                else:
                    fields = {k: v for k, v in confirm.fields.items() if k != "confirm"}
                    response = _submit(
                        http, response, _Form(confirm.id, confirm.action, fields), abort="yes"
                    )
            elif page.forms and page.forms[0].fields.get("prompt") == "login":
                response = _submit(http, response, page.forms[0], login=username, password="pw")
            elif page.forms and page.forms[0].fields.get("prompt") == "consent":
                response = _submit(http, response, page.forms[0])
            elif len(page.forms) == 1 and "xsrf" in page.forms[0].fields:  # auto-submitted form
                response = _submit(http, response, page.forms[0])
            else:
                return text
        raise DeviceVerificationError(f"no final page after {max_steps} steps ({response.url})")


def approve_device(
    verification_uri: str, user_code: str | None = None, *, username: str = "alice"
) -> None:
    """Approve a device login: ``verification_uri_complete``, or ``verification_uri`` and the
    code typed in. Raises unless the IdP shows its success page."""
    text = _verify(verification_uri, user_code, approve=True, username=username)
    if "Sign-in Success" not in text:
        raise DeviceVerificationError(f"the device login was not approved: {text[:500]}")


def deny_device(verification_uri: str, user_code: str | None = None) -> None:
    """Abort a device login at the confirmation page (the IdP then answers access_denied)."""
    text = _verify(verification_uri, user_code, approve=False, username="alice")
    if "interrupted" not in text:
        raise DeviceVerificationError(f"the device login was not aborted: {text[:500]}")
