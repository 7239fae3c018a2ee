"""Upstream failures: each a defined problem; reads retried on connection failures only; the
circuit breaker. Real sockets where a socket is what fails (tests/faulty_upstream.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from lxml import etree
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.breaker import Breaker
from proxy.errors import UpstreamSuspended, UpstreamUnreachable
from proxy.mapping import load_table
from proxy.settings import Settings
from proxy.upstream import BACKOFF, BACKOFF_CAP, Upstream
from tests.conftest import BASIC, Clock, FaultyUpstream, Recorder
from tests.processes import free_port
from tests.test_app import assert_problem

SENT = b"<sms><status>0</status><message>SMS will be sent</message><shipment_id>9</shipment_id></sms>"
BALANCE = b"<balance><status>0</status><balance>7</balance></balance>"
MESSAGE = {"sender": "DemoAPI", "recipients": [{"phone": "0501234567"}], "text": "hi"}
# Short timeouts so a hanging upstream costs a second; a breaker that stays out of the way.
FAST = Settings(upstream_timeout=0.5, upstream_connect_timeout=0.5, breaker_failures=1000)
UNKNOWN = "may or may not have acted"


def proxy(url: str, settings: Settings = FAST, clock: Clock | None = None) -> TestClient:
    app = create_app(replace(settings, upstream_url=url), clock=clock or Clock())
    return TestClient(app, headers={"Authorization": BASIC})


def mocked(answer, settings: Settings = FAST, clock: Clock | None = None) -> TestClient:
    app = create_app(settings, transport=httpx.MockTransport(answer), clock=clock or Clock())
    return TestClient(app, headers={"Authorization": BASIC})


# ── Each failure, over real sockets ──────────────────────────────────────────────────────────

FAILURES = [
    ("hang", 504, "upstream-timeout"),        # answers nothing: the read timeout
    ("trickle", 504, "upstream-timeout"),     # a byte every 50 ms: only the deadline ends it
    ("reset", 502, "upstream-bad-answer"),    # RST after half an answer
    ("close", 502, "upstream-bad-answer"),    # closes without a word
    ("http500", 502, "upstream-bad-answer"),
    ("html", 502, "upstream-bad-answer"),
    ("empty", 502, "upstream-bad-answer"),
    ("truncated", 502, "upstream-bad-answer"),  # Content-Length promises more than comes
    ("garbage", 502, "upstream-bad-answer"),
]


@pytest.mark.parametrize("mode, status, slug", FAILURES)
def test_a_send_that_fails_after_reaching_the_upstream_says_its_outcome_is_unknown(
        faulty: FaultyUpstream, mode, status, slug):
    faulty.plan(mode)
    with proxy(faulty.url) as client:
        problem = assert_problem(client.post("/v1/messages", json=MESSAGE), status, slug)
    assert UNKNOWN in problem["detail"]
    assert faulty.stats()["modes"] == {mode: 1}  # never resent by the proxy


@pytest.mark.parametrize("mode, status, slug", FAILURES)
def test_a_read_that_fails_after_reaching_the_upstream_is_not_retried(
        faulty: FaultyUpstream, mode, status, slug):
    faulty.plan(mode)
    with proxy(faulty.url) as client:
        problem = assert_problem(client.get("/v1/balance"), status, slug)
    assert UNKNOWN not in problem["detail"]  # a read changes nothing
    assert faulty.stats()["modes"] == {mode: 1}


def test_a_refused_connection_is_503_nothing_sent_retry_later():
    with proxy(f"http://127.0.0.1:{free_port()}/api") as client:  # nothing listens there
        send = client.post("/v1/messages", json=MESSAGE)
        read = client.get("/v1/balance")
    for response in (send, read):
        problem = assert_problem(response, 503, "upstream-unreachable")
        assert int(response.headers["retry-after"]) > 0
        assert UNKNOWN not in problem["detail"]


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, connecting times out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    waiting = []
    for _ in range(3):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        waiting.append(client)
    yield port
    for client in (*waiting, server):
        client.close()


def test_a_connect_timeout_is_503_nothing_sent(full_listener):
    with proxy(f"http://127.0.0.1:{full_listener}/api") as client:
        response = client.post("/v1/messages", json=MESSAGE)
    problem = assert_problem(response, 503, "upstream-unreachable")
    assert "timed out" in problem["detail"] and UNKNOWN not in problem["detail"]
    assert int(response.headers["retry-after"]) > 0


# ── Retries: reads, on connection failures only ──────────────────────────────────────────────


def failing(*faults: Exception | bytes):
    """An upstream that fails as told, call by call, then answers; it records every call."""
    recorder = Recorder()

    def answer(request: httpx.Request) -> httpx.Response:
        index = len(recorder.requests) - 1
        fault = faults[index] if index < len(faults) else None
        if isinstance(fault, Exception):
            raise fault
        if request.content.find(b"<balance>") >= 0:
            return httpx.Response(200, content=fault or BALANCE)
        return httpx.Response(200, content=fault or SENT)

    recorder.answer = answer
    return recorder


def test_a_read_is_retried_when_no_connection_could_be_made():
    recorder = failing(httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"))
    with mocked(recorder) as client:
        response = client.get("/v1/balance")
    assert response.status_code == 200 and response.json() == {"credits": 7}
    assert len(recorder.requests) == 3


def test_read_retries_are_bounded():
    recorder = failing(*[httpx.ConnectError("refused")] * 10)
    with mocked(recorder, replace(FAST, read_retries=2)) as client:
        assert_problem(client.get("/v1/balance"), 503, "upstream-unreachable")
    assert len(recorder.requests) == 3
    recorder = failing(*[httpx.ConnectError("refused")] * 10)
    with mocked(recorder, replace(FAST, read_retries=0)) as client:
        assert_problem(client.get("/v1/balance"), 503, "upstream-unreachable")
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("fault, status", [
    (httpx.ReadTimeout("sent, no answer"), 504),
    (httpx.RemoteProtocolError("reset mid-answer"), 502),
    (b"<html>busy</html>", 502),
])
def test_a_read_is_not_retried_once_the_request_went_out(fault, status):
    recorder = failing(fault)
    with mocked(recorder) as client:
        assert client.get("/v1/balance").status_code == status
    assert len(recorder.requests) == 1


def test_a_state_changing_command_is_never_retried_by_the_proxy():
    recorder = failing(httpx.ConnectError("refused"))
    with mocked(recorder) as client:
        assert_problem(client.post("/v1/messages", json=MESSAGE), 503, "upstream-unreachable")
    assert len(recorder.requests) == 1


async def test_read_retries_back_off_exponentially_with_full_jitter():
    delays: list[list[float]] = []
    for _ in range(20):
        waits: list[float] = []

        async def sleep(seconds: float, waits=waits) -> None:
            waits.append(seconds)

        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        async with httpx.MockTransport(refuse) as transport:
            upstream = Upstream(transport, "http://upstream.test/api", load_table().statuses,
                                read_retries=5, sleep=sleep)
            with pytest.raises(UpstreamUnreachable):
                await upstream.call(etree.Element("balance"), "t", safe=True)
        delays.append(waits)
    assert all(len(waits) == 5 for waits in delays)
    for attempt in range(5):
        bound = min(BACKOFF * 2 ** attempt, BACKOFF_CAP)
        assert all(0 <= waits[attempt] <= bound for waits in delays)
    assert len({waits[0] for waits in delays}) > 1  # jittered, not in lockstep


# ── The circuit breaker ──────────────────────────────────────────────────────────────────────


def test_the_breaker_opens_answers_503_at_once_and_probes_the_upstream_back():
    clock, down = Clock(), [True]
    recorder = Recorder()

    def answer(request: httpx.Request) -> httpx.Response:
        if down[0]:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, content=SENT)

    recorder.answer = answer
    settings = replace(FAST, breaker_failures=3, breaker_cooldown=10)
    with mocked(recorder, settings, clock) as client:
        for _ in range(3):
            assert_problem(client.post("/v1/messages", json=MESSAGE), 503, "upstream-unreachable")
        assert len(recorder.requests) == 3
        paused = client.post("/v1/messages", json=MESSAGE)
        read = client.get("/v1/balance")  # not retried either: nothing would go out
        assert_problem(paused, 503, "upstream-suspended")
        assert_problem(read, 503, "upstream-suspended")
        assert paused.headers["retry-after"] == "10"
        assert len(recorder.requests) == 3

        clock.advance(seconds=9)
        assert client.post("/v1/messages", json=MESSAGE).headers["retry-after"] == "1"
        clock.advance(seconds=1)  # half-open: one probe, which fails, and it opens again
        assert_problem(client.post("/v1/messages", json=MESSAGE), 503, "upstream-unreachable")
        assert_problem(client.post("/v1/messages", json=MESSAGE), 503, "upstream-suspended")
        assert len(recorder.requests) == 4

        down[0] = False
        clock.advance(seconds=10)  # the probe succeeds: closed again
        assert client.post("/v1/messages", json=MESSAGE).status_code == 202
        assert client.post("/v1/messages", json=MESSAGE).status_code == 202
        assert len(recorder.requests) == 6


@pytest.mark.parametrize("fault", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("reset"),
                                   b"<html>maintenance</html>"])
def test_timeouts_and_bad_answers_open_the_breaker_too(fault):
    recorder = failing(*[fault] * 10)
    with mocked(recorder, replace(FAST, breaker_failures=2)) as client:
        for _ in range(2):
            assert client.get("/v1/balance").status_code in (502, 504)
        assert_problem(client.get("/v1/balance"), 503, "upstream-suspended")
    assert len(recorder.requests) == 2


def test_refusals_are_a_healthy_upstream_and_never_open_the_breaker():
    no_credit = b"<sms><status>4</status><message>Not enough credit</message></sms>"
    recorder = Recorder(no_credit)
    with mocked(recorder, replace(FAST, breaker_failures=2)) as client:
        for _ in range(5):
            assert_problem(client.post("/v1/messages", json=MESSAGE), 402, "insufficient-credit")
    assert len(recorder.requests) == 5


def test_half_open_lets_one_probe_out_at_a_time():
    now = [0.0]
    breaker = Breaker(failures=1, cooldown=5, clock=lambda: now[0])
    assert breaker.admit() is False
    breaker.failed(probe=False)
    assert breaker.state == "open"
    now[0] = 5.0
    assert breaker.state == "half-open"
    assert breaker.admit() is True  # the probe
    with pytest.raises(UpstreamSuspended):
        breaker.admit()  # a second caller while the probe is out
    breaker.abandoned(probe=True)  # the probe was cancelled: another may go
    assert breaker.admit() is True
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.admit() is False
