"""The production wire: httpx's transport interface on aiohttp's HTTP client.

    transport = AiohttpTransport(max_connections=200)      # in the app's lifespan
    response = await transport.handle_async_request(httpx.Request("POST", url, content=body))

:class:`~proxy.upstream.Upstream` speaks to any ``httpx.AsyncBaseTransport``: tests hand in
``httpx.MockTransport``, the embedded sandbox ``httpx.ASGITransport``, production this one.
Why not httpx's own connection pool: under 32 concurrent requests httpcore spends most of the
proxy's CPU assigning requests to connections (encode/httpcore PR 1035); with this transport
the proxy serves several times more requests per second (bench/RESULTS.md). Why not the
``httpx-aiohttp`` package: it reports a server that hung up after reading the request as
``httpx.ConnectTimeout``, i.e. "never connected", so a send that may have gone out would be
answered 503 with Retry-After, inviting a second SMS.

aiohttp's exceptions become httpx's here, and only here, the way httpx maps httpcore's
(``map_httpcore_exceptions``); proxy/upstream.py turns those into problems.
"""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import httpx

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


_OWN_HEADERS = (b"host", b"content-length", b"transfer-encoding")


@contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        for foreign, ours in _EXCEPTIONS.items():
            if isinstance(exc, foreign):
                raise ours(str(exc) or type(exc).__name__) from exc
        raise  # unreachable: aiohttp.ClientError is the last key


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # A body left unread closes its connection instead of returning it to the pool.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session with a pool of ``max_connections``, opened on first use (aiohttp
    needs the running event loop) and closed with the transport.

    Like httpx's defaults it honours HTTP(S)_PROXY, ALL_PROXY, NO_PROXY and SSL_CERT_FILE,
    verifies TLS with httpx's context and follows no redirect; it leaves Content-Encoding to
    httpx, which decodes as it reads. The proxy for a host is looked up once: aiohttp's
    ``trust_env`` looks it up, and reads ~/.netrc, in a thread for every request, which cost
    the proxy half its throughput (bench/RESULTS.md).
    """

    def __init__(self, max_connections: int = 200, keepalive_expiry: float = 5.0) -> None:
        self.max_connections, self.keepalive_expiry = max_connections, keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}
        self._proxies: dict[tuple[str, str], str | None] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.max_connections,
                                         keepalive_timeout=self.keepalive_expiry,
                                         ssl=httpx.create_ssl_context())
        # No cookie jar: one session serves every user, whose cookies must not mix.
        return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     cookie_jar=aiohttp.DummyCookieJar(),
                                     timeout=aiohttp.ClientTimeout())

    def _proxy(self, url: httpx.URL) -> str | None:
        """The environment's proxy for this URL (HTTPS_PROXY, NO_PROXY…), as httpx finds it."""
        key = (url.scheme, url.host)
        if key not in self._proxies:
            proxies = urllib.request.getproxies()
            bypass = not proxies or urllib.request.proxy_bypass(url.host)
            self._proxies[key] = None if bypass else proxies.get(url.scheme, proxies.get("all"))
        return self._proxies[key]

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """httpx's connect/read/pool timeouts as aiohttp's, built once per distinct value."""
        given = request.extensions.get("timeout", {})
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        if key not in self._timeouts:
            connect, read, pool = key
            self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=connect, sock_read=read,
                connect=None if pool is None or connect is None else pool + connect)
        return self._timeouts[key]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open()
        body = await request.aread()
        # Names keep their case; aiohttp writes Host and Content-Length itself.
        headers = [(name.decode("latin-1"), value.decode("latin-1"))
                   for name, value in request.headers.raw if name.lower() not in _OWN_HEADERS]
        with _mapped():
            response = await self._session.request(
                request.method, str(request.url), data=body or None, headers=headers,
                allow_redirects=False, timeout=self._timeout(request),
                proxy=self._proxy(request.url))
        return httpx.Response(response.status, headers=response.raw_headers,
                              stream=_Body(response), request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
