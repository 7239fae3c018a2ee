"""openapi.yaml, the mapping table and the routes describe the same API."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate

from proxy.app import create_app
from proxy.convert import CONVERTERS
from proxy.docs import load_spec
from proxy.mapping import Element, Field, Operation, load_table
from tests.conftest import deref, schema_leaves

SPEC = load_spec()
TABLE = load_table()
OPERATIONS = {op.operation_id: op for op in TABLE.operations}


def _spec_operations() -> dict[str, tuple[str, str, dict[str, Any]]]:
    found = {}
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                found[operation["operationId"]] = (method.upper(), path, operation)
    return found


ALL_OPERATIONS = _spec_operations()
# The table's operations, each an upstream command; the proxy's own (x-smsleads-own: the
# webhooks of proxy/events/) answer from the proxy itself.
SPEC_OPERATIONS = {op_id: found for op_id, found in ALL_OPERATIONS.items()
                   if "x-smsleads-command" in found[2]}
OWN_OPERATIONS = {op_id: found for op_id, found in ALL_OPERATIONS.items()
                  if found[2].get("x-smsleads-own") is True}


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    return deref(SPEC, node)


def _schema_paths(schema: dict[str, Any], at: str) -> set[str]:
    """Every leaf path of a schema: /recipients/*/phone."""
    return set(schema_leaves(SPEC, schema, at))


def _normalise(pointer: str) -> str:
    return re.sub(r"/[0-9]+(?=/|$)", "/*", pointer)


def _element_pointers(elements: tuple[Element, ...], at: str = "") -> set[str]:
    pointers: set[str] = set()
    for element in elements:
        base = at if element.each is None else f"{at}{element.each}/*"
        if element.source is not None:
            pointers.add(_normalise(base + element.source))
        pointers |= _element_pointers(element.attributes, base)
        pointers |= _element_pointers(element.children or (), base)
    return pointers


def _field_paths(fields: tuple[Field, ...], at: str = "") -> set[str]:
    paths: set[str] = set()
    for field in fields:
        here = f"{at}/{field.name}" + ("/*" if field.each is not None else "")
        if field.fields is not None:
            paths |= _field_paths(field.fields, here)
        else:
            paths.add(here)
    return paths


def test_openapi_yaml_is_a_valid_openapi_31_document():
    validate(SPEC)
    assert SPEC["openapi"].startswith("3.1")


def test_operations_match_the_mapping_table():
    assert set(SPEC_OPERATIONS) == set(OPERATIONS)
    for op_id, (method, path, operation) in SPEC_OPERATIONS.items():
        op = OPERATIONS[op_id]
        assert (method, path) == (op.method, op.path), op_id
        command = operation["x-smsleads-command"]
        assert (command if isinstance(command, list) else [command]) == list(op.command_names)


@pytest.mark.parametrize("op_id", sorted(OPERATIONS))
def test_request_fields_match_the_mapping_table(op_id):
    op: Operation = OPERATIONS[op_id]
    operation = SPEC_OPERATIONS[op_id][2]
    used = _element_pointers(op.request) | ({op.window.start, op.window.end} if op.window else set())
    if op.feed is not None:
        used |= {op.feed.paging.cursor, op.feed.paging.limit}
    described = {f"/{p['in']}/{p['name']}" + ("/*" if _deref(p["schema"]).get("type") == "array" else "")
                 for p in map(_deref, operation.get("parameters", []))
                 if p["in"] != "header"}  # headers (Idempotency-Key) are the proxy's, not mapped
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None:
        described |= _schema_paths(body["schema"], "/body")
    assert {p for p in used if not p.startswith("/auth/")} == described


@pytest.mark.parametrize("op_id", sorted(OPERATIONS))
def test_answer_fields_match_the_mapping_table(op_id):
    op = OPERATIONS[op_id]
    response = SPEC_OPERATIONS[op_id][2]["responses"][str(op.success)]
    content = _deref(response).get("content", {}).get("application/json")
    if op.success == 204:
        assert content is None and not op.response
        return
    if op.compute is not None:  # its computation answers: tests/test_preview.py checks them
        assert content is not None and not op.response
        return
    fields = _field_paths(op.response)
    if op.feed is not None:  # what every page adds to the rows (proxy/endpoint.py)
        fields |= {"/next_cursor", "/incomplete/*/minute", "/incomplete/*/reachable",
                   "/overlap/minute", "/overlap/rows"}
    assert _schema_paths(content["schema"], "") == fields


@pytest.mark.parametrize("op_id", sorted(op.operation_id for op in TABLE.operations if op.feed))
def test_a_feeds_limit_is_the_tables(op_id):
    op = OPERATIONS[op_id]
    assert op.feed is not None
    paging = op.feed.paging
    name = paging.limit.rpartition("/")[2]
    [limit] = [p for p in map(_deref, SPEC_OPERATIONS[op_id][2]["parameters"]) if p["name"] == name]
    schema = _deref(limit["schema"])
    assert (schema["minimum"], schema["default"], schema["maximum"]) == (
        1, paging.default_limit, paging.max_limit)


def test_every_operation_is_the_tables_or_the_proxys_own():
    assert set(SPEC_OPERATIONS) | set(OWN_OPERATIONS) == set(ALL_OPERATIONS)
    assert not set(SPEC_OPERATIONS) & set(OWN_OPERATIONS)
    assert {path for _, path, _ in OWN_OPERATIONS.values()} == {
        "/v1/webhooks", "/v1/webhooks/{webhook_id}", "/v1/webhooks/{webhook_id}/test",
        "/v1/webhooks/{webhook_id}/secret/rotations", "/v1/webhooks/{webhook_id}/deliveries",
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", "/v1/limits"}


def test_the_event_types_of_the_spec_are_the_tables():
    enum = SPEC["components"]["schemas"]["WebhookEventType"]["enum"]
    assert enum == [kind.name for kind in TABLE.events]


def test_routes_are_the_spec_operations():
    app = create_app()
    served = {(method, route.path) for route in app.routes for method in (route.methods or ())
              if route.path.startswith("/v1/") and method != "HEAD"}  # Starlette adds HEAD
    assert served == {(m, p) for m, p, _ in ALL_OPERATIONS.values()}


# The spec's phone patterns promise clients what the proxy accepts: any number they admit
# converts (a schema-valid request is never refused for its phone, as schemathesis checks).
@pytest.mark.parametrize(("schema", "converter"), [("MobileNumber", "mobile_phone"),
                                                   ("PhoneNumber", "phone")])
def test_every_phone_the_spec_admits_the_proxy_accepts(schema, converter):
    pattern = SPEC["components"]["schemas"][schema]["pattern"]

    @given(st.from_regex(pattern, fullmatch=True))
    def accepted(phone):
        CONVERTERS[converter].to_xml(phone)

    accepted()
    assert not re.search(pattern, "0401234567" if schema == "MobileNumber" else "0123456")


def test_the_operations_that_take_an_idempotency_key_are_those_that_change_state():
    """Every non-GET operation of the table but a computed one (a preview changes nothing)."""
    keyed = {op_id for op_id, (_, _, operation) in SPEC_OPERATIONS.items()
             if any(p.get("$ref", "").endswith("/IdempotencyKey")
                    for p in operation.get("parameters", []))}
    assert keyed == {op.operation_id for op in TABLE.operations
                     if op.method != "GET" and op.compute is None}
