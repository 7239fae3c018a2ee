"""The README's promise, end to end: a new user, the proxy and the embedded sandbox.

Each step is what a curl user does and sees; the sandbox runs on a fixed clock that the test
moves forward, so scheduled sends go out and delivery reports arrive without waiting.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from lxml import etree
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.sandbox import Account, FixedClock, Sandbox
from proxy.sandbox import create_app as create_sandbox
from tests.conftest import BASIC, NOW


@pytest.fixture
def world():
    clock = FixedClock(NOW)
    sandbox = Sandbox(clock=clock, seed=7, failure_rate=0.0,
                      accounts=[Account("poor", "poor-token", 1),
                                Account("old", "old-token", 100, token_expired=True)])
    transport = httpx.ASGITransport(app=create_sandbox(sandbox))
    app = create_app(transport=transport, clock=clock.now)
    with TestClient(app, headers={"Authorization": BASIC}) as client:
        yield client, sandbox, clock


def window(clock, days: int = 1) -> dict[str, str]:
    end = clock.now()
    return {"from": (end - timedelta(days=days)).isoformat(), "to": end.isoformat()}


def credits(client) -> int:
    response = client.get("/v1/balance")
    assert response.status_code == 200, response.text
    return response.json()["credits"]


def test_send_a_message_and_see_the_credits_drop_and_the_reports_arrive(world):
    client, sandbox, clock = world
    before = credits(client)
    response = client.post("/v1/messages", json={
        "sender": "DemoAPI", "text": "Your order has shipped",
        "recipients": [{"phone": "+972501234567", "external_id": "order-17"},
                       {"phone": "052-765-4321", "external_id": "order-18"}]})
    assert response.status_code == 202, response.text
    campaign = response.json()["campaign_id"]
    assert credits(client) == before - 2

    sent = etree.fromstring(sandbox.requests[-2])
    assert [p.text for p in sent.iter("phone")] == ["0501234567", "0527654321"]

    query = {**window(clock), "external_id": ["order-17", "order-18"]}
    assert client.get("/v1/reports/dlr", params=query).json() == {"data": []}
    clock.advance(timedelta(minutes=1))
    reports = client.get("/v1/reports/dlr", params={**window(clock), "external_id": ["order-17"]})
    assert reports.status_code == 200, reports.text
    (report,) = reports.json()["data"]
    assert report["external_id"] == "order-17"
    assert report["campaign_id"] == campaign
    assert report["state"] == "delivered" and report["status_code"] == 102
    assert report["reported_at"].endswith("+02:00")

    by_date = client.get("/v1/reports/dlr", params=window(clock)).json()["data"]
    assert {r["external_id"] for r in by_date} == {"order-17", "order-18"}


def test_a_contact_list_with_dynamic_fields_receives_a_personal_message(world):
    client, _, _ = world
    created = client.post("/v1/contact-lists", json={
        "name": "Haifa customers",
        "contacts": [{"phone": "0501234567", "dynamic_fields": ["Dana", "Haifa"]},
                     {"phone": "0527654321", "dynamic_fields": ["Avi"]}]})
    assert created.status_code == 201, created.text
    body = created.json()
    list_id = body["id"]
    assert created.headers["location"] == f"/v1/contact-lists/{list_id}"
    assert body["name"] == "Haifa customers"
    assert body["rejected"] == []

    added = client.post(f"/v1/contact-lists/{list_id}/contacts",
                        json={"contacts": [{"phone": "+972541234567", "dynamic_fields": ["Rina"]}]})
    assert added.status_code == 200 and added.json() == {"rejected": []}
    removed = client.delete(f"/v1/contact-lists/{list_id}/contacts/+972527654321")
    assert removed.status_code == 204, removed.text

    shown = client.get(f"/v1/contact-lists/{list_id}").json()
    assert shown == {"id": list_id, "name": "Haifa customers",
                     "contacts": [{"phone": "+972501234567"}, {"phone": "+972541234567"}]}
    listed = client.get("/v1/contact-lists").json()["data"]
    assert [entry for entry in listed if entry["id"] == list_id] == [shown]

    before = credits(client)
    sent = client.post("/v1/messages", json={
        "sender": "DemoAPI", "text": "Hello [DYNAMIC_FIELD1]!", "personalize": True,
        "contact_list_ids": [list_id]})
    assert sent.status_code == 202, sent.text
    assert credits(client) == before - 2


def test_schedule_a_send_and_cancel_it(world):
    client, _, clock = world
    before = credits(client)
    later = (clock.now() + timedelta(hours=2)).isoformat()
    sent = client.post("/v1/messages", json={
        "sender": "DemoAPI", "text": "Tomorrow's sale", "send_at": later,
        "recipients": [{"phone": "0501234567"}]})
    campaign = sent.json()["campaign_id"]
    assert credits(client) == before - 1
    assert client.post(f"/v1/campaigns/{campaign}/cancel").status_code == 204
    assert credits(client) == before
    again = client.post(f"/v1/campaigns/{campaign}/cancel")
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/campaign-already-cancelled"
    assert again.json()["upstream_status"] == 955

    gone = client.post("/v1/messages", json={
        "sender": "DemoAPI", "text": "Soon", "send_at": later, "recipients": [{"phone": "0501234567"}]})
    clock.advance(timedelta(hours=3))
    late = client.post(f"/v1/campaigns/{gone.json()['campaign_id']}/cancel")
    assert (late.status_code, late.json()["upstream_status"]) == (409, 966)
    unknown = client.post("/v1/campaigns/999999999/cancel")
    assert (unknown.status_code, unknown.json()["upstream_status"]) == (404, 977)


@pytest.mark.parametrize("credentials, status, upstream", [
    (("demo", "wrong-token"), 401, 3),
    (("old", "old-token"), 401, 10),
    (("someone", "demo-token"), 401, 11),
])
def test_credential_mistakes_get_the_documented_errors(world, credentials, status, upstream):
    client, _, _ = world
    response = client.get("/v1/balance", auth=credentials)
    assert response.status_code == status
    assert response.json()["upstream_status"] == upstream


def test_sending_without_enough_credit_is_402(world):
    client, _, _ = world
    response = client.post("/v1/messages", auth=("poor", "poor-token"), json={
        "sender": "DemoAPI", "text": "x", "recipients": [{"phone": "0501234567"},
                                                         {"phone": "0521234567"}]})
    assert response.status_code == 402
    assert response.json()["type"] == "/problems/insufficient-credit"


def test_an_unknown_list_is_404_everywhere(world):
    client, _, _ = world
    assert client.get("/v1/contact-lists/424242").status_code == 404
    assert client.delete("/v1/contact-lists/424242").status_code == 404
    assert client.post("/v1/contact-lists/424242/contacts",
                       json={"contacts": [{"phone": "0501234567"}]}).status_code == 404
    sent = client.post("/v1/messages", json={"sender": "DemoAPI", "text": "x",
                                             "contact_list_ids": ["424242"]})
    assert (sent.status_code, sent.json()["upstream_status"]) == (404, 988)


def test_subscribers_are_created_listed_and_credited(world):
    client, _, _ = world
    before = credits(client)
    created = client.post("/v1/subscribers", json={
        "name": "Israel Israeli", "username": "israeli1", "password": "s3cret-pass",
        "sender": "DemoAPI", "credits": 100})
    assert created.status_code == 201, created.text
    assert client.post("/v1/subscribers", json={
        "name": "Other", "username": "israeli1", "password": "s3cret-pass",
        "sender": "DemoAPI", "credits": 1}).status_code == 409
    moved = client.post("/v1/subscribers/israeli1/wallet/transfers",
                        json={"password": "s3cret-pass", "credits": 50})
    assert moved.status_code == 200 and moved.json() == {"username": "israeli1", "credits": 50}
    assert credits(client) == before - 150
    (sub,) = [s for s in client.get("/v1/subscribers").json()["data"] if s["name"] == "Israel Israeli"]
    assert sub["credits"] == 150
    too_much = client.post("/v1/subscribers/israeli1/wallet/transfers",
                           json={"password": "s3cret-pass", "credits": 10**6})
    assert too_much.status_code == 402
    # An unknown username and a wrong password: the upstream's one code, one problem that
    # names both, and nothing moved.
    for username, password in (("nobody1", "s3cret-pass"), ("israeli1", "wrong-pass")):
        refused = client.post(f"/v1/subscribers/{username}/wallet/transfers",
                              json={"password": password, "credits": 1})
        assert refused.status_code == 404
        assert (refused.json()["type"], refused.json()["upstream_status"]) == (
            "/problems/subscriber-credentials-mismatch", 503)
        assert "username and password" in refused.json()["title"]
    assert credits(client) == before - 150


def test_blacklist_listing_removal_and_replies(world):
    client, _, clock = world
    listed = client.get("/v1/blacklist", params=window(clock, days=7))
    assert listed.status_code == 200, listed.text
    phones = [entry["phone"] for entry in listed.json()["data"]]
    assert phones and all(p.startswith("+9725") for p in phones)
    removed = client.post("/v1/blacklist/removals",
                          json={"phones": [phones[0], "0501112233"], "reason": "asked again"})
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"removed": 1, "not_found": 1}

    incoming = client.get("/v1/incoming-messages", params=window(clock))
    assert incoming.status_code == 200 and incoming.json()["data"]


def test_sender_verification(world):
    client, _, _ = world
    response = client.post("/v1/sender-ids/verifications", json={"phones": ["0501234567", "04-8123456"]})
    assert response.status_code == 202, response.text
    assert "0501234567" in response.json()["instructions"]
