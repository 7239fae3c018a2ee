"""The production wire (proxy/transport.py) over real sockets on 127.0.0.1: a whole exchange
with the sandbox served by uvicorn, and each way an upstream can fail as the problem a client
gets. A hang-up after the request went out is never "unreachable": the send may have happened.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from lxml import etree
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.errors import UpstreamBadAnswer, UpstreamTimeout, UpstreamUnreachable
from proxy.mapping import load_table
from proxy.settings import Settings
from proxy.transport import AiohttpTransport
from proxy.upstream import Upstream
from tests.conftest import BASIC

STATUSES = load_table().statuses
BALANCE = b"<balance><status>0</status><message>Your balance is:42</message><balance>42</balance></balance>"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    """``python -m proxy.sandbox`` on a port of its choosing, stopped by its pid."""
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.sandbox", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    drain: threading.Thread | None = None
    try:
        assert process.stderr is not None
        for line in process.stderr:  # uvicorn logs the port it bound once it listens
            if found := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line):
                break
        else:
            raise RuntimeError("the sandbox exited before it listened")
        # Its access log goes on; drained, so a full pipe never stalls it.
        drain = threading.Thread(target=process.stderr.read, daemon=True)
        drain.start()
        yield f"http://127.0.0.1:{found.group(1)}/api"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        if drain is not None:
            drain.join(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_the_proxy_talks_to_a_real_upstream_over_http(sandbox_url):
    app = create_app(Settings(upstream_url=sandbox_url))  # no transport: the production one
    with TestClient(app, headers={"Authorization": BASIC}) as client:
        assert client.get("/v1/balance").json() == {"credits": 1000}
        sent = client.post("/v1/messages", json={
            "sender": "DemoAPI", "recipients": [{"phone": "0501234567"}], "text": "hi"})
        assert sent.status_code == 202, sent.text
        assert sent.json()["campaign_id"].isdigit()
        assert client.get("/v1/balance").json() == {"credits": 999}


# ── Raw upstreams: exactly the bytes a misbehaving server sends ──────────────────────────────


@asynccontextmanager
async def raw_upstream(handle: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    return head, body


def answering(*bodies: bytes, headers: tuple[bytes, ...] = (),
              seen: list[tuple[bytes, bytes]] | None = None) -> Handler:
    """Each request gets the next body (the last one repeats), on any connection."""
    queue = list(bodies)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():  # keep-alive: as many requests as the client sends
            try:
                request = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            if seen is not None:
                seen.append(request)
            body = queue.pop(0) if len(queue) > 1 else queue[0]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                         + b"".join(h + b"\r\n" for h in headers)
                         + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
        writer.close()

    return handle


async def call(url: str, **options) -> object:
    async with AiohttpTransport() as transport:
        upstream = Upstream(transport, url, STATUSES, **options)
        return await upstream.call(etree.fromstring("<balance><user/></balance>"), "tok-1")


async def test_the_request_reaches_the_upstream_as_sent():
    seen: list[tuple[bytes, bytes]] = []
    async with raw_upstream(answering(BALANCE, seen=seen)) as url:
        answer = await call(url)
    assert answer.root.findtext("balance") == "42"
    head, body = seen[0]
    assert head.startswith(b"POST /api HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer tok-1\r\n" in head
    assert b"\r\nContent-Type: application/xml; charset=utf-8\r\n" in head
    assert body == b"<?xml version='1.0' encoding='UTF-8'?>\n<balance><user/></balance>"


async def test_a_gzip_answer_is_decoded():
    async with raw_upstream(answering(gzip.compress(BALANCE),
                                        headers=(b"Content-Encoding: gzip",))) as url:
        answer = await call(url)
    assert answer.root.findtext("balance") == "42"


async def test_a_refused_connection_is_unreachable():
    server = await asyncio.start_server(answering(BALANCE), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(UpstreamUnreachable):
        await call(f"http://127.0.0.1:{port}/api")


async def test_a_hang_up_after_the_request_is_a_bad_answer_not_unreachable():
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async with raw_upstream(hang_up) as url:
        with pytest.raises(UpstreamBadAnswer) as caught:
            await call(url)
    assert caught.value.status == 502
    assert "Retry-After" not in caught.value.headers


async def test_a_body_cut_short_is_a_bad_answer():
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<balance><status>0")
        await writer.drain()
        writer.close()

    async with raw_upstream(cut) as url:
        with pytest.raises(UpstreamBadAnswer):
            await call(url)


async def test_no_answer_in_time_is_a_timeout():
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await release.wait()
        writer.close()

    async with raw_upstream(silent) as url:
        try:
            with pytest.raises(UpstreamTimeout):
                await call(url, timeout=httpx.Timeout(0.2, connect=5))
        finally:
            release.set()


async def test_an_oversized_answer_is_refused_and_the_next_call_works():
    big = b"<balance><status>0</status>" + b"<p>x</p>" * 10_000 + b"</balance>"
    async with raw_upstream(answering(big, BALANCE)) as url, AiohttpTransport() as transport:
        upstream = Upstream(transport, url, STATUSES, max_answer_bytes=1000)
        with pytest.raises(UpstreamBadAnswer):
            await upstream.call(etree.Element("balance"), "t")
        answer = await upstream.call(etree.Element("balance"), "t")
    assert answer.root.findtext("balance") == "42"


async def test_an_http_proxy_from_the_environment_is_used(monkeypatch):
    seen: list[tuple[bytes, bytes]] = []
    async with raw_upstream(answering(BALANCE, seen=seen)) as proxy_url:
        monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/api"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        answer = await call("http://sms-leads.invalid/api")
    assert answer.root.findtext("balance") == "42"
    assert seen[0][0].startswith(b"POST http://sms-leads.invalid/api HTTP/1.1\r\n")


async def test_a_cookie_the_upstream_sets_is_never_sent_back(monkeypatch):
    # One session serves every user: a cookie kept for one would reach the next. (A host
    # name, through a proxy: cookie jars ignore cookies of IP addresses anyway.)
    seen: list[tuple[bytes, bytes]] = []
    handler = answering(BALANCE, headers=(b"Set-Cookie: session=alice; Path=/",), seen=seen)
    async with raw_upstream(handler) as proxy_url, AiohttpTransport() as transport:
        monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/api"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        upstream = Upstream(transport, "http://sms-leads.invalid/api", STATUSES)
        await upstream.call(etree.Element("balance"), "alice-token")
        await upstream.call(etree.Element("balance"), "bob-token")
    assert b"session=alice" not in seen[1][0]
