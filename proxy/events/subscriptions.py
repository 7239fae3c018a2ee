"""Webhook subscriptions, kept in the store (records that never expire).

    webhooks:sub:<id>               the subscription (JSON)
    webhooks:owner:<owner>:<id>     an index: the subscriptions of one credential

A subscription belongs to the credential that made it (its owner: a hash of the username and
of the token, or of the proxy API key in single-tenant mode, as for Idempotency-Keys), and
receives the events of its account (the username), whichever credential made it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from proxy.store import Store

PREFIX = "webhooks:sub:"
OWNERS = "webhooks:owner:"
MAX_PER_OWNER = 20  # each polls its account: a bound on the upstream calls one client causes
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


class Subscriptions:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, sub: Subscription) -> bool:
        """False when the owner already has as many as it may."""
        held = await self.store.scan(f"{OWNERS}{sub.owner}:", limit=MAX_PER_OWNER)
        if len(held) >= MAX_PER_OWNER:
            return False
        await self.store.write(PREFIX + sub.id, sub.dump())
        await self.store.write(f"{OWNERS}{sub.owner}:{sub.id}", b"")
        return True

    async def get(self, sub_id: str) -> Subscription | None:
        data = await self.store.read(PREFIX + sub_id)
        return None if data is None else Subscription.load(data)

    async def owned(self, owner: str, sub_id: str) -> Subscription | None:
        sub = await self.get(sub_id)
        return sub if sub is not None and sub.owner == owner else None

    async def of_owner(self, owner: str) -> list[Subscription]:
        found = []
        for key, _ in await self.store.scan(f"{OWNERS}{owner}:", limit=MAX_PER_OWNER):
            sub = await self.get(key.rpartition(":")[2])
            if sub is not None:
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
        await self.store.erase(f"{OWNERS}{sub.owner}:{sub.id}")
        await self.store.erase(PREFIX + sub.id)

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
