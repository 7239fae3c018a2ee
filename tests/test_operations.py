"""Each operation's spec example -> the exact envelope; the document's example answer -> JSON.

The answers below are the document's own (smsleads-xml-api.txt), quirks included: unclosed
<shipment_id>, the root-less rmNumBL answer, the bulk answer rooted at <sms>.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.docs import load_spec
from proxy.mapping import load_table
from tests.conftest import BASIC, NOW, Clock, Recorder
from tests.examples import example

DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
USER = "<user><username>demo</username></user>"

CASES: dict[str, tuple[str, str, int, Any]] = {
    "sendMessage": (
        f'<sms>{USER}<source>DemoAPI</source><destinations><cl_id>21518</cl_id>'
        '<phone id="order-1001">0501234567</phone><phone>0527654321</phone></destinations>'
        "<tag>#</tag><message>Hello [DYNAMIC_FIELD1], your order has shipped.</message>"
        "<add_dynamic>1</add_dynamic><timing>01/12/26 10:00</timing>"
        "<add_unsubscribe>3</add_unsubscribe><response>0</response></sms>",
        "<sms>\n<status>0</status>\n<message>SMS will be sent</message>\n"
        "<shipment_id>890578760<shipment_id>\n</sms>",
        202, {"campaign_id": "890578760"},
    ),
    "sendBulk": (
        f"<bulk>{USER}<messages><sms><source>DemoAPI</source><destinations>"
        '<phone id="invoice-17">0501234567</phone><phone>0527654321</phone></destinations>'
        "<message>Your invoice is ready.</message></sms><sms><source>DemoAPI</source>"
        "<destinations><phone>0541234567</phone></destinations>"
        "<message>Your appointment is tomorrow at 10:00.</message></sms></messages>"
        "<timing>01/12/26 10:00</timing><response>1</response>"
        "<add_unsubscribe>2</add_unsubscribe></bulk>",
        "<sms>\n<add_unsubscribe>0</add_unsubscribe>\n<status>0</status>\n"
        "<message>SMS bulk will be sent</message>\n<shipment_id>890578761<shipment_id>\n</sms>",
        202, {"campaign_id": "890578761"},
    ),
    "cancelCampaign": (
        f"<cancel>{USER}<campaign_id>890578760</campaign_id></cancel>",
        "<cancel>\n<status>0</status>\n<message>Campaign successfuly cancel</message>\n</cancel>",
        204, None,
    ),
    "getBalance": (
        f"<balance>{USER}</balance>",
        "<balance>\n<status>0</status>\n<message>Your balance is:42</message>\n"
        "<balance>42</balance>\n</balance>",
        200, {"credits": 42},
    ),
    "listDeliveryReports": (
        f"<dlr>{USER}<transactions><external_id>order-1001</external_id>"
        "<external_id>invoice-17</external_id></transactions>"
        "<from>18/11/26 00:00</from><to>24/11/26 23:59</to></dlr>",
        "<dlr>\n<status>0</status>\n<message></message>\n<transactions>\n<transaction>\n"
        "<external_id>1391438285</external_id>\n<status>102</status>\n"
        "<he_message>הגיע ליעד </he_message>\n<en_message>Delivered</en_message>\n"
        "<date>03/02/21 16:38</date>\n<shipment_id>12345678<shipment_id>\n</transaction>\n"
        "<transaction>\n<external_id>1391438286</external_id>\n<status>102</status>\n"
        "<he_message> הגיע ליעד </he_message>\n<en_message>Delivered</en_message>\n"
        "<date>03/02/21 16:38</date>\n<shipment_id>12345678<shipment_id>\n</transaction>\n"
        "</transactions>\n</dlr>",
        200, {"data": [
            {"external_id": "1391438285", "campaign_id": "12345678", "state": "delivered",
             "status_code": 102, "description": "Delivered", "description_he": "הגיע ליעד",
             "reported_at": "2021-02-03T16:38:00+02:00"},
            {"external_id": "1391438286", "campaign_id": "12345678", "state": "delivered",
             "status_code": 102, "description": "Delivered", "description_he": "הגיע ליעד",
             "reported_at": "2021-02-03T16:38:00+02:00"},
        ]},
    ),
    "listIncomingMessages": (
        f"<incoming>{USER}<from>18/11/26 00:00</from><to>24/11/26 23:59</to></incoming>",
        "<incoming>\n<status>0</status>\n<message></message>\n<transactions>\n<transaction>\n"
        "<source>0541112233</source>\n<destination>0501234567</destination>\n"
        "<message>This is a sample message</message>\n<date>03/12/21 16:38</date>\n"
        "</transaction>\n<transaction>\n<source>05********</source>\n"
        "<destination>05********</destination>\n<message>This is a test message</message>\n"
        "<date>03/12/21 12:33</date>\n</transaction>\n</transactions>\n</incoming>",
        200, {"data": [
            {"sender": "+972541112233", "recipient": "+972501234567",
             "text": "This is a sample message", "received_at": "2021-12-03T16:38:00+02:00"},
            {"sender": "05********", "recipient": "05********",
             "text": "This is a test message", "received_at": "2021-12-03T12:33:00+02:00"},
        ]},
    ),
    "listBlacklist": (
        f"<blacklist>{USER}<from>18/11/26 00:00</from><to>24/11/26 23:59</to></blacklist>",
        "<blacklist>\n<status>0</status>\n<message></message>\n<transactions>\n<transaction>\n"
        "<phone>529999999</phone>\n<date>03/12/21 16:38</date>\n</transaction>\n<transaction>\n"
        "<phone>5********</phone>\n<date>03/07/21 12:33</date>\n</transaction>\n"
        "</transactions>\n</blacklist>",
        200, {"data": [
            {"phone": "+972529999999", "added_at": "2021-12-03T16:38:00+02:00"},
            {"phone": "5********", "added_at": "2021-07-03T12:33:00+03:00"},
        ]},
    ),
    "removeFromBlacklist": (
        f"<rmNumBL>{USER}<phones><phone>0501234567</phone><phone>0527654321</phone></phones>"
        "<reason>The customer asked by phone to receive messages again.</reason></rmNumBL>",
        "<status>944</status>\n<message>1 phone numbers Successfully deleted , "
        "1 Phone numbers not exist in blacklist</message>",
        200, {"removed": 1, "not_found": 1},
    ),
    "createSubscriber": (
        f"<addSub>{USER}<userDetails><name>Israel Israeli</name><username>israelisraeli</username>"
        "<password>s3cret-pass</password><source>0501234567</source><amount>700</amount>"
        "</userDetails></addSub>",
        "<addSub>\n<status>0</status>\n<message>The user was created successfully</message>\n"
        "</addSub>",
        201, {"username": "israelisraeli", "name": "Israel Israeli", "credits": 700},
    ),
    "listSubscribers": (
        f"<getBlanceSubs>{USER}</getBlanceSubs>",
        "<getBlanceSubs>\n<status>0</status>\n<message></message>\n<balances> <balance>\n"
        "<amount>80</amount>\n<sms_user_id>xxx</sms_user_id>\n<name>name1</name>\n"
        "</balance> <balance>\n<amount>50</amount>\n<sms_user_id>xxx</sms_user_id>\n"
        "<name> name2</name>\n</balance> </balances>\n</getBlanceSubs>",
        200, {"data": [{"id": "xxx", "name": "name1", "credits": 80},
                       {"id": "xxx", "name": "name2", "credits": 50}]},
    ),
    "transferSubscriberCredits": (
        f"<updateAmountSub>{USER}<userDetails><username>israelisraeli</username>"
        "<password>s3cret-pass</password><amount>500</amount></userDetails></updateAmountSub>",
        "<updateAmountSub>\n<status>0</status>\n<message>Wallet successfully updated</message>\n"
        "</updateAmountSub>",
        200, {"username": "israelisraeli", "credits": 500},
    ),
    "createContactList": (
        f"<newCL>{USER}<cl><name>Haifa customers</name><destinations><destination>"
        "<phone>0501234567</phone><df1>Israel</df1><df2>Israeli</df2><df3>Haifa</df3>"
        "</destination><destination><phone>0527654321</phone></destination></destinations>"
        "</cl></newCL>",
        "<newCL>\n<status>0</status>\n<message>conact list successfully created</message>\n"
        "<errors>\n<error>The phone is too long or too short or contain characters and therefore "
        "not added</error>\n</errors>\n<identifiers>\n<identifier>17419</identifier>\n"
        "</identifiers>\n</newCL>",
        201, {"id": "17419", "name": "Haifa customers", "rejected": [
            {"reason": "The phone is too long or too short or contain characters and therefore "
                       "not added"}]},
    ),
    "listContactLists": (
        f"<getCL>{USER}</getCL>",
        "<getCL>\n<status>0</status>\n<message></message>\n<contact_lists>\n<contact_list>\n"
        "<cl_id>21518</cl_id>\n<phone>501234567</phone>\n<name>name1</name>\n</contact_list>\n"
        "<contact_list>\n<cl_id>21518</cl_id>\n<phone>0527654321</phone>\n<name>name1</name>\n"
        "</contact_list>\n<contact_list>\n<cl_id>21500</cl_id>\n<phone>05xxxxxxxx</phone>\n"
        "<name>name2</name>\n</contact_list>\n</contact_lists>\n</getCL>",
        200, {"data": [
            {"id": "21518", "name": "name1",
             "contacts": [{"phone": "+972501234567"}, {"phone": "+972527654321"}]},
            {"id": "21500", "name": "name2", "contacts": [{"phone": "05xxxxxxxx"}]},
        ]},
    ),
    "getContactList": (
        f"<getCLbyID>{USER}<cl><id>21518</id></cl></getCLbyID>",
        "<getCLbyID>\n<status>0</status>\n<message></message>\n<contact_lists>\n<contact_list>\n"
        "<phone>5xxxxxxxx</phone>\n<name>name1</name>\n</contact_list>\n<contact_list>\n"
        "<phone>0501234567</phone>\n<name>name1</name>\n</contact_list>\n</contact_lists>\n"
        "</getCLbyID>",
        200, {"id": "21518", "name": "name1",
              "contacts": [{"phone": "5xxxxxxxx"}, {"phone": "+972501234567"}]},
    ),
    "deleteContactList": (
        f"<removeCL>{USER}<cl><id>21518</id></cl></removeCL>",
        "<removeCL>\n<status>0</status>\n<message>contact list successfully removed</message>\n"
        "<errors>\n<error>contact list id: 21500 does not exist and therefore not removed</error>\n"
        "</errors>\n</removeCL>",
        204, None,
    ),
    "addContacts": (
        f"<addNumCL>{USER}<cl><id>21518</id><destinations><destination><phone>0541234567</phone>"
        "<df1>Dana</df1><df2>Levi</df2><df3>Haifa</df3></destination></destinations></cl>"
        "</addNumCL>",
        "<addNumCL><status>0</status><message>Successfully added phone numbers</message>"
        "<errors/></addNumCL>",
        200, {"rejected": []},
    ),
    "removeContact": (
        f"<rmNumCL>{USER}<cl><id>21518</id><destinations><phone>0501234567</phone>"
        "</destinations></cl></rmNumCL>",
        "<rmNumCL>\n<status>0</status>\n<message>Successfully deleted phone numbers</message>\n"
        "<errors>\n<error>contact list id: 21500 does not exist and therefore not removed</error>\n"
        "</errors>\n</rmNumCL>",
        204, None,
    ),
    "removeContacts": (
        f"<rmNumCL>{USER}<cl><id>21518</id><destinations><phone>0501234567</phone>"
        "<phone>0527654321</phone></destinations></cl></rmNumCL>",
        "<rmNumCL>\n<status>0</status>\n<message>Successfully deleted phone numbers</message>\n"
        "<errors>\n<error>phone 0527654321 does not exist in contact list id: 21518 and "
        "therefore not removed</error>\n</errors>\n</rmNumCL>",
        200, {"rejected": [{"reason": "phone 0527654321 does not exist in contact list id: 21518 "
                                      "and therefore not removed"}]},
    ),
    "verifySenderIds": (
        f"<verify_phone>{USER}<phone>0501234567</phone><phone>048123456</phone></verify_phone>",
        '<verify_phone>\n<status>0</status>\n<verify_message>\nverification link will be send '
        "to 0501234567\nin order to complete the verification of 048123456 call to 0501234567\n"
        "</verify_message>\n</verify_phone>",
        202, {"instructions": "verification link will be send to 0501234567\nin order to "
                              "complete the verification of 048123456 call to 0501234567"},
    ),
}

SPEC = load_spec()


def example_request(op_id: str) -> tuple[str, str, Any]:
    """Method, URL and JSON body of the spec's example for an operation."""
    op = load_table().operation(op_id)
    call = example(op)
    query = [(name, str(v)) for name, value in call.query.items()
             for v in (value if isinstance(value, list) else [value])]
    return call.method, call.url(op) + ("?" + urlencode(query) if query else ""), call.body


def client_for(recorder: Recorder) -> TestClient:
    app = create_app(transport=httpx.MockTransport(recorder), clock=lambda: NOW)
    return TestClient(app, headers={"Authorization": BASIC})


@pytest.mark.parametrize("op_id", sorted(CASES))
def test_operation_example_becomes_the_envelope_and_the_answer_becomes_json(op_id):
    envelope, answer, status, expected = CASES[op_id]
    recorder = Recorder((DECL + answer).encode())
    method, url, body = example_request(op_id)
    with client_for(recorder) as client:
        response = client.request(method, url, json=body)
    assert recorder.envelope == envelope
    assert response.status_code == status, response.text
    if expected is None:
        assert response.content == b""
    else:
        assert response.json() == expected


def test_every_operation_has_a_case():
    """Every operation of the table but the computed ones (they send no envelope of their own:
    tests/test_preview.py has their reads); the proxy's own are tests/test_webhooks.py's and
    tests/test_guard.py's (GET /v1/limits)."""
    computed = {op.operation_id for op in load_table().operations if op.compute is not None}
    assert computed and set(CASES) == {op["operationId"] for item in SPEC["paths"].values()
                                       for op in item.values()
                                       if isinstance(op, dict) and "x-smsleads-command" in op
                                       } - computed


def test_reports_without_external_id_use_dlrbydate():
    recorder = Recorder((DECL + "<dlrByDate><status>0</status><transactions/></dlrByDate>").encode())
    with client_for(recorder) as client:
        response = client.get("/v1/reports/dlr", params={
            "from": "2026-11-20T00:00:00+02:00", "to": "2026-11-25T00:00:00+02:00"})
    assert response.json() == {"data": []}
    assert recorder.envelope == (
        f"<dlrByDate>{USER}<transactions><external_id>null</external_id></transactions>"
        "<from>20/11/26 00:00</from><to>25/11/26 00:00</to></dlrByDate>")


def test_created_contact_list_has_a_location():
    _, answer, _, _ = CASES["createContactList"]
    _, url, body = example_request("createContactList")
    with client_for(Recorder((DECL + answer).encode())) as client:
        response = client.post(url, json=body)
    assert response.headers["location"] == "/v1/contact-lists/17419"


@pytest.mark.parametrize("slug, url, error", [
    ("contact-list-not-found", "/v1/contact-lists/21500",
     "contact list id: 21500 does not exist and therefore not removed"),
    ("contact-list-not-found", "/v1/contact-lists/21500/contacts/0501234567",
     "contact list id: 21500 does not exist and therefore not removed"),
    ("contact-not-found", "/v1/contact-lists/21518/contacts/0501234567",
     "phone 0501234567 does not exist in contact list id: 21518 and therefore not removed"),
])
def test_a_single_id_delete_whose_errors_name_the_id_is_a_404(slug, url, error):
    answer = (f"{DECL}<x><status>0</status><message>done</message><errors><error>{error}</error>"
              "</errors></x>")
    with client_for(Recorder(answer.encode())) as client:
        response = client.delete(url)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"/problems/{slug}"  # as when the upstream says 988 itself
    assert "upstream_status" not in problem  # the upstream answered 0: it read the error
    assert problem["upstream_message"] == error


def test_an_error_naming_a_longer_id_is_not_a_404():
    answer = (f"{DECL}<x><status>0</status><errors><error>contact list id: 215000 does not exist"
              "</error></errors></x>")
    with client_for(Recorder(answer.encode())) as client:
        assert client.delete("/v1/contact-lists/21500").status_code == 204


def test_adding_contacts_to_an_unknown_list_is_a_404():
    answer = (f"{DECL}<addNumCL><status>0</status><errors><error>contact list id: 77 does not exist"
              " and therefore not added</error></errors></addNumCL>")
    with client_for(Recorder(answer.encode())) as client:
        response = client.post("/v1/contact-lists/77/contacts",
                               json={"contacts": [{"phone": "0501234567"}]})
    assert response.status_code == 404


def test_a_window_of_twenty_days_is_asked_a_week_at_a_time_until_now():
    recorder = Recorder((DECL + "<incoming><status>0</status><transactions/></incoming>").encode())
    with client_for(recorder) as client:
        response = client.get("/v1/incoming-messages",
                              params={"from": "2026-11-05T00:00:00+02:00"})
    assert response.status_code == 200
    assert response.json() == {"data": []}  # no more pages: no cursor, no Link
    assert "link" not in response.headers
    windows = [re.findall(r"<(?:from|to)>([^<]+)<", request.content.decode())
               for request in recorder.requests]
    # `to` includes its minute (docs/upstream-protocol.md#report-windows): the next call
    # starts a minute later; the last ends now (NOW, 12:00 on the 25th).
    assert windows == [["05/11/26 00:00", "12/11/26 00:00"], ["12/11/26 00:01", "19/11/26 00:01"],
                       ["19/11/26 00:02", "25/11/26 12:00"]]


def test_a_walk_that_outlives_the_upstreams_year_reads_on_from_its_edge():
    """The upstream refuses a window starting more than 365 days back: a walk begun at that
    edge and continued a day later asks from the new edge, not from where it stood."""
    clock = Clock(NOW)
    edge = NOW - timedelta(days=365) + timedelta(minutes=1)
    rows = "".join(f"<transaction><phone>5212345{n}</phone><date>{edge:%d/%m/%y %H:%M}</date>"
                   "</transaction>" for n in (10, 11))
    recorder = Recorder((DECL + f"<blacklist><status>0</status><transactions>{rows}"
                         "</transactions></blacklist>").encode())
    app = create_app(transport=httpx.MockTransport(recorder), clock=clock)
    query = {"from": edge.isoformat(), "limit": 1}
    with TestClient(app, headers={"Authorization": BASIC}) as client:
        first = client.get("/v1/blacklist", params=query).json()
        clock.advance(days=1)
        second = client.get("/v1/blacklist", params={**query, "cursor": first["next_cursor"]})
    assert second.status_code == 200, second.text
    asked = re.search(r"<from>([^<]+)</from>", recorder.envelope)
    assert asked is not None
    assert asked.group(1) == f"{edge + timedelta(days=1):%d/%m/%y %H:%M}"
