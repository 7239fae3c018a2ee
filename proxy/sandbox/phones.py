"""Israeli phone numbers as the upstream reads them (docs/upstream-protocol.md#phone-numbers).

    >>> mobile("0521234567"), mobile(" 521234567 "), mobile("+972521234567")
    ('521234567', '521234567', None)

Numbers are compared by their national significant number (no leading 0).
"""

from __future__ import annotations

import re

# Mobile "5xxxxxxxx or 05xxxxxxxx"; landline 0[2-489] + 7 digits (verify_phone's "3xxxxxxx").
_MOBILE = re.compile(r"0?(5[0-9]{8})")
_LANDLINE = re.compile(r"0?([2-489][0-9]{7})")


def mobile(text: str) -> str | None:
    """The national number of a mobile phone, or None."""
    match = _MOBILE.fullmatch(text.strip())
    return match.group(1) if match else None


def landline(text: str) -> str | None:
    match = _LANDLINE.fullmatch(text.strip())
    return match.group(1) if match else None


def national(digits: str) -> str:
    """A numeric sender id the way verified numbers are kept: without the trunk 0."""
    return digits[1:] if digits.startswith("0") else digits


def local(number: str) -> str:
    """The written form of a national number, 05XXXXXXXX (as incoming messages give them:
    docs/upstream-protocol.md#incoming)."""
    return "0" + number
