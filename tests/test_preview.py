"""POST /v1/messages/preview and /v1/messages/bulk/preview: what a send would cost, nothing
sent. On generated sends (tests/test_pricing.py's: GSM-7 with extension characters, UCS-2,
emoji, 1,005 characters, dynamic fields, opt-out lines, '<#>') the preview's credits are
the sandbox's charge when it says it is exact, and never more when it is not; a send it says
is covered goes through (when exact), one it says is not gets 402."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.compute import UNKNOWN_FIELDS
from proxy.sandbox import Account, FixedClock, Sandbox
from proxy.sandbox import create_app as create_sandbox
from proxy.settings import Settings
from tests.conftest import BASIC, FIGURES, NOW, Recorder
from tests.test_pricing import expected_price, request_body, sends

TIGHT = Account("tight", "tight-token", 1000)
HEADERS = {"Authorization": "Bearer tight-token", "X-SMSLeads-Username": "tight"}


def client_on(sandbox: Sandbox, headers: dict[str, str]) -> TestClient:
    transport = httpx.ASGITransport(app=create_sandbox(sandbox))
    # Many sends a second, each its own example: the spend guard's rates are not the subject.
    app = create_app(Settings(upstream_url="http://sandbox.test/api", requests_per_second=None,
                              recipients_per_minute=None), transport=transport)
    return TestClient(app, headers=headers)


def credits_of(client: TestClient) -> int:
    return int(client.get("/v1/balance").json()["credits"])


def test_the_preview_prices_what_the_sandbox_charges_and_covers_what_goes_through():
    seen = {"covered": 0, "short": 0, "exact": 0, "minimum": 0, "over the minimum": 0}
    sandbox = Sandbox(clock=FixedClock(NOW), seed=1, accounts=[TIGHT])
    with client_on(sandbox, HEADERS) as client:

        @settings(max_examples=100, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(sends())
        def previewed(send: dict) -> None:
            list_id = None
            if send["members"]:
                created = client.post("/v1/contact-lists", json={"name": "generated", "contacts": [
                    {"phone": phone, "dynamic_fields": fields}
                    for phone, fields in send["members"].items()]})
                list_id = created.json()["id"]
            if not send["recipients"] and list_id is None:
                return
            body = request_body(send, list_id)
            before = credits_of(client)
            preview = client.post("/v1/messages/preview", json=body)
            assert preview.status_code == 200, preview.text
            price = preview.json()
            assert credits_of(client) == before  # nothing was sent
            assert price["available_credits"] == before
            assert price["credits"] == sum(text["credits"] for text in price["texts"])
            sent = client.post("/v1/messages", json=body)
            charged = before - credits_of(client)
            if price["sufficient"] and not price["exact"] and sent.status_code == 402:
                # Covered at its minimum only: the members' fields made the send dearer.
                assert (charged, expected_price(send) > before) == (0, True)
                seen["over the minimum"] += 1
            elif price["sufficient"]:
                assert sent.status_code == 202, sent.text
                assert price["credits"] <= charged == expected_price(send)
                seen["covered"] += 1
            else:
                assert (sent.status_code, charged) == (402, 0), sent.text
                assert price["credits"] > before
                seen["short"] += 1
            if price["exact"]:
                assert price["credits"] == expected_price(send)
                assert "caveats" not in price or UNKNOWN_FIELDS not in price["caveats"]
                seen["exact"] += 1
            else:
                assert UNKNOWN_FIELDS in price["caveats"]
                seen["minimum"] += 1

        previewed()
    FIGURES.append(f"preview vs sandbox: {seen['covered']} covered and sent as priced, "
                   f"{seen['short']} short and refused 402, {seen['over the minimum']} covered "
                   f"at a minimum but dearer (402); {seen['exact']} exact, {seen['minimum']} a "
                   "minimum (members' dynamic fields)")
    assert all(seen[k] for k in ("covered", "short", "exact", "minimum")), seen


BULK_MESSAGES = st.lists(st.fixed_dictionaries({
    "text": sends().map(lambda send: send["text"]),
    "phones": st.lists(st.sampled_from([f"05{n}7654321" for n in range(4)]), min_size=1,
                       max_size=3)}), min_size=1, max_size=3)


def test_the_bulk_preview_prices_what_the_sandbox_charges():
    rich = Account("rich", "rich-token", 10**9)
    sandbox = Sandbox(clock=FixedClock(NOW), seed=1, accounts=[rich])
    headers = {"Authorization": "Bearer rich-token", "X-SMSLeads-Username": "rich"}
    with client_on(sandbox, headers) as client:

        @settings(max_examples=40, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(BULK_MESSAGES, st.sampled_from([None, "link", "reply"]))
        def previewed(messages: list[dict], unsubscribe: str | None) -> None:
            body: dict = {"messages": [
                {"sender": "Shop", "text": m["text"],
                 "recipients": [{"phone": p} for p in m["phones"]]} for m in messages]}
            if unsubscribe:
                body["unsubscribe"] = unsubscribe
            before = credits_of(client)
            price = client.post("/v1/messages/bulk/preview", json=body).json()
            assert price["exact"] is True and price["sufficient"] is True
            assert {text["message"] for text in price["texts"]} == set(range(len(messages)))
            sent = client.post("/v1/messages/bulk", json=body)
            assert sent.status_code == 202, sent.text
            assert before - credits_of(client) == price["credits"]

        previewed()


def test_the_preview_sends_nothing_but_its_two_reads():
    """What reaches the upstream: the credits read and one members read per list, each the
    table's own envelope; never the send."""
    answers = {b"getCLbyID": b"<getCLbyID><status>0</status><message></message><contact_lists>"
               b"<contact_list><phone>0501111111</phone><name>n</name></contact_list>"
               b"</contact_lists></getCLbyID>",
               b"balance": b"<balance><status>0</status><message>m</message>"
               b"<balance>7</balance></balance>"}
    recorder = Recorder(lambda request: httpx.Response(200, content=next(
        answer for root, answer in answers.items() if b"<" + root + b">" in request.content)))
    app = create_app(transport=httpx.MockTransport(recorder), clock=lambda: NOW)
    with TestClient(app, headers={"Authorization": BASIC}) as client:
        answer = client.post("/v1/messages/preview", json={
            "sender": "DemoAPI", "text": "Hi", "contact_list_ids": ["17"],
            "recipients": [{"phone": "050-111-1111"}, {"phone": "0502222222"}]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "credits": 2, "exact": True, "available_credits": 7, "sufficient": True,
        "texts": [{"message": 0, "text": "Hi", "encoding": "GSM-7", "characters": 2, "parts": 1,
                   "destinations": 2, "credits": 2, "exact": True}]}
    roots = [request.content.split(b"?>", 1)[-1].lstrip()[:12] for request in recorder.requests]
    assert [root.split(b">")[0] for root in roots] == [b"<getCLbyID", b"<balance"]
    assert b"<cl><id>17</id></cl>" in recorder.requests[0].content
