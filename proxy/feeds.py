"""Feeds: the dated rows of an operation read page by page, every row once (``feed:`` in
mapping.yaml, docs/upstream-protocol.md#paging).

    page = await read_page(feed, window, Position(end=e, at=s), limit, [None], fetch)
    page.rows, page.next         # the next page starts at page.next (None: the walk is over)

The upstream answers at most ``window.max_rows`` rows per call, oldest first, dated to the
minute, over at most ``window.max_days``. A page starts where the last one stopped: at the
minute of its last row, less the rows of that minute already given, which are counted and
recognised by a hash of their identities (a count, not a set: two rows can be equal). A
minute holding more rows than one answer cannot be paged: its reachable rows are given and
the page says so (:class:`Cut`). A cursor carries the position, signed with a key derived
from the caller's credentials, so any worker can continue it and no other account or query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import struct
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from proxy.errors import InvalidCursor, UpstreamBadAnswer
from proxy.mapping import Feed, Window
from proxy.translate import MISSING, resolve
from proxy.types import JSON

DAY = 24 * 60          # minutes
MAX_READS = 8          # reads of at most window.max_days per page: a page of an empty year
                       # of reports takes a few pages, not one request of 53 upstream calls
Row = dict[str, JSON]
Batch = tuple[JSON, ...] | None  # a part of the feed's batch array, or None: the whole query
Fetch = Callable[[int, int, Batch], Awaitable[list[Row]]]
"""(first minute, last minute, batch) -> the upstream's rows, as the table reads them."""


def minute_of(moment: datetime) -> int:
    """Minutes since the epoch: the upstream's resolution."""
    return int(moment.timestamp()) // 60


def moment_of(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Position:
    """Where a walk stands: the rows before minute ``at`` and ``seen`` rows of it are given."""

    end: int         # the window's last minute, fixed by the walk's first page
    at: int          # the minute the next page starts in
    seen: int = 0    # rows of minute ``at`` already given
    digest: int = 0  # the multiset hash of their identities


@dataclass(frozen=True, slots=True)
class Cut:
    """A minute with more rows than one upstream answer: only ``reachable`` could be read."""

    minute: str      # as the rows write it
    reachable: int


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    next: Position | None
    cuts: tuple[Cut, ...] = ()
    overlap: tuple[str, int] | None = None  # (minute, rows of it that may repeat)


# ── Rows ────────────────────────────────────────────────────────────────────────────────────


def row_minute(feed: Feed, row: Row) -> int:
    """The minute a row is dated (its ``order``), or UpstreamBadAnswer."""
    value = resolve(row, feed.order)
    try:
        return minute_of(datetime.fromisoformat(str(value)))
    except ValueError as exc:
        raise UpstreamBadAnswer("the upstream sent a row without a readable date") from exc


def identity(feed: Feed, row: Row) -> int:
    """A hash of what tells the row apart from others (its ``identity``)."""
    values = [None if (v := resolve(row, p)) is MISSING else v for p in feed.identity]
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def digest(feed: Feed, rows: Iterable[Row], start: int = 0) -> int:
    """A hash of the rows' identities as a multiset: order-free, and equal rows count twice."""
    return (start + sum(identity(feed, row) for row in rows)) % 2**64


# ── Reading ─────────────────────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class _Read:
    rows: list[tuple[int, Row]]  # (minute, row), oldest first
    through: int                 # every row up to this minute is in rows
    cut: set[int] = field(default_factory=set)  # minutes the cap cut


@dataclass(frozen=True, slots=True)
class _Reader:
    feed: Feed
    cap: int
    fetch: Fetch

    async def read(self, start: int, stop: int, batches: Sequence[Batch]) -> _Read:
        parts = [await self.part(start, stop, batch) for batch in batches]
        through = min(part.through for part in parts)
        rows = [row for part in parts for row in part.rows if row[0] <= through]
        rows.sort(key=lambda row: row[0])  # stable: a minute keeps the parts' order
        return _Read(rows, through, {m for part in parts for m in part.cut if m <= through})

    async def part(self, start: int, stop: int, batch: Batch) -> _Read:
        fetched = await self.fetch(start, stop, batch)
        # A row dated before `start` (the repeated hour of autumn) belongs to `start`.
        rows = sorted(((max(row_minute(self.feed, row), start), row) for row in fetched),
                      key=lambda row: row[0])
        if len(fetched) < self.cap:
            return _Read([row for row in rows if row[0] <= stop], stop)
        last = rows[-1][0]
        if last > start:  # the last minute may be cut: it is read again from there
            through = min(last - 1, stop)
            return _Read([row for row in rows if row[0] <= through], through)
        if batch is not None and len(batch) > 1:  # a full minute: fewer ids at a time
            half = len(batch) // 2
            return await self.read(start, stop, [batch[:half], batch[half:]])
        return _Read(rows, start, {start})


async def read_page(feed: Feed, window: Window, position: Position, limit: int,
                    batches: Sequence[Batch], fetch: Fetch) -> Page:
    """Up to ``limit`` rows from ``position`` on, and where the next page starts."""
    reader = _Reader(feed, window.max_rows or 1, fetch)
    out: list[tuple[int, Row]] = []
    cuts: dict[int, Cut] = {}
    overlap = None
    at, seen, known, end = position.at, position.seen, position.digest, position.end
    for _ in range(MAX_READS):
        if at > end:
            return _page(out, None, cuts, overlap)
        read = await reader.read(at, min(at + window.max_days * DAY, end), batches)
        rows = read.rows
        for minute in read.cut:
            here = [row for m, row in rows if m == minute]
            cuts[minute] = Cut(str(resolve(here[0], feed.order)), len(here))
        if seen:
            head = rows[:seen]
            same = len(head) == seen and head[-1][0] == at
            if same and digest(feed, (row for _, row in head)) == known:
                rows = rows[seen:]
            else:  # the minute changed since the last page: it is given again, whole
                overlap = (_minute_text(feed, rows, at), seen)
                seen, known = 0, 0
        room = limit - len(out)
        out += rows[:room]
        if len(rows) > room:  # the page ends inside this read
            last = out[-1][0]
            given = [row for m, row in out if m == last]
            if last != at:
                seen, known = 0, 0
            return _page(out, Position(end, last, seen + len(given), digest(feed, given, known)),
                         cuts, overlap)
        if read.through >= end:
            return _page(out, None, cuts, overlap)
        at, seen, known = read.through + 1, 0, 0
        if len(out) == limit:
            break
    return _page(out, Position(end, at), cuts, overlap)


def _minute_text(feed: Feed, rows: list[tuple[int, Row]], minute: int) -> str:
    for m, row in rows:
        if m == minute:
            return str(resolve(row, feed.order))
    return moment_of(minute)


def _page(out: list[tuple[int, Row]], after: Position | None, cuts: Mapping[int, Cut],
          overlap: tuple[str, int] | None) -> Page:
    return Page([row for _, row in out], after, tuple(cuts[m] for m in sorted(cuts)), overlap)


def batches(feed: Feed, window: Window, document: JSON) -> list[Batch]:
    """The feed's batch array in parts of at most max_rows items ([None] without one)."""
    items = resolve(document, feed.batch) if feed.batch is not None else MISSING
    if not isinstance(items, list) or not items:
        return [None]
    size = window.max_rows or len(items)
    return [tuple(items[i:i + size]) for i in range(0, len(items), size)]


# ── Cursors ─────────────────────────────────────────────────────────────────────────────────
# base64url(version, query fingerprint, end, at, seen, digest) + 16 bytes of HMAC-SHA256: 60
# characters. Only the credentials that made a cursor can continue it: the key is derived from
# them, and no server secret has to be configured or shared between replicas.

VERSION = 1
_STATE = struct.Struct(">B8sIIIQ")
_MAC = 16


def cursor_key(username: str, secret: str) -> bytes:
    """The HMAC key of a caller: its username and (a hash of) what it authenticates with."""
    hidden = hashlib.sha256(secret.encode("utf-8")).digest()
    return hashlib.sha256(b"smsleads-proxy cursor\0" + username.encode("utf-8") + b"\0"
                          + hidden).digest()


def fingerprint(operation_id: str, query: Mapping[str, JSON]) -> bytes:
    """The query a walk belongs to: the operation and its parameters, as coerced."""
    text = json.dumps([operation_id, query], sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def encode(position: Position, key: bytes, query: bytes) -> str:
    state = _STATE.pack(VERSION, query, position.end, position.at, position.seen,
                        position.digest)
    mac = hmac.new(key, state, hashlib.sha256).digest()[:_MAC]
    return base64.urlsafe_b64encode(state + mac).rstrip(b"=").decode("ascii")


def decode(text: str, key: bytes, query: bytes) -> Position:
    """The position a cursor carries, or :class:`InvalidCursor` saying why not."""
    try:
        raw = base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise InvalidCursor("the cursor is not one this proxy made") from exc
    state, mac = raw[:-_MAC], raw[-_MAC:]
    if len(state) != _STATE.size:
        raise InvalidCursor("the cursor is not one this proxy made")
    if not hmac.compare_digest(mac, hmac.new(key, state, hashlib.sha256).digest()[:_MAC]):
        raise InvalidCursor("the cursor was altered, or made for other credentials")
    version, made_for, end, at, seen, known = _STATE.unpack(state)
    if version != VERSION:
        raise InvalidCursor("the cursor was made by another version of the proxy")
    if not hmac.compare_digest(made_for, query):
        raise InvalidCursor("the cursor was made for another query: repeat its parameters "
                            "(all but limit) with it")
    return Position(end, at, seen, known)
