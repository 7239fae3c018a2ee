"""Webhook subscriptions, kept in the store (records that never expire).

    webhooks:sub:<id>               the subscription (JSON): what the pollers and dispatchers read
    webhooks:slot:<owner>:<nn>      one of the owner's 20 places: the id that holds it, and when

A subscription belongs to the credential that made it (its owner: a hash of the username and
of the token, or of the proxy API key in single-tenant mode, as for Idempotency-Keys), and
receives the events of its account (the username), whichever credential made it.

The store has no transaction over two records, so the order of the writes keeps the promises.
A subscription takes a free place first, by a conditional write (of two requests racing for a
place, one gets it: the cap holds however many come at once), then its record is written; a
failure in between erases both, and the client gets a 503. Deleting erases the record first
(no more events), then the place. Every subscription is thus in a place of its owner: listed,
and deletable. A place whose subscription never came (both writes and the clean-up failed) is
taken over when it is :data:`ABANDONED_AFTER` seconds old.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from proxy.store import Store, StoreError

PREFIX = "webhooks:sub:"
SLOTS = "webhooks:slot:"
MAX_PER_OWNER = 20  # each polls its account: a bound on the upstream calls one client causes
ABANDONED_AFTER = 3600.0  # seconds: far longer than a creation's two writes may take
SCAN_PAGE = 500


def new_id() -> str:
    return "wh_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Secret:
    value: str = field(repr=False)
    until: float | None = None  # a rotated secret signs until then


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    owner: str
    account: str
    url: str
    types: tuple[str, ...]
    description: str
    created_at: float
    secrets: tuple[Secret, ...]
    token: str | None = field(default=None, repr=False)  # sealed (sealing.py); None: held
    disabled_at: float | None = None
    disabled_reason: str | None = None
    failing_since: float | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def signing_keys(self, now: float) -> list[str]:
        return [s.value for s in self.secrets if s.until is None or s.until > now]

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> Subscription:
        fields = json.loads(data)
        fields["types"] = tuple(fields["types"])
        fields["secrets"] = tuple(Secret(**s) for s in fields["secrets"])
        return cls(**fields)

    def rotated(self, secret: str, now: float, grace: float) -> Subscription:
        kept = tuple(replace(s, until=now + grace if s.until is None else s.until)
                     for s in self.secrets if s.until is None or s.until > now)
        return replace(self, secrets=(Secret(secret), *kept))

    def disabled(self, now: float, reason: str) -> Subscription:
        return self if not self.enabled else replace(self, disabled_at=now,
                                                     disabled_reason=reason)


@dataclass(frozen=True, slots=True)
class Slot:
    """One of an owner's places, and the subscription that holds it (since ``at``)."""

    key: str
    sub_id: str
    at: float

    def dump(self) -> bytes:
        return json.dumps({"id": self.sub_id, "at": self.at}).encode()

    @classmethod
    def load(cls, key: str, data: bytes) -> Slot:
        fields = json.loads(data)
        return cls(key, str(fields["id"]), float(fields["at"]))


class Subscriptions:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, sub: Subscription) -> bool:
        """False when the owner already has as many as it may; StoreError (and nothing kept)
        when the store fails."""
        slot = await self._take_slot(sub)
        if slot is None:
            return False
        try:
            await self.store.write(PREFIX + sub.id, sub.dump())
        except StoreError:
            with contextlib.suppress(StoreError):  # else the place is taken over in time
                await self.store.erase(PREFIX + sub.id)  # a write that failed may have landed
                await self.store.erase(slot.key, only=slot.dump())
            raise
        return True

    async def _slots(self, owner: str) -> list[Slot]:
        return [Slot.load(key, value) for key, value in
                await self.store.scan(f"{SLOTS}{owner}:", limit=MAX_PER_OWNER)]

    async def _take_slot(self, sub: Subscription) -> Slot | None:
        held = {slot.key: slot for slot in await self._slots(sub.owner)}
        for n in range(MAX_PER_OWNER):
            mine = Slot(f"{SLOTS}{sub.owner}:{n:02d}", sub.id, sub.created_at)
            old = held.get(mine.key)
            if old is not None and not await self._abandoned(old, sub.created_at):
                continue
            if await self.store.write_if(mine.key, mine.dump(),
                                         None if old is None else old.dump()):
                return mine
        return None

    async def _abandoned(self, slot: Slot, now: float) -> bool:
        return slot.at + ABANDONED_AFTER < now and await self.get(slot.sub_id) is None

    async def get(self, sub_id: str) -> Subscription | None:
        data = await self.store.read(PREFIX + sub_id)
        return None if data is None else Subscription.load(data)

    async def owned(self, owner: str, sub_id: str) -> Subscription | None:
        sub = await self.get(sub_id)
        return sub if sub is not None and sub.owner == owner else None

    async def of_owner(self, owner: str) -> list[Subscription]:
        found = []
        for slot in await self._slots(owner):
            sub = await self.get(slot.sub_id)
            if sub is not None and sub.owner == owner:
                found.append(sub)
        return sorted(found, key=lambda s: (s.created_at, s.id))

    async def all(self) -> list[Subscription]:
        found: list[Subscription] = []
        after = ""
        while page := await self.store.scan(PREFIX, after=after, limit=SCAN_PAGE):
            found += [Subscription.load(value) for _, value in page]
            after = page[-1][0]
        return found

    async def remove(self, sub: Subscription) -> None:
        await self.store.erase(PREFIX + sub.id)
        for slot in await self._slots(sub.owner):
            if slot.sub_id == sub.id:
                await self.store.erase(slot.key, only=slot.dump())

    async def change(self, sub_id: str,
                     edit: Callable[[Subscription], Subscription]) -> Subscription | None:
        """The subscription as ``edit`` makes it, written only over what it read (tried again
        if another process changed it meanwhile); None if there is none."""
        while True:
            held = await self.store.read(PREFIX + sub_id)
            if held is None:
                return None
            new = edit(Subscription.load(held))
            data = new.dump()
            if data == held or await self.store.write_if(PREFIX + sub_id, data, held):
                return new
