"""How many SMS parts a text takes (3GPP TS 23.038; NOTES.md, Message length and cost).

    >>> parts("a" * 160), parts("a" * 161), parts("שלום" * 18)
    (1, 2, 2)

GSM-7 text: 160 septets in one SMS, 153 per part when split; the extension table's
characters take two septets (an escape and the character). One character outside the
GSM-7 alphabet makes the whole text UCS-2: 70 UTF-16 code units in one SMS, 67 per part.
A two-unit character (escape pair, surrogate pair) is never split across parts.
"""

from __future__ import annotations

import re

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


def parts(text: str) -> int:
    if _GSM.fullmatch(text):
        single, per_part, double = GSM_SINGLE, GSM_PART, _GSM_DOUBLE
    else:
        single, per_part, double = UCS2_SINGLE, UCS2_PART, _UCS2_DOUBLE
    doubles = len(double.findall(text))
    units = len(text) + doubles
    if units <= single:
        return 1
    if not doubles:
        return -(-units // per_part)
    count, used = 1, 0
    for char in text:
        width = 2 if double.match(char) else 1
        if used + width > per_part:
            count, used = count + 1, 0
        used += width
    return count
