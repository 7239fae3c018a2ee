"""The pollers: what the upstream can only be asked, turned into events.

Every ``--webhook-poll-interval`` seconds each process lists the subscriptions, and for each
account and source (an operation the table's ``events:`` names) that one of them wants, takes
or renews the source's lease in the store: only its holder reads it, one process among all the
workers and replicas. A holder that dies stops renewing, and another takes the lease over when
it ends (``--webhook-lease``).

A feed is read through proxy/feeds.py, from the minute before the one where the last reading
ended (rows the upstream dates late by a minute are not missed) to now; its position is kept
in the store after every page, so a restart, here or in another process, resumes there. Rows
read again make events with the ids they had (deliveries.py), which reach each subscription
once. A subscription gets no row dated before the minute before it was made: the reading
starts no earlier than that for the oldest subscription (a position kept from subscriptions
since deleted is not a reason to read, and send, the months in between), and a row goes only
to the subscriptions made in time for it. A number watched ``below`` a threshold makes an
event when it crosses under it, once per crossing (the crossings are counted in the store).
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
from anyio.abc import TaskStatus

from proxy import endpoint, feeds
from proxy.auth import Credentials
from proxy.errors import ProblemError
from proxy.events.deliveries import Deliveries, Event, event_id
from proxy.events.subscriptions import Subscription, Subscriptions
from proxy.mapping import EventType, Feed, Operation, Table, Window
from proxy.metrics import Metrics
from proxy.store import Store, StoreError
from proxy.translate import apply_window, build_envelope, resolve
from proxy.types import JSON
from proxy.upstream import Upstream
from proxy.validation import OperationValidator

LOOKBACK = 1  # minutes read again before the last reading's end

log = logging.getLogger("smsleads_proxy.webhooks")

Token = Callable[[Subscription], str | None]


def _account_key(account: str) -> str:
    return feeds.fingerprint("account", {"username": account}).hex()


def _first_minute(sub: Subscription) -> int:
    """The first minute whose rows the subscription gets: the one before it was made (a row
    the upstream dates late by a minute, as LOOKBACK)."""
    return feeds.minute_of(datetime.fromtimestamp(sub.created_at, UTC)) - LOOKBACK


@dataclass(frozen=True, slots=True)
class Watch:
    """One account's source: the operation polled and the event types it makes."""

    account: str
    source: Operation
    types: tuple[EventType, ...]

    @property
    def key(self) -> str:
        return f"{_account_key(self.account)}:{self.source.operation_id}"


def watches(table: Table, subscriptions: Sequence[Subscription]) -> list[Watch]:
    wanted: dict[tuple[str, str], set[str]] = {}
    for sub in subscriptions:
        if sub.enabled:
            for kind in table.events:
                if kind.name in sub.types:
                    wanted.setdefault((sub.account, kind.source.operation_id), set()).add(
                        kind.name)
    return [Watch(account, table.operation(source),
                  tuple(kind for kind in table.events if kind.name in names))
            for (account, source), names in sorted(wanted.items())]


@dataclass
class Poller:
    table: Table
    store: Store
    upstream: Callable[[], Upstream]
    validators: dict[tuple[str, str], OperationValidator]
    subscriptions: Subscriptions
    deliveries: Deliveries
    token: Token
    clock: Callable[[], float]
    metrics: Metrics
    interval: float
    lease: float
    threshold: int
    holder: str = field(default_factory=lambda: secrets.token_hex(8))
    caught_up: dict[str, float] = field(default_factory=dict)  # watch -> when it last was
    held: set[str] = field(default_factory=set)  # the leases this process holds

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            while True:
                started = time.monotonic()
                await self.cycle()
                await anyio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await self.release()

    async def release(self) -> None:
        """At shutdown: the leases this process holds go at once, not when they end, so a
        process started in its place (or another replica) reads on without waiting."""
        for key in list(self.held):
            with contextlib.suppress(StoreError):  # else it ends with its time to live
                await self.store.erase(key, only=self.holder.encode())
            self.held.discard(key)

    async def cycle(self) -> None:
        """One reading of every source this process holds the lease of."""
        try:
            subscriptions = await self.subscriptions.all()
        except StoreError as exc:
            log.warning("the webhook subscriptions cannot be read", extra={"reason": str(exc)})
            return
        lag: dict[str, float] = {}
        for watch in watches(self.table, subscriptions):
            mine = [s for s in subscriptions if s.account == watch.account and s.enabled]
            try:
                if await self._hold(watch):
                    started = self.clock()
                    await self.poll(watch, mine)
                    self.caught_up[watch.key] = started
            except (ProblemError, StoreError) as exc:
                log.warning("a webhook source could not be read", extra={
                    "source": watch.source.operation_id, "reason": str(exc)})
            since = self.caught_up.get(watch.key)
            if since is not None:
                name = watch.source.operation_id
                lag[name] = max(lag.get(name, 0.0), self.clock() - since)
        for name, seconds in lag.items():
            self.metrics.webhook_lag.labels(name).set(seconds)

    async def _hold(self, watch: Watch) -> bool:
        """Take the watch's lease, or renew it if this process holds it."""
        key, me = f"webhooks:lease:{watch.key}", self.holder.encode()
        held = await self.store.read(key)
        if held not in (None, me):
            self.held.discard(key)
            return False
        if await self.store.write_if(key, me, held, ttl=self.lease):
            self.held.add(key)
            return True
        self.held.discard(key)
        return False

    async def poll(self, watch: Watch, subscriptions: list[Subscription]) -> None:
        token = next((t for s in reversed(subscriptions) if (t := self.token(s))), None)
        if token is None:
            return
        creds = Credentials(watch.account, token)
        if watch.source.feed is not None and watch.source.window is not None:
            await self._read_feed(watch, watch.source.feed, watch.source.window, creds,
                                  subscriptions)
        else:
            await self._read_level(watch, creds, subscriptions)

    def _validator(self, op: Operation) -> OperationValidator:
        return self.validators[(op.method, op.path)]

    # ── A feed ────────────────────────────────────────────────────────────────────────────

    async def _read_feed(self, watch: Watch, feed: Feed, window: Window, creds: Credentials,
                         subscriptions: list[Subscription]) -> None:
        op, now = watch.source, self.clock()
        end = feeds.minute_of(datetime.fromtimestamp(now, UTC))
        where = f"webhooks:position:{watch.key}"
        held = await self.store.read(where)
        at = end if held is None else json.loads(held)["at"]
        first = min(_first_minute(sub) for sub in subscriptions
                    if any(kind.name in sub.types for kind in watch.types))
        position: feeds.Position | None = feeds.Position(
            end, max(min(at, end) - LOOKBACK, first, 0))
        document: dict[str, JSON] = {"auth": {"username": watch.account}, "path": {},
                                     "query": {}}
        fetch = endpoint.fetcher(op, feed, window, self._validator(op), self.upstream(),
                                 document, creds, datetime.fromtimestamp(now, UTC))
        counts: Counter[tuple[int, int]] = Counter()  # (minute, identity) -> rows given
        while position is not None:
            page = await feeds.read_page(feed, window, position, feed.paging.max_limit, [None],
                                         fetch)
            if page.overlap is not None:  # a minute given again whole: count it afresh
                minute = feeds.minute_of(datetime.fromisoformat(page.overlap[0]))
                counts = Counter({k: n for k, n in counts.items() if k[0] != minute})
            for cut in page.cuts:
                log.warning("a minute holds more rows than one answer: only some are events",
                            extra={"source": op.operation_id, "minute": cut.minute,
                                   "reachable": cut.reachable})
            for row in page.rows:
                minute, identity = feeds.row_minute(feed, row), feeds.identity(feed, row)
                counts[(minute, identity)] += 1
                await self._publish(watch, row, minute, identity, counts[(minute, identity)],
                                    subscriptions, now)
            position = page.next
            reached = end if position is None else position.at
            await self.store.write(where, json.dumps({"at": reached}).encode())
            if position is not None and not await self._hold(watch):
                return  # the lease went to another process: it reads on from here

    async def _publish(self, watch: Watch, row: dict[str, JSON], minute: int, identity: int,
                       occurrence: int, subscriptions: list[Subscription], now: float) -> None:
        feed = watch.source.feed
        moment = resolve(row, feed.order) if feed is not None else None
        subscriptions = [sub for sub in subscriptions if _first_minute(sub) <= minute]
        if not subscriptions:
            return
        for kind in watch.types:
            event = Event(event_id(watch.account, kind.name, minute, identity, occurrence),
                          kind.name, str(moment), row, watch.account)
            if await self.deliveries.publish(event, subscriptions, now):
                self.metrics.webhook_events.labels(kind.name).inc()

    # ── A level ───────────────────────────────────────────────────────────────────────────

    async def _read_level(self, watch: Watch, creds: Credentials,
                          subscriptions: list[Subscription]) -> None:
        op, now = watch.source, self.clock()
        document: dict[str, JSON] = {"auth": {"username": watch.account}, "path": {},
                                     "query": {}}
        if op.window is not None:
            apply_window(op.window, document, datetime.fromtimestamp(now, UTC))
        body = await endpoint.answer(op, self._validator(op), self.upstream(),
                                     build_envelope(op, document), document, creds, safe=True)
        for kind in watch.types:
            value = resolve(body or {}, kind.below or "")
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            self.metrics.account_credits.labels(watch.account).set(value)
            await self._level(watch, kind, value < self.threshold, body, subscriptions, now)

    async def _level(self, watch: Watch, kind: EventType, low: bool, body: JSON,
                     subscriptions: list[Subscription], now: float) -> None:
        where = f"webhooks:level:{watch.key}:{kind.name}"
        held = await self.store.read(where)
        state = json.loads(held) if held is not None else {"below": False, "crossings": 0}
        if low == state["below"]:
            return
        crossings = state["crossings"] + int(low)
        if low:  # published before the crossing is counted: a crash in between repeats it
            moment = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
            event = Event(event_id(watch.account, kind.name, crossings), kind.name, moment,
                          body, watch.account)
            if await self.deliveries.publish(event, subscriptions, now):
                self.metrics.webhook_events.labels(kind.name).inc()
        await self.store.write_if(where, json.dumps({"below": low,
                                                     "crossings": crossings}).encode(), held)
