"""The scenario of a new user, through each generated Python client, over real HTTP.

The clients are generated from openapi.yaml (support.generate, cached under .cache/clients)
and imported from there; the proxy is ``python -m proxy --sandbox`` on loopback, behind Prism,
which checks every request and answer against openapi.yaml (conftest). The one request that
breaks the spec on purpose (a landline as a recipient) goes to the proxy directly: Prism
would answer it itself. tests/clients/scenario.ts is the same scenario through the
TypeScript client.
"""

from __future__ import annotations

import importlib
import sys
from datetime import UTC, datetime, timedelta
from importlib.util import find_spec
from types import ModuleType
from typing import Any

import pydantic
import pytest

from tests.clients.support import BUDGET, generate

STATES = {"delivered", "failed", "expired", "not_delivered", "no_credit", "kosher_number",
          "hour_not_permitted", "opted_out", "not_permitted", "rejected", "out_of_coverage",
          "unknown"}
LONG_TEXT = "x" * 1005  # 7 SMS parts per recipient (153 GSM-7 characters a part)
# 150 recipients of 7 parts: 1050 credits, more than the demo account's 1000, within the
# session proxy's daily budget (support.BUDGET); 300 of them, 2100 credits, over it.
MANY = [f"+9725{n:08d}" for n in range(20000000, 20000300)]
POOR, OVER = MANY[:150], MANY


def _import(kind: str, package: str) -> ModuleType:
    path = str(generate(kind).path)
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(package)


# The sandbox's demo account has these on its blacklist, added 2 and 5 days ago.
SEEDED_BLACKLIST = {"+972529999999", "+972528888888"}


def _window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now


# ── openapi-generator, python ───────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def sdk() -> ModuleType:
    return _import("python", "smsleads_openapi")


def _problem_of(sdk: ModuleType, exc_type: type[Exception], call: Any) -> Any:
    """The typed exception the client raises, with its Problem parsed from the body."""
    with pytest.raises(exc_type) as raised:
        call()
    problem = raised.value.data
    assert isinstance(problem, sdk.Problem), raised.value.body
    assert problem.status == raised.value.status
    return problem


def test_scenario_through_the_openapi_generator_python_client(sdk, proxy, validated):
    config = sdk.Configuration(host=validated.base, username="demo", password="demo-token")
    with sdk.ApiClient(config) as api:
        account, messages = sdk.AccountApi(api), sdk.MessagesApi(api)
        campaigns, reports = sdk.CampaignsApi(api), sdk.ReportsApi(api)
        lists, subscribers = sdk.ContactListsApi(api), sdk.SubscribersApi(api)
        blacklist, sender_ids = sdk.BlacklistApi(api), sdk.SenderIdsApi(api)
        credits = account.get_balance().credits

        # What a send to two numbers would cost, nothing sent.
        price = messages.preview_message(sdk.SendMessageRequest(
            sender="DemoAPI", text="Shalom שלום", recipients=[
                sdk.Recipient(phone="050-111-0001"), sdk.Recipient(phone="0501110002")]))
        assert (price.credits, price.exact, price.sufficient) == (2, True, True)
        assert [(t.encoding, t.parts, t.destinations) for t in price.texts] == [("UCS-2", 1, 2)]
        assert account.get_balance().credits == credits

        # A send to two numbers with external ids; one credit each.
        sent = messages.send_message(sdk.SendMessageRequest(
            sender="DemoAPI", text="Your order has shipped", allow_replies=True,
            recipients=[sdk.Recipient(phone="050-111-0001", external_id="py-order-1"),
                        sdk.Recipient(phone="+972501110002", external_id="py-order-2")]))
        assert sent.campaign_id.isdigit()
        assert account.get_balance().credits == credits - 2

        # A contact list with dynamic fields: add one, remove one, send to the list.
        created = lists.create_contact_list(sdk.CreateContactListRequest(
            name="py customers", contacts=[
                sdk.Contact(phone="0501110003", dynamic_fields=["Dana", "Haifa"]),
                sdk.Contact(phone="0501110004", dynamic_fields=["Avi", "Eilat"])]))
        assert created.name == "py customers" and created.rejected == []
        added = lists.add_contacts(created.id, sdk.AddContactsRequest(contacts=[
            sdk.Contact(phone="0501110005", dynamic_fields=["Noa", "Acre"])]))
        assert added.rejected == []
        lists.remove_contact(created.id, "+972501110004")
        members = lists.get_contact_list(created.id)
        assert sorted(c.phone for c in members.contacts) == ["+972501110003", "+972501110005"]
        to_list = messages.send_message(sdk.SendMessageRequest(
            sender="DemoAPI", text="Hello [DYNAMIC_FIELD1]", personalize=True,
            contact_list_ids=[created.id]))
        assert account.get_balance().credits == credits - 4

        # Delivery reports, by external id and by date (the sandbox reports at once).
        start, end = _window()
        by_id = reports.list_delivery_reports(
            external_id=["py-order-1", "py-order-2"], var_from=start, to=end).data
        assert sorted(r.external_id for r in by_id) == ["py-order-1", "py-order-2"]
        assert {r.campaign_id for r in by_id} == {sent.campaign_id}
        assert {r.state.value for r in by_id} <= STATES
        by_date = reports.list_delivery_reports(var_from=start, to=end).data
        assert {sent.campaign_id, to_list.campaign_id} <= {r.campaign_id for r in by_date}

        # The same window a report a page, following next_cursor to the end; Link says it too.
        paged, cursor = [], None
        while True:
            answer = reports.list_delivery_reports_with_http_info(
                var_from=start, to=end, limit=1, cursor=cursor)
            paged += answer.data.data
            cursor = answer.data.next_cursor
            assert ("cursor=" + str(cursor) in answer.headers.get("link", "")) == bool(cursor)
            if cursor is None:
                break
        assert paged == by_date and len(paged) >= 4

        # The recipients of the send with allow_replies answered.
        incoming = reports.list_incoming_messages(var_from=start, to=end).data
        assert {"+972501110001", "+972501110002"} <= {m.sender for m in incoming}

        # A scheduled send, cancelled (credits back), then cancelled again.
        later = messages.send_message(sdk.SendMessageRequest(
            sender="DemoAPI", text="Tomorrow", send_at=datetime.now(UTC) + timedelta(days=1),
            recipients=[sdk.Recipient(phone="0501110006")]))
        assert account.get_balance().credits == credits - 5
        campaigns.cancel_campaign(later.campaign_id)
        assert account.get_balance().credits == credits - 4
        problem = _problem_of(sdk, sdk.exceptions.ConflictException,
                              lambda: campaigns.cancel_campaign(later.campaign_id))
        assert problem.type == "/problems/campaign-already-cancelled"

        # A subscriber, created with 5 credits, listed, then given 3 more.
        created_sub = subscribers.create_subscriber(sdk.CreateSubscriberRequest(
            name="Py Subscriber", username="pysub01", password="s3cret-pass",
            sender="DemoAPI", credits=5))
        assert (created_sub.username, created_sub.credits) == ("pysub01", 5)
        listed = {s.name: s.credits for s in subscribers.list_subscribers().data}
        assert listed["Py Subscriber"] == 5
        moved = subscribers.transfer_subscriber_credits(
            "pysub01", sdk.CreditTransferRequest(password="s3cret-pass", credits=3))
        assert (moved.username, moved.credits) == ("pysub01", 3)
        listed = {s.name: s.credits for s in subscribers.list_subscribers().data}
        assert listed["Py Subscriber"] == 8
        assert account.get_balance().credits == credits - 12

        # The blacklist of the last week: the demo account's two numbers, decoded; and a
        # removal of a number that was not on it (still a success).
        week = blacklist.list_blacklist(var_from=end - timedelta(days=7), to=end).data
        assert {entry.phone for entry in week} >= SEEDED_BLACKLIST
        assert all(isinstance(entry.added_at, datetime) and entry.added_at.tzinfo
                   for entry in week)
        removal = blacklist.remove_from_blacklist(sdk.RemoveFromBlacklistRequest(
            phones=["0501110007"], reason="asked by phone"))
        assert (removal.removed, removal.not_found) == (0, 1)

        # A numeric sender id verified.
        verification = sender_ids.verify_sender_ids(
            sdk.VerifySenderIdsRequest(phones=["0501110008"]))
        assert "0501110008" in verification.instructions

        # The errors, each the client's own exception with the problem readable.
        problem = _problem_of(sdk, sdk.exceptions.ApiException, lambda: messages.send_message(
            sdk.SendMessageRequest(sender="DemoAPI", text=LONG_TEXT,
                                   recipients=[sdk.Recipient(phone=p) for p in POOR])))
        assert (problem.status, problem.type) == (402, "/problems/insufficient-credit")
        # Over the credentials' daily budget: 429, nothing sent, the headers said.
        with pytest.raises(sdk.exceptions.ApiException) as over:
            messages.send_message(sdk.SendMessageRequest(
                sender="DemoAPI", text=LONG_TEXT, recipients=[sdk.Recipient(phone=p) for p in OVER]))
        problem = over.value.data
        assert (over.value.status, problem.type) == (429, "/problems/budget-exceeded")
        assert (problem.budget, problem.requested, problem.violated_policies) == (
            BUDGET, 2100, ["daily-credits"])
        assert problem.resets_at.utcoffset() in (timedelta(hours=2), timedelta(hours=3))
        wait = int(over.value.headers["Retry-After"])
        assert over.value.headers["RateLimit"] == (
            f'"daily-credits";r={BUDGET - problem.spent};t={wait}')
        assert f'"daily-credits";q={BUDGET};qu="credits";w=86400' in over.value.headers[
            "RateLimit-Policy"]
        daily = {p.name: p for p in account.get_limits().policies}["daily-credits"]
        assert (daily.quota, daily.unit, daily.spent) == (BUDGET, "credits", problem.spent)
        problem = _problem_of(sdk, sdk.exceptions.NotFoundException,
                              lambda: lists.get_contact_list("999999999"))
        assert problem.type == "/problems/contact-list-not-found"
        # This client checks the spec's pattern itself: a landline is refused before sending...
        with pytest.raises(pydantic.ValidationError, match="phone"):
            sdk.Recipient(phone="0401234567")
        assert account.get_balance().credits == credits - 12

    # ... and when that check is skipped, the proxy's 422 arrives as the typed exception.
    direct = sdk.Configuration(host=proxy.base, username="demo", password="demo-token")
    with sdk.ApiClient(direct) as api:
        unchecked = sdk.Recipient.model_construct(phone="0401234567")
        problem = _problem_of(sdk, sdk.exceptions.UnprocessableEntityException,
                              lambda: sdk.MessagesApi(api).send_message(sdk.SendMessageRequest(
                                  sender="DemoAPI", text="hi", recipients=[unchecked])))
    assert problem.type == "/problems/invalid-request"
    assert [e.pointer for e in problem.errors] == ["/body/recipients/0/phone"]

    wrong = sdk.Configuration(host=validated.base, username="demo", password="not-the-token")
    with sdk.ApiClient(wrong) as api:
        problem = _problem_of(sdk, sdk.exceptions.UnauthorizedException, sdk.AccountApi(api).get_balance)
    assert (problem.type, problem.upstream_status) == ("/problems/invalid-credentials", 3)


# ── openapi-python-client (httpx) ───────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def opc() -> ModuleType:
    return _import("openapi-python-client", "smsleads_client")


class Calls:
    """The generated functions, called with one client; an answer's status is checked."""

    def __init__(self, opc: ModuleType, client: Any) -> None:
        self.opc, self.client = opc, client

    def __call__(self, operation: str, status: int, **kwargs: Any) -> Any:
        return self.detailed(operation, status, **kwargs).parsed

    def detailed(self, operation: str, status: int, **kwargs: Any) -> Any:
        """The whole answer: status, headers, and the parsed body."""
        module = next(importlib.import_module(f"smsleads_client.api.{tag}.{operation}")
                      for tag in ("account", "blacklist", "campaigns", "contact_lists",
                                  "messages", "reports", "sender_ids", "subscribers")
                      if find_spec(f"smsleads_client.api.{tag}.{operation}"))
        response = module.sync_detailed(client=self.client, **kwargs)
        assert response.status_code == status, response.content
        return response

    def problem(self, operation: str, status: int, **kwargs: Any) -> Any:
        """A refusal arrives as the client's typed Problem, parsed from the body."""
        problem = self(operation, status, **kwargs)
        assert isinstance(problem, importlib.import_module("smsleads_client.models").Problem)
        assert problem.status == status
        return problem


def _opc_client(opc: ModuleType, base: str, token: str = "demo-token") -> Any:
    return opc.AuthenticatedClient(base_url=base, token=token,
                                   headers={"X-SMSLeads-Username": "demo"},
                                   raise_on_unexpected_status=True)


def test_scenario_through_the_openapi_python_client(opc, proxy, validated):
    # This generator keeps Python's builtins unshadowed: the fields `credits` and `type` are
    # the attributes `credits_` and `type_`, and the query parameter `from` is `from_`.
    models = importlib.import_module("smsleads_client.models")
    client = _opc_client(opc, validated.base)
    with client:
        call = Calls(opc, client)
        credits = call("get_balance", 200).credits_

        price = call("preview_bulk", 200, body=models.SendBulkRequest(messages=[
            models.BulkMessage(sender="DemoAPI", text="x" * 161,
                               recipients=[models.Recipient(phone="050-222-0001")]),
            models.BulkMessage(sender="DemoAPI", text="hi",
                               recipients=[models.Recipient(phone="050-222-0001")])]))
        assert (price.credits_, price.available_credits, price.sufficient) == (3, credits, True)
        assert [(t.message, t.parts) for t in price.texts] == [(0, 2), (1, 1)]

        sent = call("send_message", 202, body=models.SendMessageRequest(
            sender="DemoAPI", text="Your order has shipped", allow_replies=True,
            recipients=[models.Recipient(phone="050-222-0001", external_id="opc-order-1"),
                        models.Recipient(phone="+972502220002", external_id="opc-order-2")]))
        assert sent.campaign_id.isdigit()
        assert call("get_balance", 200).credits_ == credits - 2

        created = call("create_contact_list", 201, body=models.CreateContactListRequest(
            name="opc customers", contacts=[
                models.Contact(phone="0502220003", dynamic_fields=["Dana", "Haifa"]),
                models.Contact(phone="0502220004", dynamic_fields=["Avi", "Eilat"])]))
        assert created.name == "opc customers" and created.rejected == []
        added = call("add_contacts", 200, id=created.id, body=models.AddContactsRequest(
            contacts=[models.Contact(phone="0502220005", dynamic_fields=["Noa", "Acre"])]))
        assert added.rejected == []
        call("remove_contact", 204, id=created.id, phone="+972502220004")
        members = call("get_contact_list", 200, id=created.id)
        assert sorted(c.phone for c in members.contacts) == ["+972502220003", "+972502220005"]
        to_list = call("send_message", 202, body=models.SendMessageRequest(
            sender="DemoAPI", text="Hello [DYNAMIC_FIELD1]", personalize=True,
            contact_list_ids=[created.id]))
        assert call("get_balance", 200).credits_ == credits - 4

        start, end = _window()
        by_id = call("list_delivery_reports", 200, external_id=["opc-order-1", "opc-order-2"],
                     from_=start, to=end).data
        assert sorted(r.external_id for r in by_id) == ["opc-order-1", "opc-order-2"]
        assert {r.campaign_id for r in by_id} == {sent.campaign_id}
        assert {r.state.value for r in by_id} <= STATES
        by_date = call("list_delivery_reports", 200, from_=start, to=end).data
        assert {sent.campaign_id, to_list.campaign_id} <= {r.campaign_id for r in by_date}

        # The same window a report a page, following next_cursor to the end.
        paged, cursor = [], opc.types.UNSET
        while True:
            page = call("list_delivery_reports", 200, from_=start, to=end, limit=1, cursor=cursor)
            paged += page.data
            if not isinstance(page.next_cursor, str):
                break
            cursor = page.next_cursor
        assert [r.to_dict() for r in paged] == [r.to_dict() for r in by_date]
        assert len(paged) >= 4

        incoming = call("list_incoming_messages", 200, from_=start, to=end).data
        assert {"+972502220001", "+972502220002"} <= {m.sender for m in incoming}

        later = call("send_message", 202, body=models.SendMessageRequest(
            sender="DemoAPI", text="Tomorrow", send_at=datetime.now(UTC) + timedelta(days=1),
            recipients=[models.Recipient(phone="0502220006")]))
        assert call("get_balance", 200).credits_ == credits - 5
        call("cancel_campaign", 204, campaign_id=later.campaign_id)
        assert call("get_balance", 200).credits_ == credits - 4
        problem = call.problem("cancel_campaign", 409, campaign_id=later.campaign_id)
        assert problem.type_ == "/problems/campaign-already-cancelled"

        created_sub = call("create_subscriber", 201, body=models.CreateSubscriberRequest(
            name="Opc Subscriber", username="opcsub01", password="s3cret-pass",
            sender="DemoAPI", credits_=5))
        assert (created_sub.username, created_sub.credits_) == ("opcsub01", 5)
        listed = {s.name: s.credits_ for s in call("list_subscribers", 200).data}
        assert listed["Opc Subscriber"] == 5
        moved = call("transfer_subscriber_credits", 200, username="opcsub01",
                     body=models.CreditTransferRequest(password="s3cret-pass", credits_=3))
        assert (moved.username, moved.credits_) == ("opcsub01", 3)
        listed = {s.name: s.credits_ for s in call("list_subscribers", 200).data}
        assert listed["Opc Subscriber"] == 8
        assert call("get_balance", 200).credits_ == credits - 12

        week = call("list_blacklist", 200, from_=end - timedelta(days=7), to=end).data
        assert {entry.phone for entry in week} >= SEEDED_BLACKLIST
        assert all(isinstance(entry.added_at, datetime) and entry.added_at.tzinfo
                   for entry in week)
        removal = call("remove_from_blacklist", 200, body=models.RemoveFromBlacklistRequest(
            phones=["0502220007"], reason="asked by phone"))
        assert (removal.removed, removal.not_found) == (0, 1)

        verification = call("verify_sender_ids", 202,
                            body=models.VerifySenderIdsRequest(phones=["0502220008"]))
        assert "0502220008" in verification.instructions

        problem = call.problem("send_message", 402, body=models.SendMessageRequest(
            sender="DemoAPI", text=LONG_TEXT, recipients=[models.Recipient(phone=p) for p in POOR]))
        assert problem.type_ == "/problems/insufficient-credit"
        over = call.detailed("send_message", 429, body=models.SendMessageRequest(
            sender="DemoAPI", text=LONG_TEXT, recipients=[models.Recipient(phone=p) for p in OVER]))
        problem = over.parsed
        assert isinstance(problem, models.Problem) and problem.type_ == "/problems/budget-exceeded"
        assert (problem.budget, problem.requested) == (BUDGET, 2100)
        assert [p.value for p in problem.violated_policies] == ["daily-credits"]
        wait = int(over.headers["retry-after"])
        assert over.headers["ratelimit"] == f'"daily-credits";r={BUDGET - problem.spent};t={wait}'
        assert f'"daily-credits";q={BUDGET}' in over.headers["ratelimit-policy"]
        daily = {p.name.value: p for p in call("get_limits", 200).policies}["daily-credits"]
        assert (daily.quota, daily.spent, daily.remaining) == (
            BUDGET, problem.spent, BUDGET - problem.spent)
        problem = call.problem("get_contact_list", 404, id="999999999")
        assert problem.type_ == "/problems/contact-list-not-found"
        assert call("get_balance", 200).credits_ == credits - 12

    with _opc_client(opc, proxy.base) as direct:  # a body that breaks the spec: not via Prism
        problem = Calls(opc, direct).problem("send_message", 422, body=models.SendMessageRequest(
            sender="DemoAPI", text="hi", recipients=[models.Recipient(phone="0401234567")]))
    assert problem.type_ == "/problems/invalid-request"
    assert [e.pointer for e in problem.errors] == ["/body/recipients/0/phone"]

    with _opc_client(opc, validated.base, token="not-the-token") as wrong:
        problem = Calls(opc, wrong).problem("get_balance", 401)
    assert (problem.type_, problem.upstream_status) == ("/problems/invalid-credentials", 3)
