"""Idempotency-Key: what a client that retries sees, and what the upstream receives."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import httpx
import pytest
import redis
from openapi_schema_validator import OAS31Validator
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyUnavailable,
    OutcomeUnknown,
)
from proxy.idempotency import CLAIM_LEASE, Ledger, Record, Ticket, key_of
from proxy.problems import ProblemResponse
from proxy.settings import Settings
from proxy.store import StoreUnavailable
from proxy.store.memory import MemoryStore
from tests.conftest import BASIC, Clock, Recorder, serving
from tests.examples import OPERATIONS, SPEC, STATE_CHANGING, example
from tests.processes import free_port
from tests.test_app import assert_problem

SENT = b"<sms><status>0</status><message>SMS will be sent</message><shipment_id>9</shipment_id></sms>"
NO_CREDIT = b"<x><status>4</status><message>Not enough credit, Purchase Now.</message></x>"
MESSAGE = {"sender": "DemoAPI", "recipients": [{"phone": "0501234567"}], "text": "hi"}
KEY = {"Idempotency-Key": "7c1f9a2e-order-17"}


def client_for(recorder: Recorder, settings: Settings | None = None,
               clock: Clock | None = None) -> TestClient:
    app = create_app(settings, transport=httpx.MockTransport(recorder), clock=clock or Clock())
    return TestClient(app, headers={"Authorization": BASIC})


def basic(username: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()}


class HeldUpstream:
    """An upstream that holds every call open until released, counting what reached it."""

    def __init__(self) -> None:
        self.arrived, self.release = asyncio.Event(), asyncio.Event()
        self.calls: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        self.arrived.set()
        await self.release.wait()
        return httpx.Response(200, content=SENT)


def assert_replay_of(replay: httpx.Response, first: httpx.Response) -> None:
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay.headers["content-type"] == first.headers["content-type"]


# ── Replays ──────────────────────────────────────────────────────────────────────────────────


def test_a_repeated_send_gets_the_first_answer_and_the_upstream_one_call():
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        first = client.post("/v1/messages", json=MESSAGE, headers=KEY)
        replays = [client.post("/v1/messages", json=MESSAGE, headers=KEY) for _ in range(3)]
    assert first.status_code == 202 and first.json() == {"campaign_id": "9"}
    assert "idempotent-replayed" not in first.headers
    for replay in replays:
        assert_replay_of(replay, first)
    assert len(recorder.requests) == 1


def test_the_same_request_written_differently_is_the_same_request():
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        first = client.post("/v1/messages", json=MESSAGE, headers=KEY)
        reordered = json.dumps(dict(reversed(list(MESSAGE.items()))), indent=4)
        replay = client.post("/v1/messages", content=reordered,
                             headers={**KEY, "Content-Type": "application/json"})
    assert_replay_of(replay, first)
    assert len(recorder.requests) == 1


def test_a_created_resource_is_replayed_with_its_location():
    answer = b"<newCL><status>0</status><identifiers><identifier>17419</identifier></identifiers></newCL>"
    recorder = Recorder(answer)
    with client_for(recorder) as client:
        first = client.post("/v1/contact-lists", json={"name": "x"}, headers=KEY)
        replay = client.post("/v1/contact-lists", json={"name": "x"}, headers=KEY)
    assert first.status_code == 201
    assert_replay_of(replay, first)
    assert replay.headers["location"] == first.headers["location"] == "/v1/contact-lists/17419"
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("second", [
    ("/v1/messages", dict(MESSAGE, text="ho")),
    ("/v1/messages/bulk", {"messages": [MESSAGE]}),
    ("/v1/campaigns/9/cancel", None),
])
def test_the_same_key_with_a_different_request_is_422_and_sends_nothing(second):
    recorder = Recorder(SENT)
    url, body = second
    with client_for(recorder) as client:
        assert client.post("/v1/messages", json=MESSAGE, headers=KEY).status_code == 202
        response = client.post(url, json=body, headers=KEY) if body else client.post(url, headers=KEY)
    problem = assert_problem(response, 422, "idempotency-key-reused")
    assert "new key" in problem["detail"]
    assert len(recorder.requests) == 1


def test_keys_belong_to_the_credentials_that_sent_them():
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        shipment = len(seen)
        return httpx.Response(200, content=f"<sms><status>0</status><shipment_id>{shipment}</shipment_id></sms>".encode())

    with client_for(Recorder(answer)) as client:
        ids = [client.post("/v1/messages", json=MESSAGE, headers={**KEY, **basic(user, token)}).json()
               for user, token in [("alice", "tok-a"), ("bob", "tok-b"), ("alice", "tok-new"),
                                   ("alice", "tok-a")]]
    # Another account, or the same username with another token, never sees alice's answer.
    assert ids == [{"campaign_id": "1"}, {"campaign_id": "2"}, {"campaign_id": "3"},
                   {"campaign_id": "1"}]
    assert seen == ["Bearer tok-a", "Bearer tok-b", "Bearer tok-new"]


def test_a_key_is_kept_for_24_hours():
    recorder, clock = Recorder(SENT), Clock()
    with client_for(recorder, clock=clock) as client:
        first = client.post("/v1/messages", json=MESSAGE, headers=KEY)
        clock.advance(hours=23, minutes=59)
        assert_replay_of(client.post("/v1/messages", json=MESSAGE, headers=KEY), first)
        clock.advance(minutes=2)
        again = client.post("/v1/messages", json=MESSAGE, headers=KEY)
    assert again.status_code == 202 and "idempotent-replayed" not in again.headers
    assert len(recorder.requests) == 2


def test_a_refusal_by_the_upstream_is_final_and_replayed():
    recorder = Recorder(NO_CREDIT)
    with client_for(recorder) as client:
        first = client.post("/v1/messages", json=MESSAGE, headers=KEY)
        replay = client.post("/v1/messages", json=MESSAGE, headers=KEY)
    assert_problem(first, 402, "insufficient-credit")
    assert_replay_of(replay, first)
    assert replay.json()["upstream_status"] == 4
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("op", STATE_CHANGING, ids=lambda op: op.operation_id)
def test_every_state_changing_operation_honours_the_key(op):
    recorder = Recorder(NO_CREDIT)  # every command can be refused the same way
    call = example(op)
    with client_for(recorder) as client:
        first = client.request(op.method, call.url(op), json=call.body, headers=KEY)
        replay = client.request(op.method, call.url(op), json=call.body, headers=KEY)
    assert_problem(first, 402, "insufficient-credit")
    assert_replay_of(replay, first)
    assert len(recorder.requests) == 1


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.method == "GET"],
                         ids=lambda op: op.operation_id)
def test_reads_ignore_the_key_and_always_ask_the_upstream(op):
    recorder = Recorder(NO_CREDIT)
    call = example(op)
    with client_for(recorder) as client:
        for _ in range(2):
            response = client.get(call.url(op), params=call.query, headers=KEY)
            assert "idempotent-replayed" not in response.headers
    assert len(recorder.requests) == 2


# ── Failures: freed, or held in doubt ─────────────────────────────────────────────────────────


@pytest.mark.parametrize("failure, status, slug", [
    (httpx.ConnectError("refused"), 503, "upstream-unreachable"),
    (httpx.ConnectTimeout("slow"), 503, "upstream-unreachable"),
    (b"<x><status>714</status><message>Temporary blocking</message></x>", 503, "temporarily-blocked"),
])
def test_when_nothing_was_done_the_same_key_may_try_again(failure, status, slug):
    sent: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if not sent:
            sent.append(b"failed")
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(200, content=failure)
        sent.append(request.content)
        return httpx.Response(200, content=SENT)

    with client_for(Recorder(answer)) as client:
        first = client.post("/v1/messages", json=MESSAGE, headers=KEY)
        retry = client.post("/v1/messages", json=MESSAGE, headers=KEY)
        replay = client.post("/v1/messages", json=MESSAGE, headers=KEY)
    assert_problem(first, status, slug)
    assert int(first.headers["retry-after"]) > 0
    assert retry.status_code == 202 and "idempotent-replayed" not in retry.headers
    assert_replay_of(replay, retry)
    assert len(sent) == 2


def _truncated(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=SENT[:40])


@pytest.mark.parametrize("failure, status, slug", [
    (httpx.ReadTimeout("slow"), 504, "upstream-timeout"),
    (httpx.RemoteProtocolError("peer closed connection mid-answer"), 502, "upstream-bad-answer"),
    (httpx.Response(200, content=b"<html><body>Bad gateway</body></html>"), 502, "upstream-bad-answer"),
    (httpx.Response(500, content=b"Internal Server Error"), 502, "upstream-bad-answer"),
    (httpx.Response(200, content=SENT[:40]), 502, "upstream-bad-answer"),
    (httpx.Response(200, content=b""), 502, "upstream-bad-answer"),
], ids=["read-timeout", "reset", "html", "http-500", "truncated", "empty"])
def test_an_unknown_outcome_holds_the_key_and_is_never_sent_again(failure, status, slug):
    recorder = Recorder(SENT)

    def answer(request: httpx.Request) -> httpx.Response:
        if len(recorder.requests) == 1:  # the first call fails after it reached the upstream
            if isinstance(failure, Exception):
                raise failure
            return failure
        return httpx.Response(200, content=SENT)

    recorder.answer = answer
    with client_for(recorder) as client:
        first = client.post("/v1/messages", json=MESSAGE, headers=KEY)
        retries = [client.post("/v1/messages", json=MESSAGE, headers=KEY) for _ in range(3)]
        fresh = client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": "new-key"})
    problem = assert_problem(first, status, slug)
    assert "may or may not have acted" in problem["detail"]
    for retry in retries:
        problem = assert_problem(retry, 409, "outcome-unknown")
        assert "will not send it again" in problem["detail"]
        assert "retry-after" not in retry.headers  # retrying this key cannot help
    assert fresh.status_code == 202
    assert len(recorder.requests) == 2  # the first, and the one under a new key


async def test_the_same_key_while_the_first_is_running_is_409():
    held = HeldUpstream()
    arrived, release, calls, answer = held.arrived, held.release, held.calls, held

    app = create_app(transport=httpx.MockTransport(answer), clock=Clock())
    async with serving(app) as client:
        first = asyncio.create_task(client.post("/v1/messages", json=MESSAGE, headers=KEY))
        await arrived.wait()
        during = await client.post("/v1/messages", json=MESSAGE, headers=KEY)
        release.set()
        done = await first
        after = await client.post("/v1/messages", json=MESSAGE, headers=KEY)
    assert_problem(during, 409, "idempotency-key-in-use")
    assert 1 <= int(during.headers["retry-after"]) <= 5
    assert done.status_code == 202
    assert_replay_of(after, done)
    assert len(calls) == 1


async def test_a_running_key_whose_lease_ran_out_is_in_doubt():
    """Its process may have died mid-call: the key is never freed for a second send."""
    held = HeldUpstream()
    arrived, release, answer = held.arrived, held.release, held
    clock = Clock()

    settings = Settings(upstream_timeout=10, upstream_connect_timeout=2)
    app = create_app(settings, transport=httpx.MockTransport(answer), clock=clock)
    async with serving(app) as client:
        first = asyncio.create_task(client.post("/v1/messages", json=MESSAGE, headers=KEY))
        await arrived.wait()
        clock.advance(seconds=12 + 5 + 1)  # past the deadline and the lease's margin
        late = await client.post("/v1/messages", json=MESSAGE, headers=KEY)
        release.set()
        await first
    assert_problem(late, 409, "outcome-unknown")


# ── The key itself ───────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("headers", [
    [("Idempotency-Key", "")],
    [("Idempotency-Key", "k" * 256)],
    [("Idempotency-Key", "has space")],
    [("Idempotency-Key", '"unterminated')],
    [("Idempotency-Key", "caf\u00e9".encode())],
    [("Idempotency-Key", "one"), ("Idempotency-Key", "two")],
], ids=["empty", "256-chars", "space", "open-quote", "non-ascii", "twice"])
def test_a_malformed_key_is_400_and_nothing_is_sent(headers):
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        response = client.post("/v1/messages", json=MESSAGE, headers=headers)
    problem = assert_problem(response, 400, "invalid-idempotency-key")
    assert "unterminated" not in problem["detail"]  # never echoed
    assert recorder.requests == []


def test_a_quoted_key_and_the_same_key_bare_are_one_key():
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        first = client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": '"abc 1"'})
        bare = client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": "k" * 255})
        quoted = client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": f'"{"k" * 255}"'})
    assert first.status_code == bare.status_code == 202
    assert_replay_of(quoted, bare)
    assert len(recorder.requests) == 2


SAMPLES = ["8e03978e-40d5-43e8-bc93-6894a57f9324", "k" * 255, "k" * 256, "", "a b", '"a b"',
           '"a\\b"', '"a"b"', "ü", "tab\there", '"' + "k" * 255 + '"', "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"]


def _accepted(value: str) -> bool:
    try:
        return key_of(Headers({"idempotency-key": value})) is not None
    except IdempotencyKeyInvalid:
        return False


def test_the_spec_describes_the_key_the_proxy_accepts():
    schema = SPEC["components"]["parameters"]["IdempotencyKey"]["schema"]
    validator = OAS31Validator(schema)
    for value in SAMPLES:
        assert validator.is_valid(value) == _accepted(value), value
    changing = {(op.method.lower(), op.path) for op in STATE_CHANGING} | {
        (method, path) for path, item in SPEC["paths"].items()  # the proxy's own (webhooks)
        for method, operation in item.items()
        if isinstance(operation, dict) and operation.get("x-smsleads-own") and method != "get"}
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            refs = [p.get("$ref") for p in operation.get("parameters", [])]
            keyed = "#/components/parameters/IdempotencyKey" in refs
            assert keyed == ((method, path) in changing), (method, path)


# ── Stores ───────────────────────────────────────────────────────────────────────────────────


def test_a_full_store_refuses_new_keys_rather_than_forget_kept_answers():
    recorder, clock = Recorder(SENT), Clock()
    with client_for(recorder, Settings(idempotency_max_keys=2), clock) as client:
        first = client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": "k1"})
        client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": "k2"})
        full = client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": "k3"})
        unkeyed = client.post("/v1/messages", json=MESSAGE)
        kept = client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": "k1"})
        clock.advance(hours=24, seconds=1)
        later = client.post("/v1/messages", json=MESSAGE, headers={"Idempotency-Key": "k3"})
    assert_problem(full, 503, "idempotency-unavailable")
    assert "retry-after" in full.headers
    assert unkeyed.status_code == 202
    assert_replay_of(kept, first)
    assert later.status_code == 202 and "idempotent-replayed" not in later.headers
    assert len(recorder.requests) == 4  # k1, k2, unkeyed, k3 a day later


def test_two_proxies_sharing_redis_answer_for_each_other(redis_url):
    one, two = Recorder(SENT), Recorder(SENT)
    settings = Settings(redis_url=redis_url)
    with client_for(one, settings) as first, client_for(two, settings) as second:
        sent = first.post("/v1/messages", json=MESSAGE, headers=KEY)
        replay = second.post("/v1/messages", json=MESSAGE, headers=KEY)
        other = second.post("/v1/messages", json=dict(MESSAGE, text="ho"), headers=KEY)
    assert sent.status_code == 202
    assert_replay_of(replay, sent)
    assert_problem(other, 422, "idempotency-key-reused")
    assert len(one.requests) == 1 and two.requests == []


async def test_a_key_running_in_one_proxy_is_409_in_the_other(redis_url):
    held = HeldUpstream()
    arrived, release, calls, slow = held.arrived, held.release, held.calls, held

    settings = Settings(redis_url=redis_url)
    one = create_app(settings, transport=httpx.MockTransport(slow), clock=Clock())
    two = create_app(settings, transport=httpx.MockTransport(Recorder(SENT)), clock=Clock())
    async with serving(one) as first, serving(two) as second:
        running = asyncio.create_task(first.post("/v1/messages", json=MESSAGE, headers=KEY))
        await arrived.wait()
        during = await second.post("/v1/messages", json=MESSAGE, headers=KEY)
        release.set()
        done = await running
        after = await second.post("/v1/messages", json=MESSAGE, headers=KEY)
    assert_problem(during, 409, "idempotency-key-in-use")
    assert_replay_of(after, done)
    assert len(calls) == 1


def test_redis_holds_no_token_no_username_and_keeps_a_key_24_hours(redis_url):
    with client_for(Recorder(SENT), Settings(redis_url=redis_url)) as client:
        client.post("/v1/messages", json=MESSAGE, headers={**KEY, **basic("alice", "tok-secret-1")})
    store = redis.Redis.from_url(redis_url)
    try:
        everything = sorted(store.keys("*"))
        # The spend guard's counters (proxy/store/counters.py) are beside the store's entries.
        counters = [key for key in everything if key.startswith(b"smsleads-proxy:limits:")]
        keys = [key for key in everything if key not in counters]
        entry = next(key for key in keys if b":entry:" in key)
        value, ttl_ms = store.get(entry), store.pttl(entry)
        members = {key: store.zrange(key, 0, -1) for key in keys if key != entry}
        counted = b"".join(store.get(key) or b"" for key in counters)
    finally:
        store.close()
    assert re.fullmatch(rb"smsleads-proxy:entry:idempotency:[0-9a-f]{64}", entry)
    assert len(keys) == 3  # the entry, its credential's group, every entry
    assert all(names == [entry] for names in members.values())
    assert counters  # the send was counted, under a digest of the credential
    for secret in (b"tok-secret-1", b"alice", KEY["Idempotency-Key"].encode()):
        assert secret not in b"".join(everything) + value + counted
    assert 23.9 * 3600 * 1000 < ttl_ms <= 24 * 3600 * 1000


def test_without_redis_keyed_requests_are_503_and_unkeyed_ones_go_through_unguarded():
    recorder = Recorder(SENT)
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens
                        requests_per_second=None, recipients_per_minute=None)  # no guard
    with client_for(recorder, settings) as client:
        keyed = client.post("/v1/messages", json=MESSAGE, headers=KEY)
        unkeyed = client.post("/v1/messages", json=MESSAGE)
    problem = assert_problem(keyed, 503, "idempotency-unavailable")
    assert "redis://" not in problem["detail"]
    assert unkeyed.status_code == 202
    assert len(recorder.requests) == 1


def test_without_redis_the_spend_guard_lets_no_change_through():
    """Its counters are in Redis too: a guard that opened when they fail would guard nothing."""
    recorder = Recorder(SENT)
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    with client_for(recorder, settings) as client:
        unkeyed = client.post("/v1/messages", json=MESSAGE)
        read = client.get("/v1/balance")
    problem = assert_problem(unkeyed, 503, "limits-unavailable")
    assert unkeyed.headers["retry-after"] == "5" and "redis://" not in problem["detail"]
    assert read.status_code != 503  # reads are never the guard's: it went upstream
    assert len(recorder.requests) == 1 and recorder.envelope.startswith("<balance>")


def test_in_single_tenant_mode_keys_belong_to_each_proxy_api_key():
    """Every client shares the held token there: the key they presented keeps them apart."""
    one, two = "billing-key-0123456789", "reports-key-0123456789"
    settings = Settings(username="acme", token="held-token", api_keys=f"{one},{two}")
    shipments = iter(range(1, 10))

    def answer(request: httpx.Request) -> httpx.Response:
        body = f"<sms><status>0</status><shipment_id>{next(shipments)}</shipment_id></sms>"
        return httpx.Response(200, content=body.encode())

    recorder = Recorder(answer)
    with client_for(recorder, settings) as client:
        ids = [client.post("/v1/messages", json=MESSAGE,
                           headers={**KEY, "Authorization": f"Bearer {key}"}).json()
               for key in (one, two, one)]
    assert ids == [{"campaign_id": "1"}, {"campaign_id": "2"}, {"campaign_id": "1"}]
    assert {r.headers["authorization"] for r in recorder.requests} == {"Bearer held-token"}


@pytest.mark.parametrize("failure", [asyncio.CancelledError(), RuntimeError("a bug")],
                         ids=["cancelled", "bug"])
async def test_a_call_cut_short_by_a_cancellation_or_a_bug_is_in_doubt(failure):
    """It may have reached the upstream before it stopped: the key must not be freed."""
    now = [0.0]
    ledger = Ledger(MemoryStore(10, lambda: now[0]), lambda: now[0], lease=40, per_owner=10)
    ticket = Ticket.of("demo", "demo-token", "k", {"body": MESSAGE})
    calls = []

    async def perform() -> Response:
        calls.append(1)
        raise failure

    with pytest.raises(type(failure)):
        await ledger.run(ticket, perform, ProblemResponse)
    with pytest.raises(OutcomeUnknown):
        await ledger.run(ticket, perform, ProblemResponse)
    assert len(calls) == 1


# ── Claimed, dispatched, settled ────────────────────────────────────────────────────────────


class FailingStore:
    """The memory store, failing on the writes a test names."""

    def __init__(self, fail_on: set[str], clock) -> None:
        self.inner, self.fail_on = MemoryStore(100, clock), fail_on

    async def add(self, *args, **kwargs):
        return await self.inner.add(*args, **kwargs)

    async def swap(self, key, old, new, ttl, *, within=None):
        if "dispatch" in self.fail_on and b'"dispatched"' in new:
            raise StoreUnavailable("the store did not take the write in time")
        if "dispatch lands" in self.fail_on and b'"dispatched"' in new:
            await self.inner.swap(key, old, new, ttl, within=within)
            raise StoreUnavailable("the write landed; its answer was lost")
        return await self.inner.swap(key, old, new, ttl, within=within)

    async def get(self, key):
        if "get" in self.fail_on:
            raise StoreUnavailable("down")
        return await self.inner.get(key)

    async def remove(self, key, old):
        if "remove" in self.fail_on:
            raise StoreUnavailable("down")
        return await self.inner.remove(key, old)

    async def close(self):
        await self.inner.close()


def _ledger(store, now) -> Ledger:
    return Ledger(store, lambda: now[0], lease=40, per_owner=10)


async def _sent_response() -> Response:
    return Response(b'{"campaign_id":"9"}', status_code=202, media_type="application/json")


@pytest.mark.parametrize("removal", ["works", "fails too"])
async def test_a_dispatch_the_store_does_not_confirm_sends_nothing_and_frees_the_key(removal):
    now = [0.0]
    store = FailingStore({"dispatch"} | ({"remove"} if removal == "fails too" else set()),
                         lambda: now[0])
    ledger, ticket, calls = _ledger(store, now), Ticket.of("demo", "t", "k", {}), []

    async def perform() -> Response:
        calls.append(1)
        return await _sent_response()

    with pytest.raises(IdempotencyUnavailable):
        await ledger.run(ticket, perform, ProblemResponse)
    assert calls == []
    store.fail_on = set()
    if removal == "fails too":  # the claim holds the key until its lease ends, no longer
        with pytest.raises(IdempotencyKeyInUse):
            await ledger.run(ticket, perform, ProblemResponse)
        now[0] += CLAIM_LEASE + 0.1
    assert (await ledger.run(ticket, perform, ProblemResponse)).status_code == 202
    assert calls == [1]


async def test_a_claim_that_was_never_dispatched_frees_the_key_when_its_lease_ends():
    """Its process died between the claim and the dispatch, or its write landed late."""
    now = [0.0]
    store = MemoryStore(100, lambda: now[0])
    ticket = Ticket.of("demo", "t", "k", {})
    late = Record("claimed", ticket.fingerprint, CLAIM_LEASE, "lost").dump()
    await store.add(ticket.slot, late, 60, group=ticket.owner, group_cap=10)
    ledger, calls = _ledger(store, now), []

    async def perform() -> Response:
        calls.append(1)
        return await _sent_response()

    with pytest.raises(IdempotencyKeyInUse):
        await ledger.run(ticket, perform, ProblemResponse)
    now[0] = CLAIM_LEASE + 0.1
    assert (await ledger.run(ticket, perform, ProblemResponse)).status_code == 202
    assert calls == [1]


def test_requests_refused_for_their_credentials_keep_no_key():
    """Strangers with made-up credentials cannot fill the store."""
    bogus = b"<sms><status>3</status><message>Username or password is incorrect</message></sms>"
    recorder = Recorder(bogus)
    app = create_app(Settings(idempotency_max_keys=3), transport=httpx.MockTransport(recorder),
                     clock=Clock())
    with TestClient(app) as client:
        for index in range(10):
            refused = client.post("/v1/messages", json=MESSAGE, headers={
                **basic(f"stranger{index}", "made-up-token"), "Idempotency-Key": f"k{index}"})
            assert refused.status_code == 401
        recorder.answer = SENT
        honest = client.post("/v1/messages", json=MESSAGE, headers={**KEY, **basic("demo", "t")})
    assert honest.status_code == 202  # the store, capped at 3 keys, still had room


def test_one_credential_cannot_take_every_key():
    recorder = Recorder(SENT)
    settings = Settings(idempotency_keys_per_credential=2)
    with client_for(recorder, settings) as client:
        alice = [client.post("/v1/messages", json=MESSAGE, headers={
            **basic("alice", "tok-a"), "Idempotency-Key": f"a{i}"}) for i in range(3)]
        bob = client.post("/v1/messages", json=MESSAGE, headers={
            **basic("bob", "tok-b"), "Idempotency-Key": "b0"})
    assert [r.status_code for r in alice] == [202, 202, 503]
    assert "retry-after" in alice[2].headers
    assert bob.status_code == 202


def test_in_single_tenant_mode_a_key_belongs_to_the_api_key_however_it_is_spelt():
    key = "service-key-0123456789"
    settings = Settings(username="acme", token="held-token", api_keys=key)
    recorder = Recorder(SENT)
    spellings = [f"Bearer {key}", f"bearer {key}", f"Bearer  {key}",
                 "Basic " + base64.b64encode(f"svc:{key}".encode()).decode(),
                 "Basic " + base64.b64encode(f"other:{key}".encode()).decode()]
    with client_for(recorder, settings) as client:
        answers = [client.post("/v1/messages", json=MESSAGE,
                               headers={**KEY, "Authorization": spelt}) for spelt in spellings]
    assert [a.status_code for a in answers] == [202] * 5
    assert [a.headers.get("idempotent-replayed") for a in answers] == [None] + ["true"] * 4
    assert len(recorder.requests) == 1


async def test_a_dispatch_whose_answer_was_lost_is_found_confirmed_and_sent_once():
    """The "dispatched" write reached the store, its answer did not: the ledger reads the
    record back, finds its own dispatch, and goes on, once."""
    now = [0.0]
    store = FailingStore({"dispatch lands"}, lambda: now[0])
    ledger, ticket, calls = _ledger(store, now), Ticket.of("demo", "t", "k", {}), []

    async def perform() -> Response:
        calls.append(1)
        return await _sent_response()

    assert (await ledger.run(ticket, perform, ProblemResponse)).status_code == 202
    again = await ledger.run(ticket, perform, ProblemResponse)
    assert again.headers["idempotent-replayed"] == "true"
    assert calls == [1]


async def test_a_dispatch_the_store_cannot_confirm_either_way_leaves_no_key_in_doubt():
    """The write landed but neither its answer nor a read comes back: 503, nothing sent, and
    the record removed, so the retry is sent (never "outcome unknown" for a request the
    proxy did not send)."""
    now = [0.0]
    store = FailingStore({"dispatch lands", "get"}, lambda: now[0])
    ledger, ticket, calls = _ledger(store, now), Ticket.of("demo", "t", "k", {}), []

    async def perform() -> Response:
        calls.append(1)
        return await _sent_response()

    with pytest.raises(IdempotencyUnavailable):
        await ledger.run(ticket, perform, ProblemResponse)
    assert calls == []
    store.fail_on = set()
    assert (await ledger.run(ticket, perform, ProblemResponse)).status_code == 202
    assert calls == [1]
