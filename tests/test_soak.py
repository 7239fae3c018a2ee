"""A short, bounded soak with faults injected: thousands of mixed requests from clients that
retry with their Idempotency-Keys, against the sandbox behind a fault-injecting wire and
against a misbehaving upstream process over real sockets. Zero 500s, no SMS sent twice,
memory flat; the figures are printed at the end of each run (pytest -s shows them).

Faults after the upstream acted (a lost answer, a reset, HTML, garbage...) are the dangerous
ones: every one of them is a send that happened, and a proxy that resent it would double it.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import tracemalloc
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import httpx
import pytest
from lxml import etree

from proxy.app import create_app
from proxy.sandbox import Account, Sandbox
from proxy.sandbox import create_app as create_sandbox
from proxy.settings import Settings
from tests.conftest import BASIC, FIGURES, UNGUARDED, Clock, FaultyUpstream, serving

pytestmark = pytest.mark.soak

ROUNDS = 8          # a client retries a key at most this many times
CONCURRENCY = 32
SOAK = "soak"       # the account the sends go out from, with credits for all of them
SOAK_AUTH = {"Authorization": "Basic c29hazpzb2FrLXRva2Vu"}  # soak:soak-token
RETRY = {503, 502, 504}  # with the same key; 409 idempotency-key-in-use too


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    done: dict[str, httpx.Response] = field(default_factory=dict)   # key -> its final answer
    unknown: set[str] = field(default_factory=set)
    replays: int = 0
    requests: int = 0

    def note(self, response: httpx.Response) -> None:
        self.requests += 1
        self.statuses[response.status_code] += 1
        if response.headers.get("content-type") == "application/problem+json":
            self.types[response.json()["type"].rsplit("/", 1)[1]] += 1


def _message(key: str) -> dict[str, object]:
    return {"sender": "Soak", "recipients": [{"phone": "0501234567"}], "text": f"{SOAK} {key}"}


async def _limited(calls: list[Callable[[], Awaitable[None]]]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(call: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(run(call) for call in calls))


async def _drive(client: httpx.AsyncClient, keys: list[str], tally: Tally,
                 between_rounds: Callable[[int], None]) -> list[str]:
    """Each key's client sends until it has a final answer or an unknown outcome; around the
    sends, reads, replays of settled keys, invalid requests and bad credentials. The keys
    still unsettled after ROUNDS are returned."""
    rng = random.Random(5)
    retry: list[str] = list(keys)

    async def send(key: str) -> None:
        response = await client.post("/v1/messages", json=_message(key),
                                     headers={**SOAK_AUTH, "Idempotency-Key": key})
        tally.note(response)
        kind = response.json().get("type", "") if response.status_code >= 400 else ""
        if response.status_code in RETRY or kind.endswith("/idempotency-key-in-use"):
            retry.append(key)  # the same key again, next round
        elif kind.endswith("/outcome-unknown"):
            tally.unknown.add(key)
        else:
            tally.done.setdefault(key, response)

    async def replay(key: str) -> None:  # the client lost a final answer and asks again
        response = await client.post("/v1/messages", json=_message(key),
                                     headers={**SOAK_AUTH, "Idempotency-Key": key})
        tally.note(response)
        first = tally.done[key]
        assert response.headers["idempotent-replayed"] == "true"
        assert (response.status_code, response.content) == (first.status_code, first.content)
        tally.replays += 1

    async def read() -> None:
        tally.note(await client.get("/v1/balance", headers=SOAK_AUTH))

    async def invalid() -> None:
        tally.note(await client.post("/v1/messages", headers=SOAK_AUTH,
                                     json={"sender": "Soak", "text": "", "recipients": []}))

    async def stranger() -> None:
        tally.note(await client.get("/v1/balance", headers={"Authorization": BASIC + "x"}))

    for round_ in range(ROUNDS):
        pending, retry[:] = list(retry), []
        if not pending:
            break
        between_rounds(round_)
        settled = sorted(tally.done)
        calls: list[Callable[[], Awaitable[None]]] = [partial(send, k) for k in pending]
        calls += [partial(replay, k) for k in rng.sample(settled, min(60, len(settled)))]
        calls += [read] * 120 + [invalid] * 20 + [stranger] * 10
        rng.shuffle(calls)
        await _limited(calls)
    return retry


def _figures(name: str, tally: Tally, sends: Counter[str], elapsed: float, extra: str) -> str:
    twice = sum(1 for count in sends.values() if count > 1)
    return (f"{name}: {tally.requests} requests in {elapsed:.1f} s; statuses "
            f"{dict(sorted(tally.statuses.items()))}; problems {dict(tally.types.most_common())}; "
            f"{len(tally.done)} keys final, {len(tally.unknown)} in doubt, "
            f"{tally.replays} replays; {sum(sends.values())} sends upstream, {twice} twice; "
            f"{extra}")


def _check(tally: Tally, keys: list[str], pending: list[str], sends: Counter[str]) -> None:
    assert tally.statuses[500] == 0
    assert set(tally.statuses) <= {200, 202, 401, 409, 422, 502, 503, 504}, tally.statuses
    assert pending == []                                  # every client got an answer
    assert set(tally.done) | tally.unknown == set(keys)
    assert max(sends.values()) == 1                       # nothing sent twice
    for key, response in tally.done.items():  # a final answer: it went out exactly once
        assert sends[f"{SOAK} {key}"] == 1, (key, response.status_code)
    # A lost answer: sent once, or not at all (the request died on the wire before the
    # upstream read it), never twice.
    assert all(sends[f"{SOAK} {key}"] <= 1 for key in tally.unknown)
    assert tally.replays > 0 and tally.unknown            # the dangerous paths were taken


# ── Against the sandbox, behind a wire that fails ────────────────────────────────────────────


# Per 100 exchanges: faults before the sandbox acts (nothing sent), and after (it acted).
WIRE_MIX = {"ok": 85, "refused": 4, "connect-timeout": 2, "read-timeout": 2, "reset": 2,
            "html": 1, "truncated": 1, "garbage": 1, "http-500": 1, "empty": 1}


class FaultyWire(httpx.AsyncBaseTransport):
    """The sandbox's transport, broken at random (WIRE_MIX). ``down`` refuses every
    connection: an outage."""

    def __init__(self, inner: httpx.AsyncBaseTransport, seed: int) -> None:
        self.inner, self.random, self.down = inner, random.Random(seed), False
        self.faults: Counter[str] = Counter()
        self.names, self.weights = list(WIRE_MIX), list(WIRE_MIX.values())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault = "refused" if self.down else self.random.choices(self.names, self.weights)[0]
        self.faults[fault] += 1
        if fault == "refused":
            raise httpx.ConnectError("connection refused")
        if fault == "connect-timeout":
            raise httpx.ConnectTimeout("connect timed out")
        answer = await self.inner.handle_async_request(request)
        body = await answer.aread()
        xml = {"Content-Type": "application/xml; charset=utf-8"}
        broken: dict[str, Callable[[], httpx.Response]] = {
            "ok": lambda: httpx.Response(answer.status_code, content=body, headers=xml),
            "html": lambda: httpx.Response(200, content=b"<html><body>Oops</body></html>"),
            "truncated": lambda: httpx.Response(200, content=body[:len(body) // 2], headers=xml),
            "garbage": lambda: httpx.Response(200, content=os.urandom(200)),
            "http-500": lambda: httpx.Response(500, content=b"Internal Server Error"),
            "empty": lambda: httpx.Response(200, content=b"", headers=xml),
        }
        if fault == "read-timeout":
            raise httpx.ReadTimeout("no answer in time")
        if fault == "reset":
            raise httpx.ReadError("connection reset by peer")
        return broken[fault]()


async def test_soak_against_the_sandbox_with_a_failing_wire():
    sandbox = Sandbox(seed=3, accounts=[Account(SOAK, "soak-token", 1_000_000)])
    sandbox.requests = deque()  # the journal, unbounded for the count
    wire = FaultyWire(httpx.ASGITransport(app=create_sandbox(sandbox)), seed=11)
    clock = Clock()
    settings = Settings(breaker_failures=5, breaker_cooldown=2, read_retries=2, **UNGUARDED)
    app = create_app(settings, transport=wire, clock=clock)
    keys = [f"a{i:05d}" for i in range(1500)]

    def between_rounds(round_: int) -> None:
        clock.advance(seconds=3)  # past the breaker's cooldown
        wire.down = round_ == 1   # an outage: every connection refused for one round

    started = time.perf_counter()
    tally = Tally()
    async with serving(app, **SOAK_AUTH) as client:
        pending = await _drive(client, keys, tally, between_rounds)
    elapsed = time.perf_counter() - started
    # Read where it is kept, not through the failing wire (whose next fault is anyone's draw
    # under concurrency: a 502 there would say nothing of the charges).
    balance = sandbox.state.accounts[SOAK].credits

    sends: Counter[str] = Counter()
    for body in sandbox.requests:
        root = etree.fromstring(body)
        if root.tag == "sms":
            sends[root.findtext("message") or ""] += 1
    FIGURES.append(_figures("soak/sandbox", tally, sends, elapsed,
                   f"wire faults {dict(wire.faults.most_common())}"))
    _check(tally, keys, pending, sends)
    assert 1_000_000 - balance == sum(sends.values())  # the sandbox charged each send once
    assert tally.types["upstream-suspended"] > 0       # the breaker opened in the outage


# ── Against a misbehaving upstream process, over real sockets ────────────────────────────────


async def test_soak_against_a_misbehaving_upstream(faulty: FaultyUpstream):
    mix = {"ok": 82, "slow": 5, "hang": 2, "reset": 2, "close": 2, "http500": 2, "html": 1,
           "empty": 1, "truncated": 2, "garbage": 1}
    faulty.plan(mix=mix, seed=7)
    clock = Clock()
    # Timeouts long enough that only "hang" trips them on a loaded 2-core machine.
    settings = Settings(upstream_url=faulty.url, upstream_timeout=1.5,
                        upstream_connect_timeout=1.5, breaker_failures=5, breaker_cooldown=2,
                        **UNGUARDED)
    app = create_app(settings, clock=clock)
    keys = [f"b{i:05d}" for i in range(800)]
    memory: list[int] = []

    def between_rounds(round_: int) -> None:
        clock.advance(seconds=3)
        faulty.listen(round_ != 1)  # refused for one round
        if round_ == 1:
            memory.append(tracemalloc.get_traced_memory()[0])  # warmed up: the baseline

    started = time.perf_counter()
    tally = Tally()
    tracemalloc.start()
    try:
        async with serving(app, **SOAK_AUTH) as client:
            pending = await _drive(client, keys, tally, between_rounds)
            memory.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
        faulty.listen(True)
    elapsed = time.perf_counter() - started

    stats = faulty.stats()
    sends = Counter({text: count for text, count in stats["sends"].items()
                     if text.startswith(SOAK)})
    growth = memory[-1] - memory[0]
    FIGURES.append(_figures("soak/sockets", tally, sends, elapsed,
                   f"upstream modes {stats['modes']}; traced memory {memory[0] / 2**20:.1f} MiB "
                   f"after the first round, {memory[-1] / 2**20:.1f} MiB at the end "
                   f"(+{growth / 1024:.0f} KiB)"))
    _check(tally, keys, pending, sends)
    # Flat: what stays is the kept answers (one small record per key), nothing per request.
    assert growth < 2 * 2**20, growth
