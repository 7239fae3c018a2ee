from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import phonenumbers
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from proxy.convert import (
    CONVERTER_FACTORIES,
    CONVERTERS,
    ISRAEL,
    ConversionError,
    chain,
    enum,
    match,
)

mobile, phone, when = CONVERTERS["mobile_phone"], CONVERTERS["phone"], CONVERTERS["israel_time"]


@pytest.mark.parametrize("given_as", [
    "+972501234567", "972501234567", "0501234567", "501234567", "050-123-4567",
    "+972 50 123 4567", " 050 1234567 ", "+972-50-123-4567", "00972501234567",
    "+972 (0)50 123 4567",
])
def test_mobile_phone_accepts_every_written_form(given_as):
    assert mobile.to_xml(given_as) == "0501234567"


@pytest.mark.parametrize("bad", [
    "", "abc", "05012345678", "05012345", "+14155550123", "0312345678", "050 123 4567 ext 5", "+972-50-123-4567#",
    "0501234567x", "97250123456789", 501234567,
])
def test_mobile_phone_rejects_what_is_not_an_israeli_mobile(bad):
    with pytest.raises(ConversionError):
        mobile.to_xml(bad)


def test_phone_takes_landlines_for_sender_verification():
    assert phone.to_xml("03-1234567") == "031234567"
    assert phone.to_xml("+972 72 123 4567") == "0721234567"
    with pytest.raises(ConversionError):
        mobile.to_xml("03-1234567")


def test_phone_does_not_strip_972_inside_the_number():
    # NOTES.md: "stripping 972 anywhere in the string" is a known client bug.
    assert mobile.to_xml("0509729720") == "0509729720"


@pytest.mark.parametrize("text, e164", [
    ("5xxxxxxxx", "5xxxxxxxx"), ("501234567", "+972501234567"),
    ("0501234567", "+972501234567"), ("DemoAPI", "DemoAPI"), ("031234567", "+97231234567"),
])
def test_phone_from_xml_gives_e164_or_the_text_as_it_came(text, e164):
    assert phone.from_xml(text) == e164


@given(st.from_regex(r"5[0-9]{8}", fullmatch=True))
def test_mobile_phone_round_trip(national):
    e164 = mobile.from_xml("0" + national)
    assert mobile.to_xml(e164) == "0" + national
    assert mobile.from_xml(mobile.to_xml(e164)) == e164


@pytest.mark.parametrize("rfc3339, local", [
    ("2021-03-30T10:10:00+03:00", "30/03/21 10:10"),
    ("2021-03-30T07:10:00Z", "30/03/21 10:10"),
    ("2024-01-15T12:00:00+00:00", "15/01/24 14:00"),   # winter: UTC+2
    ("2024-07-15T12:00:00+00:00", "15/07/24 15:00"),   # summer: UTC+3
])
def test_israel_time_to_xml_is_israel_local_across_dst(rfc3339, local):
    assert when.to_xml(rfc3339) == local


@pytest.mark.parametrize("bad", [
    "2021-03-30T10:10:00", "2021-03-30", "30/03/21 10:10", "2021-13-30T10:10:00Z", "", 5,
])
def test_israel_time_needs_an_offset(bad):
    with pytest.raises(ConversionError):
        when.to_xml(bad)


def test_israel_time_from_xml_carries_the_offset_of_the_day():
    assert when.from_xml("03/02/21 16:38") == "2021-02-03T16:38:00+02:00"
    assert when.from_xml("03/07/21 16:38") == "2021-07-03T16:38:00+03:00"
    with pytest.raises(ConversionError):
        when.from_xml("2021-02-03 16:38")


@pytest.mark.parametrize("far", ["1999-12-31T21:59:00Z", "2126-01-01T10:00:00+02:00",
                                 "2068-12-31T22:00:00Z", "9999-12-31T23:59:00-01:00",
                                 "0001-01-01T00:00:00+01:00"])
def test_israel_time_refuses_years_two_digits_cannot_carry(far):
    with pytest.raises(ConversionError):
        when.to_xml(far)


@given(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2068, 12, 31),
                    timezones=st.just(ISRAEL)))
def test_israel_time_round_trip(moment):
    # The upstream keeps minutes; the hour that repeats in autumn is read as summer time.
    moment = moment.replace(second=0, microsecond=0)
    assume(moment.astimezone(UTC).astimezone(ISRAEL).replace(tzinfo=None)
           == moment.replace(tzinfo=None))  # not in the hour that spring skips
    back = datetime.fromisoformat(when.from_xml(when.to_xml(moment.isoformat())))
    assert back.replace(tzinfo=None) == moment.replace(tzinfo=None)
    assert abs(back - moment) in (timedelta(0), timedelta(hours=1))
    assert when.from_xml(when.to_xml(back.isoformat())) == back.isoformat()


@given(st.booleans())
def test_flag_round_trip(value):
    flag = CONVERTERS["flag"]
    assert flag.from_xml(flag.to_xml(value)) is value


def test_flag_reads_anything_but_1_as_no():
    # The document: "set 1, any other value would be considered as no".
    assert [CONVERTERS["flag"].from_xml(t) for t in ("1", "0", "2", "yes")] == [True] + [False] * 3


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integer_round_trip(value):
    integer = CONVERTERS["integer"]
    assert integer.from_xml(integer.to_xml(value)) == value


def test_integer_takes_a_number_with_no_fraction_as_json_schema_does():
    assert CONVERTERS["integer"].to_xml(5.0) == "5"
    assert CONVERTERS["integer"].to_xml(1e20) == "100000000000000000000"


@pytest.mark.parametrize("bad", [True, "5", 1.5, float("inf"), float("nan"), None])
def test_integer_refuses_what_is_not_an_integer(bad):
    with pytest.raises(ConversionError):
        CONVERTERS["integer"].to_xml(bad)


def test_enum_maps_names_to_codes_and_several_codes_to_one_name():
    states = enum("dlr", {"dlr": {"delivered": ["-1", "0", "102"], "rejected": "108"}})
    assert [states.from_xml(c) for c in ("102", "-1", "108", "4242")] == [
        "delivered", "delivered", "rejected", "unknown"]
    assert states.to_xml("rejected") == "108"
    with pytest.raises(ConversionError, match="one of delivered, rejected"):
        states.to_xml("lost")


@given(st.sampled_from(["link", "reply"]))
def test_enum_round_trip(name):
    unsubscribe = enum({"link": "3", "reply": "2"}, {})  # inline: the argument is the table
    assert unsubscribe.from_xml(unsubscribe.to_xml(name)) == name


@given(st.text())
def test_text_round_trip(value):
    text = CONVERTERS["text"]
    assert text.from_xml(text.to_xml(value)) == value


@given(st.sampled_from(["", "0", "972", "+972", "00972", "+9720"]),
       st.from_regex(r"[2-9][0-9]{6,9}", fullmatch=True),
       st.sampled_from(["", " ", "-"]))
def test_phones_read_as_phonenumbers_reads_them(prefix, national, separator):
    # The converter reads the common written forms itself (bench/RESULTS.md: speed); every
    # answer must be the one phonenumbers gives, refusals included.
    written = prefix + (separator if prefix else "") + national[:2] + separator + national[2:]
    digits = written.replace(" ", "").replace("-", "")
    try:
        oracle = phonenumbers.parse("+" + digits if re.fullmatch(r"972[0-9]{8,9}", digits) else digits, "IL")
    except phonenumbers.NumberParseException:
        oracle = None
    expected = str(oracle.national_number) if oracle and oracle.country_code == 972 else None
    for converter, pattern in ((mobile, r"5[0-9]{8}"), (phone, r"5[0-9]{8}|[2-489][0-9]{7}|7[2-9][0-9]{7}")):
        if expected is not None and re.fullmatch(pattern, expected):
            assert converter.to_xml(written) == "0" + expected
        else:
            with pytest.raises(ConversionError):
                converter.to_xml(written)


@given(st.from_regex(r"5[0-9]{8}|[2-489][0-9]{7}|7[2-9][0-9]{7}", fullmatch=True))
def test_phone_round_trip(national):
    e164 = phone.from_xml("0" + national)
    assert e164 == "+972" + national
    assert phone.from_xml(phone.to_xml(e164)) == e164


@given(st.integers(min_value=0, max_value=10**6), st.text(alphabet="abc ,.", max_size=20))
def test_match_reads(count, noise):
    deleted = match(r"(?i)(\d+) deleted", {})
    assert deleted.to_xml is None  # it only reads answers
    assert deleted.from_xml(f"{noise}{count} Deleted{noise}") == str(count)
    assert deleted.from_xml(noise) is None  # no match: no value, the field is left out
    as_number = chain([deleted, CONVERTERS["integer"]])
    assert as_number.from_xml(f"{count} deleted") == count and as_number.to_xml is None


def test_every_converter_has_its_round_trip_test():
    """CONTRIBUTING.md, "Add a converter": a pair has test_<name>_round_trip here, a converter
    that only reads answers test_<name>_reads."""
    for name in [*CONVERTERS, *CONVERTER_FACTORIES]:
        assert f"test_{name}_round_trip" in globals() or f"test_{name}_reads" in globals(), name


# Israel's 2026 transitions: summer time from Friday 27 March 02:00 (clocks to 03:00), winter
# time from Sunday 25 October 02:00 (clocks back to 01:00). Europe/Athens, say, moves on other
# days: swapping the zone breaks these (test_the_pinned_days_tell_the_zone_apart).
DST_DAYS = [
    ("2026-03-26T23:30:00+00:00", "27/03/26 01:30"),  # the last winter half hour
    ("2026-03-27T00:30:00+00:00", "27/03/26 03:30"),  # an hour later: 02:xx never happens
    ("2026-10-24T22:30:00+00:00", "25/10/26 01:30"),  # the first 01:30, summer time
    ("2026-10-24T23:30:00+00:00", "25/10/26 01:30"),  # the same wall time an hour later
    ("2026-10-25T00:30:00+00:00", "25/10/26 02:30"),
]
DST_READ = [
    ("27/03/26 01:30", "2026-03-27T01:30:00+02:00"),
    ("27/03/26 02:30", "2026-03-27T02:30:00+02:00"),  # the skipped hour, read forward (03:30+3)
    ("27/03/26 03:30", "2026-03-27T03:30:00+03:00"),
    ("25/10/26 01:30", "2026-10-25T01:30:00+03:00"),  # the repeated hour: its first pass
    ("25/10/26 02:30", "2026-10-25T02:30:00+02:00"),
]


def _dst_days_hold() -> bool:
    return (all(when.to_xml(instant) == local for instant, local in DST_DAYS)
            and all(when.from_xml(local) == instant for local, instant in DST_READ))


def test_israel_time_on_both_transition_days():
    for instant, local in DST_DAYS:
        assert when.to_xml(instant) == local, instant
    for local, instant in DST_READ:
        assert when.from_xml(local) == instant, local


def test_the_pinned_days_tell_the_zone_apart(monkeypatch):
    from zoneinfo import ZoneInfo

    import proxy.convert

    assert _dst_days_hold()
    monkeypatch.setattr(proxy.convert, "ISRAEL", ZoneInfo("Europe/Athens"))
    proxy.convert._israel_time_from_xml.cache_clear()
    try:
        assert not _dst_days_hold()
    finally:
        monkeypatch.undo()
        proxy.convert._israel_time_from_xml.cache_clear()
