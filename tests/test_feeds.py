"""proxy/feeds.py against a stand-in upstream that behaves as docs/upstream-protocol.md#paging
says: rows oldest first, dated to the minute, at most `cap` an answer, a window of at most
`max_days`. Whatever the rows and the page sizes, following the pages gives every row once."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from proxy import feeds
from proxy.app import create_app
from proxy.errors import InvalidCursor
from proxy.feeds import DAY, Batch, Page, Position, Row, read_page
from proxy.mapping import Feed, Paging, Window
from proxy.settings import Settings
from tests.conftest import NOW, Recorder

PAGING = Paging("/query/cursor", "/query/limit", 1000, 1000)
FEED = Feed("/data", "/at", ("/id",), PAGING, batch="/query/ids")
START = 29_000_000  # a minute of 2025


def window(cap: int, days: int = 1) -> Window:
    return Window("/query/from", "/query/to", days, 365, 1, cap)


@dataclass
class Upstream:
    """Rows in arrival order; an answer is the oldest `cap` of a window (and of some ids)."""

    cap: int
    rows: list[Row] = field(default_factory=list)
    calls: list[tuple[int, int, Batch]] = field(default_factory=list)
    between: Callable[[Upstream], None] | None = None  # what changes before each call

    def add(self, minute: int, ident: str) -> None:
        self.rows.append({"at": feeds.moment_of(minute), "id": ident, "n": len(self.rows)})

    async def fetch(self, start: int, stop: int, batch: Batch) -> list[Row]:
        if self.between is not None:
            self.between(self)
        self.calls.append((start, stop, batch))
        found = [row for row in self.rows if start <= _minute(row) <= stop
                 and (batch is None or row["id"] in batch)]
        return sorted(found, key=_minute)[:self.cap]


def _minute(row: Row) -> int:
    return feeds.minute_of(feeds.datetime.fromisoformat(str(row["at"])))


def walk(upstream: Upstream, end: int, limits: list[int], days: int = 1,
         batches: list[Batch] | None = None) -> list[Page]:
    """Every page of the window [START, end], with the page sizes in turn."""
    pages: list[Page] = []
    position: Position | None = Position(end, START)
    while position is not None:
        limit = limits[len(pages) % len(limits)]
        page = asyncio.run(read_page(FEED, window(upstream.cap, days), position, limit,
                                     batches or [None], upstream.fetch))
        assert len(page.rows) <= limit
        pages.append(page)
        position = page.next
        assert len(pages) < 10_000
    return pages


def given_rows(pages: list[Page]) -> list[object]:
    return [row["n"] for page in pages for row in page.rows]


# Minutes as gaps after START (0: the same minute as the row before), ids from a small
# alphabet so that equal rows are common.
ROWS = st.lists(st.tuples(st.integers(0, 3), st.sampled_from("aab")), max_size=60)


def _store(cap: int, rows: list[tuple[int, str]]) -> Upstream:
    upstream, minute = Upstream(cap), START
    for gap, ident in rows:
        minute += gap
        upstream.add(minute, ident)
    return upstream


@settings(max_examples=150, deadline=None)
@given(ROWS, st.integers(2, 8), st.lists(st.integers(1, 12), min_size=1, max_size=5))
def test_the_pages_give_every_row_once_oldest_first(rows, cap, limits):
    upstream = _store(cap, rows)
    per_minute = Counter(_minute(row) for row in upstream.rows)
    # What the upstream can give: a minute holding `cap` rows or more is cut to its oldest.
    reachable = [row["n"] for row in upstream.rows
                 if sum(1 for r in upstream.rows[:row["n"]] if _minute(r) == _minute(row)) < cap]
    pages = walk(upstream, START + 200, limits)
    assert given_rows(pages) == reachable
    cut = {cut.minute: cut.reachable for page in pages for cut in page.cuts}
    assert cut == {feeds.moment_of(m): cap for m, count in per_minute.items() if count >= cap}
    assert all(page.overlap is None for page in pages)


@settings(max_examples=100, deadline=None)
@given(ROWS, st.integers(1, 9), st.lists(st.integers(0, 3), max_size=6))
def test_rows_arriving_in_the_minute_still_filling_up_are_given_once(rows, limit, arrivals):
    """New rows come after the others of their minute (`arrivals` before each of the first
    calls): none is given twice, and every row that was there when the walk began is."""
    upstream = _store(1000, rows)
    before = len(upstream.rows)
    last = START + sum(gap for gap, _ in rows)

    def arrive(up: Upstream) -> None:
        for _ in range(arrivals[len(up.calls)] if len(up.calls) < len(arrivals) else 0):
            up.add(last, "a")

    upstream.between = arrive
    given = given_rows(walk(upstream, last, [limit]))
    assert len(given) == len(set(given))
    assert set(range(before)) <= set(given)
    assert given == sorted(given, key=lambda n: (_minute(upstream.rows[n]), n))


def test_a_changed_boundary_minute_is_given_again_and_said():
    upstream = Upstream(1000)
    for ident in "abcd":
        upstream.add(START, ident)
    first = asyncio.run(read_page(FEED, window(1000), Position(START, START), 2, [None],
                                  upstream.fetch))
    assert [row["id"] for row in first.rows] == ["a", "b"]
    upstream.rows.pop(0)  # "a" is gone before the next page: the two rows given are not there
    assert first.next is not None
    second = asyncio.run(read_page(FEED, window(1000), first.next, 10, [None], upstream.fetch))
    assert [row["id"] for row in second.rows] == ["b", "c", "d"]  # nothing skipped
    assert second.overlap == (feeds.moment_of(START), 2)  # and "b" may repeat: said


def test_a_long_window_is_read_in_calls_of_at_most_max_days():
    upstream = Upstream(1000)
    for day in (0, 9, 20):
        upstream.add(START + day * DAY + 5, f"d{day}")
    pages = walk(upstream, START + 30 * DAY, [1000], days=7)
    assert [row["id"] for page in pages for row in page.rows] == ["d0", "d9", "d20"]
    starts = [(start, stop) for start, stop, _ in upstream.calls]
    assert starts[0][0] == START and starts[-1][1] == START + 30 * DAY
    for (_, stop), (start, _) in itertools.pairwise(starts):
        assert start == stop + 1  # contiguous, no minute twice or never
    assert all(stop - start <= 7 * DAY for start, stop in starts)


def test_a_page_makes_a_bounded_number_of_reads():
    upstream = Upstream(1000)
    upstream.add(START + 364 * DAY, "late")
    pages = walk(upstream, START + 365 * DAY, [1000], days=7)
    assert [row["id"] for page in pages for row in page.rows] == ["late"]
    assert all(page.rows == [] for page in pages[:-1])  # empty pages, each with a cursor
    assert len(pages) == -(-53 // feeds.MAX_READS)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6), st.integers(1, 24), st.integers(1, 3), st.integers(1, 15))
def test_ids_are_asked_in_batches_and_a_full_minute_is_halved(cap, ids, per_id, limit):
    """Every id's rows in one minute: a batch the cap cuts is asked again in halves, until
    each part fits or holds one id, so nothing is lost that the upstream can give."""
    upstream = Upstream(cap)
    names = [f"e{i}" for i in range(ids)]
    for name in names:
        for _ in range(per_id):
            upstream.add(START, name)
    batches = feeds.batches(FEED, window(cap), {"query": {"ids": names}})
    assert all(batch is not None and len(batch) <= cap for batch in batches)
    pages = walk(upstream, START, [limit], batches=batches)
    given = Counter(row["id"] for page in pages for row in page.rows)
    assert sum(given.values()) == sum(Counter(given_rows(pages)).values())
    assert len(given_rows(pages)) == len(set(given_rows(pages)))
    if per_id < cap:
        assert given == dict.fromkeys(names, per_id)
        assert all(not page.cuts for page in pages)
    else:  # one id alone fills an answer: cut, and said
        assert given == dict.fromkeys(names, cap)
        assert {cut.minute for page in pages for cut in page.cuts} == {feeds.moment_of(START)}


# ── Cursors ─────────────────────────────────────────────────────────────────────────────────

KEY = feeds.cursor_key("acme", "acme-token")
QUERY = feeds.fingerprint("listDeliveryReports", {"from": "2026-11-01T00:00:00+02:00"})
POSITIONS = st.builds(Position, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                      st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))


@given(POSITIONS)
def test_a_cursor_carries_its_position_in_a_short_url_safe_text(position):
    cursor = feeds.encode(position, KEY, QUERY)
    assert feeds.decode(cursor, KEY, QUERY) == position
    assert len(cursor) == 60 and cursor.replace("-", "").replace("_", "").isalnum()


@given(POSITIONS, st.data())
def test_a_cursor_altered_anywhere_is_refused(position, data):
    raw = bytearray(base64.urlsafe_b64decode(feeds.encode(position, KEY, QUERY) + "=="))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] ^= data.draw(st.integers(1, 255))
    altered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidCursor):
        feeds.decode(altered, KEY, QUERY)


@given(st.text(max_size=200))
def test_any_text_is_a_cursor_or_a_problem(text):
    with pytest.raises(InvalidCursor):
        feeds.decode(text, KEY, QUERY)


def test_a_cursor_belongs_to_its_credentials_and_its_query():
    cursor = feeds.encode(Position(10, 5, 2, 99), KEY, QUERY)
    with pytest.raises(InvalidCursor, match="other credentials"):
        feeds.decode(cursor, feeds.cursor_key("acme", "other-token"), QUERY)
    with pytest.raises(InvalidCursor, match="other credentials"):
        feeds.decode(cursor, feeds.cursor_key("bob", "acme-token"), QUERY)
    other = feeds.fingerprint("listDeliveryReports", {"from": "2026-11-02T00:00:00+02:00"})
    with pytest.raises(InvalidCursor, match="another query"):
        feeds.decode(cursor, KEY, other)


def test_in_single_tenant_mode_a_cursor_belongs_to_the_api_key_that_got_it():
    rows = "".join(f"<transaction><phone>5212345{n}</phone><date>24/11/26 10:00</date>"
                   "</transaction>" for n in (10, 11))
    recorder = Recorder(f"<blacklist><status>0</status><transactions>{rows}</transactions>"
                        "</blacklist>".encode())
    keys = ("first-key-0123456789", "second-key-0123456789")
    held = Settings(username="acme", token="acme-token", api_keys=",".join(keys))
    app = create_app(held, transport=httpx.MockTransport(recorder), clock=lambda: NOW)
    query = {"from": "2026-11-24T00:00:00+02:00", "limit": 1}
    with TestClient(app) as client:
        def get(key: str, **extra: str) -> httpx.Response:
            return client.get("/v1/blacklist", params={**query, **extra},
                              headers={"Authorization": f"Bearer {key}"})

        cursor = get(keys[0]).json()["next_cursor"]
        mine, theirs = get(keys[0], cursor=cursor), get(keys[1], cursor=cursor)
    assert mine.status_code == 200 and mine.json()["data"] == [
        {"phone": "+972521234511", "added_at": "2026-11-24T10:00:00+02:00"}]
    assert theirs.status_code == 400
    assert theirs.json()["type"] == "/problems/invalid-cursor"
