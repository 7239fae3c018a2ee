"""Delivery reports, incoming messages, the blacklist: what appears when, and the windows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from lxml import etree

from proxy.sandbox import Account, FixedClock, Sandbox, TickingClock
from tests.sandbox.support import NOW, TODAY, Client, message, status

NULL = "<transactions><external_id>null</external_id></transactions>"
DLR_CODES = {"102", "1", "2", "4", "7", "15", "17", "108", "747"}


def transactions(answer: etree._Element) -> list[dict[str, str | None]]:
    return [{c.tag: c.text for c in row} for row in answer.findall("transactions/transaction")]


async def test_dlr_appears_only_after_the_delay(sandbox: Sandbox, client: Client) -> None:
    await client.sms(phones=("0521234567",), extra="")
    sandbox.advance(timedelta(seconds=1))
    assert transactions(await client("dlrByDate", NULL + TODAY)) == []
    sandbox.advance(timedelta(seconds=1))
    (row,) = transactions(await client("dlrByDate", NULL + TODAY))
    assert list(row) == ["external_id", "status", "he_message", "en_message", "date",
                         "shipment_id"]
    assert row["status"] == "102"
    assert (row["he_message"], row["en_message"]) == ("הגיע ליעד", "Delivered")
    assert row["date"] == "15/06/25 12:00"


async def test_dlr_returns_only_the_listed_external_ids(sandbox: Sandbox, client: Client) -> None:
    await client("sms", '<source>DemoAPI</source><destinations><phone id="a">0521234567</phone>'
                        '<phone id="b">0521234568</phone><phone>0521234569</phone>'
                        "</destinations><message>Hi</message>")
    sandbox.advance(timedelta(seconds=2))
    rows = transactions(await client(
        "dlr", f"<transactions><external_id>b</external_id><external_id>zz</external_id>"
               f"</transactions>{TODAY}"))
    assert [row["external_id"] for row in rows] == ["b"]


async def test_dlr_by_date_returns_all_with_empty_external_ids(
        sandbox: Sandbox, client: Client) -> None:
    answer = await client("sms", '<source>DemoAPI</source><destinations><phone id="a">'
                                 '0521234567</phone><phone id="">0521234568</phone>'
                                 "<phone>0521234569</phone></destinations><message>Hi</message>")
    sandbox.advance(timedelta(seconds=2))
    rows = transactions(await client("dlrByDate", NULL + TODAY))
    assert [row["external_id"] for row in rows] == ["a", None, None]
    assert {row["shipment_id"] for row in rows} == {answer.findtext("shipment_id")}


async def test_dlr_outside_the_window_is_not_returned(sandbox: Sandbox, client: Client) -> None:
    await client.sms()
    sandbox.advance(timedelta(seconds=2))
    window = "<from>15/06/25 12:01</from><to>15/06/25 13:00</to>"
    assert transactions(await client("dlrByDate", NULL + window)) == []
    window = "<from>15/06/25 11:00</from><to>15/06/25 12:00</to>"  # "to" is inclusive
    assert len(transactions(await client("dlrByDate", NULL + window))) == 1


async def test_dlr_failures_follow_the_rate_with_matching_texts(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=3, failure_rate=0.5)
    client = Client(sandbox)
    await client.sms(phones=tuple(f"05200000{n:02d}" for n in range(60)))
    sandbox.advance(timedelta(seconds=2))
    rows = transactions(await client("dlrByDate", NULL + TODAY))
    statuses = [row["status"] for row in rows]
    assert set(statuses) <= DLR_CODES
    assert 10 < sum(s != "102" for s in statuses) < 50
    failed = next(row for row in rows if row["status"] != "102")
    assert failed["en_message"] != "Delivered" and failed["he_message"] != "הגיע ליעד"


async def test_dlr_failure_rate_zero_delivers_everything(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=3, failure_rate=0.0)
    client = Client(sandbox)
    await client.sms(phones=tuple(f"05200000{n:02d}" for n in range(30)))
    sandbox.advance(timedelta(seconds=2))
    assert {row["status"] for row in transactions(await client("dlrByDate", NULL + TODAY))} == {
        "102"}


async def test_dlr_answer_holds_at_most_1000_the_oldest_first(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=1, accounts=[Account("big", "big-token", 5000)])
    client = Client(sandbox)
    phones = tuple(f"0520{n:06d}" for n in range(800))
    await client.sms(phones=phones[:300], username="big", token="big-token")
    sandbox.advance(timedelta(minutes=1))
    await client.sms(phones=phones, username="big", token="big-token")
    sandbox.advance(timedelta(minutes=1))
    rows = transactions(await client("dlrByDate", NULL + TODAY, username="big",
                                     token="big-token"))
    assert len(rows) == 1000
    dates = [row["date"] for row in rows]
    assert (dates.count("15/06/25 12:00"), dates.count("15/06/25 12:01")) == (300, 700)


async def test_incoming_and_blacklist_hold_at_most_1000_the_oldest_first(
        sandbox: Sandbox, client: Client) -> None:
    state = sandbox.state
    for n in range(1100):  # 600 in the first minute, 500 in the next
        at = sandbox.clock.now() + timedelta(minutes=n // 600)
        state.receive("demo", f"5{20000000 + n}", "500000000", f"reply {n}", at)
        state.block("demo", f"5{30000000 + n}", at)
    window = "<from>15/06/25 12:00</from><to>15/06/25 12:01</to>"
    incoming = transactions(await client("incoming", window))
    blacklist = transactions(await client("blacklist", window))
    assert [row["message"] for row in incoming] == [f"reply {n}" for n in range(1000)]
    assert [row["phone"] for row in blacklist] == [f"5{30000000 + n}" for n in range(1000)]


async def test_a_ticking_clock_spreads_sends_over_minutes_the_same_way_every_run() -> None:
    async def run() -> list[str | None]:
        sandbox = Sandbox(clock=TickingClock(NOW, timedelta(seconds=25)), seed=1,
                          dlr_delay=timedelta(0), accounts=[Account("big", "big-token", 50)])
        client = Client(sandbox)
        for n in range(5):
            await client.sms(phones=(f"052000000{n}",), username="big", token="big-token")
        rows = await client("dlrByDate", NULL + TODAY, username="big", token="big-token")
        return [row["date"] for row in transactions(rows)]

    dates = await run()
    assert dates == ["15/06/25 12:00", "15/06/25 12:00", "15/06/25 12:01", "15/06/25 12:01",
                     "15/06/25 12:02"]  # 25 seconds an exchange; the first reading is the seed's
    assert await run() == dates


@pytest.mark.parametrize(("window", "rule"), [
    ("<from>16/06/25 00:00</from><to>15/06/25 00:00</to>", "from is after to"),
    ("<from>01/06/25 00:00</from><to>08/06/25 00:01</to>",
     "the range from-to is longer than 1 week"),
    ("<from>14/06/24 11:59</from><to>15/06/24 00:00</to>", "from is more than 1 year back"),
    ("<from>2025-06-15</from><to>15/06/25 00:00</to>",
     "from is not a date in the format dd/mm/yy hh:mm"),
    ("<from>15/06/25 00:00</from><to>15/06/25 25:00</to>",
     "to is not a date in the format dd/mm/yy hh:mm"),
])
@pytest.mark.parametrize("command", ["dlr", "dlrByDate", "incoming", "blacklist"])
async def test_query_window_rules_are_998_naming_the_rule(client: Client, command: str,
                                                          window: str, rule: str) -> None:
    answer = await client(command, NULL + window)
    assert status(answer) == 998
    assert message(answer) == f"There was an unknown error in the request: {rule}"


async def test_query_window_of_exactly_a_week_a_year_back_is_accepted(client: Client) -> None:
    answer = await client("incoming", "<from>15/06/24 12:00</from><to>22/06/24 12:00</to>")
    assert status(answer) == 0


@pytest.mark.parametrize(("command", "inner", "field"), [
    ("dlr", TODAY, "transactions"),
    ("dlrByDate", "<to>15/06/25 00:00</to>" + NULL, "from"),
    ("incoming", "<from>15/06/25 00:00</from>", "to"),
])
async def test_query_missing_field_is_2(client: Client, command: str, inner: str,
                                        field: str) -> None:
    assert message(await client(command, inner)) == f"Missing field: {field}"


async def test_incoming_holds_two_seeded_messages_of_the_last_day(client: Client) -> None:
    rows = transactions(await client("incoming", "<from>14/06/25 12:00</from>"
                                                 "<to>15/06/25 12:00</to>"))
    assert [row["date"] for row in rows] == ["14/06/25 16:00", "15/06/25 09:00"]
    assert {row["destination"] for row in rows} == {"0500000000"}


async def test_response_replies_arrive_after_the_delay_from_each_destination(
        sandbox: Sandbox, client: Client) -> None:
    await client.sms(phones=("0521234567", "0521234568"), extra="<response>1</response>")
    window = "<from>15/06/25 11:00</from><to>15/06/25 13:00</to>"
    assert transactions(await client("incoming", window)) == []
    sandbox.advance(timedelta(seconds=2))
    replies = transactions(await client("incoming", window))
    assert [row["source"] for row in replies] == ["0521234567", "0521234568"]
    (number,) = {row["destination"] for row in replies}
    assert number is not None and number.startswith("055") and len(number) == 10
    assert all(row["message"] for row in replies)


async def test_blacklist_holds_the_seeded_numbers_of_the_last_week(client: Client) -> None:
    rows = transactions(await client("blacklist", "<from>08/06/25 12:00</from>"
                                                  "<to>15/06/25 12:00</to>"))
    assert rows == [{"phone": "528888888", "date": "10/06/25 12:00"},
                    {"phone": "529999999", "date": "13/06/25 12:00"}]


async def test_stop_reply_after_an_unsubscribe_send_blacklists_the_number(
        sandbox: Sandbox, client: Client) -> None:
    await client.sms(phones=("0521234567",), extra="<add_unsubscribe>2</add_unsubscribe>")
    sandbox.advance(timedelta(minutes=5))
    sandbox.receive("0521234567", "STOP", to="0500000000")
    rows = transactions(await client("blacklist", "<from>15/06/25 00:00</from>"
                                                  "<to>15/06/25 23:59</to>"))
    assert rows == [{"phone": "521234567", "date": "15/06/25 12:05"}]
    assert status(await client.sms(phones=("0521234567",))) == 8


async def test_stop_reply_without_an_unsubscribe_send_is_only_a_message(
        client: Client, sandbox: Sandbox) -> None:
    await client.sms(phones=("0521234567",))
    sandbox.receive("0521234567", "הסר", to="0500000000")
    assert status(await client.sms(phones=("0521234567",))) == 0
    rows = transactions(await client("incoming", TODAY))
    assert rows[-1]["message"] == "הסר"


async def test_rmnumbl_partial_removal_is_944_counting_both(client: Client) -> None:
    answer = await client("rmNumBL", "<phones><phone>529999999</phone><phone>0521111111</phone>"
                                     "</phones><reason>asked by phone</reason>")
    assert (status(answer), message(answer)) == (
        944, "1 phone numbers Successfully deleted , 1 Phone numbers not exist in blacklist")
    assert status(await client.sms(phones=("0529999999",))) == 0


async def test_rmnumbl_removing_every_number_is_0(client: Client) -> None:
    answer = await client("rmNumBL", "<phones><phone>0529999999</phone><phone>528888888</phone>"
                                     "</phones><reason>cleanup</reason>")
    assert (status(answer), message(answer)) == (
        0, "2 phone numbers Successfully deleted , 0 Phone numbers not exist in blacklist")


@pytest.mark.parametrize("inner", [
    "<phones><phone>0529999999</phone></phones><reason> </reason>",
    "<phones><phone>0529999999</phone></phones>",
    "<phones><phone>12345</phone></phones><reason>why</reason>",
    "<phones/><reason>why</reason>",
])
async def test_rmnumbl_without_a_valid_phone_or_a_reason_is_933(client: Client,
                                                                inner: str) -> None:
    answer = await client("rmNumBL", inner)
    assert (status(answer), message(answer)) == (933, "Phone or reason not valid")
    assert status(await client.sms(phones=("0529999999",))) == 8
