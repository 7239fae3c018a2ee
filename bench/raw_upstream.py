"""An upstream that is never the bound: canned SMS Leads answers from a raw uvloop protocol.

    python -m bench.raw_upstream --port 9100

``POST /api`` answers by the envelope's root element (its command) with bytes the sandbox
wrote: at start-up an in-process :class:`~proxy.sandbox.Sandbox` answers a balance, a send to
one destination, a bulk send and a 1,000-row delivery report once, and those answers are then
served to every request of that command, whoever asks and whatever else the envelope says. An
unknown command gets the sandbox's own refusal of it (997). ``GET /healthz`` answers
``{"status": "ok"}`` like the proxy's and the sandbox's. HTTP/1.1 keep-alive and pipelining
as httptools parses them; no other feature, so the benchmark measures what is in front of it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
from datetime import datetime, timedelta
from typing import Any, cast

import httptools
import uvloop
from lxml import etree

from proxy.mapping import load_table
from proxy.sandbox import ISRAEL, Account, FixedClock, Sandbox
from proxy.translate import build_envelope

USERNAME, TOKEN = "bench", "bench-token"
ROWS = 1000  # rows of the canned delivery report
AT = datetime(2026, 11, 25, 12, 0, tzinfo=ISRAEL)
_ROOT = re.compile(rb"\s*(?:<\?xml[^>]*\?>)?\s*<([A-Za-z_][\w.-]*)")


def _recipients(count: int, prefix: str) -> list[dict[str, str]]:
    return [{"phone": f"050{1_000_000 + i:07d}", "external_id": f"{prefix}-{i}"}
            for i in range(count)]


def _request(operation_id: str, body: Any = None, query: dict[str, str] | None = None) -> bytes:
    document: dict[str, Any] = {"auth": {"username": USERNAME}, "path": {}, "query": query or {}}
    if body is not None:
        document["body"] = body
    envelope = build_envelope(load_table().operation(operation_id), document)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def canned_answers() -> dict[bytes, bytes]:
    """Command -> the sandbox's answer to it (the b"" entry: its answer to an unknown one)."""
    sandbox = Sandbox(clock=FixedClock(AT), seed=16,
                      accounts=[Account(username=USERNAME, token=TOKEN, credits=10**9)])
    auth = f"Bearer {TOKEN}"

    def ask(envelope: bytes) -> bytes:
        return sandbox.exchange(envelope, auth)

    many = {"sender": "BenchTest", "recipients": _recipients(ROWS, "many"), "text": "Bench"}
    ask(_request("sendMessage", many))
    sandbox.advance(timedelta(minutes=5))  # the delivery reports come in
    window = {"from": (AT - timedelta(days=1)).isoformat(),
              "to": (AT + timedelta(days=1)).isoformat()}
    report = ask(_request("listDeliveryReports", query=window))
    send = {"sender": "BenchTest", "recipients": _recipients(1, "one"), "text": "Bench message"}
    bulk = {"messages": [{"sender": "BenchTest", "recipients": _recipients(2, "bulk"),
                          "text": "Bench message"}]}
    answers = {b"balance": ask(_request("getBalance")), b"sms": ask(_request("sendMessage", send)),
               b"bulk": ask(_request("sendBulk", bulk)), b"dlrByDate": report, b"dlr": report}
    answers[b""] = ask(b"<unknownCommand/>")
    for command, answer in answers.items():
        if command and b"<status>0</status>" not in answer:
            raise RuntimeError(f"the sandbox refused the canned {command!r}: {answer[:200]!r}")
    if answers[b"dlrByDate"].count(b"<transaction>") != ROWS:
        raise RuntimeError("the canned delivery report lacks rows")
    return answers


def _http(status: str, media: bytes, body: bytes) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n").encode()
    return head + b"Content-Type: " + media + b"\r\n\r\n" + body


class Replies:
    """Whole HTTP answers, built once."""

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        xml = b"application/xml; charset=utf-8"
        self.by_command = {command: _http("200 OK", xml, body) for command, body in answers.items()}
        self.health = _http("200 OK", b"application/json", b'{"status":"ok"}')
        self.missing = _http("404 Not Found", b"text/plain", b"not found")

    def reply(self, method: bytes, url: bytes, body: bytes) -> bytes:
        if url == b"/api" and method == b"POST":
            root = _ROOT.match(body)
            command = root.group(1) if root else b""
            return self.by_command.get(command, self.by_command[b""])
        if url == b"/healthz" and method == b"GET":
            return self.health
        return self.missing


class Exchange(asyncio.Protocol):
    """One connection: httptools reads requests, each answered as soon as it is complete."""

    def __init__(self, replies: Replies) -> None:
        self.replies = replies
        self.parser = httptools.HttpRequestParser(self)
        self.url, self.body = b"", bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.body = b"", bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        method: bytes = self.parser.get_method()
        self.transport.write(self.replies.reply(method, self.url, bytes(self.body)))
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int) -> None:
    replies = Replies(canned_answers())
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Exchange(replies), host, port,
                                      family=socket.AF_INET, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
