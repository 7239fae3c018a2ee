"""Requests checked against openapi.yaml itself: the spec is the validator.

For each operation the request body schema and the parameters are compiled once into
OAS 3.1 (JSON Schema 2020-12) validators whose ``$ref`` resolve inside the spec. Query strings
are coerced by their declared types first (``?n=3`` is an integer where the schema says so).

Each schema is compiled twice from the same spec: jsonschema-rs says whether a request is
valid (0.8 ms for 10,000 recipients, where jsonschema takes 300 ms: bench/RESULTS.md), and
only when it is not does jsonschema, the reference, say why. Formats are checked by
jsonschema's own checkers in both, so the fast one is never the more lenient (alone it
would take a leap second, ``23:59:60``, that rfc3339-validator refuses).

A body's arrays are first counted against the schema's maxItems alone: 100,000 recipients are
refused at once, naming the limit, instead of validating each one (seconds of CPU on the event
loop) and echoing them all back. No message repeats a long value.

The explanation costs what the errors cost, not what the body holds: jsonschema walks into an
array item only when jsonschema-rs refuses that item, so 10,000 recipients with one wrong phone
are explained by one item's walk (jsonschema-rs's own list of errors cannot be cut short: it
holds every error of the body, 60 µs each).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import jsonschema_rs
from jsonschema import validators
from jsonschema.exceptions import ValidationError
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from proxy.errors import MAX_FIELD_ERRORS, FieldError, RequestInvalid
from proxy.types import JSON

SPEC_URI = "urn:smsleads-proxy:openapi"
_PLUS_AS_SPACE = re.compile(r" ([0-9]{2}:?[0-9]{2})$")
# ISO 8601's basic offset, "+0000": what strftime's %z writes, and so what openapi-generator's
# python client sends for a datetime in a query string (its Configuration.datetime_format).
_BASIC_OFFSET = re.compile(r"(T[0-9:.]+[+-][0-9]{2})([0-9]{2})$")
_SHOWN = 60  # characters of a value a message may repeat
_SIZES = {  # keyword -> (unit, the limit's word)
    "maxLength": ("characters long", "at most"), "minLength": ("characters long", "at least"),
    "maxItems": ("items", "at most"), "minItems": ("items", "at least"),
}


def _escape(token: str | int) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _pointer(path: Iterable[str | int]) -> str:
    return "".join("/" + _escape(token) for token in path)


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    location: str  # "path" | "query"
    required: bool
    schema: Mapping[str, Any]
    kind: str  # the JSON type the query string is coerced to
    format: str | None = None


@dataclass(frozen=True, slots=True)
class Shape:
    """The required fields of a success answer, as the spec promises them to clients."""

    required: tuple[str, ...] = ()
    properties: Mapping[str, Shape] | None = None
    items: Shape | None = None

    def missing(self, value: JSON, at: str = "") -> list[str]:
        if self.complete(value):  # the usual case, without building a pointer per row
            return []
        if isinstance(value, dict):
            gaps = [f"{at}/{name}" for name in self.required if name not in value]
            for name, shape in (self.properties or {}).items():
                if name in value:
                    gaps += shape.missing(value[name], f"{at}/{name}")
            return gaps
        if isinstance(value, list) and self.items is not None:
            return [gap for i, item in enumerate(value)
                    for gap in self.items.missing(item, f"{at}/{i}")]
        return []

    def complete(self, value: JSON) -> bool:
        if isinstance(value, dict):
            return all(name in value for name in self.required) and all(
                shape.complete(value[name])
                for name, shape in (self.properties or {}).items() if name in value)
        if isinstance(value, list) and self.items is not None:
            items = self.items
            return all(items.complete(item) for item in value)
        return True


def _shape(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> Shape:
    while "$ref" in schema:
        schema = _lookup(spec, schema["$ref"][1:])
    # Only what can lack something is kept: a string property has nothing to check.
    properties = {name: shape for name, sub in schema.get("properties", {}).items()
                  if (shape := _shape(spec, sub)) != Shape()}
    items = _shape(spec, schema["items"]) if "items" in schema else None
    return Shape(tuple(schema.get("required", ())), properties or None,
                 None if items == Shape() else items)


def _answer_shape(spec: Mapping[str, Any], operation: Mapping[str, Any]) -> Shape:
    for status, response in operation.get("responses", {}).items():
        while "$ref" in response:
            response = _lookup(spec, response["$ref"][1:])
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if str(status).startswith("2") and schema is not None:
            return _shape(spec, schema)
    return Shape()


@functools.lru_cache(maxsize=512)
def _linear(pattern: str) -> jsonschema_rs.Draft202012Validator:
    """The pattern as jsonschema-rs compiles it: Rust's regex engine takes linear time, where
    Python's backtracks (``^[^X]*[^Y][^X]*$`` took 2.4 s on 16,000 characters)."""
    return jsonschema_rs.Draft202012Validator({"type": "string", "pattern": pattern})


def _pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
             ) -> Iterator[ValidationError]:
    """jsonschema's ``pattern`` keyword, in linear time, and not at all on a string already
    longer than the schema allows: its length is its error."""
    if not isinstance(instance, str) or len(instance) > schema.get("maxLength", math.inf):
        return
    try:
        matches = _linear(pattern).is_valid(instance)
    except UnicodeEncodeError:  # a lone surrogate: no pattern of ours admits one
        matches = False
    if not matches:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_ITEMS = OAS31Validator.VALIDATORS["items"]


def _items(checks: Callable[[Any], jsonschema_rs.Draft202012Validator], validator: Any,
           items: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's ``items``, walking only into the items jsonschema-rs refuses: one that it
    admits has nothing to explain."""
    if items is False or not validator.is_type(instance, "array"):
        yield from _ITEMS(validator, items, instance, schema)
        return
    check = checks(items)
    for index in range(len(schema.get("prefixItems", [])), len(instance)):
        if not _admitted(check, instance[index]):
            yield from validator.descend(instance[index], items, path=index)


@dataclass(frozen=True, slots=True)
class Compiler:
    """Both registries of the spec, and the formats as jsonschema checks them."""

    registry: Registry
    fast_registry: jsonschema_rs.Registry
    formats: dict[str, Callable[[str], bool]]
    explainer: Any = field(init=False, repr=False)  # jsonschema's validator, as _items walks
    # Each item schema an array has, as jsonschema-rs compiled it, by its JSON text: the spec's
    # own few, compiled on first use.
    item_checks: dict[str, jsonschema_rs.Draft202012Validator] = field(
        init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        keywords = {"pattern": _pattern, "items": functools.partial(_items, self.item_check)}
        object.__setattr__(self, "explainer", validators.extend(  # type: ignore[no-untyped-call]
            OAS31Validator, keywords))

    def fast(self, schema: Any) -> jsonschema_rs.Draft202012Validator:
        return jsonschema_rs.Draft202012Validator(
            _uri_refs(schema), registry=self.fast_registry, formats=self.formats,
            validate_formats=True, ignore_unknown_formats=True)

    def schema(self, schema: Mapping[str, Any]) -> Schema:
        full = self.explainer(schema, registry=self.registry,
                              format_checker=OAS31Validator.FORMAT_CHECKER)
        return Schema(self.fast(schema), full)

    def item_check(self, schema: Any) -> jsonschema_rs.Draft202012Validator:
        """jsonschema-rs's validator of ``schema``, a part of the spec."""
        text = json.dumps(schema, sort_keys=True)
        check = self.item_checks.get(text)
        if check is None:
            check = self.item_checks[text] = self.fast(schema)
        return check


def _uri_refs(schema: Any) -> Any:
    """The schema with each ``$ref`` a valid URI: a pointer in a fragment percent-encodes
    what a URI cannot carry (RFC 6901 §6), such as the braces of ``/{username}``; and one
    within the spec (``#/components/…``) names the spec, so that a part of it compiles alone."""
    if isinstance(schema, dict):
        return {key: (_quote_fragment(value) if key == "$ref" else _uri_refs(value))
                for key, value in schema.items()}
    if isinstance(schema, list):
        return [_uri_refs(value) for value in schema]
    return schema


def _quote_fragment(ref: str) -> str:
    base, hash_, fragment = ref.partition("#")
    return (base or SPEC_URI) + hash_ + quote(fragment, safe="/~")


@dataclass(frozen=True, slots=True)
class Schema:
    fast: jsonschema_rs.Draft202012Validator
    full: OAS31Validator

    def valid(self, instance: JSON) -> bool:
        return _admitted(self.fast, instance)

    def errors(self, instance: JSON, base: str) -> list[FieldError]:
        return [] if self.valid(instance) else _field_errors(self.full, instance, base)


def _admitted(fast: jsonschema_rs.Draft202012Validator, instance: JSON) -> bool:
    try:
        return bool(fast.is_valid(instance))
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): Rust strings cannot hold it
        return False


class OperationValidator:
    """Checks one operation's {body, path, query} as the spec describes them."""

    def __init__(self, compiler: Compiler, pointer: str, operation: Mapping[str, Any],
                 parameters: list[Parameter], answer: Shape,
                 spec: Mapping[str, Any] | None = None) -> None:
        self.parameters = parameters
        self.answer = answer
        self.body: Schema | None = None
        self.spec: Mapping[str, Any] = spec or {}
        content = operation.get("requestBody", {}).get("content", {})
        self.body_schema: Mapping[str, Any] = content.get("application/json", {}).get("schema", {})
        self.totals = _totals(self.spec, self.body_schema)
        self.limits = _limits(self.spec, self.body_schema) or Limits()
        if "application/json" in content:
            ref = f"{SPEC_URI}#{pointer}/requestBody/content/application~1json/schema"
            self.body = compiler.schema({"$ref": ref})
        self.body_required = bool(operation.get("requestBody", {}).get("required"))
        groups = {"path": {}, "query": {}}  # type: dict[str, dict[str, Any]]
        for param in parameters:
            groups[param.location][param.name] = param.schema
        self.params = {
            where: compiler.schema(
                {"type": "object", "properties": props, "additionalProperties": False,
                 "required": [p.name for p in parameters if p.location == where and p.required]})
            for where, props in groups.items()
        }

    def coerce_query(self, multi: Iterable[tuple[str, str]]) -> dict[str, JSON]:
        """Query pairs -> typed values (arrays repeat the name: ?external_id=a&external_id=b)."""
        kinds = {p.name: p.kind for p in self.parameters if p.location == "query"}
        times = {p.name for p in self.parameters if p.format == "date-time"}
        query: dict[str, JSON] = {}
        for name, raw in multi:
            kind = kinds.get(name, "string")
            if name in times:
                # An unencoded "+" in a query string decodes as a space: "…T10:00:00 03:00".
                raw = _BASIC_OFFSET.sub(r"\1:\2", _PLUS_AS_SPACE.sub(r"+\1", raw))
            value: JSON = raw
            if kind == "integer" and raw.lstrip("-").isdigit():
                value = int(raw)
            elif kind == "boolean" and raw in ("true", "false"):
                value = raw == "true"
            if kind == "array":
                existing = query.setdefault(name, [])
                if isinstance(existing, list):
                    existing.append(value)
            else:
                query[name] = value
        return query

    def check(self, document: Mapping[str, JSON], has_body: bool) -> None:
        body = document.get("body")
        # A valid body has no array over its maxItems: the count is only needed otherwise
        # (walking 10,000 recipients for it took 20 times the fast validation).
        fine = has_body and self.body is not None and self.body.valid(body)
        if has_body and not fine:
            too_many = self.limits.over(body, "/body")
            if too_many:
                raise RequestInvalid(too_many)
        if has_body:
            over = [error for total in self.totals for error in total.check(body)]
            if over:
                raise RequestInvalid(over)
        errors: list[FieldError] = []
        for where, schema in self.params.items():
            errors += schema.errors(document.get(where, {}), f"/{where}")
        if self.body is not None:
            if has_body and not fine:
                errors += _field_errors(self.body.full, body, "/body")
            elif not has_body and self.body_required:
                errors.append(FieldError("/body", "a JSON body is required"))
        if errors:
            raise RequestInvalid(errors)


def _conforms(instance: str, format: str) -> bool:
    return bool(OAS31Validator.FORMAT_CHECKER.conforms(instance, format))


def _field_errors(validator: OAS31Validator, instance: JSON, base: str) -> list[FieldError]:
    """One item per bad field, in the order the validator finds them (the order of the body),
    no more than the problem lists: 100,000 bad recipients cost as much as 51. When a value
    breaks several rules (a phone too short and not a phone), the one that says most to a
    person is kept (_RANK)."""
    best: dict[str, tuple[int, FieldError]] = {}
    for error in validator.iter_errors(instance):
        for rank, found in _explain(error, base):
            if found.pointer not in best or rank < best[found.pointer][0]:
                best[found.pointer] = (rank, found)
        if len(best) > MAX_FIELD_ERRORS:
            break
    return [found for _, found in best.values()]


# Which rule a field's one item tells, best first: its type, its allowed values, the words the
# spec gives its form (`x-invalid` beside a pattern), its size, then anything else.
_RANK = {"type": 0, "enum": 1, "const": 1, "pattern": 2, "format": 2}
_OTHER = 4


def _explain(error: ValidationError, base: str) -> list[tuple[int, FieldError]]:
    """Readable messages for one failed rule, each pointing at the field itself."""
    at = base + _pointer(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        unknown = (name for name in error.instance if name not in known)
        return [(0, FieldError(f"{at}/{_escape(name)}", "unknown field"))
                for name in itertools.islice(unknown, MAX_FIELD_ERRORS + 1)]
    if error.validator == "required" and isinstance(error.validator_value, list):
        missing = [n for n in error.validator_value
                   if isinstance(error.instance, dict) and n not in error.instance]
        return [(0, FieldError(f"{at}/{_escape(name)}", "is required")) for name in missing]
    if error.validator == "anyOf" and isinstance(error.validator_value, list) and all(
        isinstance(branch, dict) and "required" in branch for branch in error.validator_value
    ):
        names = " or ".join(", ".join(b["required"]) for b in error.validator_value)
        return [(_OTHER, FieldError(at, f"needs {names}"))]
    if error.validator in _SIZES and isinstance(error.instance, str | list):
        return [(3, FieldError(at, _size_message(str(error.validator), len(error.instance),
                                                 error.validator_value)))]
    rank = _RANK.get(str(error.validator), _OTHER)
    if error.validator in ("pattern", "format"):
        return [(rank, FieldError(at, _form_message(error)))]
    return [(rank, FieldError(at, _shortened(error)))]


def _form_message(error: ValidationError) -> str:
    """A value of the wrong form, in the spec's words for the form (never its pattern)."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    words = schema.get("x-invalid")
    if not isinstance(words, str):
        if error.validator == "format":
            return _shortened(error)  # jsonschema's words: "'x' is not a 'date-time'"
        words = "is not in the form this field takes"
    if schema.get("writeOnly"):  # a password: never repeated back
        return words
    shown = repr(error.instance)
    return f"{shown[:_SHOWN] + '…' if len(shown) > _SHOWN else shown} {words}"


def _size_message(keyword: str, size: int, limit: Any) -> str:
    unit, bound = _SIZES[keyword]
    return f"is {size} {unit}; {bound} {limit} allowed" if unit != "items" else (
        f"has {size} items; {bound} {limit} allowed")


def _shortened(error: ValidationError) -> str:
    """jsonschema's message, without repeating a long value in full."""
    shown = repr(error.instance)
    if len(shown) > _SHOWN and error.message.startswith(shown):
        return shown[:_SHOWN] + "…" + error.message[len(shown):]
    return error.message


@dataclass(frozen=True, slots=True)
class Limits:
    """The parts of a schema that hold a maxItems, to count a body's arrays against without
    validating their items, nor walking the items whose schema holds no limit (recipients)."""

    most: int | None = None  # this array's maxItems
    items: Limits | None = None
    properties: tuple[tuple[str, Limits], ...] = ()
    branches: tuple[Limits, ...] = ()  # allOf

    def over(self, value: JSON, at: str) -> list[FieldError]:
        """Arrays over their maxItems; within one that is, its items are not counted."""
        errors = [error for branch in self.branches for error in branch.over(value, at)]
        if isinstance(value, list):
            if self.most is not None and len(value) > self.most:
                errors.append(FieldError(at, _size_message("maxItems", len(value), self.most)))
            elif self.items is not None:
                for index, item in enumerate(value):
                    errors += self.items.over(item, f"{at}/{index}")
        elif isinstance(value, dict):
            for name, sub in self.properties:
                if name in value:
                    errors += sub.over(value[name], f"{at}/{_escape(name)}")
        return errors


def _limits(spec: Mapping[str, Any], schema: Mapping[str, Any]) -> Limits | None:
    while "$ref" in schema:
        schema = _lookup(spec, schema["$ref"][1:])
    found = Limits(
        schema.get("maxItems"),
        _limits(spec, schema["items"]) if isinstance(schema.get("items"), dict) else None,
        tuple((name, sub) for name, part in schema.get("properties", {}).items()
              if (sub := _limits(spec, part)) is not None),
        tuple(sub for part in schema.get("allOf", ()) if (sub := _limits(spec, part)) is not None))
    return None if found == Limits() else found


TOTAL = "x-max-items-per-request"  # an array's items, summed over the whole request


@dataclass(frozen=True, slots=True)
class Total:
    """An array schema whose items are capped over the whole request (``x-max-items-per-
    request``: the recipients of all the messages of one request together)."""

    path: tuple[str, ...]  # property names, "*" for every item of an array
    cap: int

    def check(self, body: JSON) -> list[FieldError]:
        seen = 0
        for at, items in _arrays(body, self.path, "/body"):
            seen += len(items)
            if seen > self.cap:
                name = self.path[-1]
                return [FieldError(at, f"makes {seen}+ {name} in the request; at most "
                                       f"{self.cap} in all")]
        return []


def _arrays(value: JSON, path: tuple[str, ...], at: str) -> Iterator[tuple[str, list[JSON]]]:
    if not path:
        if isinstance(value, list):
            yield at, value
        return
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _arrays(item, rest, f"{at}/{index}")
    elif isinstance(value, dict) and head in value:
        yield from _arrays(value[head], rest, f"{at}/{_escape(head)}")


def _totals(spec: Mapping[str, Any], schema: Mapping[str, Any], path: tuple[str, ...] = ()
            ) -> list[Total]:
    while "$ref" in schema:
        schema = _lookup(spec, schema["$ref"][1:])
    found = [Total(path, int(schema[TOTAL]))] if TOTAL in schema else []
    for branch in schema.get("allOf", ()):
        found += _totals(spec, branch, path)
    for name, sub in schema.get("properties", {}).items():
        found += _totals(spec, sub, (*path, name))
    if isinstance(schema.get("items"), dict):
        found += _totals(spec, schema["items"], (*path, "*"))
    return found


def _lookup(spec: Mapping[str, Any], pointer: str) -> Any:
    node: Any = spec
    for token in pointer.lstrip("/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def _parameters(spec: Mapping[str, Any], items: Iterable[tuple[str, Mapping[str, Any]]]
                ) -> list[Parameter]:
    """Path and query parameters, each schema as a $ref into the spec so its own refs resolve."""
    params = []
    for pointer, item in items:
        while "$ref" in item:  # "#/components/parameters/Name"
            pointer = item["$ref"][1:]
            item = _lookup(spec, pointer)
        if item["in"] not in ("path", "query"):
            continue
        resolved = item.get("schema", {})
        while "$ref" in resolved:
            resolved = _lookup(spec, resolved["$ref"][1:])
        schema = {"$ref": f"{SPEC_URI}#{pointer}/schema"}
        params.append(Parameter(item["name"], item["in"], bool(item.get("required")), schema,
                                resolved.get("type", "string"), resolved.get("format")))
    return params


def _formats(node: Any, found: set[str] | None = None) -> set[str]:
    """Every format the spec names on a string schema. A format on any other type would be
    checked by jsonschema but not by jsonschema-rs, which checks strings only: refused."""
    found = set() if found is None else found
    if isinstance(node, dict):
        if isinstance(node.get("format"), str):
            types = node.get("type", "string")
            if "string" not in ([types] if isinstance(types, str) else types):
                raise ValueError(f"openapi.yaml: format {node['format']!r} on a non-string")
            found.add(node["format"])
        for value in node.values():
            _formats(value, found)
    elif isinstance(node, list):
        for value in node:
            _formats(value, found)
    return found


def compile_validators(spec: Mapping[str, Any]) -> dict[tuple[str, str], OperationValidator]:
    """(METHOD, path) -> validator, for every operation in the spec."""
    resource = Resource.from_contents(dict(spec), default_specification=DRAFT202012)
    compiler = Compiler(
        Registry().with_resource(SPEC_URI, resource),
        jsonschema_rs.Registry([(SPEC_URI, dict(spec))]),
        {name: functools.partial(_conforms, format=name) for name in _formats(spec)})
    validators = {}
    for path, item in spec["paths"].items():
        shared = [(f"/paths/{_escape(path)}/parameters/{i}", p)
                  for i, p in enumerate(item.get("parameters", []))]
        for method, operation in item.items():
            if method == "parameters" or not isinstance(operation, dict):
                continue
            pointer = f"/paths/{_escape(path)}/{method}"
            own = [(f"{pointer}/parameters/{i}", p)
                   for i, p in enumerate(operation.get("parameters", []))]
            params = _parameters(spec, [*shared, *own])
            validators[(method.upper(), path)] = OperationValidator(
                compiler, pointer, operation, params, _answer_shape(spec, operation), spec)
    return validators
