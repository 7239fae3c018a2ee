"""openapi.yaml checked against itself: examples, documentation and schema shape.

The proxy validates requests with these very schemas, and clients are generated from them, so
every example must pass its own schema, and every object schema must be named.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[1] / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text("utf-8"))
SPEC_URI = "urn:test:openapi"
REGISTRY: Registry = Registry().with_resource(
    SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)
)
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Keys whose values are data or vendor extensions, not schemas: never walked for schemas.
NOT_SCHEMA = ("example", "examples", "default", "const", "enum")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _operations() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"/paths/{_escape(path)}/{method}", method, path, item[method]


OPERATIONS = list(_operations())
OPERATION_IDS = [f"{method.upper()} {path}" for _, method, path, _ in OPERATIONS]
WITH_BODY = [op for op in OPERATIONS if "requestBody" in op[3]]
WITH_BODY_IDS = [f"{method.upper()} {path}" for _, method, path, _ in WITH_BODY]


def _follow(pointer: str) -> tuple[str, Any]:
    """The node at a JSON pointer into the spec, following local $refs: (its pointer, node)."""
    node: Any = SPEC
    for token in pointer.lstrip("/").split("/") if pointer else []:
        key = token.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, dict) and "$ref" in node:
        return _follow(node["$ref"].removeprefix("#"))
    return pointer, node


def _errors(schema_pointer: str, instance: Any) -> list[str]:
    validator = OAS31Validator(
        {"$ref": f"{SPEC_URI}#{schema_pointer}"},
        registry=REGISTRY,
        format_checker=OAS31Validator.FORMAT_CHECKER,
    )
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def _parameters(pointer: str, operation: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for index in range(len(operation.get("parameters", []))):
        yield _follow(f"{pointer}/parameters/{index}")


def _responses(
    pointer: str, operation: dict[str, Any]
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(status, the response's pointer once $refs are followed, the response)."""
    for status in operation["responses"]:
        yield (status, *_follow(f"{pointer}/responses/{status}"))


def test_spec_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    validate(SPEC)


@pytest.mark.parametrize(("pointer", "method", "path", "operation"), OPERATIONS, ids=OPERATION_IDS)
def test_operation_is_documented(
    pointer: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    declared_tags = {tag["name"] for tag in SPEC["tags"]}
    assert operation.get("operationId")
    assert operation.get("summary")
    assert operation.get("description")
    assert operation.get("tags")
    assert set(operation["tags"]) <= declared_tags
    command = operation.get("x-smsleads-command")
    if operation.get("x-smsleads-own") is True:  # the proxy's own (webhooks): no command
        assert command is None
        return
    assert isinstance(command, str) or (
        isinstance(command, list) and command and all(isinstance(c, str) for c in command)
    ), f"x-smsleads-command is {command!r}"


@pytest.mark.parametrize(("pointer", "method", "path", "operation"), WITH_BODY, ids=WITH_BODY_IDS)
def test_request_body_example_matches_its_schema(
    pointer: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    body = operation["requestBody"]
    assert body.get("required") is True
    assert set(body["content"]) == {"application/json"}
    media = body["content"]["application/json"]
    assert "example" in media, "the request body has no example"
    schema = f"{pointer}/requestBody/content/application~1json/schema"
    assert _errors(schema, media["example"]) == []


@pytest.mark.parametrize(("pointer", "method", "path", "operation"), OPERATIONS, ids=OPERATION_IDS)
def test_parameter_examples_match_their_schemas(
    pointer: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    for where, parameter in _parameters(pointer, operation):
        name = parameter["name"]
        assert "example" in parameter, f"parameter {name} has no example"
        assert _errors(f"{where}/schema", parameter["example"]) == [], name
        if parameter["in"] == "path":
            assert parameter["required"] is True
            assert "{" + name + "}" in path


@pytest.mark.parametrize(("pointer", "method", "path", "operation"), OPERATIONS, ids=OPERATION_IDS)
def test_response_examples_match_their_schemas(
    pointer: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    for status, where, response in _responses(pointer, operation):
        for media_type, media in response.get("content", {}).items():
            assert "schema" in media, f"{status} {media_type} has no schema"
            assert "example" in media, f"{status} {media_type} has no example"
            schema = f"{where}/content/{_escape(media_type)}/schema"
            assert _errors(schema, media["example"]) == [], status


@pytest.mark.parametrize(("pointer", "method", "path", "operation"), OPERATIONS, ids=OPERATION_IDS)
def test_operation_lists_its_error_responses(
    pointer: str, method: str, path: str, operation: dict[str, Any]
) -> None:
    statuses = set(operation["responses"])
    # The proxy's own operations ask the upstream too: whether the client's token is good.
    assert {"401", "422", "500", "502", "503", "504"} <= statuses
    has_body = "requestBody" in operation
    for status in ("413", "415"):
        assert (status in statuses) == has_body, status
    keyed = any(p.get("$ref", "").endswith("/IdempotencyKey")
                for p in operation.get("parameters", []))  # it changes state
    # A feed's cursor is signed, and may be refused (400 invalid-cursor); a deliveries page's
    # is a plain place in the listing, whose pattern the validator checks (422).
    paged = any(p.get("$ref", "").endswith("/parameters/Cursor")
                for p in operation.get("parameters", []))
    assert ("400" in statuses) == (has_body or keyed or paged)
    assert ("409" in statuses) >= keyed
    # The spend guard counts every change made at SMS Leads (proxy/guard.py); the proxy's own
    # (webhooks) have caps of their own instead.
    assert ("429" in statuses) == (keyed and operation.get("x-smsleads-own") is not True)
    successes = [s for s in statuses if s.startswith("2")]
    assert len(successes) == 1
    for status, _, response in _responses(pointer, operation):
        if status.startswith("2"):
            assert set(response.get("content", {})) <= {"application/json"}
            assert ("content" in response) == (status != "204")
        else:
            assert set(response["content"]) == {"application/problem+json"}


def _schema_nodes(node: Any, at: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every dict in the spec with where it sits, skipping example data and extensions."""
    if isinstance(node, dict):
        yield at, node
        for key, value in node.items():
            if key in NOT_SCHEMA or key.startswith("x-"):
                continue
            yield from _schema_nodes(value, (*at, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _schema_nodes(value, (*at, str(index)))


def _is_object_schema(node: dict[str, Any]) -> bool:
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind)


def test_every_object_schema_is_named() -> None:
    inline = [
        "/".join(at)
        for at, node in _schema_nodes(SPEC)
        if _is_object_schema(node)
        and "properties" in node
        and not (len(at) == 3 and at[:2] == ("components", "schemas"))
    ]
    assert inline == []


def test_every_object_schema_rejects_unknown_fields() -> None:
    open_objects = [
        name
        for name, schema in SPEC["components"]["schemas"].items()
        if _is_object_schema(schema) and schema.get("additionalProperties") is not False
    ]
    assert open_objects == []


def test_inline_object_schema_is_detected() -> None:
    spec = {
        "paths": {
            "/x": {
                "get": {
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"a": {"type": "string"}},
                                    },
                                    "example": {"type": "object", "properties": {}},
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    found = [at for at, node in _schema_nodes(spec) if _is_object_schema(node)]
    assert found == [
        ("paths", "/x", "get", "responses", "200", "content", "application/json", "schema")
    ]


def test_request_schemas_reject_what_the_server_must_refuse() -> None:
    """The examples' validator is not lenient: formats, patterns and unknown fields count."""
    schema = "/components/schemas/SendMessageRequest"
    good = {"sender": "DemoAPI", "text": "hi", "recipients": [{"phone": "0501234567"}]}
    assert _errors(schema, good) == []
    assert _errors(schema, {**good, "colour": "red"})
    assert _errors(schema, {"sender": "DemoAPI", "text": "hi"})  # no recipients nor lists
    assert _errors(schema, {**good, "send_at": "tomorrow"})
    assert _errors(schema, {**good, "sender": "Demo-API"})
    assert _errors(schema, {**good, "recipients": [{"phone": "phone: 0501"}]})
    assert _errors(schema, {**good, "contact_list_ids": [21518]})
