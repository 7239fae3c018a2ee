"""The production wire: one POST to the upstream on aiohttp's HTTP client.

    async with AiohttpTransport(max_connections=200) as wire:     # in the app's lifespan
        data = await wire.post(url, body, headers, timeouts, read)

:class:`~proxy.upstream.Upstream` sends through a *wire*: this one in production, or any
``httpx.AsyncBaseTransport`` (tests hand in ``httpx.MockTransport``, the embedded sandbox
``httpx.ASGITransport``), which upstream.py drives through httpx's interface. This one builds
aiohttp's request itself: httpx's ``Request`` and ``Response`` around aiohttp cost the proxy
about a tenth of a proxied request's CPU (bench/RESULTS.md). Why not httpx's own connection
pool: under 32 concurrent requests httpcore spends most of the proxy's CPU assigning requests
to connections (encode/httpcore PR 1035). Why not the ``httpx-aiohttp`` package: it reports a
server that hung up after reading the request as ``httpx.ConnectTimeout``, i.e. "never
connected", so a send that may have gone out would be answered 503 with Retry-After, inviting
a second SMS.

aiohttp's exceptions become httpx's here, and only here, the way httpx maps httpcore's
(``map_httpcore_exceptions``), so that both wires fail alike; proxy/upstream.py turns those
into problems.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import httpx
from yarl import URL

T = TypeVar("T")
# What the caller does with an answer: its status, declared length and body, read as it likes.
Read = Callable[[int, str | None, AsyncIterable[bytes]], Awaitable[T]]

# Most specific first: the first class an exception is an instance of decides. A failure
# before the request could be written is a Connect*; anything later leaves the outcome open.
_EXCEPTIONS: dict[type[Exception], type[httpx.TransportError]] = {
    aiohttp.ConnectionTimeoutError: httpx.ConnectTimeout,  # pool wait or TCP connect
    aiohttp.ServerTimeoutError: httpx.ReadTimeout,         # SocketTimeoutError: no answer
    aiohttp.ClientConnectorError: httpx.ConnectError,      # refused, DNS, TLS handshake
    aiohttp.ServerDisconnectedError: httpx.RemoteProtocolError,
    aiohttp.ClientPayloadError: httpx.RemoteProtocolError,  # a body cut short
    aiohttp.ClientResponseError: httpx.RemoteProtocolError,  # not HTTP/1.1 as we know it
    aiohttp.ClientOSError: httpx.ReadError,                 # reset after connecting
    aiohttp.InvalidURL: httpx.UnsupportedProtocol,
    aiohttp.ClientError: httpx.TransportError,
}


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        for foreign, ours in _EXCEPTIONS.items():
            if isinstance(exc, foreign):
                raise ours(str(exc) or type(exc).__name__) from exc
        raise  # unreachable: aiohttp.ClientError is the last key


class AiohttpTransport:
    """One aiohttp session with a pool of ``max_connections``, opened on first use (aiohttp
    needs the running event loop) and closed with the transport.

    Like httpx's defaults it honours HTTP(S)_PROXY, ALL_PROXY, NO_PROXY and SSL_CERT_FILE,
    verifies TLS with httpx's context, follows no redirect and decodes a Content-Encoding as
    it reads. The proxy for a URL is looked up once: aiohttp's ``trust_env`` looks it up, and
    reads ~/.netrc, in a thread for every request, which cost the proxy half its throughput
    (bench/RESULTS.md).
    """

    def __init__(self, max_connections: int = 200, keepalive_expiry: float = 5.0) -> None:
        self.max_connections, self.keepalive_expiry = max_connections, keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}
        self._targets: dict[str, tuple[URL, str | None]] = {}

    async def __aenter__(self) -> AiohttpTransport:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.max_connections,
                                         keepalive_timeout=self.keepalive_expiry,
                                         ssl=httpx.create_ssl_context())
        # No cookie jar: one session serves every user, whose cookies must not mix.
        self._session = aiohttp.ClientSession(connector=connector,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              timeout=aiohttp.ClientTimeout())
        return self._session

    def _target(self, url: str) -> tuple[URL, str | None]:
        """The URL parsed, and the environment's proxy for it (HTTPS_PROXY, NO_PROXY…) as httpx
        finds it: both once per URL."""
        if url not in self._targets:
            parsed = URL(url)
            proxies = urllib.request.getproxies()
            bypass = not proxies or urllib.request.proxy_bypass(parsed.host or "")
            proxy = None if bypass else proxies.get(parsed.scheme, proxies.get("all"))
            self._targets[url] = (parsed, proxy)
        return self._targets[url]

    def _timeout(self, given: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
        """httpx's connect/read/pool timeouts as aiohttp's, built once per distinct value."""
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        if key not in self._timeouts:
            connect, read, pool = key
            self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=connect, sock_read=read,
                connect=None if pool is None or connect is None else pool + connect)
        return self._timeouts[key]

    async def post(self, url: str, body: bytes, headers: Mapping[str, str],
                   timeouts: Mapping[str, float | None], read: Read[T]) -> T:
        """POST ``body``; ``read`` gets the answer's status, Content-Length and decoded body
        while the connection is held (a body left unread closes its connection)."""
        session = self._session or self._open()
        target, proxy = self._target(url)
        with _mapped():
            response = await session.request(
                "POST", target, data=body, headers=headers, allow_redirects=False,
                timeout=self._timeout(timeouts), proxy=proxy)
            try:
                return await read(response.status, response.headers.get("Content-Length"),
                                  response.content.iter_any())
            finally:
                response.release()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
