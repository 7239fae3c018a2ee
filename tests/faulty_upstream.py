"""A misbehaving SMS Leads upstream on 127.0.0.1, for fault-injection tests.

    python -m tests.faulty_upstream        # prints "ports <api> <control>", serves until killed

The API port answers POST /api like SMS Leads (status 0 and a shipment id) or fails in one of
the MODES. Every request it reads is a command it *carries out*, even when it then fails to
answer (hang, reset, html, ...): the worst case for a client that resends. It counts the sends
per <message> text, so a test can find any SMS sent twice.

The control port (plain JSON over HTTP) steers it:
    POST /plan    {"modes": ["hang", "ok"], "mix": {"ok": 8, "reset": 1}, "seed": 7}
                  modes are used in order, then the mix draws (default: all "ok");
                  the counters start again
    POST /listen  {"on": false}   close the API port and every open connection (new ones are
                                  refused), or reopen it
    GET  /stats   {"received": n, "sends": {text: count}, "modes": {...}, "big_bytes": n}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import sys
from collections import Counter
from typing import Any

from lxml import etree

MODES = ("ok", "slow", "hang", "reset", "close", "http500", "html", "empty", "truncated",
         "garbage", "trickle", "big")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


class Upstream:
    def __init__(self) -> None:
        self.queue: list[str] = []
        self.mix: dict[str, int] = {"ok": 1}
        self.random = random.Random(0)
        self.received = 0
        self.sends: Counter[str] = Counter()
        self.modes: Counter[str] = Counter()
        self.big_bytes = 0
        self.shipments = 100000
        self.server: asyncio.Server | None = None
        self.sock: socket.socket | None = None
        self.open: set[asyncio.StreamWriter] = set()

    def next_mode(self) -> str:
        if self.queue:
            return self.queue.pop(0)
        names, weights = zip(*self.mix.items(), strict=True)
        return self.random.choices(names, weights)[0]

    # ── the API port ─────────────────────────────────────────────────────────────────────

    async def api(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open.add(writer)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                if not await self.answer(request, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open.discard(writer)
            writer.close()

    async def answer(self, body: bytes, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> bool:
        """Carry out the command, then answer in the next mode; False closes the connection."""
        mode = self.next_mode()
        self.modes[mode] += 1
        self.received += 1
        root = etree.fromstring(body, _PARSER)
        if root.tag in ("sms", "bulk"):
            self.sends[root.findtext(".//message") or ""] += 1
        self.shipments += 1
        xml = (f'<?xml version="1.0" encoding="utf-8"?>\n<{root.tag}><status>0</status>'
               f"<message>OK</message><shipment_id>{self.shipments}</shipment_id>"
               f"<balance>1000</balance></{root.tag}>").encode()
        if mode == "slow":
            await asyncio.sleep(0.05)
        if mode in ("ok", "slow"):
            writer.write(_response(200, xml))
            await writer.drain()
            return True
        if mode == "hang":
            await reader.read()  # nothing, until the client gives up and closes
        elif mode == "reset":
            _reset(writer)
        elif mode == "http500":
            writer.write(_response(500, b"<html><body>Internal Server Error</body></html>"))
        elif mode == "html":
            writer.write(_response(200, b"<!DOCTYPE html><html><body>Maintenance</body></html>"))
        elif mode == "empty":
            writer.write(_response(200, b""))
        elif mode == "truncated":  # Content-Length promises more than comes
            writer.write(_response(200, xml, length=len(xml) + 100)[:-(len(xml) // 2)])
        elif mode == "garbage":
            writer.write(_response(200, bytes(random.Random(1).randbytes(300))))
        elif mode == "trickle":
            await self.trickle(xml, writer)
        elif mode == "big":
            await self.big(writer)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return False

    async def trickle(self, xml: bytes, writer: asyncio.StreamWriter) -> None:
        """A byte every 50 ms: each read is quick, the whole answer is not."""
        writer.write(_response(200, b"", length=len(xml)))
        for byte in xml:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    async def big(self, writer: asyncio.StreamWriter) -> None:
        """100 MB of well-formed XML, streamed as long as the client reads."""
        chunk = b"<p>" + b"x" * 65526 + b"</p>"
        total = 100 * 1024 * 1024
        head = b"<sms><status>0</status><message>"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(head))
        sent = 0
        while sent < total:
            writer.write(_chunk(chunk))
            await writer.drain()  # raises once the client has closed the connection
            sent += len(chunk)
            self.big_bytes = sent

    # ── the control port ─────────────────────────────────────────────────────────────────

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            _, path, _ = line.decode().split(" ", 2)
            body = await _read_body(reader)
            result: Any = {}
            if path == "/plan":  # a new plan is a new experiment: counters start again
                plan = json.loads(body)
                self.received, self.big_bytes = 0, 0
                self.sends, self.modes = Counter(), Counter()
                self.queue = list(plan.get("modes", []))
                self.mix = plan.get("mix", {"ok": 1})
                self.random = random.Random(plan.get("seed", 0))
            elif path == "/listen":
                await self.listen(json.loads(body)["on"])
            elif path == "/stats":
                result = {"received": self.received, "sends": dict(self.sends),
                          "modes": dict(self.modes), "big_bytes": self.big_bytes}
            writer.write(_response(200, json.dumps(result).encode(), "application/json",
                                   close=True))
            await writer.drain()
        finally:
            writer.close()

    async def listen(self, on: bool) -> None:
        assert self.sock is not None
        if on and self.server is None:
            self.server = await asyncio.start_server(self.api, sock=_listener(self.port))
        elif not on and self.server is not None:
            self.server.close()
            self.server = None
            for writer in list(self.open):  # the pooled keep-alive connections die too
                writer.transport.abort()

    async def main(self) -> None:
        self.sock = _listener(0)
        self.port = self.sock.getsockname()[1]
        self.server = await asyncio.start_server(self.api, sock=self.sock)
        control = await asyncio.start_server(self.control, "127.0.0.1", 0)
        control_port = control.sockets[0].getsockname()[1]
        print(f"ports {self.port} {control_port}", flush=True)
        await asyncio.Event().wait()


def _listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


async def _read_body(reader: asyncio.StreamReader) -> bytes:
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return await reader.readexactly(length)


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    line = await reader.readline()
    if not line:
        return None
    return await _read_body(reader)


def _response(status: int, body: bytes, content_type: str = "application/xml; charset=utf-8",
              length: int | None = None, close: bool = False) -> bytes:
    reason = {200: "OK", 500: "Internal Server Error"}[status]
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            + ("Connection: close\r\n" if close else "") + "\r\n")
    return head.encode() + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) after half an answer: "connection reset by peer"."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<sms><status>0</")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


if __name__ == "__main__":
    try:
        asyncio.run(Upstream().main())
    except KeyboardInterrupt:
        sys.exit(0)
