"""Hostile input, from clients and from the upstream: refused cleanly, never a 500, never
expanded, never echoed in bulk, never more read than the limits allow.

Complements tests/test_app.py (malformed JSON, 413 with and without Content-Length, NaN,
``[`` * 100,000, control characters in the text) and tests/test_upstream.py (DTDs refused
by the answer parser).
"""

from __future__ import annotations

import base64
import gc
import json
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from lxml import etree
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bench.attacks import filled
from proxy.app import create_app
from proxy.errors import MAX_FIELD_ERRORS, MalformedRequest, ProblemError
from proxy.mapping import Operation
from proxy.settings import Settings
from tests.conftest import (
    BASIC,
    FIGURES,
    NOW,
    Clock,
    FaultyUpstream,
    Recorder,
    deref,
    schema_leaves,
)
from tests.examples import OPERATIONS, SPEC, example
from tests.test_app import assert_problem

SENT = b"<sms><status>0</status><message>SMS will be sent</message><shipment_id>9</shipment_id></sms>"
MESSAGE = {"sender": "DemoAPI", "recipients": [{"phone": "0501234567"}], "text": "hi"}
SMALL_ANSWER = 2000  # bytes: a refusal names the problem, it does not echo the request


def client_for(recorder: Recorder, settings: Settings | None = None) -> TestClient:
    app = create_app(settings, transport=httpx.MockTransport(recorder), clock=lambda: NOW)
    return TestClient(app, headers={"Authorization": BASIC})


# ── Huge and deep JSON ───────────────────────────────────────────────────────────────────────


def test_10001_recipients_are_refused_naming_the_limit_without_checking_each():
    recorder = Recorder(SENT)
    body = dict(MESSAGE, recipients=[{"phone": "not a phone"}] * 10_001)
    with client_for(recorder) as client:
        response = client.post("/v1/messages", json=body)
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"] == [{"pointer": "/body/recipients",
                                  "detail": "has 10001 items; at most 10000 allowed"}]
    assert len(response.content) < SMALL_ANSWER
    assert recorder.requests == []


LIMIT = 8 * 1024 * 1024  # the default body limit


SEPARATORS = ("the body holds more than 100,000 commas and opening brackets outside strings; "
              "no request needs that many")
OBJECTS = "the body holds more than 20,000 JSON objects; no request needs that many"


@pytest.mark.parametrize("body, detail", [
    (json.dumps(dict(MESSAGE, recipients=[{"phone": "not a phone"}] * 100_000)).encode(),
     SEPARATORS),
    (json.dumps(dict(MESSAGE, recipients=[{"phone": "x"}] * 30_000)).encode(), OBJECTS),
    (filled(LIMIT, b"[]"), SEPARATORS),      # 2.8 million lists: 1.5 s and the collector's walks
    (filled(LIMIT, b'"ab"'), SEPARATORS),    # 1.7 million strings
    (filled(LIMIT, b"null"), SEPARATORS),    # 1.7 million slots of one list
], ids=["100000-recipients", "30000-objects", "empty-arrays", "strings", "nulls"])
def test_a_body_of_more_values_than_any_request_needs_is_refused_before_it_is_built(body, detail):
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        tracemalloc.start()
        try:
            response = client.post("/v1/messages", content=body,
                                   headers={"Content-Type": "application/json"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert assert_problem(response, 413, "payload-too-large")["detail"] == detail
    assert recorder.requests == []
    # The values were never made: 2.8 million empty lists alone are 150 MB.
    assert peak < len(body) * 4 + 20 * 2**20


def test_separators_inside_strings_are_not_counted():
    """The largest contact list there can be, every field full of commas and brackets: parsed,
    not refused (its bytes hold 1.3 million separators, its structure 90,002)."""
    from proxy.body import parse_json

    contact = {"phone": "0501234567", "dynamic_fields": ['a "quoted", [b], {c}, \\, \\"'] * 6}
    body = {"name": "list", "contacts": [contact] * 10_000}
    assert parse_json(json.dumps(body).encode(), "application/json") == body
    unterminated = b'{"text": "' + b"[," * 100_000
    with pytest.raises(MalformedRequest):
        parse_json(unterminated, "application/json")


@pytest.mark.parametrize("collecting", [True, False])
def test_the_garbage_collector_is_as_it_was_after_a_parse(collecting):
    from proxy.body import parse_json

    (gc.enable if collecting else gc.disable)()
    try:
        for raw in (b'{"a": [1, 2]}', b'{"a": ', filled(LIMIT, b"[]")):
            with pytest.raises(ProblemError) if raw != b'{"a": [1, 2]}' else nullcontext():
                parse_json(raw, "application/json")
            assert gc.isenabled() == collecting
    finally:
        gc.enable()


def test_too_many_bulk_messages_and_too_many_recipients_in_one_are_both_named():
    bulk = {"messages": [dict(MESSAGE, recipients=[{"phone": "0501234567"}] * 10_001)]
            + [MESSAGE] * 1000}
    with client_for(Recorder(SENT)) as client:
        problem = assert_problem(client.post("/v1/messages/bulk", json=bulk), 422, "invalid-request")
    assert problem["errors"] == [
        {"pointer": "/body/messages", "detail": "has 1001 items; at most 1000 allowed"}]
    bulk = {"messages": [dict(MESSAGE, recipients=[{"phone": "0501234567"}] * 10_001)]}
    with client_for(Recorder(SENT)) as client:
        problem = assert_problem(client.post("/v1/messages/bulk", json=bulk), 422, "invalid-request")
    assert problem["errors"] == [{"pointer": "/body/messages/0/recipients",
                                  "detail": "has 10001 items; at most 10000 allowed"}]


def test_a_huge_string_is_refused_naming_the_limit_without_echoing_it():
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        response = client.post("/v1/messages", json=dict(MESSAGE, text="x" * 5_000_000))
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"] == [{"pointer": "/body/text",
                                  "detail": "is 5000000 characters long; at most 1005 allowed"}]
    assert len(response.content) < SMALL_ANSWER
    assert recorder.requests == []


def test_a_huge_value_of_the_wrong_type_is_not_echoed():
    with client_for(Recorder(SENT)) as client:
        response = client.post("/v1/messages", json=dict(MESSAGE, tag=["x" * 100_000]))
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"][0]["pointer"] == "/body/tag"
    assert "not of type 'string'" in problem["errors"][0]["detail"]
    assert len(response.content) < SMALL_ANSWER


def test_90000_unknown_fields_get_a_bounded_list_of_errors():
    body = dict(MESSAGE, **{f"k{i}": "v" for i in range(90_000)})  # as many as a body may hold
    with client_for(Recorder(SENT)) as client:
        response = client.post("/v1/messages", json=body)
    problem = assert_problem(response, 422, "invalid-request")
    assert len(problem["errors"]) == MAX_FIELD_ERRORS
    assert problem["detail"].endswith(f"; and more (the first {MAX_FIELD_ERRORS} are listed)")
    assert len(response.content) < 10_000


@pytest.mark.parametrize("body", [
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,                      # beyond the parser
    json.dumps(dict(MESSAGE, tag=json.loads("[" * 500 + "]" * 500))).encode(),  # parses
])
def test_deeply_nested_json_is_refused_with_a_small_problem(body):
    recorder = Recorder(SENT)
    with client_for(recorder) as client:
        response = client.post("/v1/messages", content=body,
                               headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == "application/problem+json"
    assert len(response.content) < SMALL_ANSWER
    assert recorder.requests == []


@pytest.mark.parametrize("raw", [
    b"\xc0\xaf",           # an overlong "/"
    b"\xed\xa0\x80",       # a UTF-16 surrogate encoded as UTF-8
    b"\xe2\x82",           # a sequence cut short
    b"\xf8\x88\x80\x80\x80",  # a 5-byte sequence
])
def test_invalid_utf8_anywhere_is_400(raw):
    recorder = Recorder(SENT)
    body = b'{"sender": "DemoAPI", "recipients": [{"phone": "0501234567"}], "text": "a' + raw + b'"}'
    with client_for(recorder) as client:
        response = client.post("/v1/messages", content=body,
                               headers={"Content-Type": "application/json"})
    assert_problem(response, 400, "malformed-request")
    assert recorder.requests == []


# ── The body limit, proven at the ASGI boundary ──────────────────────────────────────────────


async def call_asgi(app: Starlette, method: str, path: str, headers: list[tuple[bytes, bytes]],
                    chunks: Iterator[bytes] | None = None
                    ) -> tuple[int, dict[bytes, bytes], bytes, int]:
    """One request straight through ASGI, headers byte for byte as a lenient server might
    pass them; also how many body chunks the app pulled."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 50000), "server": ("proxy.test", 80)}
    pulled, sent = 0, []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        chunk = next(chunks, None) if chunks is not None else None
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body, pulled


JSON_HEADERS = [(b"authorization", BASIC.encode()), (b"content-type", b"application/json")]


async def test_a_body_over_the_limit_is_413_after_reading_just_past_the_limit():
    recorder = Recorder(SENT)
    app = create_app(Settings(max_body_bytes=1000), transport=httpx.MockTransport(recorder))
    endless = (b'{"text": "' if i == 0 else b"x" * 100 for i in range(100_000))  # 10 MB
    status, _, body, pulled = await call_asgi(app, "POST", "/v1/messages", JSON_HEADERS, endless)
    assert status == 413 and json.loads(body)["type"] == "/problems/payload-too-large"
    assert pulled <= 12  # 1000 bytes in 100-byte chunks, and the one that crossed the line
    declared = [*JSON_HEADERS, (b"content-length", b"10000000")]
    status, _, _, pulled = await call_asgi(app, "POST", "/v1/messages", declared, endless)
    assert status == 413 and pulled == 0  # refused on its declared length alone
    assert recorder.requests == []


# ── Header injection ─────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("headers, status", [
    ([(b"authorization", b"Bearer tok-1"), (b"x-smsleads-username", b"demo\r\nX-Injected: 1")], 401),
    ([(b"authorization", b"Bearer tok-1"), (b"x-smsleads-username", b"demo\nX-Injected: 1")], 401),
    ([(b"authorization", b"Bearer tok-1\r\nX-Injected: 1"), (b"x-smsleads-username", b"demo")], 401),
    ([(b"authorization", b"Basic " + base64.b64encode(b"de\r\nX-Injected: 1:tok"))], 401),
    ([(b"authorization", BASIC.encode()), (b"idempotency-key", b"k\r\nX-Injected: 1")], 400),
    ([(b"authorization", BASIC.encode()), (b"idempotency-key", b"k\x00")], 400),
])
async def test_cr_lf_and_nul_in_headers_are_refused_and_never_reflected(headers, status):
    recorder = Recorder(SENT)
    app = create_app(transport=httpx.MockTransport(recorder))
    code, answer_headers, body, _ = await call_asgi(
        app, "POST", "/v1/messages", [*headers, (b"content-type", b"application/json")],
        iter([json.dumps(MESSAGE).encode()]))
    assert code == status
    assert b"x-injected" not in answer_headers
    assert all(b"\r" not in v and b"\n" not in v for v in answer_headers.values())
    assert b"X-Injected" not in body
    assert recorder.requests == []


def test_an_id_from_the_upstream_cannot_inject_a_header_through_location():
    answer = (b"<newCL><status>0</status><identifiers>"
              b"<identifier>1&#13;&#10;Set-Cookie: session=stolen</identifier></identifiers></newCL>")
    with client_for(Recorder(answer)) as client:
        response = client.post("/v1/contact-lists", json={"name": "x"})
    assert response.status_code == 201
    assert "set-cookie" not in response.headers
    assert response.headers["location"] == "/v1/contact-lists/1%0D%0ASet-Cookie%3A%20session%3Dstolen"


# ── XML metacharacters, NUL and friends in every string field of every operation ────────────


def _string_fields(schema: Any, at: str) -> set[str]:
    """/body/recipients/*/phone ... for every string the schema accepts."""
    return {path for path, leaf in schema_leaves(SPEC, schema, at).items()
            if leaf.get("type") == "string"}


def _leaves(value: Any, at: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _leaves(item, f"{at}/{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{at}/{index}")
    elif isinstance(value, str):
        yield at, value


def _set(document: Any, pointer: str, value: str) -> Any:
    tokens = pointer.strip("/").split("/")
    node = document
    for token in tokens[:-1]:
        node = node[int(token)] if isinstance(node, list) else node[token]
    last = tokens[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return document


def _targets(op: Operation) -> Iterator[tuple[str, str]]:
    """(pointer, where) for each string field of the operation's example request."""
    call = example(op)
    if call.body is not None:
        for pointer, _ in _leaves(call.body, "/body"):
            yield pointer, "body"
    for name in call.path:
        yield f"/path/{name}", "path"
    for name, value in call.query.items():
        for index in range(len(value)) if isinstance(value, list) else [None]:
            yield f"/query/{name}" + ("" if index is None else f"/{index}"), "query"


def _send(client: TestClient, op: Operation, pointer: str, value: str) -> httpx.Response:
    call = example(op)
    body, path, query = json.loads(json.dumps(call.body)), dict(call.path), dict(call.query)
    where, _, rest = pointer[1:].partition("/")
    if where == "body":
        _set({"body": body}, pointer, value)
    elif where == "path":
        path[rest] = value
    else:
        name, _, index = rest.partition("/")
        query[name] = [*query[name][:int(index)], value, *query[name][int(index) + 1:]] if index else value
    url = op.path.format(**{k: quote(v, safe="") for k, v in path.items()})
    content = None if body is None else json.dumps(body)  # ASCII: lone surrogates as \ud800
    return client.request(op.method, url, params=query, content=content,
                          headers={"Content-Type": "application/json"} if content else {})


def _texts(envelope: etree._Element) -> list[str]:
    return [t for node in envelope.iter() for t in (node.text, *node.attrib.values()) if t]


METACHARACTERS = "<&>\"']]>"  # short enough for the shortest free-text field


def test_the_examples_cover_every_string_field_of_every_operation():
    for op in OPERATIONS:
        operation = SPEC["paths"][op.path][op.method.lower()]
        media = operation.get("requestBody", {}).get("content", {}).get("application/json")
        declared = _string_fields(media["schema"], "/body") if media else set()
        covered = {"/".join("*" if t.isdigit() else t for t in p.split("/"))
                   for p, where in _targets(op) if where == "body"}
        assert declared <= covered, (op.operation_id, declared - covered)


# Free-text fields, which must take the metacharacters and carry them to the upstream intact:
# without these counts the test below could pass by refusing everything.
MIN_ACCEPTED = {
    "sendMessage": 3,                # text, tag, external_id
    "createSubscriber": 3,           # name, username, password
    "createContactList": 4,          # name, dynamic fields
    "transferSubscriberCredits": 2,  # the username in the path, the password
    "removeFromBlacklist": 1,        # reason
    "listDeliveryReports": 2,        # external_id in the query, twice
    "previewMessage": 3,             # as sendMessage, priced without being sent
}


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.operation_id)
def test_xml_metacharacters_in_every_string_field_arrive_escaped_or_are_refused(op):
    accepted = 0
    recorder = Recorder(b"<x><status>0</status><balance>5</balance></x>")  # a preview reads it
    with client_for(recorder) as client:
        for pointer, _ in _targets(op):
            recorder.requests.clear()
            response = _send(client, op, pointer, METACHARACTERS)
            if op.compute is not None and response.status_code == 200:
                # Priced here (a preview): its envelope never goes out, only GET reads do.
                assert not any(b"<message>" in r.content for r in recorder.requests), pointer
                accepted += 1
                continue
            _check_metacharacters(response, recorder, pointer)
            accepted += bool(recorder.requests)
    assert accepted >= MIN_ACCEPTED.get(op.operation_id, 0)


def _check_metacharacters(response: httpx.Response, recorder: Recorder, pointer: str) -> None:
    assert response.status_code != 500, pointer
    if recorder.requests:  # it went out: the upstream parses it back to the same text
        # (last: a send naming contact lists reads them first, for the spend guard to count)
        assert METACHARACTERS in _texts(etree.fromstring(recorder.requests[-1].content)), pointer
    else:  # the field's rules refused it, naming the field
        problem = assert_problem(response, 422, "invalid-request")
        assert any(e["pointer"].startswith(pointer) for e in problem["errors"]), pointer


UNCARRIABLE = ["nul\x00", "esc\x1b[0m", "lone \ud800 surrogate", "non-character \ufffe"]


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: op.operation_id)
def test_characters_xml_cannot_carry_are_422_in_every_field(op):
    recorder = Recorder(b"<x><status>0</status></x>")
    with client_for(recorder) as client:
        for pointer, where in _targets(op):
            for value in UNCARRIABLE:
                if where != "body" and "\ud800" in value:
                    continue  # a URL cannot carry a lone surrogate at all
                response = _send(client, op, pointer, value)
                problem = assert_problem(response, 422, "invalid-request")
                assert any(e["pointer"].startswith(pointer) for e in problem["errors"]), (
                    pointer, value)
    assert recorder.requests == []


# ── From the upstream ────────────────────────────────────────────────────────────────────────


@pytest.fixture
def secret_file(tmp_path) -> str:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-MARKER")
    return path.as_uri()


@pytest.mark.parametrize("template", [
    # XXE: an external entity naming a local file
    '<?xml version="1.0"?><!DOCTYPE b [<!ENTITY x SYSTEM "{file}">]><balance><status>0</status><balance>&x;</balance></balance>',
    # a parameter entity pulling in an external DTD
    '<?xml version="1.0"?><!DOCTYPE b [<!ENTITY % p SYSTEM "{file}"> %p;]><balance><status>0</status><balance>7</balance></balance>',
    # billion laughs
    '<!DOCTYPE l [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">'
    '<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">]>'
    "<balance><status>0</status><balance>&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;</balance></balance>",
    # a DTD declared in UTF-16, where a byte search for "<!DOCTYPE" finds nothing
    "UTF16:<?xml version=\"1.0\" encoding=\"UTF-16\"?><!DOCTYPE b [<!ENTITY x SYSTEM \"{file}\">]><balance><status>0</status><balance>&x;</balance></balance>",
    # an entity used without any DTD
    "<balance><status>0</status><balance>&x;</balance></balance>",
    # XInclude, which a parser may resolve when asked
    '<balance xmlns:xi="http://www.w3.org/2001/XInclude"><status>0</status><balance><xi:include href="{file}" parse="text"/></balance></balance>',
], ids=["xxe", "parameter-entity", "billion-laughs", "utf16-dtd", "undeclared-entity", "xinclude"])
def test_entities_dtds_and_includes_in_an_answer_are_never_resolved(template, secret_file):
    text = template.replace("{file}", secret_file)
    answer = text[6:].encode("utf-16") if text.startswith("UTF16:") else text.encode()
    with client_for(Recorder(answer)) as client:
        response = client.get("/v1/balance")
    assert_problem(response, 502, "upstream-bad-answer")
    assert b"TOP-SECRET" not in response.content
    assert b"haha" not in response.content


def test_a_100_mb_answer_is_cut_off_at_the_limit_in_bounded_memory(faulty: FaultyUpstream):
    faulty.plan("big")
    limit = 1024 * 1024
    settings = Settings(upstream_url=faulty.url, max_answer_bytes=limit, breaker_failures=1000)
    app = create_app(settings, clock=Clock())
    with TestClient(app, headers={"Authorization": BASIC}) as client:
        tracemalloc.start()
        try:
            response = client.get("/v1/balance")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    problem = assert_problem(response, 502, "upstream-bad-answer")
    assert "larger than the proxy accepts" in problem["detail"]
    written = faulty.stats()["big_bytes"]
    # The server could push what the sockets buffer, then the proxy hung up: far from 100 MB.
    assert written < 40 * 1024 * 1024, written
    assert peak < 16 * limit, peak
    FIGURES.append(f"100 MB answer: the upstream got {written / 2**20:.1f} MiB out before the proxy "
          f"hung up at its {limit / 2**20:.0f} MiB limit; peak traced memory {peak / 2**20:.1f} MiB")



def test_200000_numbers_are_refused_before_the_body_is_built():
    with client_for(Recorder(SENT)) as client:
        response = client.post("/v1/messages", json=dict(MESSAGE, tag=list(range(200_000))))
    problem = assert_problem(response, 413, "payload-too-large")
    assert "more than 100,000 commas and opening brackets" in problem["detail"]


def test_a_text_that_would_make_a_backtracking_regex_quadratic_is_judged_in_linear_time():
    """The text pattern (no XML-illegal character, one non-space) backtracks for
    minutes in Python's re on a long text ending in a control character; the proxy judges
    it with jsonschema-rs's linear engine, and an over-long text by its length alone. Many
    such fields in one bulk stay bounded by the error cap."""
    texts = ["a" * 1004 + "\x01", "a" * 2_000_000 + "\x01"]
    bulk = {"messages": [dict(MESSAGE, text=texts[0])] * 200 + [dict(MESSAGE, text=texts[1])]}
    with client_for(Recorder(SENT)) as client:
        problem = assert_problem(client.post("/v1/messages/bulk", json=bulk), 422,
                                 "invalid-request")
    assert len(problem["errors"]) == MAX_FIELD_ERRORS
    assert {e["pointer"] for e in problem["errors"]} == {
        f"/body/messages/{i}/text" for i in range(MAX_FIELD_ERRORS)}


def test_a_bulk_cannot_carry_more_recipients_in_all_than_one_send():
    bulk = {"messages": [dict(MESSAGE, recipients=[{"phone": "0501234567"}] * 4000)] * 3}
    with client_for(Recorder(SENT)) as client:
        problem = assert_problem(client.post("/v1/messages/bulk", json=bulk), 422,
                                 "invalid-request")
    assert problem["errors"] == [{"pointer": "/body/messages/2/recipients",
                                  "detail": "makes 12000+ recipients in the request; at most "
                                            "10000 in all"}]


def test_every_operations_largest_body_is_within_the_parsers_limits():
    """MAX_OBJECTS and MAX_SEPARATORS refuse nothing the spec admits: the most objects, and the
    most separators (``{``, ``[`` and ``,``: what proxy/body.py counts), any request can hold."""
    from proxy.body import MAX_OBJECTS, MAX_SEPARATORS
    from proxy.docs import load_spec

    spec = load_spec()

    def most(schema: dict, capped: list[Counter[str]]) -> Counter[str]:
        """Objects and separators in the largest valid value; the arrays capped per request
        (x-max-items-per-request) count once, apart."""
        schema = deref(spec, schema)
        found: Counter[str] = Counter()
        if schema.get("type") == "object":
            assert schema.get("additionalProperties") is False, schema
            properties = schema.get("properties", {}).values()
            found.update(objects=1, separators=max(1, len(properties)))
            for sub in properties:
                found += most(sub, capped)
        elif schema.get("type") == "array":
            cap = schema.get("x-max-items-per-request")
            count = cap or schema["maxItems"]
            each = most(schema["items"], capped)
            total = Counter({kind: count * n for kind, n in each.items()})
            total.update(separators=count)
            if cap is None:
                found += total
            else:
                capped.append(total)
        return found

    largest = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                capped: list[Counter[str]] = []
                largest[(method, path)] = most(body["schema"], capped) + sum(capped, Counter())
    assert largest[("post", "/v1/messages/bulk")]["objects"] == 1 + 1000 + 10_000
    assert max(found["objects"] for found in largest.values()) <= MAX_OBJECTS
    assert largest[("post", "/v1/contact-lists")]["separators"] == 2 + 10_000 * (1 + 2 + 6)
    assert max(found["separators"] for found in largest.values()) <= MAX_SEPARATORS
