"""Webhooks in one process (proxy/events/): the proxy on its embedded sandbox, a receiver on
127.0.0.1 in the same event loop that verifies with ``standardwebhooks``; retries, 410,
disabling, rotation, manual retry, the guard, sealed tokens, low credit, the logs."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from proxy.app import create_app
from proxy.events.deliveries import TESTS_PER_HOUR, Event, event_id
from proxy.events.guard import Sender, allowed_networks, check_url
from proxy.events.sealing import Sealer, SealError
from proxy.events.subscriptions import (
    ABANDONED_AFTER,
    MAX_PER_OWNER,
    Secret,
    Subscription,
    Subscriptions,
    new_id,
)
from proxy.sandbox import FixedClock, Sandbox
from proxy.sandbox import create_app as create_sandbox
from proxy.settings import Settings
from proxy.store import StoreUnavailable
from proxy.store.memory import MemoryStore
from tests.conftest import NOW, serving

KEY = base64.b64encode(bytes(range(32))).decode()
TYPES = ["message.delivery_reported", "message.received", "recipient.opted_out"]
FAST = {"store": "memory", "sandbox": True, "webhook_poll_interval": 0.1,
        "webhook_retries": "0.05,0.05", "webhook_timeout": 2.0,
        "webhook_allow_networks": "127.0.0.0/8", "webhook_token_keys": KEY}


@dataclass
class Receiver:
    url: str = ""
    answer: Callable[[web.Request], int] = field(default=lambda request: 204)
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    other_hits: int = 0

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        import json

        return [json.loads(body) for _, body in self.got
                if kind is None or json.loads(body)["type"] == kind]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()

    async def hook(request: web.Request) -> web.Response:
        found.got.append((dict(request.headers), await request.read()))
        status = found.answer(request)
        headers = {"Location": "/elsewhere"} if 300 <= status < 400 else {}
        return web.Response(status=status, headers=headers, body=b"x" * 100_000)

    async def elsewhere(request: web.Request) -> web.Response:
        found.other_hits += 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/elsewhere", elsewhere)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    found.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    yield found
    await runner.cleanup()


@pytest.fixture(autouse=True)
def quick_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_DLR_DELAY", "0")
    monkeypatch.setenv("SANDBOX_SEED", "1")


async def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    async def wait() -> Any:
        while not (found := await check() if asyncio.iscoroutinefunction(check) else check()):
            await asyncio.sleep(0.02)
        return found
    try:
        return await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"not in {timeout} s: {what}") from None


async def subscribe(client: httpx.AsyncClient, receiver: Receiver,
                    types: list[str] = TYPES) -> dict[str, Any]:
    answer = await client.post("/v1/webhooks", json={"url": receiver.url, "event_types": types})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


async def deliveries(client: httpx.AsyncClient, webhook: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await client.get(f"/v1/webhooks/{webhook}/deliveries")
                                   ).json()["data"]
    return found


async def test_a_report_arrives_signed_and_the_secret_is_shown_once(receiver):
    async with serving(create_app(Settings(**FAST))) as client:
        created = await subscribe(client, receiver)
        sent = await client.post("/v1/messages", json={
            "sender": "Demo", "text": "hi", "recipients": [
                {"phone": "0501234567", "external_id": "o-1"}]})
        await until(lambda: receiver.events("message.delivery_reported"), "the report")
        read = (await client.get(f"/v1/webhooks/{created['id']}")).json()
        listed = (await client.get("/v1/webhooks")).json()["data"]
    headers, body = receiver.got[0]
    assert verify(created["secret"], headers, body)
    [event] = receiver.events("message.delivery_reported")
    assert headers["webhook-id"] == event["id"]
    assert event["data"]["external_id"] == "o-1"
    assert event["data"]["campaign_id"] == sent.json()["campaign_id"]
    assert event["timestamp"] == event["data"]["reported_at"]
    assert "secret" not in read and all("secret" not in sub for sub in listed)
    assert created["secret"].startswith("whsec_")


async def test_refusals_are_retried_under_one_id_then_fail_and_a_retry_by_hand_delivers(
        receiver):
    receiver.answer = lambda request: 500
    async with serving(create_app(Settings(**FAST))) as client:
        created = await subscribe(client, receiver)
        tested = (await client.post(f"/v1/webhooks/{created['id']}/test")).json()

        async def failed() -> Any:
            return [d for d in await deliveries(client, created["id"]) if d["status"] == "failed"]

        [delivery] = await until(failed, "the delivery fails after its retries")
        receiver.answer = lambda request: 200
        retried = await client.post(
            f"/v1/webhooks/{created['id']}/deliveries/{tested['id']}/retry")

        async def succeeded() -> Any:
            return [d for d in await deliveries(client, created["id"])
                    if d["status"] == "succeeded"]

        [done] = await until(succeeded, "the retried delivery succeeds")
        unknown = await client.post(
            f"/v1/webhooks/{created['id']}/deliveries/evt_aaaaaaaaaaaaaaaaaaaaaaaa/retry")
    assert delivery["attempt_count"] == 3  # the first and the two retries of the schedule
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 500]
    assert retried.status_code == 202 and retried.json()["status"] == "pending"
    assert done["attempt_count"] == 4 and done["attempts"][0]["status_code"] == 200
    assert {headers["webhook-id"] for headers, _ in receiver.got} == {tested["id"]}
    assert len(receiver.got) == 4
    assert unknown.status_code == 404
    assert unknown.json()["type"] == "/problems/webhook-not-found"


async def test_410_gone_disables_the_subscription(receiver):
    receiver.answer = lambda request: 410
    async with serving(create_app(Settings(**FAST))) as client:
        created = await subscribe(client, receiver)
        await client.post(f"/v1/webhooks/{created['id']}/test")

        async def disabled() -> Any:
            read = (await client.get(f"/v1/webhooks/{created['id']}")).json()
            return read if read["status"] == "disabled" else None

        read = await until(disabled, "the subscription is disabled")
        again = await client.post(f"/v1/webhooks/{created['id']}/test")
        [delivery] = await deliveries(client, created["id"])
    assert read["disabled_reason"] == "the endpoint answered 410 Gone"
    assert again.status_code == 409 and again.json()["type"] == "/problems/webhook-conflict"
    assert delivery["status"] == "failed" and delivery["attempt_count"] == 1
    assert len(receiver.got) == 1


async def test_an_endpoint_failing_longer_than_allowed_is_disabled(receiver):
    receiver.answer = lambda request: 503
    settings = Settings(**{**FAST, "webhook_disable_after": 0.05, "webhook_retries": "0.1,0.1"})
    async with serving(create_app(settings)) as client:
        created = await subscribe(client, receiver)
        await client.post(f"/v1/webhooks/{created['id']}/test")

        async def disabled() -> Any:
            read = (await client.get(f"/v1/webhooks/{created['id']}")).json()
            return read if read["status"] == "disabled" else None

        read = await until(disabled, "the subscription is disabled")
    assert read["disabled_reason"].startswith("every attempt failed for")
    assert "failing_since" in read


async def test_a_redirect_is_not_followed_and_a_long_answer_is_read_in_part(receiver):
    receiver.answer = lambda request: 307
    async with serving(create_app(Settings(**{**FAST, "webhook_retries": "0.05"}))) as client:
        created = await subscribe(client, receiver)
        await client.post(f"/v1/webhooks/{created['id']}/test")

        async def failed() -> Any:
            return [d for d in await deliveries(client, created["id"]) if d["status"] == "failed"]

        [delivery] = await until(failed, "the delivery fails")
    assert [a["status_code"] for a in delivery["attempts"]] == [307, 307]
    assert receiver.other_hits == 0


async def test_a_rotated_secret_signs_beside_the_new_one_for_its_grace(receiver):
    settings = Settings(**{**FAST, "webhook_secret_grace": 1.0})
    async with serving(create_app(settings)) as client:
        created = await subscribe(client, receiver)
        rotated = (await client.post(f"/v1/webhooks/{created['id']}/secret/rotations")).json()
        await client.post(f"/v1/webhooks/{created['id']}/test")
        await until(lambda: len(receiver.got) == 1, "the test event")
        await asyncio.sleep(1.2)  # the grace period ends
        await client.post(f"/v1/webhooks/{created['id']}/test")
        await until(lambda: len(receiver.got) == 2, "the second test event")
    (during, first), (after, second) = receiver.got
    assert len(during["webhook-signature"].split()) == 2
    assert verify(created["secret"], during, first) and verify(rotated["secret"], during, first)
    assert len(after["webhook-signature"].split()) == 1
    assert verify(rotated["secret"], after, second)
    assert not verify(created["secret"], after, second)
    assert rotated["secret"] != created["secret"] and "previous_secret_until" in rotated


async def test_rows_read_again_make_no_new_events(receiver):
    """The poller's kept position lost (a store restored, a new replica): the reports are read
    again from their start, and no subscription gets an event twice."""
    app = create_app(Settings(**FAST))
    async with serving(app) as client:
        await subscribe(client, receiver)
        await client.post("/v1/messages", json={"sender": "Demo", "text": "hi", "recipients": [
            {"phone": f"05012345{i:02d}", "external_id": f"again-{i}"} for i in range(5)]})
        await until(lambda: len(receiver.events("message.delivery_reported")) == 5, "5 reports")
        store = app.state.store
        for key, _ in await store.scan("webhooks:position:"):
            await store.write(key, b'{"at": 0}')  # lost: read again from the subscription's start
        await asyncio.sleep(1.0)  # a few cycles of the poller read everything again
    assert len(receiver.events("message.delivery_reported")) == 5


async def test_low_credit_is_one_event_per_crossing_and_a_gauge(receiver):
    settings = Settings(**{**FAST, "webhook_low_credits": 5000})  # the demo account has 1000
    async with serving(create_app(settings)) as client:
        await subscribe(client, receiver, ["account.balance_low"])
        await until(lambda: receiver.events("account.balance_low"), "low credit")
        await asyncio.sleep(0.5)  # more cycles, the credits still low
        metrics = (await client.get("/metrics")).text
    [event] = receiver.events("account.balance_low")
    assert event["data"] == {"credits": 1000}
    assert 'smsleads_proxy_account_credits{account="demo"} 1000.0' in metrics
    assert 'smsleads_proxy_webhook_attempts_total{outcome="delivered"} 1.0' in metrics
    assert 'smsleads_proxy_webhook_feed_lag_seconds{source="getBalance"}' in metrics


async def test_multi_tenant_needs_keys_and_keeps_the_token_sealed(receiver):
    without = Settings(**{**FAST, "webhook_token_keys": None})
    async with serving(create_app(without)) as client:
        refused = await client.post("/v1/webhooks",
                                    json={"url": receiver.url, "event_types": TYPES})
        assert (await client.get("/v1/webhooks")).json() == {"data": []}
    assert refused.status_code == 501
    assert refused.json()["type"] == "/problems/webhook-token-key-missing"
    app = create_app(Settings(**FAST))
    async with serving(app) as client:
        created = await subscribe(client, receiver)
        wrong = await client.post("/v1/webhooks", json={"url": receiver.url,
                                                        "event_types": TYPES},
                                  auth=("demo", "not-the-token"))
        others = await client.get("/v1/webhooks", auth=("demo", "another-token"))
        records = await app.state.store.scan("")
    assert wrong.status_code == 401  # the upstream refused it: nothing kept
    assert others.status_code == 401  # a token the upstream refuses reads nothing
    assert not any(b"demo-token" in value for _, value in records)
    [sealed] = [value for key, value in records if key == f"webhooks:sub:{created['id']}"]
    assert b'"token":"v1.' in sealed


async def test_single_tenant_mode_polls_with_the_held_token(receiver):
    settings = Settings(**{**FAST, "webhook_token_keys": None, "username": "demo",
                           "token": "demo-token", "api_keys": "k" * 32})
    async with serving(create_app(settings), Authorization="Bearer " + "k" * 32) as client:
        await subscribe(client, receiver)
        await client.post("/v1/messages", json={"sender": "Demo", "text": "hi", "recipients": [
            {"phone": "0501234567", "external_id": "held"}]})
        await until(lambda: receiver.events("message.delivery_reported"), "the report")


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/", "http://192.168.1.1/", "http://172.16.0.1/", "http://100.64.0.1/",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[::1]/",
    "http://[::ffff:10.0.0.1]/", "http://224.0.0.1/", "http://0.0.0.0/", "http://localhost/",
    "ftp://hooks.example.com/", "http://user:pw@hooks.example.com/", "http:///nohost",
    "https://hooks.example.com:0/",
    # IPv6 forms that carry an IPv4 address: NAT64 (10.0.0.5), local-use NAT64, 6to4
    # (169.254.169.254), IPv4-compatible (127.0.0.1), IPv4-translated (10.0.0.5)
    "http://[64:ff9b::a00:5]/", "http://[64:ff9b:1::808:808]/", "http://[2002:a9fe:a9fe::]/",
    "http://[::7f00:1]/", "http://[::ffff:0:a00:5]/",
    # what the resolver reads as 127.0.0.1 or 10.0.0.1 (inet_aton's legacy forms)
    "http://127.1:9/x", "http://0x7f.1/", "http://2130706433/", "http://012.0.0.1/",
    "http://127.0.0.1./", "http://app.localhost/",
    # hosts that are no host names
    "http://hooks example.com/", "http://8.8.8.8 x/", "http://127%2e0%2e0%2e1/",
    "http://-bad-.example.com/", "http://[::1%25lo]/"])
def test_urls_a_webhook_may_not_go_to(url):
    assert check_url(url) is not None


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/in?x=1", "http://8.8.8.8:8080/", "http://[2606:4700::1111]/",
    "http://[64:ff9b::808:808]/", "http://[2002:808:808::1]/",  # they carry 8.8.8.8
    "https://b\u00fccher.example/hook", "http://under_score.example.com/", "http://8.8.8.8./"])
def test_urls_a_webhook_may_go_to(url):
    assert check_url(url) is None


async def test_subscribing_to_a_legacy_numeric_or_an_embedded_address_is_a_422():
    async with serving(create_app(Settings(**FAST))) as client:  # loopback allowed
        answers = [await client.post("/v1/webhooks", json={"url": url, "event_types": TYPES})
                   for url in ("http://10.1:9/x", "http://[64:ff9b::a00:5]/",
                               "http://[2002:a9fe:a9fe::]/", "http://hooks example.com/")]
        listed = (await client.get("/v1/webhooks")).json()["data"]
    assert [(a.status_code, a.json()["errors"][0]["pointer"]) for a in answers] == [
        (422, "/body/url")] * 4
    assert listed == []


def test_allowed_networks_let_their_addresses_through():
    assert check_url("http://127.0.0.1:9/", allowed_networks("127.0.0.0/8")) is None
    assert check_url("http://[::7f00:1]:9/", allowed_networks("127.0.0.0/8")) is None


class Rebinding(AbstractResolver):
    """DNS that answers a loopback address for any name, as a rebinding attacker's would."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


async def test_a_name_resolving_to_a_private_address_is_refused_at_connect_time(receiver):
    receiver.answer = lambda request: 200  # with a 100,000-byte body
    port = receiver.url.split(":")[2].split("/")[0]
    url = f"http://hooks.example.com:{port}/hook"
    assert check_url(url) is None  # a public name when subscribed
    async with Sender((), timeout=2, resolver=Rebinding()) as sender:
        refused = await sender.post(url, b"{}", {})
    async with Sender(allowed_networks("127.0.0.0/8"), timeout=2,
                      resolver=Rebinding()) as sender:
        allowed = await sender.post(url, b"{}", {})
    assert refused.status is None and "not public" in (refused.error or "")
    assert allowed.status == 200 and len(allowed.answer) == 4096  # read no further
    assert len(receiver.got) == 1  # only the allowed one connected


def test_sealed_tokens_open_with_any_listed_key_and_in_their_context_only():
    old = Sealer.from_setting(KEY)
    sealed = old.seal("a-token", "wh_1")
    new_key = base64.b64encode(bytes(range(1, 33))).decode()
    rotated = Sealer.from_setting(f"{new_key},{KEY}")
    assert rotated.open(sealed, "wh_1") == "a-token"
    assert sealed.split(".")[1] != rotated.seal("t", "wh_1").split(".")[1]  # the new key seals
    with pytest.raises(SealError):
        rotated.open(sealed, "wh_2")
    with pytest.raises(SealError):
        Sealer.from_setting(new_key).open(sealed, "wh_1")
    with pytest.raises(SealError):
        Sealer.from_setting("c2hvcnQ=")


async def test_no_secret_token_or_key_in_any_log_line(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    receiver.answer = lambda request: 500
    async with serving(create_app(Settings(**FAST))) as client:
        created = await subscribe(client, receiver)
        rotated = (await client.post(f"/v1/webhooks/{created['id']}/secret/rotations")).json()
        await client.post(f"/v1/webhooks/{created['id']}/test")
        await until(lambda: len(receiver.got) >= 2, "attempts")
    lines = [caplog.handler.format(record) for record in caplog.records]
    assert any(getattr(r, "event_id", None) for r in caplog.records)  # the attempts' lines
    for secret in (created["secret"], rotated["secret"], "demo-token", KEY, receiver.url):
        assert not any(secret in line for line in lines), secret


async def test_the_sandbox_console_shows_each_delivery_with_its_status_code(receiver):
    receiver.answer = lambda request: 503 if len(receiver.got) == 1 else 204
    async with serving(create_app(Settings(**FAST))) as client:
        created = await subscribe(client, receiver)
        tested = (await client.post(f"/v1/webhooks/{created['id']}/test")).json()
        await until(lambda: len(receiver.got) == 2, "a refusal and a success")

        async def shown() -> Any:
            state = (await client.get("/sandbox/api/state")).json()
            [panel] = [p for p in state["panels"] if p["key"] == "webhooks"]
            return panel if len(panel["rows"]) == 2 else None

        panel = await until(shown, "both attempts in the console")
    assert panel["title"] == "Webhook deliveries"
    assert [(row["webhook"], row["event"], row["attempt"], row["status"], row["outcome"])
            for row in panel["rows"]] == [(created["id"], tested["id"], 2, 204, "succeeded"),
                                          (created["id"], tested["id"], 1, 503, "pending")]


async def test_a_stopping_process_hands_its_leases_back_and_its_position_stays(receiver):
    settings = Settings(**{**FAST, "store": "sqlite"})
    app = create_app(settings)
    async with serving(app) as client:
        await subscribe(client, receiver)

        async def leased() -> Any:
            found = await app.state.store.scan("webhooks:lease:")
            return found if len(found) == 3 else None  # one account, three sources

        held = await until(leased, "the pollers' leases")
    from proxy.store import open_store

    store = await open_store(settings, lambda: 0.0)
    try:
        assert await store.scan("webhooks:lease:") == []  # another process reads on at once
        assert {key.rpartition(":")[2] for key, _ in held} == {
            "listDeliveryReports", "listIncomingMessages", "listBlacklist"}
        assert len(await store.scan("webhooks:position:")) == 3
    finally:
        await store.close()


async def test_a_subscription_retried_with_its_key_is_made_once(receiver):
    """A client whose answer was lost retries with its Idempotency-Key: it gets the same
    subscription, secret included, and no second one exists."""
    body = {"url": receiver.url, "event_types": TYPES}
    key = {"Idempotency-Key": "subscribe-1"}
    async with serving(create_app(Settings(**FAST))) as client:
        first = await client.post("/v1/webhooks", json=body, headers=key)
        again = await client.post("/v1/webhooks", json=body, headers=key)
        other = await client.post("/v1/webhooks", json={**body, "description": "x"},
                                  headers=key)
        listed = (await client.get("/v1/webhooks")).json()["data"]
    assert first.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()  # the secret too: the client never got it otherwise
    assert other.status_code == 422 and other.json()["type"] == "/problems/idempotency-key-reused"
    assert [sub["id"] for sub in listed] == [first.json()["id"]]


# ── Subscriptions: the cap, and what a failing store leaves ────────────────────────────────


async def test_the_cap_holds_when_subscriptions_race_and_each_one_made_is_listed(receiver):
    """60 requests at once on the default store (SQLite: every write a transaction of its
    own): 20 subscriptions are made, the others refused, and none exists that is not listed."""
    app = create_app(Settings(**{**FAST, "store": "sqlite"}))
    async with serving(app) as client:
        answers = await asyncio.gather(*(client.post("/v1/webhooks", json={
            "url": f"{receiver.url}?n={i}", "event_types": TYPES}) for i in range(60)))
        listed = (await client.get("/v1/webhooks")).json()["data"]
        kept = await app.state.store.scan("webhooks:sub:")
    made = [a.json()["id"] for a in answers if a.status_code == 201]
    assert len(made) == MAX_PER_OWNER
    assert [a.json()["type"] for a in answers if a.status_code != 201] == [
        "/problems/webhook-conflict"] * (60 - MAX_PER_OWNER)
    assert sorted(sub["id"] for sub in listed) == sorted(made)
    assert sorted(key.rpartition(":")[2] for key, _ in kept) == sorted(made)


async def test_a_409_keeps_no_answer_for_its_key_and_the_same_key_succeeds_later(receiver):
    """README, Failure semantics: a webhook-conflict did nothing, so a retry with the same
    Idempotency-Key runs again, and succeeds once a subscription is deleted."""
    key = {"Idempotency-Key": "the-21st"}
    body = {"url": receiver.url, "event_types": TYPES}
    async with serving(create_app(Settings(**FAST))) as client:
        made = [await subscribe(client, receiver) for _ in range(MAX_PER_OWNER)]
        refused = await client.post("/v1/webhooks", json=body, headers=key)
        again = await client.post("/v1/webhooks", json=body, headers=key)
        await client.delete(f"/v1/webhooks/{made[0]['id']}")
        through = await client.post("/v1/webhooks", json=body, headers=key)
        replayed = await client.post("/v1/webhooks", json=body, headers=key)
    assert refused.json()["type"] == again.json()["type"] == "/problems/webhook-conflict"
    assert "idempotent-replayed" not in again.headers
    assert through.status_code == 201
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == through.json()


async def test_a_store_failing_between_the_writes_of_a_subscription_leaves_nothing(
        receiver, monkeypatch):
    """The second write of a subscription's creation fails: the client gets a 503, no
    subscription is left to receive events unlisted, and the cap is whole."""
    app = create_app(Settings(**{**FAST, "store": "sqlite"}))
    body = {"url": receiver.url, "event_types": TYPES}
    async with serving(app) as client:
        await client.get("/v1/webhooks")  # the token checked: the next request only writes
        store, writes = app.state.store, []

        def failing_second(real: Callable[..., Any]) -> Callable[..., Any]:
            async def write(key: str, *args: Any, **kwargs: Any) -> Any:
                writes.append(key)
                if len(writes) == 2:
                    raise StoreUnavailable("the disk is full")
                return await real(key, *args, **kwargs)
            return write

        with monkeypatch.context() as patched:
            patched.setattr(store, "write", failing_second(store.write))
            patched.setattr(store, "write_if", failing_second(store.write_if))
            refused = await client.post("/v1/webhooks", json=body)
        left = await store.scan("webhooks:")
        listed = (await client.get("/v1/webhooks")).json()["data"]
        later = [(await client.post("/v1/webhooks", json=body)).status_code
                 for _ in range(MAX_PER_OWNER)]
    assert len(writes) == 2
    assert refused.status_code == 503 and refused.json()["type"] == "/problems/webhooks-unavailable"
    assert left == [] and listed == []
    assert later == [201] * MAX_PER_OWNER


async def test_a_place_no_subscription_came_to_is_taken_over_when_abandoned(monkeypatch):
    """Both the write and the clean-up failed: the place stays taken until it is abandoned."""
    subscriptions = Subscriptions(MemoryStore(100))

    def made_at(at: float) -> Subscription:
        return Subscription(new_id(), "owner", "demo", "https://hooks.example.com/",
                            ("message.received",), "", at, (Secret("whsec_x"),))

    async def down(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("down")

    with monkeypatch.context() as patched:
        patched.setattr(subscriptions.store, "write", down)
        patched.setattr(subscriptions.store, "erase", down)
        with pytest.raises(StoreUnavailable):
            await subscriptions.add(made_at(0.0))
    soon = [await subscriptions.add(made_at(60.0)) for _ in range(MAX_PER_OWNER)]
    assert soon == [True] * (MAX_PER_OWNER - 1) + [False]
    assert await subscriptions.add(made_at(ABANDONED_AFTER + 1))
    assert len(await subscriptions.of_owner("owner")) == MAX_PER_OWNER


# ── What one tenant may make the store keep ────────────────────────────────────────────────


async def test_test_events_are_20_an_hour_per_webhook(receiver):
    async with serving(create_app(Settings(**FAST))) as client:
        created = await subscribe(client, receiver)
        answers = [await client.post(f"/v1/webhooks/{created['id']}/test")
                   for _ in range(TESTS_PER_HOUR + 1)]
        other = await subscribe(client, receiver)
        elsewhere = await client.post(f"/v1/webhooks/{other['id']}/test")
        listed = (await client.get(f"/v1/webhooks/{created['id']}/deliveries")).json()["data"]
    assert [a.status_code for a in answers] == [202] * TESTS_PER_HOUR + [409]
    assert answers[-1].json()["type"] == "/problems/webhook-conflict"
    assert "test events" in answers[-1].json()["detail"]
    assert elsewhere.status_code == 202  # each webhook has its own
    assert len(listed) == TESTS_PER_HOUR


async def test_deliveries_are_listed_newest_first_a_page_at_a_time(receiver):
    app = create_app(Settings(**FAST))
    async with serving(app) as client:
        created = await subscribe(client, receiver)
        hub = app.state.webhooks
        sub = await hub.subscriptions.get(created["id"])
        for i in range(150):  # one a second, oldest first
            await hub.deliveries.offer(sub, Event(event_id("listing", i), "message.received",
                                                  "", {"n": i}, "demo"), 1_000_000.0 + i)
        url = f"/v1/webhooks/{created['id']}/deliveries"
        first = await client.get(url)
        second = await client.get(first.headers["link"].split(">")[0][1:])
        again = await client.get(url, params={"cursor": first.json()["next_cursor"]})
        forged = await client.get(url, params={"cursor": "AaKQ2Jx1YbW9AbWe8QG0iA"})
    ids = [event_id("listing", i) for i in reversed(range(150))]
    assert [d["id"] for d in first.json()["data"]] == ids[:100]
    assert [d["id"] for d in second.json()["data"]] == ids[100:]
    assert "next_cursor" not in second.json() and "link" not in second.headers
    assert again.json() == second.json()
    assert forged.status_code == 422 and forged.json()["errors"][0]["pointer"] == "/query/cursor"


# ── Where a subscription's events begin ────────────────────────────────────────────────────


async def test_a_new_subscription_gets_no_event_from_before_it_was_made(receiver):
    """A reply comes while nobody is subscribed; five minutes later a subscription is made: it
    gets the replies that come after it, not that one, although the pollers kept the position
    of an earlier subscription from before the reply."""
    clock = FixedClock(NOW)
    sandbox = Sandbox(clock=clock, seed=1)
    app = create_app(Settings(**{**FAST, "sandbox": False}), clock=clock.now,
                     transport=httpx.ASGITransport(app=create_sandbox(sandbox)))
    async with serving(app) as client:
        first = await subscribe(client, receiver, ["message.received"])

        async def read_once() -> Any:
            return await app.state.store.scan("webhooks:position:")

        await until(read_once, "the incoming messages read once")
        await client.delete(f"/v1/webhooks/{first['id']}")
        sandbox.receive("+972501112233", "sent while nobody was subscribed")
        sandbox.advance(timedelta(minutes=5))
        await subscribe(client, receiver, ["message.received"])
        sandbox.receive("+972501112233", "sent after subscribing")
        await until(lambda: receiver.events("message.received"), "the reply after subscribing")
        await asyncio.sleep(0.5)  # cycles of the poller: anything else would have come by now
    assert [e["data"]["text"] for e in receiver.events("message.received")] == [
        "sent after subscribing"]
