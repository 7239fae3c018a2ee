"""Events and their deliveries, kept in the store.

    webhooks:seen:<event id>                 the event was handed to every subscription
    webhooks:delivery:<webhook id>:<event>   one delivery: the body to send, every attempt
    webhooks:listed:<webhook id>:<order>_<event>   the webhook's deliveries, newest first
    queue "webhooks", item "<webhook id>/<event id>"   due when its next attempt is
    entries "webhooks:test:<webhook id>:<event>", one group per webhook: its test events

A listing reads the newest page of a webhook's deliveries in the order of their keys (``order``:
the thirteen digits of 10^13 - 1 less the creation in milliseconds), never every delivery.

An event's id is made from what it is (its account, its type, the row's identity and how many
equal rows came before it in its minute), never from when it was seen: a row read again, after
a restart or by another process, is the same event, and :meth:`Deliveries.publish` gives it
to each subscription once. Publishing is safe to repeat at any step: the delivery records are
written only if absent and the event marked seen last, so a process killed half-way leaves
nothing half-done that the next reading of the row does not finish.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace

from proxy.events.subscriptions import Subscription
from proxy.store import Store
from proxy.types import JSON

QUEUE = "webhooks"
SEEN = "webhooks:seen:"
DELIVERY = "webhooks:delivery:"
LISTED = "webhooks:listed:"
TESTS = "webhooks:test:"
KEPT_ATTEMPTS = 20  # attempts a delivery record lists (the latest)
TESTS_PER_HOUR = 20  # test events a webhook may have in any hour: they cost the store a record
HOUR = 3600.0
_NEWEST = 10**13  # milliseconds (the year 2286): the order of a listing, newest first


def event_id(*parts: str | int) -> str:
    """``evt_`` and 24 characters of a hash of what the event is."""
    text = json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=15).digest()
    return "evt_" + base64.b32encode(digest).decode("ascii").lower()


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    timestamp: str  # RFC 3339: when it happened (a row's date), the same in every attempt
    data: JSON
    account: str

    def body(self) -> str:
        """The payload (Standard Webhooks: type, timestamp, data; and the id)."""
        return json.dumps({"id": self.id, "type": self.type, "timestamp": self.timestamp,
                           "data": self.data}, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    status_code: int | None = None
    error: str | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Delivery:
    webhook: str
    event: str
    type: str
    body: str
    created_at: float
    status: str = "pending"  # pending | succeeded | failed
    attempts: tuple[Attempt, ...] = ()
    tries: int = 0  # attempts made in all (``attempts`` keeps the latest)
    last_try: int = 0  # the attempt after which it is final, unless retried by hand
    next_at: float | None = None
    reason: str | None = None  # why it failed

    @property
    def key(self) -> str:
        return f"{DELIVERY}{self.webhook}:{self.event}"

    @property
    def item(self) -> str:
        return f"{self.webhook}/{self.event}"

    @property
    def place(self) -> str:
        """Where it is in its webhook's listing (a cursor names the place a page ends)."""
        return f"{_NEWEST - 1 - int(self.created_at * 1000):013d}_{self.event}"

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def load(cls, data: bytes) -> Delivery:
        fields = json.loads(data)
        fields["attempts"] = tuple(Attempt(**a) for a in fields["attempts"])
        return cls(**fields)

    def tried(self, attempt: Attempt) -> Delivery:
        return replace(self, attempts=(*self.attempts, attempt)[-KEPT_ATTEMPTS:],
                       tries=self.tries + 1)


@dataclass(slots=True)
class Deliveries:
    store: Store
    retention: float  # seconds a delivery record outlives its creation
    last_try: int     # attempts a delivery gets (the first and its retries)
    wake: Callable[[], None] = field(default=lambda: None)  # a delivery is due now

    async def publish(self, event: Event, subscriptions: Iterable[Subscription],
                      now: float) -> int:
        """The event to each enabled subscription of its account and type, once; how many
        deliveries this call made."""
        if await self.store.read(SEEN + event.id) is not None:
            return 0
        made = 0
        for sub in subscriptions:
            if sub.enabled and sub.account == event.account and event.type in sub.types:
                made += await self.offer(sub, event, now)
        await self.store.write(SEEN + event.id, b"", ttl=self.retention)
        return made

    async def offer(self, sub: Subscription, event: Event, now: float) -> int:
        delivery = Delivery(sub.id, event.id, event.type, event.body(), now,
                            last_try=self.last_try, next_at=now)
        made = await self.store.write_if(delivery.key, delivery.dump(), None,
                                         ttl=self.retention)
        held = delivery if made else await self.get(sub.id, event.id)
        if held is not None:  # listed (again, if a crash came between)
            await self._list(held)
        if held is not None and held.status == "pending" and not held.tries:
            await self.store.schedule(QUEUE, delivery.item, 0)  # again if a crash came between
            self.wake()
        return int(made)

    async def _list(self, delivery: Delivery) -> None:
        # Twice the record's time: a record is kept for the retention from its last change,
        # which the retries push back (a listing skips, and forgets, what outlived its record).
        await self.store.write(f"{LISTED}{delivery.webhook}:{delivery.place}", b"",
                               ttl=2 * self.retention)

    async def count_test(self, webhook: str, event: str) -> None:
        """One more test event of the webhook; StoreFull when it had TESTS_PER_HOUR in the
        last hour (each is an entry for an hour, in the webhook's group capped at that)."""
        await self.store.add(f"{TESTS}{webhook}:{event}", b"", HOUR,
                             group=f"{TESTS}{webhook}", group_cap=TESTS_PER_HOUR)

    async def get(self, webhook: str, event: str) -> Delivery | None:
        data = await self.store.read(f"{DELIVERY}{webhook}:{event}")
        return None if data is None else Delivery.load(data)

    async def of_webhook(self, webhook: str, limit: int, after: str | None = None
                         ) -> tuple[list[Delivery], str | None]:
        """Up to ``limit`` deliveries, newest first, from after the place ``after`` (a cursor,
        openapi.yaml's DeliveryCursor), and the place the page ends if more come after it."""
        prefix = f"{LISTED}{webhook}:"
        listed = await self.store.scan(prefix, after=prefix + (after or ""), limit=limit + 1)
        found: list[Delivery] = []
        for key, _ in listed[:limit]:
            delivery = await self.get(webhook, key[len(prefix):].partition("_")[2])
            if delivery is None:
                await self.store.erase(key)
            else:
                found.append(delivery)
        more = len(listed) > limit
        return found, listed[limit - 1][0][len(prefix):] if more else None

    async def change(self, delivery: Delivery,
                     edit: Callable[[Delivery], Delivery]) -> Delivery | None:
        """As :meth:`Subscriptions.change`: written over what was read, tried again if not."""
        key = delivery.key
        while True:
            held = await self.store.read(key)
            if held is None:
                return None
            new = edit(Delivery.load(held))
            if await self.store.write_if(key, new.dump(), held, ttl=self.retention):
                return new

    async def retry(self, delivery: Delivery, now: float) -> Delivery | None:
        """One more attempt now, whatever became of the delivery."""
        changed = await self.change(delivery, lambda d: replace(
            d, status="pending", reason=None, next_at=now,
            last_try=max(d.last_try, d.tries + 1) if d.status == "pending" else d.tries + 1))
        if changed is not None:
            await self._list(changed)  # kept longer now: listed as long
            await self.store.schedule(QUEUE, changed.item, 0)
            self.wake()
        return changed
