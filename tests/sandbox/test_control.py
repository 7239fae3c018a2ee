"""A developer playing the recipients and the network (Sandbox.receive, opt_out, report, reset),
checked through the XML API, as the application under test would see it."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from proxy.sandbox import Account, Conflict, FixedClock, Invalid, NotFound, Sandbox
from tests.sandbox.support import TODAY, Client, envelope, status
from tests.sandbox.test_reports import transactions

NULL = "<transactions><external_id>null</external_id></transactions>"
WEEK = "<from>08/06/25 12:00</from><to>15/06/25 12:00</to>"


async def campaign(client: Client, *phones: str, extra: str = "") -> int:
    answer = await client.sms(phones=phones or ("0521234567",), extra=extra)
    return int(answer.findtext("shipment_id") or 0)


# ── Replies ──────────────────────────────────────────────────────────────────────────────


async def test_a_reply_in_any_written_form_reaches_the_accounts_number(
        sandbox: Sandbox, client: Client) -> None:
    await campaign(client, "0521234567")
    message = sandbox.receive("+972 52-123-4567", "כן, תודה")
    assert (message.source, message.destination) == ("521234567", "500000000")
    row = transactions(await client("incoming", TODAY))[-1]
    assert row == {"source": "0521234567", "destination": "0500000000",
                   "message": "כן, תודה", "date": "15/06/25 12:00"}


async def test_a_reply_goes_to_the_reply_number_of_a_response_send(
        sandbox: Sandbox, client: Client) -> None:
    await campaign(client, "0521234567", extra="<response>1</response>")
    sandbox.advance(timedelta(seconds=2))
    automatic = transactions(await client("incoming", TODAY))[-1]
    sandbox.receive("0521234567", "And one more thing")
    mine = transactions(await client("incoming", TODAY))[-1]
    assert mine["destination"] == automatic["destination"]
    assert mine["destination"] is not None and mine["destination"].startswith("055")


async def test_a_reply_to_a_number_given_and_from_a_stranger(sandbox: Sandbox,
                                                             client: Client) -> None:
    sandbox.receive("0541112222", "Who is this?", to="03-123-4567")
    row = transactions(await client("incoming", TODAY))[-1]
    assert (row["source"], row["destination"]) == ("0541112222", "031234567")


@pytest.mark.parametrize(("phone", "text", "to", "field"), [
    ("12345", "hi", None, "phone"),
    ("031234567", "hi", None, "phone"),  # a landline sends no SMS
    ("0521234567", "   ", None, "text"),
    ("0521234567", "x" * 1006, None, "text"),
    ("0521234567", "hi", "not a number", "to"),
])
def test_a_bad_reply_is_refused_naming_the_field(sandbox: Sandbox, phone: str, text: str,
                                                  to: str | None, field: str) -> None:
    with pytest.raises(Invalid) as refused:
        sandbox.receive(phone, text, to=to)
    assert refused.value.field == field


def test_a_reply_needs_an_account_and_one_with_a_number(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=1, accounts=[Account("acme", "acme-token", 5)])
    with pytest.raises(NotFound, match="nobody"):
        sandbox.receive("0521234567", "hi", username="nobody")
    with pytest.raises(Invalid, match="acme has no number of its own"):
        sandbox.receive("0521234567", "hi", username="acme")
    assert sandbox.receive("0521234567", "hi", username="acme", to="0541234567").owner == "acme"


# ── Opt-outs ─────────────────────────────────────────────────────────────────────────────


async def test_an_opt_out_arrives_and_blacklists_whatever_was_sent(
        sandbox: Sandbox, client: Client) -> None:
    await campaign(client, "0521234567")  # no add_unsubscribe: a "STOP" reply would not do it
    sandbox.advance(timedelta(minutes=5))
    sandbox.opt_out("+972521234567")
    assert transactions(await client("incoming", TODAY))[-1]["message"] == "STOP"
    assert transactions(await client("blacklist", TODAY)) == [
        {"phone": "521234567", "date": "15/06/25 12:05"}]
    assert status(await client.sms(phones=("0521234567",))) == 8  # all blacklisted


async def test_an_opt_out_in_hebrew_and_not_an_opt_out(sandbox: Sandbox) -> None:
    assert sandbox.opt_out("0521234567", text="הסר").message == "הסר"
    with pytest.raises(Invalid, match="STOP"):
        sandbox.opt_out("0521234567", text="please stop")


# ── Delivery reports made to arrive ──────────────────────────────────────────────────────


@pytest.mark.parametrize(("outcome", "code", "english"), [
    ("failed", "1", "Failed: handset off or out of network"),
    ("expired", "2", "Expired after retries"),
    ("delivered", "102", "Delivered"),
])
async def test_a_pending_delivery_reports_now_the_others_later(
        sandbox: Sandbox, client: Client, outcome: str, code: str, english: str) -> None:
    campaign_id = await campaign(client, "0521234567", "0521234568")
    sandbox.advance(timedelta(seconds=1))
    sandbox.report(campaign_id, "+972521234567", outcome)
    (row,) = transactions(await client("dlrByDate", NULL + TODAY))
    assert (row["status"], row["en_message"], row["date"]) == (code, english, "15/06/25 12:00")
    assert status(await client("cancel", f"<campaign_id>{campaign_id}</campaign_id>")) == 966
    sandbox.advance(timedelta(seconds=1))
    rows = transactions(await client("dlrByDate", NULL + TODAY))
    assert rows[0]["status"] == code and len(rows) == 2  # reported once each


async def test_reporting_every_delivery_completes_the_campaign(sandbox: Sandbox,
                                                              client: Client) -> None:
    campaign_id = await campaign(client, "0521234567")
    sandbox.report(campaign_id, "0521234567", "expired")
    assert sandbox.state.campaigns[campaign_id].phase == "reported"
    sandbox.advance(timedelta(seconds=2))
    assert len(transactions(await client("dlrByDate", NULL + TODAY))) == 1


async def test_a_report_refused_when_there_is_nothing_pending(sandbox: Sandbox,
                                                              client: Client) -> None:
    sent = await campaign(client, "0521234567")
    scheduled = await campaign(client, "0521234567", extra="<timing>15/06/25 14:00</timing>")
    cancelled = await campaign(client, "0521234567", extra="<timing>15/06/25 15:00</timing>")
    await client("cancel", f"<campaign_id>{cancelled}</campaign_id>")
    sandbox.advance(timedelta(seconds=2))
    with pytest.raises(Conflict, match=r"already has its report: \w+ at 2025-06-15T12:00:02"):
        sandbox.report(sent, "0521234567", "failed")
    with pytest.raises(Conflict, match=re.escape("scheduled for 2025-06-15T14:00:00+03:00")):
        sandbox.report(scheduled, "0521234567", "failed")
    with pytest.raises(Conflict, match="cancelled"):
        sandbox.report(cancelled, "0521234567", "failed")
    with pytest.raises(NotFound, match=re.escape("not sent to +972529999998")):
        sandbox.report(sent, "0529999998", "failed")
    with pytest.raises(NotFound, match="no campaign 1"):
        sandbox.report(1, "0521234567", "failed")
    with pytest.raises(Invalid, match="outcome: must be one of delivered, failed, expired"):
        sandbox.report(sent, "0521234567", "lost")


# ── Reset ────────────────────────────────────────────────────────────────────────────────

QUERIES = {"balance": "", "getCL": "", "getBlanceSubs": "", "dlrByDate": NULL + TODAY,
           "incoming": "<from>14/06/25 12:00</from><to>15/06/25 12:00</to>", "blacklist": WEEK}


async def test_reset_brings_the_demo_account_back_to_its_start(sandbox: Sandbox,
                                                               client: Client) -> None:
    fresh = {command: await client.raw(envelope(command, inner))
             for command, inner in QUERIES.items()}
    await campaign(client, "0521234567", "0521234568")
    await campaign(client, "0521234567", extra="<timing>15/06/25 14:00</timing>")
    await client("newCL", "<cl><name>customers</name></cl>")
    await client("addSub", "<userDetails><name>Sub one</name><username>subone</username>"
                           "<password>secret1</password><source>Shop</source><amount>10"
                           "</amount></userDetails>")
    await client("rmNumBL", "<phones><phone>0529999999</phone></phones><reason>x</reason>")
    sandbox.opt_out("0521234567")
    sandbox.advance(timedelta(seconds=2))

    account = sandbox.reset("demo")
    assert account.credits == 1000
    assert {command: await client.raw(envelope(command, inner))
            for command, inner in QUERIES.items()} == fresh
    assert "subone" not in sandbox.state.accounts
    sandbox.advance(timedelta(hours=3))  # the removed scheduled campaign never goes out
    assert await client.balance() == 1000
    assert transactions(await client("dlrByDate", NULL + TODAY)) == []


async def test_reset_leaves_other_accounts_alone_and_refuses_what_it_cannot(
        clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=1, accounts=[Account("acme", "acme-token", 50)])
    client = Client(sandbox)
    await client.sms(username="acme", token="acme-token")
    await campaign(client, "0521234567")
    await client("addSub", "<userDetails><name>Sub one</name><username>subone</username>"
                           "<password>secret1</password><source>Shop</source><amount>10"
                           "</amount></userDetails>")
    assert sandbox.reset("acme").credits == 50
    assert await client.balance() == 989
    with pytest.raises(Conflict, match="subone is a subscriber of demo"):
        sandbox.reset("subone")
    with pytest.raises(NotFound, match="nobody"):
        sandbox.reset("nobody")


async def test_a_reset_and_a_report_are_kept_in_the_state_file(tmp_path: Path,
                                                               clock: FixedClock) -> None:
    db = tmp_path / "sandbox.db"
    first = Sandbox(clock=clock, seed=1, db_path=db, accounts=[Account("acme", "acme-token", 50)])
    client = Client(first)
    kept = await campaign(client, "0521234567", "0521234568")
    first.report(kept, "0521234567", "expired")
    await client.sms(username="acme", token="acme-token")
    first.reset("acme")
    first.close()

    second = Sandbox(clock=clock, seed=1, db_path=db, accounts=[Account("acme", "acme-token", 50)])
    again = Client(second)
    assert await again.balance("acme", "acme-token") == 50
    assert [r["status"] for r in transactions(await again("dlrByDate", NULL + TODAY))] == ["2"]
    second.advance(timedelta(seconds=2))  # the other recipient's report, once
    assert len(transactions(await again("dlrByDate", NULL + TODAY))) == 2
    second.close()
    third = Sandbox(clock=clock, seed=1, db_path=db)  # started without acme this time
    with pytest.raises(Conflict, match="did not start with acme"):
        third.reset("acme")
    third.close()
