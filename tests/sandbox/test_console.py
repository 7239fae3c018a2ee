"""The console's HTTP calls: the page, the JSON snapshot, the event stream and every action,
on the standalone sandbox's app (the proxy mounts the same routes: tests/test_console_proxy.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest

from proxy.sandbox import Account, FixedClock, Panel, Sandbox, SystemClock, create_app
from proxy.sandbox.console import CSP
from proxy.sandbox.feed import QUEUE_LIMIT
from tests.sandbox.support import Client

SEND = ("<source>DemoAPI</source><destinations><phone id='order-17'>0501234567</phone>"
        "<phone>0527654321</phone></destinations><message>Your order has shipped</message>")


@pytest.fixture
def http(sandbox: Sandbox) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sandbox)),
                             base_url="http://sandbox")


async def sent(client: Client) -> str:
    return (await client("sms", SEND)).findtext("shipment_id") or ""


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert (body["status"], body["type"]) == (status, f"/problems/{slug}")
    assert body["title"] and body["detail"]
    return body


# ── The page ─────────────────────────────────────────────────────────────────────────────


async def test_the_page_and_its_assets_come_from_the_sandbox_under_a_strict_policy(
        http: httpx.AsyncClient) -> None:
    async with http:
        page = await http.get("/sandbox")
        assets = {path: await http.get(path) for path in (
            "/sandbox/static/console.js", "/sandbox/static/console.css",
            "/sandbox/static/icon.svg")}
        missing = await http.get("/sandbox/static/nothing.js")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self';" in CSP
    assert "<script" in page.text and "<script>" not in page.text and " style=" not in page.text
    assert all(f'"{path}"' in page.text for path in assets)
    assert all(asset.status_code == 200 for asset in assets.values())
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    assert missing.status_code == 404


# ── The snapshot ─────────────────────────────────────────────────────────────────────────


async def test_the_snapshot_shows_what_the_phones_got(sandbox: Sandbox, client: Client,
                                                      http: httpx.AsyncClient) -> None:
    campaign_id = await sent(client)
    sandbox.report(int(campaign_id), "0527654321", "expired")
    async with http:
        state = (await http.get("/sandbox/api/state")).json()
    assert state["now"] == "2025-06-15T12:00:00+03:00" and state["clock"] == "fixed"
    assert state["accounts"] == [{"username": "demo", "name": "Demo", "credits": 998,
                                  "sender": "0500000000", "parent": None}]
    (campaign,) = state["campaigns"]
    assert {k: v for k, v in campaign.items() if k != "deliveries"} == {
        "id": campaign_id, "account": "demo", "state": "sent",
        "send_at": "2025-06-15T12:00:00+03:00", "text": "Your order has shipped", "texts": 1,
        "senders": ["DemoAPI"], "recipients": 2, "parts": 1, "credits": 2, "reply_to": None,
        "unsubscribe": None, "more_recipients": 0}
    assert campaign["deliveries"] == [
        {"phone": "+972501234567", "external_id": "order-17", "text": "Your order has shipped",
         "parts": 1, "sender": "DemoAPI", "state": "pending", "status_code": None,
         "description": None, "description_he": None, "reported_at": None},
        {"phone": "+972527654321", "external_id": None, "text": "Your order has shipped",
         "parts": 1, "sender": "DemoAPI", "state": "expired", "status_code": 2,
         "description": "Expired after retries", "description_he": "פג תוקף",
         "reported_at": "2025-06-15T12:00:00+03:00"}]
    assert [m["text"] for m in state["incoming"]] == [
        "Hi, is the offer still valid?", "Please call me back"]  # seeded, newest first
    assert [e["phone"] for e in state["blacklist"]] == ["+972529999999", "+972528888888"]
    assert (state["panels"], state["workers"]) == ([], 1)


async def test_the_snapshot_fills_dynamic_fields_and_keeps_hebrew(client: Client,
                                                                  http: httpx.AsyncClient) -> None:
    created = await client("newCL", "<cl><name>vip</name><destinations><destination><phone>"
                                    "0541234567</phone><df1>דנה</df1></destination>"
                                    "</destinations></cl>")
    list_id = created.findtext("identifiers/identifier")
    await client("sms", f"<source>Shop</source><destinations><cl_id>{list_id}</cl_id>"
                        "</destinations><message>שלום [DYNAMIC_FIELD1], ההזמנה נשלחה</message>"
                        "<add_dynamic>1</add_dynamic><timing>15/06/25 18:30</timing>"
                        "<add_unsubscribe>2</add_unsubscribe>")
    async with http:
        (campaign,) = (await http.get("/sandbox/api/state")).json()["campaigns"]
    assert (campaign["state"], campaign["send_at"]) == ("scheduled", "2025-06-15T18:30:00+03:00")
    assert campaign["deliveries"][0]["text"] == "שלום דנה, ההזמנה נשלחה\nReply STOP to unsubscribe"
    assert campaign["unsubscribe"] == "reply"
    assert campaign["deliveries"][0]["state"] == "scheduled"


# ── The actions ──────────────────────────────────────────────────────────────────────────


async def test_a_reply_arrives_as_an_incoming_message(sandbox: Sandbox, client: Client,
                                                      http: httpx.AsyncClient) -> None:
    await sent(client)
    async with http:
        response = await http.post("/sandbox/api/replies", json={
            "phone": "+972501234567", "text": "תודה! מתי זה מגיע?"})
    assert response.status_code == 201
    assert response.json() == {"id": "3", "account": "demo", "phone": "+972501234567",
                               "to": "+972500000000", "text": "תודה! מתי זה מגיע?",
                               "received_at": "2025-06-15T12:00:00+03:00"}
    assert sandbox.state.incoming["demo"][-1].message == "תודה! מתי זה מגיע?"


async def test_an_opt_out_is_blacklisted(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    async with http:
        response = await http.post("/sandbox/api/opt-outs", json={"phone": "052-765-4321"})
        state = (await http.get("/sandbox/api/state")).json()
    assert response.status_code == 201 and response.json()["text"] == "STOP"
    assert state["blacklist"][0] == {"account": "demo", "phone": "+972527654321",
                                     "added_at": "2025-06-15T12:00:00+03:00"}


async def test_a_delivery_report_is_made_to_arrive(client: Client,
                                                   http: httpx.AsyncClient) -> None:
    campaign_id = await sent(client)
    async with http:
        response = await http.post("/sandbox/api/delivery-reports", json={
            "campaign_id": campaign_id, "phone": "+972501234567", "outcome": "failed"})
        again = await http.post("/sandbox/api/delivery-reports", json={
            "campaign_id": int(campaign_id), "phone": "+972501234567", "outcome": "expired"})
    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("campaign_id", "phone", "state", "status_code")} == {
        "campaign_id": campaign_id, "phone": "+972501234567", "state": "failed",
        "status_code": 1}
    assert "already has its report: failed at" in problem(again, 409, "sandbox-conflict")["detail"]


async def test_the_clock_advances_and_reports_come_in(client: Client,
                                                      http: httpx.AsyncClient) -> None:
    await sent(client)
    async with http:
        moved = await http.post("/sandbox/api/clock", json={"seconds": 2})
        state = (await http.get("/sandbox/api/state")).json()
    assert moved.json() == {"now": "2025-06-15T12:00:02+03:00"}
    assert [d["state"] for d in state["campaigns"][0]["deliveries"]] == ["delivered"] * 2


async def test_the_system_clock_is_not_moved_by_hand() -> None:
    app = create_app(Sandbox(clock=SystemClock(), seed=1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as http:
        refused = await http.post("/sandbox/api/clock", json={"seconds": 60})
    assert "system clock" in problem(refused, 409, "sandbox-conflict")["detail"]


async def test_a_reset_gives_the_credits_back(client: Client, http: httpx.AsyncClient) -> None:
    await sent(client)
    async with http:
        response = await http.post("/sandbox/api/resets", json={"account": "demo"})
        state = (await http.get("/sandbox/api/state")).json()
    assert response.json()["credits"] == 1000
    assert state["campaigns"] == [] and state["accounts"][0]["credits"] == 1000


@pytest.mark.parametrize(("call", "body", "status", "slug", "pointer"), [
    ("replies", {"phone": "+972501234567"}, 422, "invalid-request", "/body/text"),
    ("replies", {"phone": "12345", "text": "hi"}, 422, "invalid-request", "/body/phone"),
    ("replies", {"phone": 501234567, "text": "hi"}, 422, "invalid-request", "/body/phone"),
    ("replies", {"phone": "0501234567", "text": "hi", "from": "x"}, 422, "invalid-request",
     "/body/from"),
    ("replies", {"phone": "0501234567", "text": "hi", "account": "nobody"}, 404, "not-found",
     None),
    ("opt-outs", {"phone": "0501234567", "text": "bye"}, 422, "invalid-request", "/body/text"),
    ("delivery-reports", {"campaign_id": "12a", "phone": "0501234567", "outcome": "failed"},
     422, "invalid-request", "/body/campaign_id"),
    ("delivery-reports", {"campaign_id": "9" * 5000, "phone": "0501234567",
                          "outcome": "failed"}, 422, "invalid-request", "/body/campaign_id"),
    ("delivery-reports", {"campaign_id": "1", "phone": "0501234567", "outcome": "lost"},
     422, "invalid-request", "/body/outcome"),
    ("delivery-reports", {"campaign_id": "1", "phone": "0501234567", "outcome": "failed"},
     404, "not-found", None),
    ("clock", {"seconds": 0}, 422, "invalid-request", "/body/seconds"),
    ("clock", {"seconds": True}, 422, "invalid-request", "/body/seconds"),
    ("clock", {"seconds": 400 * 86400}, 422, "invalid-request", "/body/seconds"),
    ("resets", {}, 422, "invalid-request", "/body/account"),
    ("resets", {"account": "nobody"}, 404, "not-found", None),
    ("resets", [], 422, "invalid-request", "/body"),
])
async def test_bad_actions_are_problems(http: httpx.AsyncClient, call: str, body: Any,
                                        status: int, slug: str, pointer: str | None) -> None:
    async with http:
        response = await http.post(f"/sandbox/api/{call}", json=body)
    found = problem(response, status, slug)
    if pointer is not None:
        assert [e["pointer"] for e in found["errors"]] == [pointer]


async def test_an_action_takes_json_only(http: httpx.AsyncClient) -> None:
    async with http:
        form = await http.post("/sandbox/api/resets", data={"account": "demo"})  # a web form
        broken = await http.post("/sandbox/api/resets", content=b"{",
                                 headers={"Content-Type": "application/json"})
        huge = await http.post("/sandbox/api/replies", content=b" " * 70_000,
                               headers={"Content-Type": "application/json"})
        deep = await http.post("/sandbox/api/replies", content=b"[" * 60_000,
                               headers={"Content-Type": "application/json"})
        latin = await http.post("/sandbox/api/replies", content='{"text": "é"}'.encode("latin-1"),
                                headers={"Content-Type": "application/json"})
    problem(form, 415, "unsupported-media-type")
    problem(broken, 400, "malformed-request")
    problem(huge, 413, "payload-too-large")
    problem(deep, 400, "malformed-request")
    problem(latin, 400, "malformed-request")


# ── The event stream ─────────────────────────────────────────────────────────────────────


class Stream:
    """GET /sandbox/api/events called as a server would call the app, its events read as they
    come; ``leave()`` is the client going away."""

    def __init__(self) -> None:
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.gone = asyncio.Event()
        self.ended = asyncio.Event()
        self.buffer = ""

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message["headers"])
            assert headers[b"content-type"].startswith(b"text/event-stream")
        else:
            if message.get("body"):
                await self.chunks.put(message["body"])
            if not message.get("more_body"):
                self.ended.set()

    async def next(self) -> tuple[str, dict[str, Any]]:
        """The next event (comments skipped): its name and data."""
        while "\n\n" not in self.buffer or self.buffer.startswith(":"):
            if self.buffer.startswith(":"):
                self.buffer = self.buffer.split("\n\n", 1)[1]
                continue
            self.buffer += (await asyncio.wait_for(self.chunks.get(), 5)).decode()
        block, self.buffer = self.buffer.split("\n\n", 1)
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        return fields["event"], json.loads(fields["data"])

    def leave(self) -> None:
        self.gone.set()


@asynccontextmanager
async def streaming(sandbox: Sandbox) -> AsyncIterator[Stream]:
    stream = Stream()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/sandbox/api/events", "raw_path": b"/sandbox/api/events",
             "query_string": b"", "root_path": "", "headers": [(b"host", b"sandbox")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    task = asyncio.create_task(create_app(sandbox)(scope, stream.receive, stream.send))
    try:
        yield stream
    finally:
        stream.leave()
        await asyncio.wait_for(task, 5)


async def test_the_stream_starts_with_a_snapshot_then_sends_each_change(
        sandbox: Sandbox, client: Client) -> None:
    async with streaming(sandbox) as stream:
        name, snapshot = await stream.next()
        assert (name, snapshot["campaigns"], snapshot["workers"]) == ("snapshot", [], 1)

        campaign_id = await sent(client)
        name, change = await stream.next()
        kinds = {(c["kind"], c["key"]) for c in change["changes"]}
        assert name == "change" and kinds == {("campaign", campaign_id), ("account", "demo")}

        sandbox.advance(timedelta(seconds=2))
        _, change = await stream.next()
        (campaign,) = [c["value"] for c in change["changes"] if c["kind"] == "campaign"]
        assert [d["state"] for d in campaign["deliveries"]] == ["delivered", "delivered"]
        assert change["now"] == "2025-06-15T12:00:02+03:00"
        _, clock = await stream.next()  # the clock moved: said even when nothing fell due
        assert clock == {"now": "2025-06-15T12:00:02+03:00", "changes": []}

        sandbox.opt_out("0527654321")
        _, change = await stream.next()
        assert {c["kind"]: c["key"] for c in change["changes"]} == {
            "incoming": "3", "blacklist": "demo +972527654321"}

        sandbox.reset("demo")
        _, change = await stream.next()
        gone = {(c["kind"], c["key"]) for c in change["changes"] if c["value"] is None}
        assert {("campaign", campaign_id), ("blacklist", "demo +972527654321"),
                ("incoming", "3")} <= gone


async def test_the_stream_ends_when_the_client_goes_away(sandbox: Sandbox) -> None:
    async with streaming(sandbox) as stream:
        await stream.next()
        assert len(sandbox.feed.subscriptions) == 1 and sandbox.state.observer is not None
    # streaming() waited for the app to return after the client left
    assert sandbox.feed.subscriptions == set() and sandbox.state.observer is None


async def test_the_stream_ends_when_the_feed_closes(sandbox: Sandbox) -> None:
    async with streaming(sandbox) as stream:
        await stream.next()
        sandbox.feed.close()  # what SIGTERM does (tests/test_console_proxy.py, for real)
        await asyncio.wait_for(stream.ended.wait(), 5)  # the response ended, client or not
        assert sandbox.feed.subscriptions == set()


async def test_a_reader_that_falls_behind_gets_a_snapshot_not_a_growing_queue(
        sandbox: Sandbox) -> None:
    async with streaming(sandbox) as stream:
        await stream.next()
        (subscription,) = sandbox.feed.subscriptions
        for n in range(QUEUE_LIMIT + 10):  # no await: the stream cannot read meanwhile
            sandbox.receive("0501234567", f"message {n}")
        assert subscription.stale and subscription.drain() == []
        name, snapshot = await stream.next()
    assert name == "snapshot"
    assert snapshot["incoming"][0]["text"] == f"message {QUEUE_LIMIT + 9}"


async def test_the_stream_brings_reports_due_on_the_system_clock() -> None:
    sandbox = Sandbox(clock=SystemClock(), seed=1, dlr_delay=timedelta(milliseconds=50))
    async with streaming(sandbox) as stream:
        await stream.next()
        await Client(sandbox)("sms", SEND)
        await stream.next()  # the send
        _, change = await stream.next()  # the reports, with no request to make them due
    (campaign,) = [c["value"] for c in change["changes"] if c["kind"] == "campaign"]
    assert campaign["state"] == "reported"
    assert all(d["status_code"] is not None for d in campaign["deliveries"])


async def test_an_extra_panel_is_in_the_snapshot_and_its_changes_stream(
        sandbox: Sandbox) -> None:
    rows = [{"subscription": "https://example.test/hook", "event": "message.received",
             "status": 200}]
    sandbox.add_panel(Panel("webhooks", "Webhook deliveries",
                            ("subscription", "event", "status"), lambda: list(rows)))
    async with streaming(sandbox) as stream:
        _, snapshot = await stream.next()
        assert snapshot["panels"] == [{"key": "webhooks", "title": "Webhook deliveries",
                                       "columns": ["subscription", "event", "status"],
                                       "rows": rows}]
        rows.insert(0, {"subscription": "https://example.test/hook",
                        "event": "recipient.opted_out", "status": 500})
        sandbox.panel_changed("webhooks")
        _, change = await stream.next()
    assert change["changes"][0]["value"]["rows"][0]["status"] == 500


def test_accounts_from_a_file_show_as_given(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=1, accounts=[Account("acme", "acme-token", 5,
                                                             name="Acme", source="ACME")])
    accounts = {a["username"]: a for a in sandbox.snapshot()["accounts"]}
    assert accounts["acme"] == {"username": "acme", "name": "Acme", "credits": 5,
                                "sender": "ACME", "parent": None}
    assert "token" not in json.dumps(accounts)
