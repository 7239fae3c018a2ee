"""The table language: every word documented, used by mapping.yaml and doing what the header
says, shown end to end on a made-up upstream command set; and the recipe of CONTRIBUTING.md,
"Add an operation", followed once."""

from __future__ import annotations

import copy
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.convert import CONVERTER_FACTORIES, CONVERTERS
from proxy.docs import load_spec
from proxy.mapping import (
    ELEMENT_KEYS,
    EVENT_KEYS,
    FEED_KEYS,
    FIELD_KEYS,
    OPERATION_KEYS,
    PAGING_KEYS,
    TOP_KEYS,
    WINDOW_KEYS,
    load_table,
)
from proxy.settings import Settings
from tests.conftest import BASIC, NOW, Recorder

PROXY = Path(__file__).resolve().parents[1] / "proxy"
MAPPING = (PROXY / "mapping.yaml").read_text()
DECL = '<?xml version="1.0" encoding="utf-8"?>'


def _header() -> str:
    return "\n".join(line for line in MAPPING.splitlines() if line.startswith("#"))


def _used(data: Any, found: dict[str, set[str]], kind: str) -> None:
    """The words mapping.yaml uses, by where they stand (element, field, operation)."""
    if not isinstance(data, dict):
        return
    found.setdefault(kind, set()).update(data)
    for key, value in data.items():
        if kind == "operation" and key == "request":
            for element in value.values():
                _used(element, found, "element")
        elif kind == "operation" and key == "response":
            for field in value.values():
                _used(field, found, "field")
        elif kind == "operation" and key in ("window", "feed"):
            _used(value, found, key)
        elif kind == "element" and key in ("children", "attributes"):
            for element in value.values():
                _used(element, found, "element")
        elif kind == "field" and key == "fields":
            for field in value.values():
                _used(field, found, "field")


def test_every_word_of_the_language_is_documented_and_used_by_the_table():
    data = yaml.safe_load(MAPPING)
    found: dict[str, set[str]] = {"top": set(data), "paging": set(data["paging"]),
                                  "events": {key for event in data["events"].values()
                                             for key in event}}
    for element in data["envelope"].values():
        _used(element, found, "element")
    for operation in data["operations"].values():
        _used(operation, found, "operation")
    header = _header()
    for kind, words in (("top", TOP_KEYS), ("operation", OPERATION_KEYS),
                        ("element", ELEMENT_KEYS), ("field", FIELD_KEYS),
                        ("window", WINDOW_KEYS), ("paging", PAGING_KEYS), ("feed", FEED_KEYS),
                        ("events", EVENT_KEYS)):
        assert found[kind] == words, kind  # nothing accepted that the table never says
        for word in words:
            prefix = f"{kind}." if kind in ("window", "paging", "feed", "events") else ""
            assert re.search(rf"^#\s+{prefix}{word}[:,]", header, re.M), (kind, word)


# ── A made-up upstream: the engine drives commands it has never heard of ─────────────────────

TABLE: dict[str, Any] = {
    "readiness": {"probe": "listWidgets"},
    "paging": {"cursor": "/query/after", "limit": "/query/size", "default_limit": 2,
               "max_limit": 5},
    "answers": {"unclosed": ["ticket"]},
    "envelope": {"account": {"children": {"login": {"from": "/auth/username"}}}},
    "enums": {"colour": {"red": "1", "blue": ["2", "22"]}},
    "operations": {
        "orderWidgets": {
            "http": "POST /v1/shops/{shop}/orders",
            "command": [{"name": "rushOrder", "when": "/body/rush"}, {"name": "order"}],
            "success": 201,
            "location": "/v1/orders/{id}",
            "request": {
                "shop": {"from": "/path/shop"},
                "items": {"children": {"item": {
                    "each": "/body/items", "from": "/sku", "convert": "integer",
                    "attributes": {"colour": {"from": "/colour", "convert": {"enum": "colour"}}},
                }}},
                "tag": {"each": "/body/tags"},
                "note": {"from": "/body/note", "default": "none"},
                "deliver": {"from": "/body/deliver_at", "convert": "israel_time"},
            },
            "response": {
                "id": {"from": "ticket"},
                "shop": {"echo": "/path/shop"},
                "count": {"from": "message",
                          "convert": [{"match": r"(\d+) widgets?"}, "integer"]},
                "shade": {"from": "shade", "convert": {"enum": {"light": "L", "dark": "D"}}},
            },
        },
        "listWidgets": {
            "http": "GET /v1/widgets",
            "command": "widgets",
            "success": 200,
            "window": {"from": "/query/from", "to": "/query/to", "max_days": 2,
                       "max_age_days": 30, "default_days": 1},
            "request": {"since": {"from": "/query/from", "convert": "israel_time"},
                        "until": {"from": "/query/to", "convert": "israel_time"}},
            "response": {
                "shops": {"each": "rows/row", "where": "sku", "group_by": "shop", "fields": {
                    "shop": {"from": "row/shop"},
                    "skus": {"each": "row", "fields": {"sku": {"from": "sku",
                                                               "convert": "integer"}}},
                }},
                "rows": {"each": "rows/row", "fields": {"shop": {"from": "shop"}}},
            },
        },
        "listVisits": {  # a feed: pages over a window longer than one call, 3 rows a call
            "http": "GET /v1/visits",
            "command": "visits",
            "success": 200,
            "window": {"from": "/query/from", "to": "/query/to", "max_days": 1,
                       "max_age_days": 30, "default_days": 3, "max_rows": 3},
            "feed": {"rows": "/visits", "order": "/at", "identity": ["/who"]},
            "request": {"since": {"from": "/query/from", "convert": "israel_time"},
                        "until": {"from": "/query/to", "convert": "israel_time"}},
            "response": {"visits": {"each": "visit", "fields": {
                "who": {"from": "who"}, "at": {"from": "at", "convert": "israel_time"}}}},
        },
        "dropWidget": {
            "http": "DELETE /v1/widgets/{id}",
            "command": "drop",
            "success": 204,
            "not_found": {"errors": "errors/error",
                          "says": {"contact-list": ["widget {widget} is unknown"]}},
            "request": {"widget": {"from": "/path/id"}},
        },
    },
}


def _schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


TEXT = {"type": "string"}
SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "widgets", "version": "1"},
    "paths": {
        "/v1/shops/{shop}/orders": {"post": {
            "operationId": "orderWidgets",
            "parameters": [{"name": "shop", "in": "path", "required": True, "schema": TEXT}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _schema({
                "items": {"type": "array", "items": _schema(
                    {"sku": {"type": "integer"}, "colour": TEXT}, ("sku",))},
                "tags": {"type": "array", "items": TEXT},
                "note": TEXT, "rush": {"type": "boolean"},
                "deliver_at": {"type": "string", "format": "date-time"}}, ("items",))}}},
            "responses": {"201": {"description": "ordered", "content": {"application/json": {
                "schema": _schema({"id": TEXT}, ("id",))}}}},
        }},
        "/v1/widgets": {"get": {
            "operationId": "listWidgets",
            "parameters": [
                {"name": "from", "in": "query", "schema": {"type": "string",
                                                           "format": "date-time"}},
                {"name": "to", "in": "query", "schema": {"type": "string",
                                                         "format": "date-time"}}],
            "responses": {"200": {"description": "the widgets"}},
        }},
        "/v1/visits": {"get": {
            "operationId": "listVisits",
            "parameters": [{"name": name, "in": "query", "schema": TEXT}
                           for name in ("from", "to", "after")]
            + [{"name": "size", "in": "query", "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "the visits"}},
        }},
        "/v1/widgets/{id}": {"delete": {
            "operationId": "dropWidget",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": TEXT}],
            "responses": {"204": {"description": "dropped"}},
        }},
    },
}


def _client(recorder: Recorder, table: Any = None, spec: Any = None) -> TestClient:
    app = create_app(Settings(), table=load_table(table or TABLE), spec=spec or SPEC,
                     transport=httpx.MockTransport(recorder), clock=lambda: NOW)
    return TestClient(app, headers={"Authorization": BASIC})


def test_a_made_up_command_is_built_sent_and_read_back_as_the_table_says():
    answer = (f"{DECL}<rushOrder><status>0</status><message>3 widgets ordered</message>"
              "<ticket>T-9<ticket><shade>D</shade></rushOrder>").encode()
    recorder = Recorder(answer)
    with _client(recorder) as client:
        response = client.post("/v1/shops/north/orders", json={
            "rush": True, "items": [{"sku": 7, "colour": "blue"}, {"sku": 8}],
            "tags": ["a", "b"], "deliver_at": "2026-11-25T12:30:00+02:00"})
    assert recorder.envelope == (
        "<rushOrder><account><login>demo</login></account><shop>north</shop>"
        '<items><item colour="2">7</item><item>8</item></items><tag>a</tag><tag>b</tag>'
        "<note>none</note><deliver>25/11/26 12:30</deliver></rushOrder>")
    assert response.status_code == 201
    assert response.headers["location"] == "/v1/orders/T-9"
    assert response.json() == {"id": "T-9", "shop": "north", "count": 3, "shade": "dark"}


def test_the_last_command_choice_is_taken_when_no_when_finds_a_value():
    recorder = Recorder(f"{DECL}<order><status>0</status><ticket>T-1</ticket></order>".encode())
    with _client(recorder) as client:
        response = client.post("/v1/shops/s/orders", json={"items": [{"sku": 1}]})
    assert response.json() == {"id": "T-1", "shop": "s"}  # no message: no count, no shade
    assert recorder.envelope.startswith("<order><account>")


def test_grouped_rows_and_a_second_field_over_the_same_rows():
    rows = "".join(f"<row><shop>{shop}</shop><sku>{sku}</sku></row>"
                   for shop, sku in (("n", 1), ("s", 2), ("n", 3), ("e", "")))
    recorder = Recorder(f"{DECL}<widgets><status>0</status><rows>{rows}</rows></widgets>".encode())
    with _client(recorder) as client:
        response = client.get("/v1/widgets")
    assert response.json() == {
        "shops": [{"shop": "n", "skus": [{"sku": 1}, {"sku": 3}]},
                  {"shop": "s", "skus": [{"sku": 2}]}],  # "e" has no sku: left out by where
        "rows": [{"shop": "n"}, {"shop": "s"}, {"shop": "n"}, {"shop": "e"}],  # all still there
    }
    # The window's defaults, sent as the table says: the last day, in Israel time.
    assert recorder.envelope.endswith(
        "<since>24/11/26 12:00</since><until>25/11/26 12:00</until></widgets>")


def test_the_window_rule_is_a_422_before_any_call():
    recorder = Recorder(b"")
    with _client(recorder) as client:
        response = client.get("/v1/widgets", params={"from": "2026-11-20T00:00:00+02:00"})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"pointer": "/query/to", "detail": "the window may span at most 2 days"}]
    assert recorder.requests == []


def test_a_made_up_feed_is_read_page_by_page_every_row_once():
    """Seven visits over two days, four of them in one minute: the upstream gives three rows a
    call, a day at a time; the pages of two rows give all seven, once, oldest first, and
    the minute holding four says it could not be read whole."""
    visits = [("ann", "24/11/26 09:00"), ("bob", "24/11/26 18:30"), ("cy", "25/11/26 08:00"),
              ("dee", "25/11/26 08:00"), ("ed", "25/11/26 08:00"), ("flo", "25/11/26 08:00"),
              ("gus", "25/11/26 11:59")]

    def upstream(request: httpx.Request) -> httpx.Response:
        since, until = re.findall(r"<(?:since|until)>([^<]+)<", request.content.decode())
        day = "%d/%m/%y %H:%M"
        low, high = (datetime.strptime(t, day) for t in (since, until))
        rows = [v for v in visits if low <= datetime.strptime(v[1], day) <= high][:3]
        body = "".join(f"<visit><who>{who}</who><at>{at}</at></visit>" for who, at in rows)
        return httpx.Response(200, content=f"{DECL}<visits><status>0</status>{body}</visits>")

    recorder = Recorder(upstream)
    pages, params = [], {"from": "2026-11-23T12:00:00+02:00"}
    with _client(recorder) as client:
        while True:
            pages.append(client.get("/v1/visits", params=params).json())
            if "next_cursor" not in pages[-1]:
                break
            params["after"] = pages[-1]["next_cursor"]
    who = [visit["who"] for page in pages for visit in page["visits"]]
    assert who == ["ann", "bob", "cy", "dee", "ed", "gus"]  # 3 of the 8:00 minute's 4
    assert [page.get("incomplete") for page in pages if "incomplete" in page] == [
        [{"minute": "2026-11-25T08:00:00+02:00", "reachable": 3}]] * 2
    assert all(len(page["visits"]) <= 2 for page in pages)


def test_a_not_found_rule_names_the_refusal_of_statuses_yaml():
    answer = (f"{DECL}<drop><status>0</status><errors><error>widget W7 is unknown</error>"
              "</errors></drop>").encode()
    with _client(Recorder(answer)) as client:
        response = client.delete("/v1/widgets/W7")
        other = client.delete("/v1/widgets/W77")  # the error names W7, not W77
    assert response.status_code == 404
    assert response.json()["type"] == "/problems/contact-list-not-found"
    assert response.json()["upstream_message"] == "widget W7 is unknown"
    assert other.status_code == 204


def test_an_operation_added_as_contributing_md_says_is_served():
    """CONTRIBUTING.md, "Add an operation": one entry in mapping.yaml, its path in
    openapi.yaml, and nothing else; the engine serves it."""
    table = yaml.safe_load(MAPPING)
    table["operations"]["getCampaignCount"] = {
        "http": "GET /v1/campaigns/count", "command": "countCampaigns", "success": 200,
        "response": {"count": {"from": "count", "convert": "integer"}}}
    spec = copy.deepcopy(load_spec())
    spec["paths"]["/v1/campaigns/count"] = {"get": {
        "operationId": "getCampaignCount", "security": spec["security"],
        "responses": {"200": {"description": "how many", "content": {"application/json": {
            "schema": _schema({"count": {"type": "integer"}}, ("count",))}}}}}}
    recorder = Recorder(f"{DECL}<countCampaigns><status>0</status><count>12</count>"
                        "</countCampaigns>".encode())
    with _client(recorder, table, spec) as client:
        response = client.get("/v1/campaigns/count")
        served = client.get("/openapi.json").json()
    assert response.json() == {"count": 12}
    assert recorder.envelope == ("<countCampaigns><user><username>demo</username></user>"
                                 "</countCampaigns>")
    assert "/v1/campaigns/count" in served["paths"]


def test_every_converter_is_documented():
    header = _header()
    for name in [*CONVERTERS, *CONVERTER_FACTORIES]:
        assert re.search(rf"\b{name}\b", header.split("convert:", 1)[1]), name
