"""XML in and out: the hardened request parser, the answer builder, the quirks rendering.

    >>> answer("balance", 0, "Your balance is:42", [node("balance", 42)])
    b'<?xml version="1.0" encoding="utf-8"?>\\n<balance><status>0</status>...</balance>'

Answers are built with lxml; the XML declaration is the one of a captured real answer
(docs/upstream-protocol.md#transport), which lxml would write with single quotes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from lxml import etree

from proxy.sandbox.texts import STATUS_MESSAGES

DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'

# No DTD, no entity expansion, no network, no huge trees (XXE, billion laughs).
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
    huge_tree=False, remove_comments=True, remove_pis=True,
)


class Rejected(Exception):
    """A request the upstream refuses: its status code and message."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.message = STATUS_MESSAGES[code] if message is None else message


def missing(field: str) -> Rejected:
    # Status 2 names the missing element in its message (docs/upstream-protocol.md#code-table).
    return Rejected(2, f"Missing field: {field}")


def unknown_error(rule: str) -> Rejected:
    """998 with the broken rule named after the table's text."""
    return Rejected(998, f"{STATUS_MESSAGES[998]}: {rule}")


def parse(body: bytes) -> etree._Element:
    # Leading whitespace is tolerated: one of the provider's examples sends a newline before
    # the XML declaration (docs/upstream-protocol.md#encodings).
    if b"<!DOCTYPE" in body:  # entities can only be declared in one
        raise Rejected(1)
    try:
        root = etree.fromstring(body.lstrip(), _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise Rejected(1) from exc
    docinfo: Any = root.getroottree().docinfo  # lxml-stubs lack DocInfo.doctype
    if docinfo.doctype:  # a DOCTYPE the byte check missed (a UTF-16 request)
        raise Rejected(1)
    return root


def command_of(root: etree._Element) -> str:
    return etree.QName(root).localname


def node(tag: str, text: str | int | None = None,
         children: Iterable[etree._Element] = ()) -> etree._Element:
    element = etree.Element(tag)
    if text is not None:
        element.text = str(text)
    element.extend(children)
    return element


def rows(container: str, row: str,
         items: Iterable[Sequence[tuple[str, str | int]]]) -> etree._Element:
    """``<container><row><a>..</a>..</row>..</container>``, always present even when empty."""
    return node(container, None, (node(row, None, (node(tag, text) for tag, text in item))
                                  for item in items))


def answer(command: str, status: int, message: str | None,
           body: Iterable[etree._Element] = ()) -> bytes:
    """``<command><status/><message/>body</command>``; verify_phone has no <message>."""
    root = etree.Element(command)
    etree.SubElement(root, "status").text = str(status)
    if message is not None:
        etree.SubElement(root, "message").text = message
    root.extend(body)
    return DECLARATION + etree.tostring(root, encoding="utf-8")


_SELF_CLOSED = re.compile(r"<([A-Za-z_][\w.-]*)/>")
# A tag followed by a tag; text never holds "<" or ">" (lxml escapes both).
_TAG_TAG = re.compile(r"(<(/?)[^<>]*>)(?=<(/?))")


def _one_per_line(match: re.Match[str]) -> str:
    opening_then_closing = not match[2] and match[3]  # <message></message> stays whole
    return match[1] if opening_then_closing else match[1] + "\n"


def quirk(normal: bytes, command: str) -> bytes:
    """The answer as the provider's examples print it (docs/upstream-protocol.md#rendering),
    made from the normal answer:

    - one element per line, declaration ``encoding="UTF-8"`` (verify_phone's example says
      ``utf-8``), empty elements written ``<message></message>``;
    - ``<shipment_id>`` never closed: ``<shipment_id>123<shipment_id>``
      (docs/upstream-protocol.md#unclosed-shipment_id);
    - rmNumBL without a root: ``<status>`` and ``<message>`` at the top
      (docs/upstream-protocol.md#root-less-rmnumbl-answer);
    - bulk answered with root ``sms`` and ``<add_unsubscribe>0</add_unsubscribe>`` first
      (docs/upstream-protocol.md#bulk-answer-root).
    """
    text = normal.decode("utf-8")
    if command != "verify_phone":
        text = text.replace('encoding="utf-8"', 'encoding="UTF-8"', 1)
    text = _TAG_TAG.sub(_one_per_line, _SELF_CLOSED.sub(r"<\1></\1>", text))
    text = text.replace("</shipment_id>", "<shipment_id>")
    if command == "rmNumBL":
        text = text.replace("<rmNumBL>\n", "", 1).replace("\n</rmNumBL>", "", 1)
    elif command == "bulk":
        text = text.replace("<bulk>\n", "<sms>\n<add_unsubscribe>0</add_unsubscribe>\n", 1)
        text = text.replace("\n</bulk>", "\n</sms>", 1)
    return text.encode("utf-8")
