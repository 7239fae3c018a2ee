"""Client credentials: the SMS Leads username and API token, never logged or echoed.

    Authorization: Basic base64(username:token)            (every generated client can)
    Authorization: Bearer <token> + X-SMSLeads-Username    (for clients that hold a token)
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from starlette.datastructures import Headers

from proxy.errors import Unauthorized

USERNAME_HEADER = "x-smsleads-username"
# RFC 6750 §2.1 b64token; also keeps CR, LF and other controls out of the upstream header.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_USERNAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    token: str

    def __repr__(self) -> str:  # keeps the token out of tracebacks and debug output
        return f"Credentials(username={self.username!r}, token=<redacted>)"


def _utf8(header: str) -> str:
    """Starlette decodes headers as Latin-1; a UTF-8 username is read as UTF-8."""
    try:
        return header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return header


def credentials(headers: Headers) -> Credentials:
    header = headers.get("authorization")
    if not header:
        raise Unauthorized("send HTTP Basic credentials: your SMS Leads username and API token")
    scheme, _, param = header.strip().partition(" ")
    param = param.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(param, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("the Basic credentials are not valid base64 of UTF-8") from exc
        username, colon, token = decoded.partition(":")
        if not colon:
            raise Unauthorized("the Basic credentials need username:token")
    elif scheme.lower() == "bearer":
        username, token = _utf8(headers.get(USERNAME_HEADER, "")), param
        if not username:
            raise Unauthorized("a Bearer token needs the X-SMSLeads-Username header")
    else:
        raise Unauthorized(f"unsupported authorization scheme {scheme[:20]!r}")
    username = username.strip()
    if not _USERNAME.fullmatch(username):
        raise Unauthorized("the username is empty, too long or has control characters")
    if not _TOKEN.fullmatch(token):
        raise Unauthorized("the API token is empty or has characters a token cannot have")
    return Credentials(username, token)
