"""A 422 lists each bad field once, in words a person reads: every validated field of every
operation (body leaves, query and path parameters) is given bad values, all at once, and the
answer is read pointer by pointer. No detail quotes a regular expression."""

from __future__ import annotations

import copy
import re
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from starlette.testclient import TestClient

from proxy.app import create_app
from tests.conftest import BASIC, NOW, Recorder, deref, schema_leaves
from tests.examples import OPERATIONS, SPEC, example

KINDS = ("type", "short", "form", "long")
# What a regular expression looks like inside a sentence: anchors, classes, groups, escapes,
# counted repeats, and jsonschema's own "does not match '<pattern>'".
QUOTED = re.compile(r"^'(?:[^'\\]|\\.)*'(?:…)?|^\"(?:[^\"\\]|\\.)*\"(?:…)?")
REGEX = re.compile(r"\^|\(\?|\[\^|\[[0-9A-Za-z]-|\\[xudsSwW]|\{[0-9]+,[0-9]*\}|\$'|does not match")


def bad(schema: dict[str, Any], kind: str) -> Any:
    """A value that breaks ``schema`` the ``kind`` way (or, where it cannot, a valid one)."""
    if "enum" in schema:
        return {"type": 7, "short": "", "form": "no-such-value", "long": "x" * 300}[kind]
    if schema.get("type") == "integer":
        return {"type": "12", "short": schema.get("minimum", 0) - 1, "form": 1.5,
                "long": "many"}[kind]
    if schema.get("type") == "boolean":
        return {"type": "yes", "short": 0, "form": "true", "long": []}[kind]
    return {"type": 12345, "short": "", "form": " \x01bad-value\x02 ",
            "long": "9" * (schema.get("maxLength", 1000) + 1)}[kind]


def _put(document: Any, path: list[str], value: Any) -> Any:
    """``document`` with ``value`` at ``path`` (``*`` is the first item), made where absent."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if head == "*":
        items = list(document) if isinstance(document, list) and document else [{}]
        items[0] = _put(items[0] if isinstance(items[0], dict | list) or not rest else {},
                        rest, value)
        return items
    node = dict(document) if isinstance(document, dict) else {}
    node[head] = _put(node.get(head, [] if rest[:1] == ["*"] else {}), rest, value)
    return node


def _invalid(schema: dict[str, Any], value: Any) -> bool:
    return not OAS31Validator(schema, format_checker=OAS31Validator.FORMAT_CHECKER).is_valid(value)


def _spec_operation(op) -> dict[str, Any]:
    return SPEC["paths"][op.path][op.method.lower()]


def broken_request(op, kind: str) -> tuple[str, dict[str, Any], Any, dict[str, bool]]:
    """(url, query, body, {pointer: whether its value is invalid}) with every field bad."""
    call = example(op)
    expected: dict[str, bool] = {}
    body = copy.deepcopy(call.body)
    media = _spec_operation(op).get("requestBody", {}).get("content", {}).get("application/json")
    if media is not None:
        for leaf, schema in schema_leaves(SPEC, media["schema"]).items():
            value = bad(schema, kind)
            body = _put(body, leaf.split("/")[1:], value)
            expected["/body" + leaf.replace("*", "0")] = _invalid(schema, value)
    path, query = dict(call.path), dict(call.query)
    for parameter in map(lambda p: deref(SPEC, p), _spec_operation(op).get("parameters", [])):
        schema = deref(SPEC, parameter["schema"])
        if parameter["in"] == "query":
            item = deref(SPEC, schema.get("items", schema))
            value = str(bad(item, kind))
            where = f"/query/{parameter['name']}"
            if schema.get("type") == "array":
                query[parameter["name"]], where = [value], where + "/0"
                expected[where] = _invalid(item, value)
            else:
                query[parameter["name"]] = value
                # A query string has no types: the proxy reads "12" as the integer it spells.
                typed = int(value) if schema.get("type") == "integer" and \
                    value.lstrip("-").isdigit() else value
                expected[where] = _invalid(schema, typed)
        elif parameter["in"] == "path" and kind in ("form", "long"):
            path[parameter["name"]] = str(bad(schema, kind)).strip()
            expected[f"/path/{parameter['name']}"] = _invalid(schema, path[parameter["name"]])
    url = op.path.format(**{k: quote(v, safe="") for k, v in path.items()})
    return url, query, body, expected


@pytest.fixture(scope="module")
def client():
    recorder = Recorder(b"<x><status>0</status><message></message></x>")
    app = create_app(transport=httpx.MockTransport(recorder), clock=lambda: NOW)
    with TestClient(app, headers={"Authorization": BASIC}) as test_client:
        yield test_client
    assert recorder.requests == []  # nothing broken went upstream


# Operations without fields (getBalance) and ways no field of an operation can be broken
# (a path parameter has no type of its own to break) are left out.
CASES = [(op, kind) for op in OPERATIONS for kind in KINDS
         if any(broken_request(op, kind)[3].values())]


@pytest.mark.parametrize(("op", "kind"), CASES,
                         ids=[f"{op.operation_id}-{kind}" for op, kind in CASES])
def test_each_bad_field_is_one_item_in_words(client, op, kind):
    """A field is listed iff its value breaks its own schema, and once."""
    url, query, body, expected = broken_request(op, kind)
    response = client.request(op.method, url, params=query,
                              json=body if body is not None else None)
    assert response.status_code == 422, response.text
    items = response.json()["errors"]
    pointers = Counter(item["pointer"] for item in items)
    assert [p for p, n in pointers.items() if n > 1] == [], items
    for pointer, invalid in expected.items():
        assert (pointer in pointers) == invalid, (pointer, items)
    # The bad value itself, quoted at the start of a detail, may hold anything.
    soup = [item for item in items if REGEX.search(QUOTED.sub("''", item["detail"]))]
    assert soup == []


def _patterned(node: Any, at: str = "") -> list[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        found = [(at, node)] if "pattern" in node else []
        return found + [hit for key, value in node.items() if key not in ("example", "examples")
                        for hit in _patterned(value, f"{at}/{key}")]
    if isinstance(node, list):
        return [hit for i, value in enumerate(node) for hit in _patterned(value, f"{at}/{i}")]
    return []


def test_every_pattern_has_words_for_its_refusal():
    """The 422 says what a pattern means (`x-invalid`), since it never shows the pattern."""
    wordless = [at for at, node in _patterned(SPEC) if not node.get("x-invalid")]
    assert wordless == []


# ── The explanation walks only what jsonschema-rs refuses ─────────────────────────────────────
# jsonschema walks into an array item only when jsonschema-rs refuses it (proxy/validation.py's
# _items). The answer must be the one jsonschema gives walking everything, for the spec's own
# shapes and for the keywords that decide by a whole branch (anyOf, oneOf, not, contains).

ITEM = {"type": "object", "additionalProperties": False, "required": ["id"],
        "properties": {"id": {"type": "string", "pattern": "^[a-z]+$", "x-invalid": "is not a name"},
                       "tags": {"type": "array", "maxItems": 3, "items": {"type": "string"}}}}
SHAPES: dict[str, tuple[dict[str, Any], list[Any]]] = {
    "items of refs": ({"type": "array", "minItems": 1, "maxItems": 50,
                       "items": {"$ref": "#/components/schemas/Item"}},
                      [[{"id": "ab"}] * 30 + [{"id": "A1"}], [{"id": "x", "tags": ["a", 1]}] * 40,
                       [], [{"id": "ok"}, {"nope": 1}, {"id": "ok", "tags": ["a"] * 4}], "x"]),
    "anyOf of arrays": ({"anyOf": [{"type": "array", "items": {"type": "string"}},
                                   {"type": "array", "items": {"type": "integer"}}]},
                        [["a", "b", 1], [1, 2, "c"], ["a"], 7]),
    "oneOf of arrays": ({"oneOf": [{"type": "array", "items": {"type": "string", "maxLength": 2}},
                                   {"type": "array", "items": {"type": "string", "minLength": 2}}]},
                        [["ab", "cd"], ["a", "abc"], ["ab"]]),
    "not and contains": ({"type": "object", "properties": {
                              "n": {"not": {"type": "array", "items": {"type": "integer"}}},
                              "c": {"type": "array", "contains": {"const": 5},
                                    "items": {"type": "integer"}}}},
                         [{"n": [1, 2], "c": [1, 2]}, {"n": [1, "x"], "c": [5, "x", 3]}]),
    "allOf and prefixItems": ({"allOf": [{"type": "array", "prefixItems": [{"type": "string"}],
                                          "items": {"type": "integer"}},
                                         {"type": "array", "items": {"not": {"const": 3}}}]},
                              [["a", 1, 2, 3, "b"], [1, 3], ["a", *range(20)]]),
    "closed tuple": ({"type": "array", "prefixItems": [{"type": "integer"}], "items": False},
                     [[1, 2], ["a"], [1]]),
    "nested arrays": ({"type": "array", "items": {"type": "array", "items": {"type": "integer"},
                                                  "uniqueItems": True}},
                      [[[1, 2], [1, 1], [3, "x"]], [[1]] * 20 + [["y"]]]),
}


def _spec(schema: dict[str, Any]) -> dict[str, Any]:
    operation = {"requestBody": {"required": True, "content": {"application/json": {
        "schema": schema}}}, "responses": {"200": {"description": "ok"}}}
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
            "paths": {"/t": {"post": operation}}, "components": {"schemas": {"Item": ITEM}}}


def _answer(validator: Any, body: Any) -> list[tuple[str, str]]:
    from proxy.errors import RequestInvalid

    try:
        validator.check({"body": body, "path": {}, "query": {}}, True)
    except RequestInvalid as refused:
        return [(e.pointer, e.detail) for e in refused.errors]
    return []


@pytest.mark.parametrize("shape", SHAPES)
def test_the_walk_skipping_admitted_items_says_what_walking_them_all_says(shape, monkeypatch):
    from proxy import validation

    schema, bodies = SHAPES[shape]
    pruned = validation.compile_validators(_spec(schema))[("POST", "/t")]
    # The same validator with jsonschema's own items keyword: every item walked.
    monkeypatch.setattr(validation, "_items", lambda _, *args: validation._ITEMS(*args))
    full = validation.compile_validators(_spec(schema))[("POST", "/t")]
    for body in bodies:
        answer = _answer(pruned, body)
        assert answer == _answer(full, body), body
        assert answer != [] or validation._admitted(pruned.body.fast, body), body


def test_the_walk_is_the_same_for_10000_recipients_as_for_10(monkeypatch):
    """One wrong phone, last: jsonschema visits the same few values whatever comes before."""
    from proxy.app import _packaged

    validator = _packaged()[2][("POST", "/v1/messages")]
    explainer = type(validator.body.full)
    visited: list[Any] = []
    descend = explainer.descend

    def counted(self: Any, instance: Any, *args: Any, **kwargs: Any) -> Any:
        visited.append(instance)
        return descend(self, instance, *args, **kwargs)

    monkeypatch.setattr(explainer, "descend", counted)
    walks = {}
    for count in (10, 10_000):
        recipients = [{"phone": "0501234567", "external_id": f"e{i}"} for i in range(count)]
        recipients[-1] = {"phone": "12345"}
        visited.clear()
        body = {"sender": "DemoAPI", "text": "hi", "recipients": recipients}
        assert _answer(validator, body) == [
            (f"/body/recipients/{count - 1}/phone", "'12345' is not an Israeli mobile number")]
        walks[count] = len(visited)
    assert walks[10_000] == walks[10] < 20, walks
