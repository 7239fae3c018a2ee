"""sms and bulk: what a send costs, what is refused, what is skipped."""

from __future__ import annotations

from datetime import timedelta

import pytest

from proxy.sandbox import Account, FixedClock, Sandbox
from tests.sandbox.support import TODAY, Client, message, status


async def dlr_count(client: Client) -> int:
    answer = await client("dlrByDate", f"<transactions><external_id>null</external_id>"
                                       f"</transactions>{TODAY}")
    return len(answer.findall("transactions/transaction"))


@pytest.mark.parametrize(("text", "destinations", "cost"), [
    ("a" * 160, 1, 1),
    ("a" * 161, 1, 2),          # 153 per part once split
    ("a" * 306, 2, 4),
    ("a" * 307, 1, 3),
    ("€" * 80, 1, 1),           # extension characters take two septets
    ("€" * 81, 1, 2),
    ("ש" * 70, 1, 1),           # Hebrew: UCS-2, 70 in one
    ("ש" * 71, 3, 6),           # 67 per part
    ("a" * 69 + "😀", 1, 2),    # an emoji is UCS-2 and two UTF-16 units
])
async def test_sms_costs_parts_times_destinations(client: Client, text: str, destinations: int,
                                                  cost: int) -> None:
    phones = tuple(f"05212345{n:02d}" for n in range(destinations))
    answer = await client.sms(text, phones)
    assert status(answer) == 0
    assert await client.balance() == 1000 - cost


async def test_sms_without_enough_credit_is_4_and_sends_nothing(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=1, accounts=[Account("poor", "poor-token", 1)])
    client = Client(sandbox)
    answer = await client.sms(phones=("0521234567", "0521234568"), username="poor",
                              token="poor-token")
    assert (status(answer), message(answer)) == (4, "Not enough credit, Purchase Now.")
    assert await client.balance("poor", "poor-token") == 1
    sandbox.advance(timedelta(minutes=1))
    assert await dlr_count(Client(sandbox)) == 0


@pytest.mark.parametrize("text", ["", "a" * 1006])
async def test_sms_message_empty_or_too_long_is_989(client: Client, text: str) -> None:
    answer = await client.sms(text)
    assert (status(answer), message(answer)) == (989, "The message is too long or too short")


async def test_sms_message_of_1005_characters_is_accepted(client: Client) -> None:
    assert status(await client.sms("a" * 1005)) == 0
    assert await client.balance() == 1000 - 7


@pytest.mark.parametrize("field", ["source", "destinations", "message"])
async def test_sms_missing_field_is_2_naming_it(client: Client, field: str) -> None:
    parts = {"source": "<source>DemoAPI</source>",
             "destinations": "<destinations><phone>0521234567</phone></destinations>",
             "message": "<message>Hi</message>"}
    del parts[field]
    answer = await client("sms", "".join(parts.values()))
    assert (status(answer), message(answer)) == (2, f"Missing field: {field}")


@pytest.mark.parametrize(("source", "code"), [
    ("DemoAPI", 0), ("OSHI GEDERA", 0), ("0500000000", 0),  # the demo's number is verified
    ("", 9), ("ABCDEFGHIJKL", 9), ("Demo-API", 9), ("דמו", 9),
    ("0541234567", 515), ("12345", 515),
])
async def test_sms_source_rules(client: Client, source: str, code: int) -> None:
    assert status(await client.sms(source=source)) == code


async def test_sms_numeric_source_is_allowed_once_verified(client: Client) -> None:
    assert status(await client.sms(source="0541234567")) == 515
    assert status(await client("verify_phone", "<phone>541234567</phone>")) == 0
    assert status(await client.sms(source="0541234567")) == 0


async def test_sms_response_ignores_the_source(client: Client) -> None:
    # 1.1: with response=1 "the value you wrote will be ignored".
    answer = await client.sms(source="0541234567", extra="<response>1</response>")
    assert status(answer) == 0


async def test_sms_invalid_phones_are_skipped_and_none_valid_is_9(client: Client) -> None:
    answer = await client.sms(phones=("0521234567", "12345", "+972521234568", "0721234567"))
    assert status(answer) == 0
    assert await client.balance() == 999
    answer = await client.sms(phones=("12345", "0312345678"))
    assert (status(answer), message(answer)) == (
        9, "destination/source/message length is too large or too small")


async def test_sms_blacklisted_numbers_are_skipped_and_all_is_8(client: Client) -> None:
    assert status(await client.sms(phones=("0529999999", "0521234567"))) == 0
    assert await client.balance() == 999
    answer = await client.sms(phones=("0529999999", "528888888"))
    assert (status(answer), message(answer)) == (8, "All numbers are on a blocked list")


async def test_sms_duplicate_numbers_are_sent_once(client: Client) -> None:
    assert status(await client.sms(phones=("0521234567", "521234567", " 0521234567 "))) == 0
    assert await client.balance() == 999


async def test_sms_unknown_or_foreign_contact_list_is_988(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=1, accounts=[Account("other", "other-token", 100)])
    client = Client(sandbox)
    created = await client("newCL", "<cl><name>mine</name><destinations><destination>"
                                    "<phone>0521234567</phone></destination></destinations></cl>",
                           username="other", token="other-token")
    foreign = created.findtext("identifiers/identifier")
    for cl_id in (foreign, "99999", "abc"):
        answer = await client("sms", f"<source>DemoAPI</source><destinations><cl_id>{cl_id}"
                                     "</cl_id></destinations><message>Hi</message>")
        assert (status(answer), message(answer)) == (988, "Contact list are entered not exist")


async def test_sms_dynamic_fields_are_filled_per_member_and_cost_accordingly(
        client: Client) -> None:
    created = await client("newCL", f"""<cl><name>vip</name><destinations>
        <destination><phone>0521234567</phone><df1>{"x" * 160}</df1></destination>
        <destination><phone>0521234568</phone><df1>Bo</df1></destination>
        </destinations></cl>""")
    cl_id = created.findtext("identifiers/identifier")
    inner = (f"<source>DemoAPI</source><destinations><cl_id>{cl_id}</cl_id></destinations>"
             "<message>Hi [DYNAMIC_FIELD1]</message>")
    assert status(await client("sms", inner + "<add_dynamic>1</add_dynamic>")) == 0
    assert await client.balance() == 1000 - 3  # 2 parts for the long field, 1 for "Hi Bo"
    assert status(await client("sms", inner + "<add_dynamic>0</add_dynamic>")) == 0
    assert await client.balance() == 1000 - 3 - 2  # the template itself, once each


async def test_sms_tag_hash_prefixes_the_message(client: Client) -> None:
    # 1.1: "#Hello world result=> "<#>Hello world"": three more characters.
    assert status(await client.sms("a" * 158)) == 0
    assert await client.balance() == 999
    assert status(await client.sms("a" * 158, extra="<tag>#</tag>")) == 0
    assert await client.balance() == 999 - 2


@pytest.mark.parametrize(("value", "cost"), [("0", 1), ("1", 1), ("2", 2), ("3", 2), ("", 1)])
async def test_sms_add_unsubscribe_text_costs_characters(client: Client, value: str,
                                                         cost: int) -> None:
    answer = await client.sms("a" * 150, extra=f"<add_unsubscribe>{value}</add_unsubscribe>")
    assert status(answer) == 0
    assert await client.balance() == 1000 - cost


@pytest.mark.parametrize("value", ["yes", "-1", "2a"])
async def test_sms_add_unsubscribe_not_numeric_is_986(client: Client, value: str) -> None:
    answer = await client.sms(extra=f"<add_unsubscribe>{value}</add_unsubscribe>")
    assert (status(answer), message(answer)) == (986, "Add unsubscribe error- invalid value")


@pytest.mark.parametrize("timing", ["2025-06-16 10:00", "32/01/25 10:00", "tomorrow"])
async def test_sms_timing_not_a_date_is_998(client: Client, timing: str) -> None:
    answer = await client.sms(extra=f"<timing>{timing}</timing>")
    assert status(answer) == 998
    assert message(answer) == ("There was an unknown error in the request: "
                               "timing is not a date in the format dd/mm/yy hh:mm")


async def test_sms_future_timing_reserves_credits_and_sends_at_that_time(
        sandbox: Sandbox, client: Client) -> None:
    answer = await client.sms(extra="<timing>15/06/25 13:00</timing>")
    assert status(answer) == 0
    assert await client.balance() == 999  # reserved at schedule time
    sandbox.advance(timedelta(minutes=59))
    assert await dlr_count(client) == 0
    sandbox.advance(timedelta(minutes=1, seconds=2))
    dlrs = await client("dlrByDate", "<transactions><external_id>null</external_id>"
                                     f"</transactions>{TODAY}")
    assert [row.findtext("date") for row in dlrs.findall("transactions/transaction")] == [
        "15/06/25 13:00"]


async def test_sms_past_timing_sends_now(sandbox: Sandbox, client: Client) -> None:
    await client.sms(extra="<timing>15/06/25 11:00</timing>")
    sandbox.advance(timedelta(seconds=2))
    assert await dlr_count(client) == 1


async def test_cancel_refunds_a_scheduled_campaign_which_then_never_goes_out(
        sandbox: Sandbox, client: Client) -> None:
    sent = await client.sms(phones=("0521234567", "0521234568"),
                            extra="<timing>15/06/25 13:00</timing>")
    assert await client.balance() == 998
    answer = await client("cancel", f"<campaign_id>{sent.findtext('shipment_id')}</campaign_id>")
    assert status(answer) == 0
    assert await client.balance() == 1000
    sandbox.advance(timedelta(hours=2))
    assert await dlr_count(client) == 0


async def test_cancel_twice_is_955(client: Client) -> None:
    sent = await client.sms(extra="<timing>15/06/25 13:00</timing>")
    inner = f"<campaign_id>{sent.findtext('shipment_id')}</campaign_id>"
    await client("cancel", inner)
    answer = await client("cancel", inner)
    assert (status(answer), message(answer)) == (955, "Campaign already cancel")
    assert await client.balance() == 1000  # refunded once


async def test_cancel_after_the_campaign_went_out_is_966(sandbox: Sandbox, client: Client) -> None:
    now = await client.sms()
    answer = await client("cancel", f"<campaign_id>{now.findtext('shipment_id')}</campaign_id>")
    assert (status(answer), message(answer)) == (966, "Campaign already sent")
    later = await client.sms(extra="<timing>15/06/25 12:30</timing>")
    sandbox.advance(timedelta(minutes=30))
    answer = await client("cancel", f"<campaign_id>{later.findtext('shipment_id')}</campaign_id>")
    assert status(answer) == 966
    assert await client.balance() == 998


async def test_cancel_unknown_or_foreign_campaign_is_977(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=1, accounts=[Account("other", "other-token", 100)])
    client = Client(sandbox)
    theirs = await client.sms(extra="<timing>15/06/25 13:00</timing>", username="other",
                              token="other-token")
    for campaign_id in (theirs.findtext("shipment_id"), "1", "campaign1"):
        answer = await client("cancel", f"<campaign_id>{campaign_id}</campaign_id>")
        assert (status(answer), message(answer)) == (
            977, "Campaign does not belong to customer or Not exist")


async def test_bulk_is_one_campaign_charged_for_every_message(
        sandbox: Sandbox, client: Client) -> None:
    answer = await client("bulk", """<messages>
        <sms><source>DemoAPI</source><destinations><phone id="a">0521234567</phone>
             <phone id="b">0521234568</phone></destinations><message>One</message></sms>
        <sms><source>Other</source><destinations><phone id="c">0521234567</phone></destinations>
             <message>""" + "ש" * 71 + """</message></sms></messages>""")
    assert status(answer) == 0
    assert await client.balance() == 1000 - 2 - 2
    sandbox.advance(timedelta(seconds=2))
    dlrs = await client("dlr", "<transactions><external_id>a</external_id><external_id>b"
                               f"</external_id><external_id>c</external_id></transactions>{TODAY}")
    assert {row.findtext("shipment_id") for row in dlrs.findall("transactions/transaction")} == {
        answer.findtext("shipment_id")}
    assert len(dlrs.findall("transactions/transaction")) == 3


async def test_bulk_refuses_as_a_whole(client: Client) -> None:
    answer = await client("bulk", """<messages>
        <sms><source>DemoAPI</source><destinations><phone>0521234567</phone></destinations>
             <message>Fine</message></sms>
        <sms><source>0541234567</source><destinations><phone>0521234568</phone></destinations>
             <message>Unverified</message></sms></messages>""")
    assert status(answer) == 515
    assert await client.balance() == 1000


async def test_bulk_skips_a_message_without_valid_destinations(client: Client) -> None:
    answer = await client("bulk", """<messages>
        <sms><source>DemoAPI</source><destinations><phone>0529999999</phone></destinations>
             <message>Blacklisted</message></sms>
        <sms><source>DemoAPI</source><destinations><phone>0521234568</phone></destinations>
             <message>Fine</message></sms></messages>""")
    assert status(answer) == 0
    assert await client.balance() == 999
    answer = await client("bulk", "<messages><sms><source>DemoAPI</source><destinations>"
                                  "<phone>0529999999</phone></destinations><message>x</message>"
                                  "</sms></messages>")
    assert status(answer) == 8


async def test_bulk_without_messages_is_2(client: Client) -> None:
    assert message(await client("bulk", "<timing>15/06/25 13:00</timing>")) == (
        "Missing field: messages")
    assert message(await client("bulk", "<messages/>")) == "Missing field: sms"
