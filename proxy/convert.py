"""Converters between JSON values and the upstream's element texts, registered by name.

Each converter is a pair, like Starlette's ``convert`` / ``to_string``::

    >>> CONVERTERS["flag"].to_xml(True), CONVERTERS["flag"].from_xml("1")
    ('1', True)

``to_xml`` raises :class:`ConversionError` for a client value it cannot send;
``from_xml`` raises it for an upstream text it cannot read, and returns None when the text
holds no value (the field is left out). A converter that only reads answers has no
``to_xml``. The mapping table names converters (``convert: phone``), builds one from an
argument, any YAML value (``convert: {enum: unsubscribe}``, ``convert: {match: 'id (\\d+)'}``),
or chains them (``convert: [{match: 'id (\\d+)'}, integer]``: read left to right, written
right to left).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers

from proxy.types import JSON

ISRAEL = ZoneInfo("Asia/Jerusalem")
# "dd/mm/yy hh:mm", Israel local time (docs/upstream-protocol.md#dates)
UPSTREAM_TIME = "%d/%m/%y %H:%M"


class ConversionError(ValueError):
    """A value that cannot cross to the other side; the message is shown to the client."""


@dataclass(frozen=True, slots=True)
class Converter:
    name: str
    to_xml: Callable[[JSON], str] | None  # None: it only reads answers
    from_xml: Callable[[str], JSON]  # None: the text holds no value


def _text_to_xml(value: JSON) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConversionError("must be a string")
    return str(value)


def _integer_to_xml(value: JSON) -> str:
    # JSON Schema's "integer" is any number with a zero fractional part (2020-12 validation
    # §6.1.1), so a client may well send 5.0.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConversionError("must be an integer")
    return str(value)


def _integer_from_xml(text: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ConversionError(f"{text!r} is not an integer")
    return int(text)


def _flag_to_xml(value: JSON) -> str:
    if not isinstance(value, bool):
        raise ConversionError("must be true or false")
    return "1" if value else "0"


def _flag_from_xml(text: str) -> bool:
    # 1 is yes, anything else no (docs/upstream-protocol.md#flags).
    return text == "1"


# Israeli national significant numbers (docs/upstream-protocol.md#phone-numbers): mobile
# 5 + 8 digits, landline 2/3/4/8/9 + 7 digits, VoIP 7[2-9] + 7 digits. Strict libphonenumber
# validity rejects numbers people really use in tests (0501234567), so the check is
# structural.
_MOBILE = re.compile(r"5[0-9]{8}")
_ANY_ISRAELI = re.compile(r"5[0-9]{8}|[2-489][0-9]{7}|7[2-9][0-9]{7}")
_WRITTEN_PHONE = re.compile(r"\+?[0-9][0-9 ().\-]{6,24}")


# The written forms nearly every request uses: +972/972/0/nothing, then the national number.
# phonenumbers reads them the same way but takes ~30 µs a number, most of a 10,000-recipient
# send's conversion (bench/RESULTS.md); anything else, and every refusal, takes its path.
_PLAIN = re.compile(r"(?:\+?972|0)?([2-9][0-9]{7,8})")
_SEPARATORS = re.compile(r"[\s\-().]")


def _national_number(value: JSON, pattern: re.Pattern[str], kind: str) -> str:
    if not isinstance(value, str):
        raise ConversionError("must be a string")
    raw = value.strip()
    plain = _PLAIN.fullmatch(raw)  # bare digits: a form _WRITTEN_PHONE accepts
    if plain is None:
        if not _WRITTEN_PHONE.fullmatch(raw):
            raise ConversionError(f"{value!r} is not a phone number (digits, +, spaces, dashes)")
        plain = _PLAIN.fullmatch(_SEPARATORS.sub("", raw))
    if plain is not None and pattern.fullmatch(plain.group(1)):
        return plain.group(1)
    return _parsed_national_number(value, raw, _SEPARATORS.sub("", raw), pattern, kind)


def _parsed_national_number(value: str, raw: str, digits: str, pattern: re.Pattern[str],
                            kind: str) -> str:
    # "9725…" without the plus is international too; "5…" is national without the trunk 0.
    if re.fullmatch(r"972[0-9]{8,9}", digits):
        raw = "+" + digits
    try:
        number = phonenumbers.parse(raw, "IL")
    except phonenumbers.NumberParseException as exc:
        raise ConversionError(f"{value!r} is not a phone number") from exc
    national = str(number.national_number)
    if number.country_code != 972 or not pattern.fullmatch(national):
        raise ConversionError(f"{value!r} is not an Israeli {kind} number")
    return national


def mobile_to_xml(value: JSON) -> str:
    return "0" + _national_number(value, _MOBILE, "mobile")


def phone_to_xml(value: JSON) -> str:
    return "0" + _national_number(value, _ANY_ISRAELI, "mobile or landline")


def _phone_from_xml(text: str) -> str:
    """E.164 for an Israeli number; any other text (a sender name, a short code) as it came."""
    try:
        return "+972" + _national_number(text, _ANY_ISRAELI, "")
    except ConversionError:
        return text


# RFC 3339 (section 5.6) with an offset.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+\-]\d{2}:\d{2})"
)


def instant(value: JSON) -> datetime:
    """An RFC 3339 date-time with an offset, as an aware datetime."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ConversionError(
            "must be an RFC 3339 date-time with an offset, e.g. 2024-03-29T10:00:00+03:00"
        )
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConversionError(f"{value!r} is not a valid date-time") from exc


# The upstream writes years with two digits; read back with POSIX strptime's %y (69-99 are
# 1969-1999), only 2000-2068 come back as the same year (a send_at in 2126 is not "26").
FIRST_YEAR, LAST_YEAR = 2000, 2068


def _israel_time_to_xml(value: JSON) -> str:
    moment = instant(value)
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ConversionError(f"must fall between {FIRST_YEAR} and {LAST_YEAR}: "
                              "the upstream writes the year with two digits")
    try:
        local = moment.astimezone(ISRAEL)
    except OverflowError as exc:  # 9999-12-31T23:59:00-01:00 and the like
        raise ConversionError("is out of the range of dates") from exc
    if not FIRST_YEAR <= local.year <= LAST_YEAR:
        raise ConversionError(f"must fall between {FIRST_YEAR} and {LAST_YEAR} in Israel time")
    return local.strftime(UPSTREAM_TIME)


# Answers repeat their minutes: the 1,000 rows of a delivery report often share one.
@functools.lru_cache(maxsize=4096)
def _israel_time_from_xml(text: str) -> str:
    try:
        local = datetime.strptime(text, UPSTREAM_TIME)
    except ValueError as exc:
        raise ConversionError(f"{text!r} is not a dd/mm/yy hh:mm date") from exc
    # fold=0: in the repeated hour of October the first (summer-time) reading is taken.
    return local.replace(tzinfo=ISRAEL).isoformat()


def enum(argument: Any, enums: Mapping[str, Any]) -> Converter:
    """JSON names <-> upstream codes; several codes may share one name (DLR states). The
    argument names a table of the mapping's ``enums:``, or is such a table itself."""
    name = argument if isinstance(argument, str) else "inline"
    values = enums.get(argument) if isinstance(argument, str) else argument
    if not isinstance(values, dict) or not values:
        raise ValueError(f"no {argument!r} under enums:" if isinstance(argument, str)
                         else "takes the name of an enums: table, or a {name: code} mapping")
    codes_of = {str(key): [str(code) for code in (codes if isinstance(codes, list) else [codes])]
                for key, codes in values.items()}
    to_code = {key: codes[0] for key, codes in codes_of.items()}
    to_name = {code: key for key, codes in codes_of.items() for code in codes}

    def to_xml(value: JSON) -> str:
        if not isinstance(value, str) or value not in to_code:
            raise ConversionError(f"must be one of {', '.join(to_code)}")
        return to_code[value]

    def from_xml(text: str) -> str:
        return to_name.get(text, "unknown")

    return Converter(f"enum:{name}", to_xml, from_xml)


def match(argument: Any, enums: Mapping[str, Any]) -> Converter:
    """Reads the first group of a regular expression found in the text; no match, no value."""
    if not isinstance(argument, str):
        raise ValueError("takes a regular expression")
    try:
        pattern = re.compile(argument)
    except re.error as exc:
        raise ValueError(f"bad regular expression: {exc}") from exc
    if pattern.groups < 1:
        raise ValueError("needs a group: group 1 is the value")

    def from_xml(text: str) -> str | None:
        found = pattern.search(text)
        return found.group(1) if found else None

    return Converter(f"match:{argument}", None, from_xml)


def chain(converters: Sequence[Converter]) -> Converter:
    """Read through each in turn (stopping at no value); write through them in reverse."""
    if len(converters) == 1:
        return converters[0]
    writers = [c.to_xml for c in reversed(converters) if c.to_xml is not None]

    def from_xml(text: str) -> JSON:
        value: JSON = text
        for converter in converters:
            if value is None:
                return None
            value = converter.from_xml(str(value))
        return value

    to_xml = None
    if len(writers) == len(converters):
        def to_xml(value: JSON) -> str:
            for writer in writers:
                value = writer(value)
            return str(value)

    return Converter("|".join(c.name for c in converters), to_xml, from_xml)


CONVERTERS: dict[str, Converter] = {
    c.name: c
    for c in (
        Converter("text", _text_to_xml, str),
        Converter("integer", _integer_to_xml, _integer_from_xml),
        Converter("flag", _flag_to_xml, _flag_from_xml),
        Converter("mobile_phone", mobile_to_xml, _phone_from_xml),
        Converter("phone", phone_to_xml, _phone_from_xml),
        Converter("israel_time", _israel_time_to_xml, _israel_time_from_xml),
    )
}

# Converters made from an argument in the table, any YAML value: `convert: {enum: unsubscribe}`.
# Each gets the argument and the table's `enums:`, and raises ValueError for a bad argument.
CONVERTER_FACTORIES: dict[str, Callable[[Any, Mapping[str, Any]], Converter]] = {
    "enum": enum,
    "match": match,
}
