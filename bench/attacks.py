"""The proxy under abuse (issue 10): what one hostile body and many slow clients cost.

- :func:`hostile_bodies`: the largest body the proxy's limits accept, made of invalid
  recipients; as large a body of empty arrays, and of short strings; and 10,000 valid
  recipients with the last one wrong (a body the limits admit, whose one error must be found
  and explained). Each sent once with made-up Basic credentials to a fresh proxy. Measured: how
  long until it is answered, /healthz's latency meanwhile (polled by another client), the
  proxy's RSS growth.
- :func:`slow_headers`: normal clients' balance rate with and without N connections that
  send their request headers one byte at a time (slowloris), and whether the proxy closes
  those connections (a header-read timeout) or keeps them for ever.

Both are bounded in time; the hostile cell also in memory (the proxy is stopped once its RSS
has grown by more than ``MEMORY_CAP_MIB``). Each runs against a fresh proxy in front of the
raw upstream (bench/raw_upstream.py).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import statistics
import threading
import time
from dataclasses import dataclass, field

import httpx

from bench.servers import Load, Request, Server, rss_kib, stack, wait_ready, wrk
from proxy.app import load_spec

MEMORY_CAP_MIB = 2048  # the hostile cell stops the proxy beyond this growth
INTRUDER = "Basic " + base64.b64encode(b"intruder:made-up-token").decode()
HEALTH_EVERY = 0.02  # seconds between /healthz polls


def hostile_body(limit: int) -> bytes:
    """A bulk send of invalid recipients, as many as ``limit`` bytes hold, within the
    schema's counts (messages per bulk, recipients per message: openapi.yaml)."""
    schemas = load_spec()["components"]["schemas"]
    per_bulk = schemas["SendBulkRequest"]["properties"]["messages"]["maxItems"]
    per_message = schemas["BulkMessage"]["properties"]["recipients"]["maxItems"]
    head, tail = b'{"messages":[', b"]}"
    item = b'{"phone":"x"}'
    message = json.dumps({"sender": "BenchTest", "text": "Bench", "recipients": []})
    opening, closing = message[:-2].encode(), message[-2:].encode()
    room, messages = limit - len(head) - len(tail), list[bytes]()
    while room > len(opening) + len(closing) + len(item) and len(messages) < per_bulk:
        room -= len(opening) + len(closing) + (1 if messages else 0)
        count = min(per_message, (room + 1) // (len(item) + 1))
        room -= count * (len(item) + 1) - 1
        messages.append(opening + b",".join([item] * count) + closing)
    return head + b",".join(messages) + tail


def filled(limit: int, unit: bytes) -> bytes:
    """One send whose recipients are ``unit`` over and over, as many as ``limit`` bytes hold."""
    head, tail = b'{"sender":"BenchTest","text":"Bench","recipients":[', b"]}"
    count = (limit - len(head) - len(tail) + 1) // (len(unit) + 1)
    return head + b",".join([unit] * count) + tail


def _last_wrong(count: int) -> bytes:
    recipients = [{"phone": "0501234567", "external_id": f"r{i}"} for i in range(count)]
    recipients[-1] = {"phone": "12345"}
    return json.dumps({"sender": "BenchTest", "text": "Bench", "recipients": recipients}).encode()


def hostile_bodies(limit: int) -> dict[str, tuple[str, bytes]]:
    """Each hostile cell's name -> (path, body)."""
    return {"invalid recipients": ("/v1/messages/bulk", hostile_body(limit)),
            "empty arrays": ("/v1/messages", filled(limit, b"[]")),
            "short strings": ("/v1/messages", filled(limit, b'"ab"')),
            "10,000 recipients, the last wrong": ("/v1/messages", _last_wrong(10_000))}


@dataclass
class _Poller:
    """/healthz over and over from a thread: every latency, and the one still waiting."""

    url: str
    timeout: float
    latencies: list[float] = field(default_factory=list)
    waiting_since: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while not self.done.is_set():
                self.waiting_since = time.monotonic()
                try:
                    client.get(self.url)
                except httpx.HTTPError:
                    if self.done.is_set():
                        return
                self.latencies.append(time.monotonic() - self.waiting_since)
                self.waiting_since = None
                self.done.wait(HEALTH_EVERY)

    def samples(self) -> list[float]:
        waiting = self.waiting_since
        return self.latencies + ([time.monotonic() - waiting] if waiting is not None else [])


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def hostile(limit: int, seconds: float, proxy_args: tuple[str, ...]) -> list[dict[str, object]]:
    return [dict(_hostile(path, body, seconds, proxy_args), shape=shape)
            for shape, (path, body) in hostile_bodies(limit).items()]


def _hostile(path: str, body: bytes, seconds: float, proxy_args: tuple[str, ...]
             ) -> dict[str, object]:
    answer: dict[str, object] = {}

    def send(server: Server) -> None:
        started = time.monotonic()
        try:
            reply = httpx.post(f"{server.url}{path}", content=body, timeout=seconds,
                               headers={"Authorization": INTRUDER,
                                        "Content-Type": "application/json"})
            answer.update(status=reply.status_code, seconds=time.monotonic() - started)
        except httpx.HTTPError as exc:
            answer.update(error=type(exc).__name__)

    with stack("raw", "proxy", proxy_args=proxy_args, grace=3) as (_, proxy):
        for _ in range(20):  # warm: the first requests import and compile lazily
            httpx.get(f"{proxy.url}/healthz")
        base = peak = rss_kib(proxy.pid)
        gc.collect()  # this process's own garbage (the bodies made), not collected meanwhile
        poller = _Poller(f"{proxy.url}/healthz", seconds + 10)
        threads = [threading.Thread(target=poller.run, daemon=True),
                   threading.Thread(target=send, args=(proxy,), daemon=True)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # /healthz's latency before the body arrives, too
        start, capped = time.monotonic(), False
        while threads[1].is_alive() and time.monotonic() - start < seconds:
            peak = max(peak, rss_kib(proxy.pid))
            if (peak - base) / 1024 > MEMORY_CAP_MIB:
                capped = True
                break
            time.sleep(0.05)  # the sampling interval itself
        time.sleep(0.3)  # /healthz after the answer as well
        health = poller.samples()
        poller.done.set()
    for thread in threads:
        thread.join(timeout=30)
    return {"body_bytes": len(body), "path": path, "bound_s": seconds,
            "status": answer.get("status"), "answered_s": answer.get("seconds"),
            "error": answer.get("error"), "memory_capped": capped,
            "health_p99_ms": 1000 * _p99(health),
            "health_max_ms": 1000 * max(health, default=0.0), "health_polls": len(health),
            "rss_growth_mib": (peak - base) / 1024}


# ── Slow headers ─────────────────────────────────────────────────────────────────────────────


@dataclass
class _SlowClients:
    """``count`` connections that send a request's headers one byte every ``every`` s."""

    port: int
    count: int
    every: float = 2.0
    opened: int = 0
    refused: int = 0
    closed_after: list[float] = field(default_factory=list)  # seconds, closed by the proxy
    answers: dict[str, int] = field(default_factory=dict)    # status lines of those closes
    ready: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0

    def run(self, stop: threading.Event) -> None:
        asyncio.run(self._all(stop))

    async def _all(self, stop: threading.Event) -> None:
        self.started = time.monotonic()
        connected = asyncio.Semaphore(100)  # connect at most 100 at a time
        tasks = [asyncio.create_task(self._one(i, connected, stop)) for i in range(self.count)]
        while not stop.is_set():
            if self.opened + self.refused >= self.count:
                self.ready.set()
            await asyncio.sleep(0.1)  # polling a threading.Event from the loop
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, index: int, connected: asyncio.Semaphore, stop: threading.Event) -> None:
        async with connected:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 5)
            except (OSError, TimeoutError):
                self.refused += 1
                return
        self.opened += 1
        try:
            writer.write(b"GET /v1/balance HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            closed = asyncio.create_task(reader.read(256))
            await asyncio.sleep(self.every * index / self.count)  # spread the dribbles
            while not stop.is_set():
                finished, _ = await asyncio.wait({closed}, timeout=self.every)
                if finished:
                    self.closed_after.append(time.monotonic() - self.started)
                    line = closed.result().split(b"\r\n", 1)[0].decode(errors="replace")
                    said = line or "(no answer)"
                    self.answers[said] = self.answers.get(said, 0) + 1
                    return
                writer.write(b"a")
        except OSError:
            self.closed_after.append(time.monotonic() - self.started)
            self.answers["(reset)"] = self.answers.get("(reset)", 0) + 1
        finally:
            writer.close()


def slow_headers(request: Request, connections: int, seconds: float, warmup: float,
                 proxy_args: tuple[str, ...]) -> dict[str, object]:
    """Balance at c=32 on one fresh proxy: alone, then with ``connections`` slow clients."""
    with stack("raw", "proxy", proxy_args=proxy_args) as (_, proxy):
        wrk(proxy, request, 32, warmup)
        alone = wrk(proxy, request, 32, seconds)
        slow, stop = _SlowClients(proxy.port, connections), threading.Event()
        holder = threading.Thread(target=slow.run, args=(stop,), daemon=True)
        holder.start()
        slow.ready.wait(timeout=60)
        opened_at = time.monotonic() - slow.started
        try:
            wait_ready(proxy, seconds=10)
            beside: Load | None = wrk(proxy, request, 32, seconds)
        except AssertionError:  # the proxy no longer answers /healthz at all
            beside = None
        still_open = slow.opened - len(slow.closed_after)
        stop.set()
        holder.join(timeout=30)
    closes = sorted(slow.closed_after)
    return {"connections": connections, "opened": slow.opened, "refused": slow.refused,
            "opened_in_s": opened_at, "alone": alone, "beside": beside,
            "closed_by_proxy": len(closes), "still_open": still_open,
            "first_close_s": closes[0] if closes else None,
            "median_close_s": statistics.median(closes) if closes else None,
            "close_answers": slow.answers, "seconds": seconds}
