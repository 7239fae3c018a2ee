"""The generic interpreter of the mapping table, in both directions.

    An operation whose table entry says ``command: ping`` and nothing more:

    >>> etree.tostring(build_envelope(op, {"auth": {"username": "demo"}}))
    b'<ping><user><username>demo</username></user></ping>'

It knows no command: everything it does is said by an :class:`~proxy.mapping.Operation`.
"""

from __future__ import annotations

import copy
import enum
import functools
import re
from datetime import datetime, timedelta
from typing import TypeAlias

from lxml import etree

from proxy.convert import ConversionError, instant
from proxy.errors import FieldError, Refusal, RequestInvalid, UpstreamBadAnswer
from proxy.mapping import Element, Field, Operation, Window
from proxy.types import JSON


class Missing(enum.Enum):
    """What a pointer or an element path resolves to when nothing is there."""

    MISSING = enum.auto()


MISSING = Missing.MISSING
Value: TypeAlias = "JSON | Missing"


@functools.lru_cache(maxsize=1024)
def _tokens(pointer: str) -> tuple[str, ...]:
    """A pointer's reference tokens, unescaped; pointers come from the table, a few dozen."""
    if pointer == "":
        return ()
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/"))


def resolve(document: JSON, pointer: str) -> Value:
    """RFC 6901 JSON pointer; :data:`MISSING` where the document has no such value."""
    tokens = _tokens(pointer)
    if len(tokens) == 1 and isinstance(document, dict):  # "/phone" in an item: most lookups
        return document.get(tokens[0], MISSING)
    value: JSON = document
    for token in tokens:
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return MISSING
    return value


def choose_command(op: Operation, document: JSON) -> str:
    for choice in op.commands:
        if choice.when is None or resolve(document, choice.when) is not MISSING:
            return choice.name
    raise LookupError(op.operation_id)  # unreachable: the loader requires a last choice


# ── JSON -> XML ──────────────────────────────────────────────────────────────────────────────


_CONTAINERS = (dict, list)


class _Builder:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def text(self, spec: Element, context: JSON, at: str) -> str | None:
        value = MISSING if spec.source is None else resolve(context, spec.source)
        if value is MISSING:
            return spec.default
        to_xml = spec.convert.to_xml if spec.convert is not None else None
        if to_xml is None:  # the loader lets no reading-only converter into a request
            if isinstance(value, _CONTAINERS) or value is None:
                self.errors.append(FieldError(at + (spec.source or ""), "must be a scalar"))
                return None
            return value if isinstance(value, str) else str(value)
        try:
            return to_xml(value)
        except ConversionError as exc:
            self.errors.append(FieldError(at + (spec.source or ""), str(exc)))
            return None

    def emit(self, parent: etree._Element, spec: Element, context: JSON, at: str) -> None:
        if spec.each is None:
            self.emit_one(parent, spec, context, at)
            return
        items = resolve(context, spec.each)
        if items is MISSING:
            if spec.default is not None:
                self.put(etree.SubElement(parent, spec.name), None, spec.default, at, spec.each)
            return
        if not isinstance(items, list):
            self.errors.append(FieldError(at + spec.each, "must be an array"))
            return
        base = f"{at}{spec.each}/"
        for index, item in enumerate(items):
            self.emit_one(parent, spec, item, base + str(index))

    def emit_one(self, parent: etree._Element, spec: Element, context: JSON, at: str) -> None:
        if spec.children is not None:
            element = etree.SubElement(parent, spec.name)
            for child in spec.children:
                self.emit(element, child, context, at)
        else:
            text = self.text(spec, context, at)
            if text is None:
                return
            element = etree.SubElement(parent, spec.name)
            self.put(element, None, text, at, spec.source)
        for attribute in spec.attributes:
            value = self.text(attribute, context, at)
            if value is not None:
                self.put(element, attribute.name, value, at, attribute.source)

    def put(self, element: etree._Element, attribute: str | None, text: str, at: str,
            source: str | None) -> None:
        # lxml refuses what XML 1.0 cannot carry (NUL, most C0 controls, lone surrogates).
        try:
            if attribute is None:
                element.text = text
            else:
                element.set(attribute, text)
        except ValueError:
            self.errors.append(FieldError(at + (source or ""),
                                          "contains characters that XML cannot carry"))


def build_envelope(op: Operation, document: JSON) -> etree._Element:
    """The XML command for this request, or :class:`RequestInvalid` naming every bad field."""
    builder = _Builder()
    root = etree.Element(choose_command(op, document))
    for spec in op.request:
        builder.emit(root, spec, document, "")
    if builder.errors:
        raise RequestInvalid(builder.errors)
    return root


def apply_window(window: Window, document: dict[str, JSON], now: datetime, *,
                 splits: bool = False) -> tuple[datetime, datetime] | None:
    """Fill in the window's defaults, then check the upstream's rule (at most 7 days long,
    at most 365 days back: docs/upstream-protocol.md#report-windows), so a bad window is a
    422 naming the field. A window that ``splits`` (a feed's) may be longer. The window, or
    None when a date is unreadable (its converter names it)."""
    start, end = resolve(document, window.start), resolve(document, window.end)
    try:
        finish = now.replace(microsecond=0) if end is MISSING else instant(end)
        begin = finish - timedelta(days=window.default_days) if start is MISSING else instant(start)
    except (ConversionError, OverflowError):  # a date at the end of the calendar, say
        return None
    if end is MISSING:
        put(document, window.end, finish.isoformat())
    if start is MISSING:
        put(document, window.start, begin.isoformat())
    errors = []
    if finish < begin:
        errors.append(FieldError(window.end, "must not be before from"))
    elif not splits and finish - begin > timedelta(days=window.max_days):
        errors.append(FieldError(window.end, f"the window may span at most {window.max_days} days"))
    if begin < now - timedelta(days=window.max_age_days):
        errors.append(FieldError(window.start,
                                 f"must be at most {window.max_age_days} days in the past"))
    if errors:
        raise RequestInvalid(errors)
    return begin, finish


def put(document: dict[str, JSON], pointer: str, value: JSON) -> None:
    """Set the value at a pointer such as /query/to, making the objects on the way."""
    *parents, name = _tokens(pointer)
    container: JSON = document
    for token in parents:
        if isinstance(container, dict):
            container = container.setdefault(token, {})
    if isinstance(container, dict):
        container[name] = value


# ── XML -> JSON ──────────────────────────────────────────────────────────────────────────────


def _node_text(node: etree._Element | None) -> str | None:
    if node is None:
        return None
    # A leaf's text is its only text; mixed content also has its descendants'.
    text = "".join(str(part) for part in node.itertext()) if len(node) else node.text or ""
    return text.strip() or None


class _Reader:
    def __init__(self, document: JSON) -> None:
        self.document = document

    def fields(self, specs: tuple[Field, ...], node: etree._Element) -> dict[str, JSON]:
        out: dict[str, JSON] = {}
        # Children by tag, one pass: an ElementPath find() per field costs ~1 µs, and a
        # 1,000-row delivery report has 7,000 fields (bench/RESULTS.md).
        children: dict[str, etree._Element] = {}
        for child in reversed(node):  # the first of a name wins, as with find()
            children[child.tag] = child
        for spec in specs:
            value = self.field(spec, node, children)
            if value is not MISSING:
                out[spec.name] = value
        return out

    def field(self, spec: Field, node: etree._Element,
              children: dict[str, etree._Element] | None = None) -> Value:
        if spec.echo is not None:
            return resolve(self.document, spec.echo)
        if spec.each is not None:
            rows = node.findall(spec.each)
            if spec.where is not None:
                rows = [row for row in rows if _node_text(row.find(spec.where)) is not None]
            if spec.group_by is not None:
                rows = _grouped(rows, spec.group_by)
            return [item for row in rows if (item := self.item(spec, row)) is not MISSING]
        return self.item(spec, node, children)

    def item(self, spec: Field, node: etree._Element,
             children: dict[str, etree._Element] | None = None) -> Value:
        if spec.fields is not None:
            return self.fields(spec.fields, node)
        source = spec.source or "."
        if source == ".":
            element: etree._Element | None = node
        elif children is not None and _is_tag(source):
            element = children.get(source)
        else:
            element = node.find(source)
        text = _node_text(element)
        if text is None:
            return MISSING
        if spec.convert is None:
            return text
        try:
            value = spec.convert.from_xml(text)
        except ConversionError as exc:
            raise UpstreamBadAnswer(f"the upstream's <{source}> is unreadable: {exc}") from exc
        return MISSING if value is None else value


_TAG = re.compile(r"[A-Za-z_][\w.-]*")


@functools.lru_cache(maxsize=256)
def _is_tag(path: str) -> bool:
    return _TAG.fullmatch(path) is not None


def _grouped(rows: list[etree._Element], key: str) -> list[etree._Element]:
    """One synthetic node per distinct key, holding copies of that key's rows in order: an
    element has one parent, and the answer's own tree stays whole for every other field."""
    groups: dict[str, etree._Element] = {}
    for row in rows:
        name = _node_text(row.find(key)) or ""
        if name not in groups:
            groups[name] = etree.Element("group")
        groups[name].append(copy.deepcopy(row))
    return list(groups.values())


def read_answer(op: Operation, root: etree._Element, document: JSON) -> dict[str, JSON]:
    """The JSON body for a successful answer."""
    return _Reader(document).fields(op.response, root)


def names_not_found(op: Operation, envelope: etree._Element, root: etree._Element
                    ) -> tuple[Refusal, str] | None:
    """The upstream error that says what the URL asked for does not exist, with the refusal
    statuses.yaml gives it, if the table has such a rule and the answer such an error."""
    rule = op.not_found
    if rule is None:
        return None
    patterns = [(_said(template, envelope), refusal) for template, refusal in rule.says]
    for error in root.findall(rule.errors):
        text = _node_text(error) or ""
        for pattern, refusal in patterns:
            if pattern.search(text):
                return refusal, text
    return None


def _said(template: str, envelope: etree._Element) -> re.Pattern[str]:
    """"list {cl/id} is gone" -> a pattern matching "list 21518 is gone" for the envelope's id."""
    parts = re.split(r"\{([^}]+)\}", template)
    regex = ""
    for index, part in enumerate(parts):
        if index % 2 == 0:
            regex += re.escape(part)
        else:
            texts = [re.escape(t) for el in envelope.findall(part) if (t := _node_text(el))]
            regex += rf"(?<!\w)(?:{'|'.join(texts) or '(?!)'})(?!\w)"
    return re.compile(regex, re.IGNORECASE)
