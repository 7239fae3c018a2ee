"""The sandbox's notion of now, and the upstream's date format.

    >>> clock = FixedClock(datetime(2024, 10, 26, 23, 0, tzinfo=ISRAEL))
    >>> format_time(clock.advance(timedelta(hours=2, minutes=30)))
    '27/10/24 01:30'

Every moment is kept as an aware UTC datetime; Israel time appears only on the wire.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

ISRAEL = ZoneInfo("Asia/Jerusalem")
# "dd/mm/yy hh:mm", Israel local time (docs/upstream-protocol.md#dates)
WIRE_TIME = "%d/%m/%y %H:%M"
MINUTE = timedelta(minutes=1)


class Clock(Protocol):
    def now(self) -> datetime:
        """An aware datetime."""
        ...


class SystemClock:
    """The real time; scheduled sends and reports become due lazily, on the next request."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that moves only when told to (``advance``), for reproducible tests.

    ``start`` must be aware; without one the clock starts at the current minute.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime.now(UTC).replace(second=0, microsecond=0)
        if start.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime (tzinfo=...)")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("a FixedClock only moves forward")
        self._now += delta
        return self._now


class TickingClock(FixedClock):
    """A FixedClock that also moves ``step`` on each reading: the sandbox reads it once an
    exchange, so a run of the same requests always has the same dates, and sends made one
    after another land on different minutes (``--clock`` with ``--tick``)."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        if step < timedelta(0):
            raise ValueError("a TickingClock only moves forward")
        super().__init__(start)
        self.step = step

    def now(self) -> datetime:
        now = self._now
        self._now += self.step
        return now


def parse_time(text: str) -> datetime | None:
    """``dd/mm/yy hh:mm`` in Israel time, as UTC; None when the text is not such a date.

    Ambiguous local times (the hour repeated when summer time ends) mean the first one,
    summer time (PEP 495 ``fold=0``); local times skipped when summer time starts are
    read with the offset before the jump, so 02:30 on that night is 03:30 summer time.
    """
    try:
        local = datetime.strptime(text, WIRE_TIME)
    except ValueError:
        return None
    return local.replace(tzinfo=ISRAEL).astimezone(UTC)


def format_time(moment: datetime) -> str:
    return moment.astimezone(ISRAEL).strftime(WIRE_TIME)
