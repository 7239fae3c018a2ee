"""Every header the proxy sends is declared in openapi.yaml, on the operation and status that
sent it: a sweep drives every operation through each answer it can give (success, every
upstream status code, the proxy's own refusals, failures of the wire, a bug, replays and
the Idempotency-Key conflicts) and reads the headers of each."""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

import httpx
import pytest
import yaml

from proxy.app import create_app
from proxy.settings import Settings
from tests.conftest import BASIC, Clock, deref
from tests.examples import OPERATIONS, SPEC, example

# Headers of HTTP itself, not of this API.
GENERIC = {"content-type", "content-length", "date", "server", "connection"}
# One answer every operation reads as a success: each field it looks for, once.
SUCCESS = (b"<x><status>0</status><message>1 phone numbers Successfully deleted , 0 Phone "
           b"numbers not exist in blacklist</message><shipment_id>9</shipment_id>"
           b"<balance>5</balance><identifiers><identifier>7</identifier></identifiers>"
           b"<verify_message>ok</verify_message></x>")
# Every code of the status table, and one it does not know.
CODES = [*yaml.safe_load(resources.files("proxy").joinpath("statuses.yaml").read_text("utf-8"))
         ["codes"], 12345]


class Upstream:
    """An upstream told what to do next: answer XML, raise, or hold the call open."""

    def __init__(self) -> None:
        self.next: bytes | Exception = SUCCESS
        self.hold: asyncio.Event | None = None
        self.arrived = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if isinstance(self.next, Exception):
            raise self.next
        return httpx.Response(200, content=self.next,
                              headers={"Content-Type": "application/xml; charset=utf-8"})


def declared(op, status: int) -> set[str] | None:
    """The headers the spec declares for ``status`` on ``op``; None if the status is not."""
    responses = SPEC["paths"][op.path][op.method.lower()]["responses"]
    if str(status) not in responses:
        return None
    return {name.lower() for name in deref(SPEC, responses[str(status)]).get("headers", {})}


async def sweep(op, client: httpx.AsyncClient, upstream: Upstream) -> list[httpx.Response]:
    call = example(op)
    keyed = op.method != "GET"
    counter = iter(range(10**6))

    def key() -> dict[str, str]:
        return {"Idempotency-Key": f"{op.operation_id}-{next(counter)}"} if keyed else {}

    async def send(*, headers: dict[str, str] | None = None, body: Any = call.body,
                   content: bytes | None = None, query: dict[str, Any] | None = None,
                   ) -> httpx.Response:
        data = content if content is not None else (
            None if body is None else json.dumps(body).encode())
        return await client.request(
            op.method, call.url(op), params=call.query if query is None else query,
            content=data, headers={"Content-Type": "application/json", **(headers or key())})

    answers = []
    for code in [0, *CODES]:
        upstream.next = SUCCESS if code == 0 else (
            f"<x><status>{code}</status><message>m</message></x>".encode())
        answers.append(await send())
        if keyed:  # the same request again under its key: the kept answer, or a retry
            same = key()
            answers += [await send(headers=same), await send(headers=same)]
    upstream.next = SUCCESS
    for failure in (httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                    RuntimeError("a bug"), b"<html>busy</html>"):
        upstream.next = failure
        same = key()
        answers += [await send(headers=same)] + ([await send(headers=same)] if keyed else [])
    upstream.next = SUCCESS
    answers.append(await send(query={**call.query, "colour": "red"}))  # 422
    answers.append(await client.request(op.method, call.url(op), params=call.query,
                                        headers={"Authorization": ""}))  # 401
    if call.body is not None:
        answers.append(await send(content=b"{not json"))  # 400
        answers.append(await send(content=json.dumps(call.body).encode(),
                                  headers={"Content-Type": "text/plain", **key()}))  # 415
        answers.append(await send(body={**call.body, "pad": "x" * 5000}))  # 413
    if keyed:
        answers.append(await send(headers={"Idempotency-Key": "\x7f"}))  # 400
        same = key()
        answers.append(await send(headers=same))
        if call.body is not None:  # 422 idempotency-key-reused
            answers.append(await send(headers=same, body={**call.body, "other": 1}))
        upstream.hold, upstream.arrived = asyncio.Event(), asyncio.Event()
        running = key()
        first = asyncio.create_task(send(headers=running))
        await upstream.arrived.wait()
        answers.append(await send(headers=running))  # 409 idempotency-key-in-use
        upstream.hold.set()
        answers.append(await first)
        upstream.hold = None
    return answers


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.operation_id for op in OPERATIONS])
async def test_every_header_sent_is_declared_for_its_operation_and_status(op):
    upstream = Upstream()
    settings = Settings(max_body_bytes=4096, breaker_failures=10**6, read_retries=0,
                        requests_per_second=None, recipients_per_minute=None)  # swept below
    app = create_app(settings, transport=httpx.MockTransport(upstream), clock=Clock())
    # Unlike conftest.serving, a bug's 500 comes back as the answer, not as the exception.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=transport, base_url="http://proxy.test",
            headers={"Authorization": BASIC}) as client:
        answers = await sweep(op, client, upstream)
    undeclared, statuses = [], set()
    for answer in answers:
        statuses.add(answer.status_code)
        allowed = declared(op, answer.status_code)
        if allowed is None:  # an upstream code this command never answers (503 to `sms`)
            continue
        extra = set(answer.headers) - GENERIC - allowed
        if extra:
            undeclared.append((answer.status_code, sorted(extra), answer.text[:80]))
    assert undeclared == []
    assert {200, 500, 502, 503, 504} & statuses >= {500, 502, 503, 504}
    assert 409 in statuses or op.method == "GET"


def test_the_sweep_reads_the_headers_it_checks():
    """A header the spec does not declare on a status is caught: the check is not blind."""
    op = next(op for op in OPERATIONS if op.operation_id == "getBalance")
    assert declared(op, 503) == {"retry-after", "x-request-id"}
    assert declared(op, 200) == {"x-request-id"}
    assert declared(op, 418) is None


# ── The spend guard's answers (proxy/guard.py) ─────────────────────────────────────────────

GUARDED = [op for op in OPERATIONS if op.method != "GET" and op.compute is None]


@pytest.mark.parametrize("op", GUARDED, ids=[op.operation_id for op in GUARDED])
async def test_every_header_of_a_guard_refusal_is_declared(op):
    """A change past its rate, and a send past its budget: 429 with Retry-After and the
    RateLimit fields, each declared; and GET /v1/limits' own answers."""
    settings = Settings(store="memory", requests_per_second=1, daily_credits=0)
    app = create_app(settings, transport=httpx.MockTransport(Upstream()), clock=Clock())
    call = example(op)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://proxy.test",
            headers={"Authorization": BASIC}) as client:
        answers = []
        for attempt in range(2):
            answers.append(await client.request(
                op.method, call.url(op), params=call.query,
                content=None if call.body is None else json.dumps(call.body).encode(),
                headers={"Content-Type": "application/json", "Idempotency-Key": f"k{attempt}"}))
        limits = [await client.get("/v1/limits"), await client.get("/v1/limits?x=1"),
                  await client.get("/v1/limits", headers={"Authorization": ""})]
    assert answers[-1].status_code == 429
    assert {"retry-after", "ratelimit-policy", "ratelimit"} <= set(answers[-1].headers)
    for answer in answers:
        extra = set(answer.headers) - GENERIC - (declared(op, answer.status_code) or set())
        assert not extra, (answer.status_code, extra)
    spec = SPEC["paths"]["/v1/limits"]["get"]["responses"]
    assert [answer.status_code for answer in limits] == [200, 422, 401]
    for answer in limits:
        allowed = {name.lower() for name in deref(SPEC, spec[str(answer.status_code)])
                   .get("headers", {})}
        assert set(answer.headers) - GENERIC <= allowed, answer.status_code
