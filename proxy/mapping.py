"""Load and check the mapping table (mapping.yaml) and the status table (statuses.yaml).

Both are read once, at start-up, into frozen dataclasses. A mistake in a table stops the start
with a :class:`MappingError` naming the file and the path inside it::

    mapping.yaml: operations.sendMessage.request.source: unknown key 'form'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import yaml
from lxml import etree

from proxy.compute import COMPUTATIONS, Computation
from proxy.convert import CONVERTER_FACTORIES, CONVERTERS, Converter, chain
from proxy.errors import Outcome, Refusal

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
SUCCESS_STATUSES = {200, 201, 202, 204}

# The words of the table language, each documented in mapping.yaml's header and used by it
# (tests/test_table_language.py holds all three to each other).
TOP_KEYS = frozenset({"envelope", "enums", "operations", "answers", "readiness", "paging",
                      "events", "limits"})
OPERATION_KEYS = frozenset({"http", "command", "success", "request", "response", "location",
                            "not_found", "window", "feed", "compute", "spends"})
ELEMENT_KEYS = frozenset({"from", "default", "each", "convert", "attributes", "children"})
FIELD_KEYS = frozenset({"from", "echo", "convert", "each", "where", "group_by", "fields"})
WINDOW_KEYS = frozenset({"from", "to", "max_days", "max_age_days", "default_days", "max_rows"})
PAGING_KEYS = frozenset({"cursor", "limit", "default_limit", "max_limit"})
FEED_KEYS = frozenset({"rows", "order", "identity", "batch"})
EVENT_KEYS = frozenset({"from", "below"})  # webhooks (proxy/events/, issue 13)
_EVENT_TYPE = re.compile(r"[a-z][a-z_]*(\.[a-z][a-z_]*)+")


class MappingError(ValueError):
    """The table is wrong; the message names the place."""


@dataclass(frozen=True, slots=True)
class Element:
    """One XML element of a request envelope (see the header of mapping.yaml)."""

    name: str
    source: str | None = None
    default: str | None = None
    each: str | None = None
    convert: Converter | None = None
    attributes: tuple[Element, ...] = ()
    children: tuple[Element, ...] | None = None


@dataclass(frozen=True, slots=True)
class Field:
    """One JSON field of an answer (see the header of mapping.yaml)."""

    name: str
    source: str | None = None
    echo: str | None = None
    convert: Converter | None = None
    each: str | None = None
    where: str | None = None
    group_by: str | None = None
    fields: tuple[Field, ...] | None = None


@dataclass(frozen=True, slots=True)
class CommandChoice:
    name: str
    when: str | None


@dataclass(frozen=True, slots=True)
class NotFoundRule:
    errors: str
    says: tuple[tuple[str, Refusal], ...]  # (template with {envelope/path} holes, refusal)


@dataclass(frozen=True, slots=True)
class Window:
    start: str
    end: str
    max_days: int
    max_age_days: int
    default_days: int
    max_rows: int | None = None  # the most rows one answer holds: one that long may be cut


@dataclass(frozen=True, slots=True)
class Paging:
    """How a client asks for a page of any feed (the top-level ``paging:``)."""

    cursor: str  # pointers into the request document
    limit: str
    default_limit: int
    max_limit: int


@dataclass(frozen=True, slots=True)
class Feed:
    """An operation whose answer is a list of dated rows, read page by page over its window."""

    rows: str                   # pointer into the JSON answer: the rows
    order: str                  # pointer into a row: its date, whole minutes, oldest first
    identity: tuple[str, ...]   # pointers into a row: what tells two rows apart
    paging: Paging
    batch: str | None = None    # pointer to a query array sent in parts of max_rows items


@dataclass(frozen=True, slots=True)
class Operation:
    operation_id: str
    method: str
    path: str
    commands: tuple[CommandChoice, ...]
    success: int
    request: tuple[Element, ...]
    response: tuple[Field, ...]
    location: str | None = None
    not_found: NotFoundRule | None = None
    window: Window | None = None
    feed: Feed | None = None
    compute: Computation | None = None  # answered here from the envelope, which is not sent
    # What sending this operation's envelope spends, counted by another operation's
    # computation (``spends:``): the spend guard's count of a send (proxy/guard.py).
    spends: Computation | None = None

    @property
    def command_names(self) -> tuple[str, ...]:
        return tuple(choice.name for choice in self.commands)


@dataclass(frozen=True, slots=True)
class StatusTable:
    success: frozenset[int]
    codes: Mapping[int, Refusal]
    messages: Mapping[int, str]
    unknown: Refusal
    not_found: Mapping[str, Refusal]  # refusals read from an answer's <errors>, by name

    def refusal(self, code: int | None) -> Refusal:
        return self.unknown if code is None else self.codes.get(code, self.unknown)


@dataclass(frozen=True, slots=True)
class EventType:
    """A webhook event type (the top-level ``events:``): the rows of a feed, or a number of
    an answer that falls below a threshold."""

    name: str              # message.received
    source: Operation      # the operation polled for it (it only reads)
    below: str | None = None  # pointer into its answer: a number watched against a threshold


@dataclass(frozen=True, slots=True)
class Table:
    operations: tuple[Operation, ...]
    statuses: StatusTable
    unclosed: tuple[str, ...]
    probe: str | None = None  # the operation /readyz sends without credentials
    events: tuple[EventType, ...] = ()
    credits: str | None = None  # the operation GET /v1/limits asks, with the credentials

    def operation(self, operation_id: str) -> Operation:
        for op in self.operations:
            if op.operation_id == operation_id:
                return op
        raise KeyError(operation_id)


class _Reader:
    """Walks a YAML mapping, remembering where it is so errors can say so."""

    def __init__(self, file: str, path: str, data: Any) -> None:
        self.file, self.path, self.data = file, path, data

    def fail(self, message: str) -> MappingError:
        return MappingError(f"{self.file}: {self.path or '(top)'}: {message}")

    def child(self, key: str | int) -> _Reader:
        path = f"{self.path}.{key}" if self.path else str(key)
        return _Reader(self.file, path, self.data[key])

    def mapping(self, allowed: set[str] | None = None,
                required: frozenset[str] | set[str] = frozenset()) -> dict[Any, Any]:
        if not isinstance(self.data, dict):
            raise self.fail("must be a mapping")
        if allowed is not None:
            for key in self.data:
                if key not in allowed:
                    raise self.fail(f"unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required - set(self.data)):
            raise self.fail(f"missing key {key!r}")
        return self.data

    def text(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise self.child(key).fail("must be a string")
        return str(value)

    def pointer(self, key: str) -> str | None:
        value = self.text(key)
        if value is not None and value and not value.startswith("/"):
            raise self.child(key).fail(f"{value!r} is not a JSON pointer (starts with /)")
        return value

    def pointer_value(self) -> str:
        if not isinstance(self.data, str) or not self.data.startswith("/"):
            raise self.fail(f"{self.data!r} is not a JSON pointer (starts with /)")
        return self.data

    def positive(self, key: str) -> int:
        value = self.data[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise self.child(key).fail("must be a positive integer")
        return value

    def element_path(self, key: str) -> str | None:
        value = self.text(key)
        if value is not None:
            try:
                etree.Element("probe").find(value)
            except SyntaxError as exc:
                raise self.child(key).fail(f"{value!r} is not an element path: {exc}") from exc
        return value


class _Loader:
    def __init__(self, file: str, enums: Mapping[str, Any], statuses: StatusTable) -> None:
        self.file, self.enums, self.statuses = file, enums, statuses

    def converter(self, reader: _Reader, *, writes: bool) -> Converter | None:
        """``convert:``: a name, ``{factory: argument}``, or a list of them (a chain)."""
        if "convert" not in reader.data:
            return None
        where = reader.child("convert")
        specs = where.data if isinstance(where.data, list) else [where.data]
        if not specs:
            raise where.fail("an empty list converts nothing")
        items = [where.child(i) for i in range(len(specs))] if isinstance(where.data, list) \
            else [where]
        converter = chain([self.one_converter(item) for item in items])
        if writes and converter.to_xml is None:
            raise where.fail(f"{converter.name} only reads answers; a request cannot use it")
        return converter

    def one_converter(self, where: _Reader) -> Converter:
        spec = where.data
        if isinstance(spec, str):
            if spec not in CONVERTERS:
                raise where.fail(f"unknown converter {spec!r} (known: {', '.join(CONVERTERS)}; "
                                 f"with an argument: {', '.join(CONVERTER_FACTORIES)})")
            return CONVERTERS[spec]
        if isinstance(spec, dict) and len(spec) == 1:
            (kind, argument), = spec.items()
            if kind not in CONVERTER_FACTORIES:
                raise where.fail(f"unknown converter {kind!r} "
                                 f"(with an argument: {', '.join(CONVERTER_FACTORIES)})")
            try:
                return CONVERTER_FACTORIES[kind](argument, self.enums)
            except ValueError as exc:
                raise where.child(kind).fail(str(exc)) from exc
        raise where.fail("must be a converter name, {converter: argument}, or a list of them")

    def elements(self, reader: _Reader) -> tuple[Element, ...]:
        return tuple(self.element(reader.child(name), name) for name in reader.mapping())

    def element(self, reader: _Reader, name: str) -> Element:
        data = reader.mapping(set(ELEMENT_KEYS))
        children = None
        if "children" in data:
            if {"from", "convert"} & set(data):
                raise reader.fail("an element has either children or a text, not both")
            children = self.elements(reader.child("children"))
        elif not {"from", "each", "default"} & set(data):
            raise reader.fail("needs one of from, each, default, children")
        attributes: tuple[Element, ...] = ()
        if "attributes" in data:
            attrs = reader.child("attributes")
            attributes = tuple(self.element(attrs.child(a), a) for a in attrs.mapping())
        source = reader.pointer("from")
        if source is None and "each" in data and children is None:
            source = ""  # the item itself
        return Element(
            name=name,
            source=source,
            default=reader.text("default"),
            each=reader.pointer("each"),
            convert=self.converter(reader, writes=True),
            attributes=attributes,
            children=children,
        )

    def fields(self, reader: _Reader) -> tuple[Field, ...]:
        return tuple(self.field(reader.child(name), name) for name in reader.mapping())

    def field(self, reader: _Reader, name: str) -> Field:
        data = reader.mapping(set(FIELD_KEYS))
        if not {"from", "echo", "each", "fields"} & set(data):
            raise reader.fail("needs one of from, echo, each, fields")
        if ("where" in data or "group_by" in data) and "each" not in data:
            raise reader.fail("where and group_by need each")
        return Field(
            name=name,
            source=reader.element_path("from"),
            echo=reader.pointer("echo"),
            convert=self.converter(reader, writes=False),
            each=reader.element_path("each"),
            where=reader.element_path("where"),
            group_by=reader.element_path("group_by"),
            fields=self.fields(reader.child("fields")) if "fields" in data else None,
        )

    def not_found(self, rule: _Reader) -> NotFoundRule:
        rule.mapping({"errors", "says"}, {"errors", "says"})
        says = rule.child("says")
        said: list[tuple[str, Refusal]] = []
        for name, templates in says.mapping().items():
            if name not in self.statuses.not_found:
                raise says.child(name).fail(f"no {name!r} under not_found: in statuses.yaml")
            for template in templates if isinstance(templates, list) else [templates]:
                said.append((str(template), self.statuses.not_found[name]))
        return NotFoundRule(str(rule.element_path("errors")), tuple(said))

    def computation(self, reader: _Reader) -> Computation:
        """``compute: {name: argument}``, a computation of proxy/compute.py."""
        if not (isinstance(reader.data, dict) and len(reader.data) == 1):
            raise reader.fail("must be {computation: argument}")
        (name, argument), = reader.data.items()
        if name not in COMPUTATIONS:
            raise reader.fail(f"unknown computation {name!r} (known: {', '.join(COMPUTATIONS)})")
        try:
            return COMPUTATIONS[name](argument)
        except ValueError as exc:
            raise reader.child(name).fail(str(exc)) from exc

    def commands(self, reader: _Reader) -> tuple[CommandChoice, ...]:
        if isinstance(reader.data, str):
            return (CommandChoice(reader.data, None),)
        if not isinstance(reader.data, list) or not reader.data:
            raise reader.fail("must be a command name or a list of {name, when}")
        choices = []
        for index in range(len(reader.data)):
            item = reader.child(index)
            item.mapping({"name", "when"}, {"name"})
            choices.append(CommandChoice(str(item.data["name"]), item.pointer("when")))
        if any(c.when is None for c in choices[:-1]) or choices[-1].when is not None:
            raise reader.fail("every choice but the last needs `when`; the last has none")
        return tuple(choices)

    def operation(self, reader: _Reader, operation_id: str,
                  envelope: tuple[Element, ...], paging: Paging | None = None) -> Operation:
        data = reader.mapping(set(OPERATION_KEYS), {"http", "command", "success"})
        method, _, path = str(data["http"]).partition(" ")
        if method not in HTTP_METHODS or not path.startswith("/v1/"):
            raise reader.child("http").fail("must be 'METHOD /v1/path'")
        if data["success"] not in SUCCESS_STATUSES:
            raise reader.child("success").fail(f"must be one of {sorted(SUCCESS_STATUSES)}")
        not_found = self.not_found(reader.child("not_found")) if "not_found" in data else None
        compute = self.computation(reader.child("compute")) if "compute" in data else None
        if compute is not None and {"response", "not_found", "location", "feed"} & set(data):
            raise reader.fail("a computed operation's answer is the computation's: "
                              "no response, not_found, location or feed")
        window = self.window(reader.child("window")) if "window" in data else None
        feed = None
        if "feed" in data:
            if window is None or window.max_rows is None:
                raise reader.child("feed").fail("a feed needs a window with max_rows")
            if paging is None:
                raise reader.child("feed").fail("a feed needs the top-level paging:")
            feed = self.feed(reader.child("feed"), paging)
        return Operation(
            operation_id=operation_id,
            method=method,
            path=path,
            commands=self.commands(reader.child("command")),
            success=int(data["success"]),
            request=(*envelope,
                     *(self.elements(reader.child("request")) if "request" in data else ())),
            response=self.fields(reader.child("response")) if "response" in data else (),
            location=reader.text("location"),
            not_found=not_found,
            window=window,
            feed=feed,
            compute=compute,
        )

    def window(self, w: _Reader) -> Window:
        w.mapping(set(WINDOW_KEYS), WINDOW_KEYS - {"max_rows"})
        numbers = {key: w.positive(key) for key in ("max_days", "max_age_days", "default_days",
                                                    "max_rows") if key in w.data}
        return Window(str(w.pointer("from")), str(w.pointer("to")), **numbers)

    def feed(self, f: _Reader, paging: Paging) -> Feed:
        f.mapping(set(FEED_KEYS), FEED_KEYS - {"batch"})
        identity = f.child("identity")
        if not isinstance(identity.data, list) or not identity.data:
            raise identity.fail("must be a list of pointers into a row")
        pointers = tuple(str(identity.child(i).pointer_value()) for i in range(len(identity.data)))
        return Feed(str(f.pointer("rows")), str(f.pointer("order")), pointers, paging,
                    f.pointer("batch"))


def _paging(reader: _Reader) -> Paging:
    reader.mapping(set(PAGING_KEYS), PAGING_KEYS)
    default, most = reader.positive("default_limit"), reader.positive("max_limit")
    if default > most:
        raise reader.child("default_limit").fail("must not be over max_limit")
    return Paging(str(reader.pointer("cursor")), str(reader.pointer("limit")), default, most)


def _check_asks(reader: _Reader, operations: tuple[Operation, ...]) -> None:
    """A computation asks only operations of the table that change nothing (GETs)."""
    reads = {op.operation_id for op in operations if op.method == "GET" and op.compute is None}
    for op in operations:
        for asked in op.compute.asks if op.compute is not None else ():
            if asked not in reads:
                raise reader.child(op.operation_id).child("compute").fail(
                    f"asks {asked!r}, which is no GET operation of the table")


def _resolve_spends(reader: _Reader, operations: tuple[Operation, ...],
                    loader: _Loader) -> tuple[Operation, ...]:
    """``spends: <operationId>``: an operation whose computation counts sends, of the same
    command and request, so that it counts exactly the envelope this operation sends; or
    ``spends: {computation: argument}``, one that reads this operation's own envelope."""
    by_id = {op.operation_id: op for op in operations}
    resolved = []
    for op in operations:
        if "spends" in reader.child(op.operation_id).data:
            at = reader.child(op.operation_id).child("spends")
            counter = loader.computation(at) if isinstance(at.data, dict) else _spent_as(
                reader, op, str(at.data), by_id)
            if counter.spend is None:
                raise at.fail(f"the {counter.name} computation counts no spending")
            op = replace(op, spends=counter)
        resolved.append(op)
    return tuple(resolved)


def _spent_as(reader: _Reader, op: Operation, named: str,
              by_id: Mapping[str, Operation]) -> Computation:
    counter = by_id.get(named)
    at = reader.child(op.operation_id).child("spends")
    if counter is None or counter.compute is None or counter.compute.spend is None:
        raise at.fail(f"{named!r} is no operation whose computation counts a send")
    same = ("command", "request")  # as written: the same words make the same envelope
    if any(reader.child(named).data.get(key) != reader.child(op.operation_id).data.get(key)
           for key in same):
        raise at.fail(f"{named!r} does not make the envelope this operation sends "
                      "(another command or request)")
    return counter.compute


def _read_yaml(name: str) -> Any:
    return yaml.safe_load(resources.files("proxy").joinpath(name).read_text("utf-8"))


def load_statuses(data: Any, file: str = "statuses.yaml") -> StatusTable:
    top = _Reader(file, "", data)
    top.mapping({"success", "codes", "unknown", "not_found"}, {"success", "codes", "unknown"})
    effects = {outcome.value: outcome for outcome in Outcome}

    def refusal(reader: _Reader) -> Refusal:
        rule = reader.mapping({"http", "type", "title", "effect", "message", "retry_after"},
                              {"http", "type", "title", "effect"})
        if not (isinstance(rule["http"], int) and 200 <= rule["http"] <= 599):
            raise reader.child("http").fail("must be an HTTP status code")
        if rule["effect"] not in effects:
            raise reader.child("effect").fail(f"must be one of {', '.join(effects)}")
        return Refusal(int(rule["http"]), str(rule["type"]), str(rule["title"]),
                       effects[rule["effect"]], rule.get("retry_after"))

    codes_reader = top.child("codes")
    codes = {int(code): refusal(codes_reader.child(code)) for code in codes_reader.mapping()}
    messages = {int(code): str(rule.get("message", "")) for code, rule in data["codes"].items()}
    said = top.child("not_found") if "not_found" in data else None
    not_found = {str(name): refusal(said.child(name)) for name in said.mapping()} if said else {}
    return StatusTable(frozenset(int(c) for c in data["success"]), codes, messages,
                       refusal(top.child("unknown")), not_found)


def load_table(data: Any | None = None, status_data: Any | None = None,
               file: str = "mapping.yaml") -> Table:
    """Read mapping.yaml and statuses.yaml (or the given data) into a checked :class:`Table`."""
    data = _read_yaml("mapping.yaml") if data is None else data
    top = _Reader(file, "", data)
    top.mapping(set(TOP_KEYS), {"operations"})
    enums = top.child("enums").mapping() if "enums" in data else {}
    statuses = load_statuses(_read_yaml("statuses.yaml") if status_data is None else status_data)
    loader = _Loader(file, enums, statuses)
    envelope = loader.elements(top.child("envelope")) if "envelope" in data else ()
    paging = _paging(top.child("paging")) if "paging" in data else None
    ops_reader = top.child("operations")
    operations = tuple(loader.operation(ops_reader.child(op_id), op_id, envelope, paging)
                       for op_id in ops_reader.mapping())
    seen: dict[tuple[str, str], str] = {}
    for op in operations:
        key = (op.method, op.path)
        if key in seen:
            raise ops_reader.child(op.operation_id).fail(f"same http as {seen[key]}")
        seen[key] = op.operation_id
    _check_asks(ops_reader, operations)
    operations = _resolve_spends(ops_reader, operations, loader)
    unclosed: tuple[str, ...] = ()
    if "answers" in data:
        answers = top.child("answers")
        answers.mapping({"unclosed"})
        unclosed = tuple(str(name) for name in answers.data.get("unclosed", ()))
    probe = None
    if "readiness" in data:
        readiness = top.child("readiness")
        readiness.mapping({"probe"}, {"probe"})
        probe = readiness.text("probe")
        if probe not in {op.operation_id for op in operations}:
            raise readiness.child("probe").fail(f"no operation {probe!r}")
    events = _events(top.child("events"), operations) if "events" in data else ()
    credits = None
    if "limits" in data:
        limits = top.child("limits")
        limits.mapping({"credits"}, {"credits"})
        credits = limits.text("credits")
        if credits not in {op.operation_id for op in operations
                           if op.method == "GET" and op.compute is None}:
            raise limits.child("credits").fail(f"{credits!r} is no GET operation of the table")
    return Table(operations, statuses, unclosed, probe, events, credits)


def _events(reader: _Reader, operations: tuple[Operation, ...]) -> tuple[EventType, ...]:
    by_id = {op.operation_id: op for op in operations}
    found = []
    for name in reader.mapping():
        entry = reader.child(name)
        entry.mapping(set(EVENT_KEYS), {"from"})
        if not _EVENT_TYPE.fullmatch(str(name)):
            raise entry.fail("an event type is lowercase words joined by dots (message.received)")
        source = by_id.get(str(entry.text("from")))
        if source is None:
            raise entry.child("from").fail(f"no operation {entry.data['from']!r}")
        if source.method != "GET":
            raise entry.child("from").fail("an event comes from an operation that only reads")
        below = entry.pointer("below")
        if (source.feed is None) == (below is None):
            raise entry.fail("an operation with a feed gives its rows; one without needs below")
        found.append(EventType(str(name), source, below))
    return tuple(found)
