"""Client credentials: the SMS Leads username and API token, never logged or echoed.

    Authorization: Basic base64(username:token)            (every generated client can)
    Authorization: Bearer <token> + X-SMSLeads-Username    (for clients that hold a token)

In single-tenant mode (:class:`Tenant`) the proxy holds the account and clients present one of
the proxy's own API keys instead:

    Authorization: Bearer <proxy key>
    Authorization: Basic base64(<any name>:<proxy key>)

A line of the keys file is a key, then optionally that key's own settings (the spend guard's,
proxy/guard.py, which checks their names and values):

    sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b daily-credits=5000
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import Headers

from proxy.errors import Unauthorized
from proxy.settings import Settings, SettingsError, named

USERNAME_HEADER = "x-smsleads-username"
# RFC 6750 §2.1 b64token; also keeps CR, LF and other controls out of the upstream header.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_USERNAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
_HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")
MIN_KEY_LENGTH = 16  # a guessable key would hand out the account
TENANT_CHALLENGE = 'Bearer realm="smsleads-proxy", Basic realm="smsleads-proxy", charset="UTF-8"'


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    token: str
    # Who presented them, however spelt: the token itself, or in single-tenant mode the
    # identified proxy API key. Idempotency-Keys and limits belong to it (only hashed).
    principal: str = ""

    def __post_init__(self) -> None:
        if not self.principal:
            object.__setattr__(self, "principal", self.token)

    def __repr__(self) -> str:  # keeps the token out of tracebacks and debug output
        return f"Credentials(username={self.username!r}, token=<redacted>)"


Authenticate = Callable[[Headers], Credentials]


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
        # Never quoted: an unknown scheme's value may be a bare token.
        raise Unauthorized("use the Basic or the Bearer authorization scheme")
    username = username.strip()
    if not _USERNAME.fullmatch(username):
        raise Unauthorized("the username is empty, too long or has control characters")
    if not _TOKEN.fullmatch(token):
        raise Unauthorized("the API token is empty or has characters a token cannot have")
    return Credentials(username, token)


# ── Single-tenant mode ───────────────────────────────────────────────────────────────────────


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class Tenant:
    """The one account the proxy speaks for, and the SHA-256 digests of the keys that may use it.

    Only digests are kept, so a memory dump or a keys file of ``sha256:`` lines gives no key
    away; SHA-256 without salt suits random keys (not passwords), as for GitHub's tokens. A
    presented key is looked up by its digest, as GitHub looks tokens up: the lookup's timing
    could tell only how the digest of the caller's own guess compares with the stored ones,
    which gives no key away, and it costs the same for 100,000 keys as for one.
    """

    username: str
    token: str = field(repr=False)
    digests: frozenset[bytes] = field(repr=False)
    # A key's own settings from its line of the keys file, by the key's digest: {name: value}.
    settings: Mapping[bytes, Mapping[str, str]] = field(default_factory=dict, repr=False)
    lines: Mapping[bytes, int] = field(default_factory=dict, repr=False)  # where each was

    def credentials(self, headers: Headers) -> Credentials:
        presented = digest(_presented_key(headers))
        if presented not in self.digests:
            raise Unauthorized("the API key is not one of this proxy's keys", TENANT_CHALLENGE)
        return Credentials(self.username, self.token, principal="key:" + presented.hex())


def _presented_key(headers: Headers) -> str:
    header = headers.get("authorization", "").strip()
    scheme, _, param = header.partition(" ")
    key = ""
    if scheme.lower() == "bearer":
        key = param.strip()
    elif scheme.lower() == "basic":
        try:
            key = base64.b64decode(param.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Unauthorized("the Basic credentials are not valid base64 of UTF-8",
                               TENANT_CHALLENGE) from exc
    if not key:
        raise Unauthorized("send this proxy's API key: Authorization: Bearer <key>",
                           TENANT_CHALLENGE)
    return key


def _lines(path: str) -> list[tuple[int, str]]:
    text = Path(path).read_text("utf-8")
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


def _key_settings(number: int, line: str) -> tuple[str, dict[str, str], int]:
    """A line of the keys file: its key, the ``name=value`` settings that follow it, and its
    number (for the guard's errors, which judge the settings)."""
    key, *words = line.split()
    settings: dict[str, str] = {}
    for word in words:
        name, equals, value = word.partition("=")
        if not (equals and name and value) or name in settings:
            raise SettingsError(f"invalid {named('api_keys_file')}, line {number}: after a key "
                                f"come its settings, each once, as name=value, not {word[:40]!r}")
        settings[name] = value
    return key, settings, number


def _key_digest(entry: str, origin: str) -> bytes:
    hashed = _HASHED.fullmatch(entry)
    if hashed:
        return bytes.fromhex(hashed.group(1))
    if len(entry) < MIN_KEY_LENGTH or not _TOKEN.fullmatch(entry):
        raise SettingsError(f"invalid {origin}: an API key needs at least {MIN_KEY_LENGTH} "
                            "characters of A-Z a-z 0-9 - . _ ~ + / (or write sha256:<hex>)")
    return digest(entry)


def _held_token(settings: Settings) -> str | None:
    if settings.token is not None and settings.token_file is not None:
        raise SettingsError(f"set {named('token')} or {named('token_file')}, not both")
    if settings.token_file is not None:
        try:
            token = Path(settings.token_file).read_text("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"invalid {named('token_file')}: cannot read it") from exc
        if not _TOKEN.fullmatch(token):
            raise SettingsError(f"invalid {named('token_file')}: the file holds no API token")
        return token
    if settings.token is not None and not _TOKEN.fullmatch(settings.token):
        raise SettingsError(f"invalid {named('token')}: not an API token")
    return settings.token


def tenant(settings: Settings) -> Tenant | None:
    """The single-tenant account of these settings; None when the proxy passes credentials
    through. Half a setup stops the start: an account without keys would be an open relay."""
    entries: list[tuple[str, str]] = []
    own: list[tuple[str, dict[str, str], int]] = []  # the keys file's keys, settings, lines
    if settings.api_keys is not None:
        entries += [(key.strip(), named("api_keys"))
                    for key in settings.api_keys.split(",") if key.strip()]
    if settings.api_keys_file is not None:
        try:
            own = [_key_settings(*line) for line in _lines(settings.api_keys_file)]
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"invalid {named('api_keys_file')}: cannot read it") from exc
        entries += [(key, named("api_keys_file")) for key, _, _ in own]
    token, username = _held_token(settings), settings.username
    if not entries and token is None and username is None:
        return None
    keys_named = f"{named('api_keys')} or {named('api_keys_file')}"
    if not entries:
        raise SettingsError(f"single-tenant mode needs at least one API key ({keys_named}): "
                            "without keys anyone who reaches the proxy could use the account")
    if username is None or not _USERNAME.fullmatch(username):
        raise SettingsError(f"single-tenant mode ({keys_named}) needs {named('username')}")
    if token is None:
        raise SettingsError(f"single-tenant mode ({keys_named}) needs {named('token')} "
                            f"or {named('token_file')}")
    digests = frozenset(_key_digest(entry, origin) for entry, origin in entries)
    if digest(token) in digests:
        raise SettingsError(f"invalid {keys_named}: an API key must not be the SMS Leads token")
    file = named("api_keys_file")
    return Tenant(username, token, digests,
                  {_key_digest(key, file): chosen for key, chosen, _ in own if chosen},
                  {_key_digest(key, file): number for key, chosen, number in own if chosen})

