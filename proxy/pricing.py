"""What a message costs: the text each destination gets, its encoding and SMS parts, and the
credits of a send. One set of rules for the proxy (the preview of a send) and the sandbox
(what it charges), so the two count alike (docs/upstream-protocol.md#message-length-and-cost).

    >>> count("a" * 160).parts, count("a" * 161).parts, count("שלום" * 18).parts
    (1, 2, 2)
    >>> compose("Hi [DYNAMIC_FIELD1]", tag="#", personalize=True, fields=("Dana",))
    '<#>Hi Dana'

GSM-7 text (3GPP TS 23.038): 160 septets in one SMS, 153 per part when split; the extension
table's characters take two septets (an escape and the character). One character outside the
GSM-7 alphabet makes the whole text UCS-2: 70 UTF-16 code units in one SMS, 67 per part. A
two-unit character (escape pair, surrogate pair) is never split across parts. A send costs
one credit per part per destination.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

# TS 23.038 §6.2.1, the basic character set, less ESC (0x1B), which is not a character.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# TS 23.038 §6.2.1.1, the default extension table: each costs two septets.
_EXTENSION = "\f^{}\\[~]|€"
_GSM = re.compile("[" + re.escape(_BASIC + _EXTENSION) + "]*")
_GSM_DOUBLE = re.compile("[" + re.escape(_EXTENSION) + "]")
_UCS2_DOUBLE = re.compile("[\U00010000-\U0010ffff]")  # a surrogate pair in UTF-16

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67
MAX_MESSAGE: Final = 1005  # characters of the text as sent, before dynamic fields are filled
DYNAMIC: Final = re.compile(r"\[DYNAMIC_FIELD([1-6])\]")  # docs/upstream-protocol.md#dynamic-fields
DYNAMIC_FIELDS: Final = 6

# What add_unsubscribe appends, by its value: 3 an opt-out link, 2 an opt-out by reply. The
# document gives no wording: these are the sandbox's (docs/upstream-protocol.md#sandbox-texts),
# English so that GSM-7 text stays GSM-7, fixed so that their cost is predictable. The
# upstream's own may differ in length, which no client can learn before sending.
UNSUBSCRIBE: Final = {
    2: "\nReply STOP to unsubscribe",
    3: "\nUnsubscribe: smsleads.co.il/u",
}


@dataclass(frozen=True, slots=True)
class Count:
    encoding: str    # "GSM-7" or "UCS-2"
    characters: int  # as a person counts them (an emoji is one)
    units: int       # septets (GSM-7) or UTF-16 code units (UCS-2) the text takes
    parts: int       # SMS parts, each one credit per destination


def count(text: str) -> Count:
    if _GSM.fullmatch(text):
        encoding, single, per_part, double = "GSM-7", GSM_SINGLE, GSM_PART, _GSM_DOUBLE
    else:
        encoding, single, per_part, double = "UCS-2", UCS2_SINGLE, UCS2_PART, _UCS2_DOUBLE
    doubles = len(double.findall(text))
    units = len(text) + doubles
    return Count(encoding, len(text), units, _parts(text, units, single, per_part, double))


def _parts(text: str, units: int, single: int, per_part: int, double: re.Pattern[str]) -> int:
    if units <= single:
        return 1
    if units == len(text):  # no two-unit character to keep whole
        return -(-units // per_part)
    parts, used = 1, 0
    for char in text:
        width = 2 if double.match(char) else 1
        if used + width > per_part:
            parts, used = parts + 1, 0
        used += width
    return parts


def compose(text: str, *, tag: str | None = None, personalize: bool = False,
            fields: Sequence[str] = (), unsubscribe: int = 0) -> str:
    """The text one destination gets: trimmed (the upstream trims every text it is given),
    '<#>' in front for tag '#', its dynamic fields filled in (an absent field is empty), the
    opt-out line of ``unsubscribe`` (2 or 3) appended."""
    text = text.strip()
    if tag == "#":  # "#" puts "<#>" in front (docs/upstream-protocol.md#flags)
        text = "<#>" + text
    if personalize:
        text = DYNAMIC.sub(lambda match: _field(fields, int(match[1])), text)
    return text + UNSUBSCRIBE.get(unsubscribe, "")


def _field(fields: Sequence[str], number: int) -> str:
    return fields[number - 1] if number <= len(fields) else ""


def has_fields(text: str) -> bool:
    """Whether the text names a dynamic field, so that its cost may vary by destination."""
    return DYNAMIC.search(text) is not None


def credits(texts: Iterable[str]) -> int:
    """The credits of a send: the parts of the text each destination gets, summed."""
    known: dict[str, int] = {}
    total = 0
    for text in texts:
        if text not in known:
            known[text] = count(text).parts
        total += known[text]
    return total
