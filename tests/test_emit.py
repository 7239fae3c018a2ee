"""proxy/emit.py writes the bytes lxml would write for the tree, and refuses what it refuses.

For every operation of the table, hypothesis draws request documents shaped by the table's
own pointers (right and wrong types, absent fields, values full of metacharacters, ``]]>``,
quotes, emoji, lone surrogates and control characters) and both builders must agree: the
same bytes, or the same errors in the same order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from proxy.emit import ATTRIBUTE, TEXT, compile_envelope, escape
from proxy.errors import RequestInvalid
from proxy.mapping import Element, Operation, load_table
from proxy.translate import build_envelope, names_not_found

TABLE = load_table()
# Every shape the table language allows, the ones no operation uses yet included.
SHAPES = load_table({"operations": {"shapes": {
    "http": "POST /v1/shapes", "success": 200,
    "command": [{"name": "first", "when": "/body/first"}, {"name": "second"}],
    "request": {
        "parent": {"attributes": {"kind": {"from": "/body/kind"}, "fixed": {"from": "/body/never", "default": "a&\"b"}},
                   "children": {"child": {"from": "/body/child"}, "empty": {"children": {}}}},
        "rows": {"each": "/body/rows", "default": "none", "attributes": {"id": {"from": "/id"}},
                 "children": {"n": {"from": "/n", "convert": "integer"}, "c": {"from": "/never", "default": "]]>"}}},
        "tags": {"each": "/body/tags", "from": "/t", "default": "<none>",
                 "attributes": {"a": {"from": "/a"}, "b": {"from": "/b", "convert": "flag"}}},
        "ids": {"each": "/body/ids", "from": "/i", "attributes": {"a": {"from": "/a"}}},
        "bare": {"each": "/body/bare"},
        "numbers": {"each": "/body/numbers", "convert": "integer"},
        "deep": {"from": "/body/deep/~1x/0"},
        "constant": {"from": "/body/never", "default": "<&>"},
    }}}}).operation("shapes")
TRICKY = ["&", "<", ">", '"', "'", "]]>", "\r", "\n", "\t", "\r\n", "\x00", "\x01", "\x1f",
          "\x7f", "\x85", "\u2028", "\ud800", "\udfff", "\ufffe", "\uffff", "é", "שלום",
          "\U0001f600", "&amp;", "<![CDATA[", "\U0010ffff"]

# Every code point, surrogates included, and the tricky ones often; mostly from what XML can
# carry, so that many envelopes are written whole, not only refused.
characters = st.one_of(st.characters(codec=None, exclude_categories=()), st.sampled_from(TRICKY))
carried = st.one_of(st.characters(exclude_categories=("Cs", "Cc")), st.sampled_from(
    [c for c in TRICKY if c not in ("\x00", "\x01", "\x1f", "\ud800", "\udfff", "\ufffe", "\uffff")]))
texts = st.one_of(*[st.lists(carried, max_size=12).map("".join)] * 3,
                  st.lists(characters, max_size=12).map("".join))
scalars = st.one_of(texts, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(texts, inner, max_size=3), max_leaves=5)

# Values the converters accept, so that whole envelopes get written, not only refused.
GOOD = {
    "mobile_phone": st.from_regex(r"(\+972|972|0)?5[0-9]{8}", fullmatch=True),
    "phone": st.from_regex(r"(\+972|0)?(5[0-9]{8}|[2-489][0-9]{7})", fullmatch=True),
    "israel_time": st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2067, 1, 1),
                                timezones=st.just(UTC)).map(datetime.isoformat),
    "flag": st.booleans(),
    "integer": st.integers(-10**6, 10**6),
    "enum:unsubscribe": st.sampled_from(["link", "reply"]),
}


def value_for(spec: Element) -> st.SearchStrategy[Any]:
    good = GOOD.get(spec.convert.name) if spec.convert is not None else texts
    return st.one_of(*[good] * 9, anything) if good is not None else anything


def _put(context: dict[str, Any], pointer: str, value: Any) -> None:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]
    for index, token in enumerate(tokens[:-1]):
        container = context.setdefault(token, [] if tokens[index + 1].isdigit() else {})
        if isinstance(container, list):  # /dynamic_fields/3: a list long enough
            position = int(tokens[index + 1])
            container.extend(["pad"] * (position + 1 - len(container)))
            container[position] = value
            return
        context = container
    context[tokens[-1]] = value


@st.composite
def document_for(draw: st.DrawFn, specs: tuple[Element, ...]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for spec in specs:
        _fill(draw, context, spec)
    return context


def _fill(draw: st.DrawFn, context: dict[str, Any], spec: Element) -> None:
    if spec.each is not None:
        shape = draw(st.integers(0, 9))
        if shape == 0:
            return  # absent
        if shape == 1:
            _put(context, spec.each, draw(scalars))  # not an array
            return
        _put(context, spec.each, draw(st.lists(_item(spec), max_size=5)))
        return
    _fill_one(draw, context, spec)


@st.composite
def _item(draw: st.DrawFn, spec: Element) -> Any:
    if spec.source == "" and spec.children is None:
        return draw(value_for(spec))  # the item itself is the text
    if draw(st.integers(0, 14)) == 0:
        return draw(scalars)  # an item that is no object
    item: dict[str, Any] = {}
    _fill_one(draw, item, spec)
    return item


def _fill_one(draw: st.DrawFn, context: dict[str, Any], spec: Element) -> None:
    if spec.children is not None:
        for child in spec.children:
            _fill(draw, context, child)
    elif spec.source and draw(st.integers(0, 5)):
        _put(context, spec.source, draw(value_for(spec)))
    for attribute in spec.attributes:
        if attribute.source and draw(st.booleans()):
            _put(context, attribute.source, draw(value_for(attribute)))


def _tree(op: Operation, document: Any) -> bytes | list[Any]:
    try:
        envelope = build_envelope(op, document)
    except RequestInvalid as exc:
        return exc.errors
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _text(op: Operation, document: Any) -> bytes | list[Any]:
    try:
        return compile_envelope(op)(document).body
    except RequestInvalid as exc:
        return exc.errors


@pytest.mark.parametrize("op", TABLE.operations, ids=lambda op: op.operation_id)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_emit_writes_the_trees_bytes_or_the_same_errors(op, data):
    document = data.draw(document_for(op.request))
    assert _text(op, document) == _tree(op, document)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_emit_writes_every_shape_of_the_table_language_as_the_tree(data):
    document = data.draw(document_for(SHAPES.request))
    assert _text(SHAPES, document) == _tree(SHAPES, document)


@settings(max_examples=300)
@given(value=texts, place=st.sampled_from(["text", "attribute"]))
def test_escape_is_what_libxml2_writes_and_refuses_what_lxml_refuses(value, place):
    element = etree.Element("e")
    try:
        if place == "text":
            element.text = value
        else:
            element.set("a", value)
    except ValueError:
        expected = None
    else:
        written = etree.tostring(element, encoding="unicode")
        expected = (written[3:-4] if place == "text" else written[6:-3])
    assert escape(value, TEXT if place == "text" else ATTRIBUTE) == expected


P, Q = "0501234567", "+972 50-123-4568"


@pytest.mark.parametrize("recipients", [
    [{"phone": P, "external_id": 'a"<&>\'b'}, {"phone": Q, "external_id": "tab\tnew\nline\r"}],
    [{"phone": P}, {"phone": Q, "external_id": "x&y"}, {"phone": P, "external_id": "]]>"}],
    [{"phone": P}, {"phone": Q, "external_id": None}],
    [{"phone": P}, {"phone": Q, "external_id": 5}],
    [{"phone": P, "external_id": 5.5}, {"phone": Q, "external_id": True}],
    [{"phone": P, "external_id": ["list"]}],
    [{"phone": P}, {"phone": Q, "external_id": "\x00"}],
    [{"phone": P, "external_id": "\ud800"}, {"phone": Q, "external_id": "\ufffe"}],
    [{"phone": P, "external_id": "😀 שלום"}, {"phone": Q, "external_id": "é\x85\u2028"}],
    [{"external_id": "no phone"}], [P], [None], [], [{"phone": 501234567}],
], ids=repr)
def test_recipients_are_written_as_the_tree_writes_them(recipients):
    op = TABLE.operation("sendMessage")
    document = {"auth": {"username": "demo"},
                "body": {"sender": "S", "text": "t", "recipients": recipients}}
    assert _text(op, document) == _tree(op, document)


@pytest.mark.parametrize("body", [
    {"ids": [{"i": "a<b>&c\r", "a": 'q"r\t'}, {"i": "plain", "a": "plain"}]},
    {"ids": [{"i": "a<b"}, {"i": "c&d", "a": "e>f"}]},
    {"ids": [{"i": 7, "a": "x"}]}, {"ids": [{"a": "x"}]}, {"ids": [{"i": "x", "a": None}]},
    {"bare": ["a<b", "c&d\r", "]]>"]}, {"bare": ["x", 3, 4.5, False]}, {"bare": ["x", None]},
    {"bare": ["\x0b"]}, {"numbers": [1, 2.0, "3"]}, {"numbers": [1, 2.5]},
], ids=repr)
def test_repeated_texts_are_written_as_the_tree_writes_them(body):
    document = {"body": body}
    assert _text(SHAPES, document) == _tree(SHAPES, document)


def test_a_bulk_of_recipients_with_one_bad_value_names_it_where_the_tree_would():
    op = TABLE.operation("sendMessage")
    recipients = [{"phone": "0501234567", "external_id": f"id-{i}"} for i in range(50)]
    recipients[20]["external_id"] = "a\x0bb"
    recipients[30]["phone"] = "nope"
    recipients[40]["external_id"] = 'quote " & <tag>'
    document = {"auth": {"username": "demo"},
                "body": {"sender": "S", "text": "t", "recipients": recipients}}
    errors = _text(op, document)
    assert [(e.pointer, e.detail) for e in errors] == [
        ("/body/recipients/20/external_id", "contains characters that XML cannot carry"),
        ("/body/recipients/30/phone", "'nope' is not a phone number (digits, +, spaces, dashes)"),
    ]
    assert errors == _tree(op, document)
    del recipients[20], recipients[29]
    body = _text(op, document)
    assert b'<phone id="quote &quot; &amp; &lt;tag&gt;">0501234567</phone>' in body
    assert body == _tree(op, document)


def test_the_not_found_rule_reads_the_written_envelope():
    op = TABLE.operation("removeContact")
    envelope = compile_envelope(op)({"auth": {"username": "demo"},
                                     "path": {"id": "21518", "phone": "0501234567"}})
    answer = etree.fromstring("<rmNumCL><status>0</status><errors><error>phone 0501234567 "
                              "does not exist</error></errors></rmNumCL>")
    refusal, said = names_not_found(op, envelope.body, answer)
    assert (refusal.slug, said) == ("contact-not-found", "phone 0501234567 does not exist")
    other = etree.fromstring("<rmNumCL><status>0</status><errors><error>phone 0509999999 "
                             "does not exist</error></errors></rmNumCL>")
    assert names_not_found(op, envelope.body, other) is None
