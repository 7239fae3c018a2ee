"""The envelope: parsing, authentication, the exact answer bytes, the quirks rendering."""

from __future__ import annotations

from datetime import timedelta

import pytest

from proxy.mapping import load_table
from proxy.sandbox import Account, FixedClock, Sandbox
from proxy.upstream import parse_answer
from tests.sandbox.support import TODAY, Client, envelope, message, status


@pytest.fixture
def accounts_sandbox(clock: FixedClock) -> Sandbox:
    return Sandbox(clock=clock, seed=1, accounts=[
        Account("old", "old-token", 100, token_expired=True),
        Account("other", "other-token", 100)])


async def test_balance_answer_is_compact_with_the_captured_declaration(client: Client) -> None:
    assert await client.raw(envelope("balance")) == (
        b'<?xml version="1.0" encoding="utf-8"?>\n<balance><status>0</status>'
        b"<message>Your balance is:1000</message><balance>1000</balance></balance>")


@pytest.mark.parametrize(("authorization", "code"), [
    (None, 504), ("", 504), ("Basic ZGVtbzpkZW1vLXRva2Vu", 504), ("Bearer", 504),
    ("Bearer nope", 3), ("Bearer old-token", 10), ("Bearer other-token", 11),
    ("bearer  demo-token ", 0),
])
async def test_auth_codes_follow_the_token(accounts_sandbox: Sandbox, authorization: str | None,
                                           code: int) -> None:
    answer = await accounts_sandbox.handle(envelope("balance"), authorization)
    assert f"<status>{code}</status>".encode() in answer


async def test_auth_texts_are_the_upstream_ones(accounts_sandbox: Sandbox) -> None:
    client = Client(accounts_sandbox)
    assert message(await client("balance", token=None)) == "current token not found"
    assert message(await client("balance", token="x")) == (
        "Username or password is incorrect and API token is invalid")
    assert message(await client("balance", username="old", token="old-token")) == (
        "Username or password is incorrect and Expired API token")
    assert message(await client("balance", token="other-token")) == (
        "API token is valid but doesn't match username or if you have newer token you should "
        "use it instead")


async def test_auth_missing_username_is_2(client: Client) -> None:
    answer = await client.raw(b"<balance><user></user></balance>")
    assert b"<status>2</status><message>Missing field: username</message>" in answer
    answer = await client.raw(b"<balance/>")
    assert b"<status>2</status>" in answer


async def test_auth_username_is_stripped(client: Client) -> None:
    answer = await client("balance", username="  demo\n ")
    assert status(answer) == 0


@pytest.mark.parametrize("body", [b"", b"not xml", b"<sms><user>", b"<a></b>"])
async def test_malformed_xml_is_1(client: Client, body: bytes) -> None:
    assert await client.raw(body) == (
        b'<?xml version="1.0" encoding="utf-8"?>\n<error><status>1</status>'
        b"<message>There was a problem parsing your XML</message></error>")


async def test_doctype_is_1_and_entities_are_never_expanded(client: Client) -> None:
    laughs = (b'<?xml version="1.0"?><!DOCTYPE balance [<!ENTITY a "aaaaaaaaaa">'
              b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
              b"<balance><user><username>&b;</username></user></balance>")
    assert b"<status>1</status>" in await client.raw(laughs)
    xxe = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b"<balance><user><username>&x;</username></user></balance>")
    assert b"<status>1</status>" in await client.raw(xxe)
    utf16 = ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE balance>'
             "<balance><user><username>demo</username></user></balance>").encode("utf-16")
    assert b"<status>1</status>" in await client.raw(utf16)


async def test_unknown_command_is_997_echoing_the_root(client: Client) -> None:
    answer = await client("sendSms")
    assert (answer.tag, status(answer), message(answer)) == (
        "sendSms", 997, "Not a valid command sent")


async def test_requests_keeps_the_raw_bodies_newest_last(sandbox: Sandbox,
                                                         client: Client) -> None:
    await client.raw(b"first")
    await client.raw(envelope("balance"))
    assert list(sandbox.requests) == [b"first", envelope("balance")]
    for _ in range(1005):
        await client.raw(b"x")
    assert len(sandbox.requests) == 1000


# ── Quirks: the document's own rendering ─────────────────────────────────────────────────


@pytest.fixture
def quirky(clock: FixedClock) -> Client:
    return Client(Sandbox(clock=clock, seed=1, quirks=True))


async def test_quirks_sms_answer_looks_like_the_document(quirky: Client) -> None:
    answer = await quirky.raw(envelope("sms", "<source>DemoAPI</source><destinations><phone>"
                                              "0521234567</phone></destinations>"
                                              "<message>Hi</message>"))
    campaign = answer.split(b"<shipment_id>")[1]
    assert answer == (b'<?xml version="1.0" encoding="UTF-8"?>\n<sms>\n<status>0</status>\n'
                      b"<message>SMS will be sent</message>\n<shipment_id>" + campaign +
                      b"<shipment_id>\n</sms>")


async def test_quirks_bulk_answer_has_root_sms_and_add_unsubscribe(quirky: Client) -> None:
    answer = await quirky.raw(envelope("bulk", "<messages><sms><source>DemoAPI</source>"
                                               "<destinations><phone>0521234567</phone>"
                                               "</destinations><message>Hi</message></sms>"
                                               "</messages>"))
    lines = answer.decode().split("\n")
    assert lines[:5] == ['<?xml version="1.0" encoding="UTF-8"?>', "<sms>",
                         "<add_unsubscribe>0</add_unsubscribe>", "<status>0</status>",
                         "<message>SMS bulk will be sent</message>"]
    assert lines[-1] == "</sms>" and lines[-2].endswith("<shipment_id>")


async def test_quirks_rmnumbl_answer_has_no_root(quirky: Client) -> None:
    answer = await quirky.raw(envelope("rmNumBL", "<phones><phone>0529999999</phone>"
                                                  "<phone>0521111111</phone></phones>"
                                                  "<reason>x</reason>"))
    assert answer == (b'<?xml version="1.0" encoding="UTF-8"?>\n<status>944</status>\n<message>'
                      b"1 phone numbers Successfully deleted , 1 Phone numbers not exist in "
                      b"blacklist</message>")


async def test_quirks_dlr_rows_leave_shipment_id_open_and_empty_elements_long(
        quirky: Client) -> None:
    await quirky.raw(envelope("sms", '<source>DemoAPI</source><destinations><phone id="x">'
                                     "0521234567</phone></destinations><message>Hi</message>"))
    quirky.sandbox.advance(timedelta(seconds=2))
    answer = (await quirky.raw(envelope("dlr", "<transactions><external_id>x</external_id>"
                                               f"</transactions>{TODAY}"))).decode()
    assert "\n<message></message>\n<transactions>\n<transaction>\n<external_id>x</external_id>\n" \
           "<status>102</status>\n" in answer
    assert "</shipment_id>" not in answer and answer.count("<shipment_id>") == 2


async def test_quirks_verify_phone_keeps_the_lowercase_declaration(quirky: Client) -> None:
    answer = await quirky.raw(envelope("verify_phone", "<phone>0521234567</phone>"))
    assert answer.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<verify_phone>\n')


@pytest.mark.parametrize(("command", "inner"), [
    ("sms", "<source>DemoAPI</source><destinations><phone>0521234567</phone></destinations>"
            "<message>Hi</message>"),
    ("bulk", "<messages><sms><source>DemoAPI</source><destinations><phone>0521234567</phone>"
             "</destinations><message>Hi</message></sms></messages>"),
    ("rmNumBL", "<phones><phone>0529999999</phone></phones><reason>x</reason>"),
    ("balance", ""),
])
async def test_quirks_answers_read_like_normal_ones_by_a_tolerant_client(
        client: Client, quirky: Client, command: str, inner: str) -> None:
    unclosed = load_table().unclosed
    normal = parse_answer(await client.raw(envelope(command, inner)), unclosed)
    odd = parse_answer(await quirky.raw(envelope(command, inner)), unclosed)
    assert [(c.tag, (c.text or "").strip()) for c in odd if c.tag != "add_unsubscribe"] == [
        (c.tag, c.text or "") for c in normal]
