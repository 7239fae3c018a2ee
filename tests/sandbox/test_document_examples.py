"""The document's request examples, with valid values filled in, get the documented answers."""

from __future__ import annotations

import re

from lxml import etree

from proxy.sandbox import Sandbox
from tests.sandbox.support import Client, envelope


def children(answer: etree._Element) -> list[str]:
    return [str(child.tag) for child in answer]


async def test_sms_example_answers_sms_will_be_sent(client: Client) -> None:
    created = await client("newCL", "<cl><name>name1</name><destinations><destination>"
                                    "<phone>0541111111</phone></destination></destinations></cl>"
                                    "<cl><name>name2</name><destinations><destination>"
                                    "<phone>0542222222</phone></destination></destinations></cl>")
    first, second = created.findall("identifiers/identifier")
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<sms>
<user>
<username>demo</username>
</user>
<source>DemoAPI</source>
<destinations>
<cl_id>{first.text}</cl_id>
<cl_id>{second.text}</cl_id>
<phone id="external id1">521234567</phone>
<phone id="external id2">521234568</phone>
<phone>521234569</phone>
<phone id="">521234570</phone> </destinations>
<tag>#</tag>
<message>This is a sample message</message>
<add_dynamic>0</add_dynamic>
<timing>30/03/21 10:10</timing>
<add_unsubscribe>0</add_unsubscribe>
<response>0</response>
</sms>""".encode()
    answer = etree.fromstring(await client.raw(body))
    assert answer.tag == "sms"
    assert children(answer) == ["status", "message", "shipment_id"]
    assert answer.findtext("status") == "0"
    assert answer.findtext("message") == "SMS will be sent"
    assert re.fullmatch(r"[0-9]+", answer.findtext("shipment_id") or "")
    assert await client.balance() == 1000 - 6


async def test_bulk_example_answers_sms_bulk_will_be_sent(client: Client) -> None:
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<bulk>
<user>
<username>demo</username>
</user>
<messages>
<sms>
<source>DemoAPI</source>
<destinations>
<phone id="external id1">521234567</phone>
<phone id="external id2">521234568</phone>
<phone>521234569</phone>
<phone id="">521234570</phone>
</destinations>
<message>This is a sample message</message>
</sms>
<sms>
<source>DemoAPI</source>
<destinations>
<phone id="">521234571</phone>
</destinations>
<message>This is a different message sent</message>
</sms>
</messages>
<timing>10/10/17 10:10</timing>
<response>0</response>
</bulk>"""
    answer = etree.fromstring(await client.raw(body))
    assert (answer.tag, children(answer)) == ("bulk", ["status", "message", "shipment_id"])
    assert answer.findtext("status") == "0"
    assert answer.findtext("message") == "SMS bulk will be sent"
    assert await client.balance() == 1000 - 5


async def test_balance_example_answers_the_balance(client: Client) -> None:
    answer = etree.fromstring(await client.raw(
        b'<?xml version="1.0" encoding="UTF-8"?>\n<balance>\n<user>\n<username>demo</username>\n'
        b"</user>\n</balance>"))
    assert [(c.tag, c.text) for c in answer] == [
        ("status", "0"), ("message", "Your balance is:1000"), ("balance", "1000")]


async def test_php_example_two_with_whitespace_and_single_quotes_is_understood(
        client: Client) -> None:
    # 2.9.2: single-quoted declaration, "\r\n " between elements, an id attribute.
    body = (b"<?xml version='1.0' encoding='UTF-8'?>\r\n <sms>\r\n <user>\r\n "
            b"<username>demo</username>\r\n </user>\r\n <source>sender</source>\r\n "
            b"<destinations>\r\n <phone id='someid1'>0500123456</phone>\r\n </destinations>"
            b"\r\n <message>test</message>\r\n </sms>")
    answer = etree.fromstring(await client.raw(body))
    assert answer.findtext("message") == "SMS will be sent"


async def test_php_example_one_with_a_newline_before_the_declaration_is_understood(
        client: Client) -> None:
    # 2.9.1 sends '\n<?xml ...': the upstream must accept what its own example sends.
    body = b'\n<?xml version="1.0" encoding="UTF-8"?>\n' + envelope("balance").split(b"\n", 1)[1]
    answer = etree.fromstring(await client.raw(body))
    assert answer.findtext("status") == "0"


async def test_cancel_example_answers_campaign_successfuly_cancel(client: Client) -> None:
    sent = await client.sms(extra="<timing>16/06/25 10:00</timing>")
    answer = await client("cancel", f"<campaign_id>{sent.findtext('shipment_id')}</campaign_id>")
    assert [(c.tag, c.text) for c in answer] == [
        ("status", "0"), ("message", "Campaign successfuly cancel")]


async def test_verify_phone_example_has_verify_message_and_no_message(client: Client) -> None:
    answer = await client("verify_phone", "<phone>521234567</phone><phone>31234567</phone>")
    assert children(answer) == ["status", "verify_message"]
    assert answer.findtext("verify_message") == (
        "verification link will be send to 521234567\n"
        "in order to complete the verification of 31234567 call to 0500000001")


async def test_incoming_example_answers_transactions_with_four_fields(client: Client) -> None:
    answer = await client("incoming", "<from>14/06/25 12:00</from><to>15/06/25 12:00</to>")
    assert children(answer) == ["status", "message", "transactions"]
    rows = answer.findall("transactions/transaction")
    assert len(rows) == 2  # seeded within the last day
    assert [c.tag for c in rows[0]] == ["source", "destination", "message", "date"]


async def test_blacklist_example_answers_phone_and_date(client: Client) -> None:
    answer = await client("blacklist", "<from>08/06/25 12:00</from><to>15/06/25 12:00</to>")
    rows = answer.findall("transactions/transaction")
    assert [[c.tag for c in row] for row in rows] == [["phone", "date"]] * 2
    assert [row.findtext("phone") for row in rows] == ["528888888", "529999999"]


async def test_subscriber_examples_answer_as_documented(sandbox: Sandbox, client: Client) -> None:
    added = await client("addSub", "<userDetails><name>israel israeli</name>"
                                   "<username> israelisraeli </username>"
                                   "<password> israelisraeli </password>"
                                   "<source>0521234567</source><amount>700</amount></userDetails>")
    assert [(c.tag, c.text) for c in added] == [
        ("status", "0"), ("message", "The user was created successfully")]
    updated = await client("updateAmountSub", "<userDetails><username>israelisraeli</username>"
                                              "<password>israelisraeli</password>"
                                              "<amount>70</amount></userDetails>")
    assert [(c.tag, c.text) for c in updated] == [
        ("status", "0"), ("message", "Wallet successfully updated")]
    balances = await client("getBlanceSubs")
    assert children(balances) == ["status", "message", "balances"]
    (row,) = balances.findall("balances/balance")
    assert [c.tag for c in row] == ["amount", "sms_user_id", "name"]
    assert (row.findtext("amount"), row.findtext("name")) == ("770", "israel israeli")


async def test_contact_list_examples_answer_as_documented(client: Client) -> None:
    created = await client("newCL", """
<cl><name>name1</name><destinations>
<destination><phone>0521234567</phone><df1>Israel</df1><df2>Israeli</df2><df3>Haifa</df3>
</destination>
<destination><phone>521234568</phone></destination>
</destinations></cl>
<cl><name>name2</name><destinations>
<destination><phone>0521234569</phone></destination>
<destination><phone>52123</phone></destination>
</destinations></cl>""")
    assert children(created) == ["status", "message", "errors", "identifiers"]
    assert created.findtext("message") == "conact list successfully created"
    assert [e.text for e in created.findall("errors/error")] == [
        "The phone 52123 is too long or too short or contain characters and therefore not added"]
    first, second = (i.text for i in created.findall("identifiers/identifier"))

    listed = await client("getCL")
    assert [[c.text for c in row] for row in listed.findall("contact_lists/contact_list")] == [
        [first, "0521234567", "name1"], [first, "521234568", "name1"],
        [second, "0521234569", "name2"]]

    by_id = await client("getCLbyID", f"<cl><id>{second}</id></cl>")
    assert [[c.text for c in row] for row in by_id.findall("contact_lists/contact_list")] == [
        ["0521234569", "name2"]]

    removed = await client("removeCL", f"<cl><id>{first}</id><id>21500</id></cl>")
    assert [(c.tag, c.text) for c in removed][:2] == [
        ("status", "0"), ("message", "contact list successfully removed")]
    assert [e.text for e in removed.findall("errors/error")] == [
        "contact list id: 21500 does not exist and therefore not removed"]
