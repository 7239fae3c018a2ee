"""The outbound guard: webhooks go to public addresses only, checked where the connection is
made (no server-side request forgery).

    networks = allowed_networks("127.0.0.0/8")          # the settings' exceptions
    check_url("https://hooks.example.com/in", networks)   # a message, or None when it may go
    async with Sender(networks, timeout=15.0, read=4096) as sender:
        attempt = await sender.post(url, body, headers)

A subscription's URL is judged when it is made (http or https, a host, no credentials in it, no
address that is not public), and every connection is judged again on the address it is about
to connect to, after DNS (``socket_factory``): a name that resolved to a public address when
the subscription was made and to 10.0.0.5 or 169.254.169.254 now (DNS rebinding) is refused
before a packet leaves. Not public: loopback, private (RFC 1918, unique local), link-local
(the cloud metadata address 169.254.169.254 and fd00:ec2::254 among them), shared (CGNAT,
RFC 6598), multicast, reserved and unspecified addresses. An IPv6 address that carries an
IPv4 address (IPv4-mapped, NAT64's 64:ff9b::/96, 6to4's 2002::/16, IPv4-compatible ::/96,
IPv4-translated ::ffff:0:0:0/96) reaches that IPv4 address through a translator or a tunnel,
and is judged as it; the local-use NAT64 prefix 64:ff9b:1::/48 is not public. A host that is
neither an IP address nor a valid host name (letters, digits, hyphens; IDNA for the others) is
refused, and one that the system's resolver reads as an IPv4 address in a legacy form
(``127.1``, ``0x7f.1``, ``2130706433``, ``010.0.0.1``: inet_aton's forms) is judged as that
address. The settings may allow networks (the tests allow loopback). Redirects are not
followed, the environment's proxies are not used (a proxy would connect on our behalf, out of
the guard's sight), and a receiver's answer is read no further than ``read`` bytes.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL = 2048
REFUSED = "refused: the address is not public"
LOCAL_NAMES = ("localhost", "localhost.localdomain")  # and *.localhost (RFC 6761 §6.3)
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")  # underscores: names DNS holds in practice
# IPv6 prefixes whose last 32 bits are an IPv4 address the packet ends up at: NAT64's
# well-known prefix (RFC 6052), IPv4-translated (RFC 6145), IPv4-compatible (RFC 4291 §2.5.5.1).
_CARRYING = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::ffff:0:0:0/96", "::/96"))
_NOT_PUBLIC = (ipaddress.IPv6Network("64:ff9b:1::/48"),)  # local-use NAT64 (RFC 8215)


def allowed_networks(text: str | None) -> tuple[Network, ...]:
    """``127.0.0.0/8,::1``: networks a webhook may reach although they are not public."""
    if not text:
        return ()
    return tuple(ipaddress.ip_network(part.strip(), strict=False)
                 for part in text.split(",") if part.strip())


def carried(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (and reaches), if it carries one."""
    if address.ipv4_mapped is not None or address.sixtofour is not None:
        return address.ipv4_mapped or address.sixtofour
    if any(address in network for network in _CARRYING):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def public(address: IPAddress, allowed: tuple[Network, ...] = ()) -> bool:
    """True for an address a webhook may reach."""
    if any(address in network for network in allowed):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _NOT_PUBLIC):
            return False
        inner = carried(address)
        if inner is not None:
            return public(inner, allowed)
    return address.is_global and not address.is_multicast


def _valid_name(host: str) -> bool:
    """A host name DNS may hold: dot-separated labels of letters, digits, hyphens (and
    underscores), 253 characters at most; an internationalised one in its IDNA form."""
    try:
        name = host.encode("idna").decode("ascii").lower().removesuffix(".")
    except UnicodeError:
        return False
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _address(host: str) -> IPAddress | None:
    """The address a valid host names: an IP address, a legacy IPv4 form the resolver reads
    as one (inet_aton: 127.1, 0x7f.1, 2130706433, 010.0.0.1 in octal), a local name; None for
    another host name. ValueError for a host that is none of these."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        if not _valid_name(host):
            raise
    name = host.removesuffix(".")
    if name in LOCAL_NAMES or name.endswith(".localhost"):
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return None


def check_url(url: str, allowed: tuple[Network, ...] = ()) -> str | None:
    """Why a webhook may not be sent to ``url``; None when it may."""
    if len(url) > MAX_URL:
        return f"is longer than {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@): put a secret in the path instead"
    if port == 0:
        return "has port 0"
    host = parts.hostname
    try:
        address = _address(host)
    except ValueError:
        return "has a host that is neither an IP address nor a valid host name"
    if address is not None and not public(address, allowed):
        return f"names {host}, an address that is not public ({REFUSED})"
    return None


class Refused(OSError):
    """The connection was about to reach an address that is not public."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST got: the status (None if no answer), the start of the answer, or why
    there was none."""

    status: int | None
    answer: str = ""
    error: str | None = None
    seconds: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender:
    """One aiohttp session for every webhook of the process, its connections guarded."""

    def __init__(self, allowed: tuple[Network, ...], *, timeout: float, read: int = 4096,
                 connections: int = 100, resolver: AbstractResolver | None = None) -> None:
        self.allowed, self.read, self.resolver = allowed, read, resolver
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _socket(self, info: tuple[Any, ...]) -> socket.socket:
        """aiohttp's socket factory: the address it is about to connect to, judged."""
        family, kind, proto, _, address = info
        if not public(ipaddress.ip_address(address[0]), self.allowed):
            raise Refused(f"{REFUSED} ({address[0]})")
        return socket.socket(family, kind, proto)

    async def __aenter__(self) -> Sender:
        connector = aiohttp.TCPConnector(limit=self.connections, socket_factory=self._socket,
                                         use_dns_cache=False, happy_eyeballs_delay=None,
                                         resolver=self.resolver)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              timeout=self.timeout, trust_env=False)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        if self._session is None:
            raise RuntimeError("the sender is not open")
        reason = check_url(url, self.allowed)
        started = time.perf_counter()
        if reason is not None:
            return Attempt(None, error=f"the URL {reason}")
        try:
            async with self._session.post(url, data=body, headers=headers,
                                          allow_redirects=False) as response:
                answer = await response.content.read(self.read)
                return Attempt(response.status, answer.decode("utf-8", "replace"),
                               seconds=time.perf_counter() - started)
        except TimeoutError:
            return Attempt(None, error="no answer in time", seconds=time.perf_counter() - started)
        except aiohttp.ClientError as exc:
            return Attempt(None, error=_why(exc), seconds=time.perf_counter() - started)


def _why(exc: aiohttp.ClientError) -> str:
    """A failure in a few words that name no secret (the URL may hold one in its path)."""
    cause = exc.__cause__ or getattr(exc, "os_error", None)
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, Refused):
        return str(exc.os_error)
    if isinstance(cause, Refused):
        return str(cause)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "the host name does not resolve"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"no connection ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return f"the connection failed ({type(exc).__name__})"
