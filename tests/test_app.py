"""What a client sees for every kind of bad request, and for upstream failures."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.mapping import load_table
from proxy.settings import Settings
from tests.conftest import BASIC, NOW, Recorder

BALANCE = (b'<?xml version="1.0" encoding="utf-8"?>\n'
           b"<balance><status>0</status><message>Your balance is:7</message><balance>7</balance></balance>")
SENT = (b'<?xml version="1.0" encoding="utf-8"?>\n'
        b"<sms><status>0</status><message>SMS will be sent</message><shipment_id>9</shipment_id></sms>")
MESSAGE = {"sender": "DemoAPI", "recipients": [{"phone": "0501234567"}], "text": "hi"}


def client_for(recorder: Recorder, settings: Settings | None = None, **headers: str) -> TestClient:
    app = create_app(settings, transport=httpx.MockTransport(recorder), clock=lambda: NOW)
    return TestClient(app, headers=headers or {"Authorization": BASIC})


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"/problems/{slug}"
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    return problem


# ── Authentication ───────────────────────────────────────────────────────────────────────────


def test_basic_credentials_become_username_and_bearer_token():
    recorder = Recorder(BALANCE)
    with client_for(recorder) as client:
        assert client.get("/v1/balance").json() == {"credits": 7}
    assert recorder.requests[0].headers["authorization"] == "Bearer demo-token"
    assert "<username>demo</username>" in recorder.envelope


def test_bearer_token_with_username_header():
    recorder = Recorder(BALANCE)
    with client_for(recorder, Authorization="Bearer tok.en-1") as client:
        # RFC 9110 headers are bytes; a UTF-8 username arrives as such.
        response = client.get("/v1/balance", headers={"X-SMSLeads-Username": "דני".encode()})
        assert response.status_code == 200
    assert recorder.requests[0].headers["authorization"] == "Bearer tok.en-1"
    assert "<username>דני</username>" in recorder.envelope


@pytest.mark.parametrize("header", [
    None, "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Bearer abc",
    "Digest x", "Basic " + base64.b64encode(b"demo:bad token").decode(),
    "Basic " + base64.b64encode(b":demo-token").decode(),
    "Basic " + base64.b64encode(b"demo:").decode(),  # an empty token
    "Token demo-token-xyz1234", "demo-token-xyz1234",  # an unknown scheme, a bare token
])
def test_missing_or_malformed_credentials_are_401_before_any_upstream_call(header):
    recorder = Recorder(BALANCE)
    app = create_app(transport=httpx.MockTransport(recorder))
    with TestClient(app) as client:
        response = client.get("/v1/balance", headers={"Authorization": header} if header else {})
    problem = assert_problem(response, 401, "unauthorized")
    assert "Basic" in response.headers["www-authenticate"]
    assert recorder.requests == []
    assert "demo-token" not in json.dumps(problem)  # no credential byte is ever quoted


def test_upstream_credential_errors_are_401_with_the_raw_code():
    answer = b"<balance><status>3</status><message>Username or password is incorrect</message></balance>"
    with client_for(Recorder(answer)) as client:
        problem = assert_problem(client.get("/v1/balance"), 401, "invalid-credentials")
    assert problem["upstream_status"] == 3
    assert problem["upstream_message"] == "Username or password is incorrect"


# ── Bad requests ─────────────────────────────────────────────────────────────────────────────


def test_malformed_json_is_400():
    with client_for(Recorder(SENT)) as client:
        response = client.post("/v1/messages", content=b'{"sender": ',
                               headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "malformed-request")


@pytest.mark.parametrize("body", [b'{"text": "\xff"}', b'{"a": NaN}', b"[" * 100_000])
def test_invalid_utf8_constants_and_deep_nesting_are_400(body):
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        response = client.post("/v1/messages", content=body,
                               headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "malformed-request")
    assert recorder.requests == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "",
                                          "application/json; charset=latin-1"])
def test_a_body_that_is_not_json_is_415(content_type):
    with client_for(Recorder(SENT)) as client:
        response = client.post("/v1/messages", content=json.dumps(MESSAGE),
                               headers={"Content-Type": content_type})
    assert_problem(response, 415, "unsupported-media-type")


def test_a_body_over_the_limit_is_413():
    recorder = Recorder(SENT)
    with client_for(recorder, Settings(max_body_bytes=1000)) as client:
        big = dict(MESSAGE, text="x" * 2000)
        assert_problem(client.post("/v1/messages", json=big), 413, "payload-too-large")

        def chunks():  # no Content-Length: the proxy stops reading at the limit
            yield b'{"text": "'
            for _ in range(100):
                yield b"x" * 100

        response = client.post("/v1/messages", content=chunks(),
                               headers={"Content-Type": "application/json"})
        assert_problem(response, 413, "payload-too-large")
    assert recorder.requests == []


def test_a_concrete_path_is_not_taken_for_a_template_it_fits():
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        response = client.delete("/v1/contact-lists/17/contacts/removals")
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == "POST"
    assert recorder.requests == []


def test_unknown_route_is_404_and_wrong_method_is_405():
    with client_for(Recorder(SENT)) as client:
        assert_problem(client.get("/v1/nothing"), 404, "not-found")
        response = client.delete("/v1/balance")
        assert_problem(response, 405, "method-not-allowed")
        assert "GET" in response.headers["allow"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/messages/"), ("GET", "/v1/balance/"), ("GET", "/v1/contact-lists/17/"),
    ("GET", "/docs/"),
])
def test_a_trailing_slash_is_404_naming_the_resource_never_a_redirect(method, path):
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        response = client.request(method, path, json=MESSAGE, follow_redirects=False,
                                  headers={"Host": "attacker.example"})
    problem = assert_problem(response, 404, "not-found")
    assert problem["detail"] == f"no resource at {path}; the resource is {path.rstrip('/')}"
    assert "location" not in response.headers
    assert recorder.requests == []


@pytest.mark.parametrize(("path", "allow"), [
    ("/v1/contact-lists", "GET, HEAD, POST"),      # two operations, two routes
    ("/v1/contact-lists/17", "DELETE, GET, HEAD"),
    ("/v1/subscribers", "GET, HEAD, POST"),
    ("/v1/contact-lists/17/contacts/removals", "POST"),  # not DELETE .../contacts/{phone}
])
def test_a_405_allows_every_method_of_the_path(path, allow):
    with client_for(Recorder(SENT)) as client:
        response = client.patch(path)
    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"] == allow


def test_unknown_fields_are_refused_with_a_pointer_each():
    with client_for(Recorder(SENT)) as client:
        response = client.post("/v1/messages", json=dict(MESSAGE, colour="red", txt="x"))
    problem = assert_problem(response, 422, "invalid-request")
    assert {e["pointer"] for e in problem["errors"]} == {"/body/colour", "/body/txt"}


def test_every_bad_field_is_named():
    body = {"sender": "way too long a sender", "text": "",
            "recipients": [{"phone": "0501234567"}, {"phone": "12345"}, {"phone": "+14155550123"}],
            "send_at": "2026-12-01T10:00:00"}
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        problem = assert_problem(client.post("/v1/messages", json=body), 422, "invalid-request")
    pointers = {e["pointer"] for e in problem["errors"]}
    assert {"/body/sender", "/body/text", "/body/send_at"} <= pointers
    assert recorder.requests == []


def test_phones_that_pass_the_schema_but_not_the_converter_are_named():
    body = dict(MESSAGE, recipients=[{"phone": "0501234567"}, {"phone": "+1 415 555 0123"},
                                     {"phone": "0312345678"}])
    with client_for(Recorder(SENT)) as client:
        problem = assert_problem(client.post("/v1/messages", json=body), 422, "invalid-request")
    assert [e["pointer"] for e in problem["errors"]] == [
        "/body/recipients/1/phone", "/body/recipients/2/phone"]


def test_a_date_time_without_offset_is_422():
    with client_for(Recorder(SENT)) as client:
        response = client.post("/v1/messages", json=dict(MESSAGE, send_at="2026-12-01T10:00:00"))
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"][0]["pointer"] == "/body/send_at"


def test_a_leap_second_is_refused_by_the_reference_date_time_check():
    # The fast validator alone would take 23:59:60; formats are jsonschema's in both.
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        response = client.post("/v1/messages", json=dict(MESSAGE, send_at="2026-12-31T23:59:60Z"))
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"] == [{"pointer": "/body/send_at",
                                  "detail": "'2026-12-31T23:59:60Z' is not a date-time with an offset "
                                  "(RFC 3339) from 2001 to 2067"}]
    assert recorder.requests == []


def test_either_recipients_or_contact_lists_are_needed():
    with client_for(Recorder(SENT)) as client:
        response = client.post("/v1/messages", json={"sender": "DemoAPI", "text": "hi"})
    problem = assert_problem(response, 422, "invalid-request")
    assert "recipients" in problem["errors"][0]["detail"]


# A window longer than 7 days is no error: it is read a week at a time (test_operations.py).
@pytest.mark.parametrize("query, pointer", [
    ({"from": "2026-11-20T00:00:00+02:00", "to": "2026-11-19T00:00:00+02:00"}, "/query/to"),
    ({"from": "2026-11-26T00:00:00+02:00"}, "/query/to"),  # from after now, the default to
    ({"from": "2025-01-01T00:00:00+02:00", "to": "2025-01-02T00:00:00+02:00"}, "/query/from"),
    ({"from": "yesterday", "to": "2026-11-20T00:00:00+02:00"}, "/query/from"),
    ({"from": "2026-11-20T00:00:00+02:00", "to": "2026-11-21T00:00:00+02:00", "x": "1"}, "/query/x"),
])
def test_report_windows_follow_the_documents_rules(query, pointer):
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        problem = assert_problem(client.get("/v1/reports/dlr", params=query), 422, "invalid-request")
    assert pointer in {e["pointer"] for e in problem["errors"]}
    assert recorder.requests == []


def test_a_plus_sign_left_unencoded_in_a_query_still_reads_as_an_offset():
    answer = b"<incoming><status>0</status><transactions/></incoming>"
    recorder = Recorder(answer)
    with client_for(recorder) as client:
        response = client.get(
            "/v1/incoming-messages?from=2026-11-20T00:00:00+02:00&to=2026-11-21T00:00:00+02:00")
    assert response.status_code == 200, response.text
    assert "<from>20/11/26 00:00</from>" in recorder.envelope


@pytest.mark.parametrize(("start", "end"), [
    ("2026-11-20T00:00:00.5%2B0200", "2026-11-20T22:00:00-0000"),  # strftime's %z
    ("2026-11-20T00:00:00+0200", "2026-11-21T00:00:00+02:00"),      # ... with "+" unencoded
])
def test_a_query_date_time_with_a_basic_offset_reads_as_rfc_3339(start, end):
    recorder = Recorder(b"<incoming><status>0</status><transactions/></incoming>")
    with client_for(recorder) as client:
        response = client.get(f"/v1/incoming-messages?from={start}&to={end}")
    assert response.status_code == 200, response.text
    assert "<from>20/11/26 00:00</from><to>21/11/26 00:00</to>" in recorder.envelope


@pytest.mark.parametrize("text", ['<b>&amp;"\'</b> ]]> & < >', "שלום 😀 עולם", "line\nbreak\ttab"])
def test_xml_metacharacters_hebrew_and_emoji_arrive_intact(text):
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        body = dict(MESSAGE, text=text, sender="Shop 1",
                    recipients=[{"phone": "0501234567", "external_id": text}])
        assert client.post("/v1/messages", json=body).status_code == 202
    from lxml import etree
    sent = etree.fromstring(recorder.requests[0].content)
    assert sent.findtext("message") == text
    assert sent.find("destinations/phone").get("id") == text


@pytest.mark.parametrize("text", ["nul\x00byte", "bell\x07", "esc\x1b[0m"])
def test_control_characters_xml_cannot_carry_are_422(text):
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        response = client.post("/v1/messages", json=dict(MESSAGE, text=text))
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"][0]["pointer"] == "/body/text"
    assert recorder.requests == []


# ── Upstream failures ────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("answer, status, slug", [
    (b"<sms><status>4</status><message>Not enough credit, Purchase Now.</message></sms>",
     402, "insufficient-credit"),
    (b"<sms><status>988</status><message>x</message></sms>", 404, "contact-list-not-found"),
    (b"<sms><status>8</status><message>x</message></sms>", 422, "all-recipients-blacklisted"),
    (b"<sms><status>4321</status><message>new</message></sms>", 502, "upstream-unknown-status"),
    (b"<html>Bad gateway</html>", 502, "upstream-bad-answer"),
    (b"", 502, "upstream-bad-answer"),
])
def test_upstream_refusals_and_garbage_become_problems(answer, status, slug):
    with client_for(Recorder(answer)) as client:
        assert_problem(client.post("/v1/messages", json=MESSAGE), status, slug)


@pytest.mark.parametrize("fault, status, slug", [
    (httpx.ConnectError("refused"), 503, "upstream-unreachable"),
    (httpx.ReadTimeout("slow"), 504, "upstream-timeout"),
    (httpx.RemoteProtocolError("peer closed"), 502, "upstream-bad-answer"),
])
def test_transport_failures_become_problems(fault, status, slug):
    def broken(request: httpx.Request) -> httpx.Response:
        raise fault

    with client_for(Recorder(broken)) as client:
        assert_problem(client.get("/v1/balance"), status, slug)


def test_the_spec_is_served_as_yaml_and_json():
    with client_for(Recorder(SENT)) as client:
        as_json = client.get("/openapi.json").json()
        as_yaml = client.get("/openapi.yaml")
    assert as_json["openapi"].startswith("3.1")
    assert as_yaml.headers["content-type"].startswith("application/yaml")
    assert b"operationId: sendMessage" in as_yaml.content


def test_the_served_window_examples_are_yesterday_and_work_whatever_the_date():
    """The file's example window would be more than 365 days back a year on: served, it is
    the day before the proxy started, so a client trying the examples gets an answer."""
    later = NOW.replace(year=2031)
    recorder = Recorder(b"<incoming><status>0</status><transactions/></incoming>")
    app = create_app(transport=httpx.MockTransport(recorder), clock=lambda: later)
    with TestClient(app, headers={"Authorization": BASIC}) as client:
        spec = client.get("/openapi.json").json()
        as_yaml = client.get("/openapi.yaml").text
        window = {name: spec["components"]["parameters"][name]["example"]
                  for name in ("From", "To")}
        answer = client.get("/v1/incoming-messages",
                            params={"from": window["From"], "to": window["To"]})
    assert window == {"From": "2031-11-24T00:00:00+00:00", "To": "2031-11-25T00:00:00+00:00"}
    assert answer.status_code == 200, answer.text
    assert "example: '2031-11-24T00:00:00+00:00'" in as_yaml
    assert "# ── Problems" in as_yaml  # the file as written, comments and all


@pytest.mark.parametrize("url, body", [
    ("/v1/balance", None),
    ("/v1/contact-lists", {"name": "x", "contacts": []}),
])
def test_an_answer_without_what_the_spec_promises_is_502(url, body):
    answer = b"<x><status>0</status><message>ok</message></x>"
    with client_for(Recorder(answer)) as client:
        response = client.post(url, json=body) if body else client.get(url)
    problem = assert_problem(response, 502, "upstream-bad-answer")
    assert problem["upstream_status"] == 0


STATUS_CODES = sorted(load_table().statuses.codes)


@pytest.mark.parametrize("code", STATUS_CODES)
def test_every_upstream_status_code_reaches_the_client_as_the_table_says(code):
    statuses = load_table().statuses
    answer = f"<balance><status>{code}</status><message>m{code}</message><balance>5</balance></balance>"
    with client_for(Recorder(answer.encode())) as client:
        response = client.get("/v1/balance")
    if code in statuses.success:
        assert response.status_code == 200 and response.json() == {"credits": 5}
        return
    refusal = statuses.codes[code]
    problem = assert_problem(response, refusal.http, refusal.slug)
    assert (problem["upstream_status"], problem["upstream_message"]) == (code, f"m{code}")
    assert problem["title"] == refusal.title
    if refusal.retry_after is not None:
        assert response.headers["retry-after"] == str(refusal.retry_after)


@pytest.mark.parametrize(("query", "pointer"), [
    ("to=0001-01-01T00:00:00%2B01:00", "/query/to"),         # no day before it for `from`
    ("from=2404-08-06T00:00:00Z&to=2404-08-07T00:00:00Z", "/query/from"),  # not "06/08/04"
])
def test_a_window_two_digit_years_cannot_carry_is_a_422(query, pointer):
    recorder = Recorder(b"<incoming><status>0</status><transactions/></incoming>")
    with client_for(recorder) as client:
        problem = assert_problem(client.get(f"/v1/incoming-messages?{query}"), 422,
                                 "invalid-request")
    assert pointer in {e["pointer"] for e in problem["errors"]}
    assert recorder.requests == []


def test_report_window_defaults_to_the_last_day():
    recorder = Recorder(b"<incoming><status>0</status><transactions/></incoming>")
    with client_for(recorder) as client:
        assert client.get("/v1/incoming-messages").status_code == 200
        assert "<from>24/11/26 12:00</from><to>25/11/26 12:00</to>" in recorder.envelope
        assert client.get("/v1/incoming-messages", params={
            "to": "2026-11-20T10:00:00+02:00"}).status_code == 200
        assert "<from>19/11/26 10:00</from><to>20/11/26 10:00</to>" in recorder.envelope



def test_each_missing_field_is_named_once():
    with client_for(Recorder(SENT)) as client:
        problem = assert_problem(client.post("/v1/messages", json={}), 422, "invalid-request")
    pointers = [e["pointer"] for e in problem["errors"]]
    assert len(pointers) == len(set(pointers))
    assert {"/body/sender", "/body/text", "/body"} <= set(pointers)
