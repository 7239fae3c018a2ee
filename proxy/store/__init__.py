"""State shared by every process of the proxy: one small interface, three engines.

    store = open_store(settings)     # SQLite in the state directory (one host, N workers),
                                     # Redis (several hosts), or this process's memory
    held = await store.add("k", b"v", ttl=60, group="tenant-1", group_cap=1000)

Entries are bytes under string keys, each with a time to live, optionally counted in a group
that has a cap. The store knows nothing of what it holds: the ledger of Idempotency-Keys
(proxy/idempotency.py) and the other users give their entries their meaning.

Every engine keeps the same promises, and tests/test_store.py runs the same tests on each:

- ``add`` is atomic: of two adds of one key, one wins and the other gets its value;
- ``swap`` and ``remove`` change an entry only if it still holds the value the caller read;
- ``swap(..., within=s)`` takes effect only if it reaches the store within ``s`` seconds of
  the call: a write held up in a network or a paused server, landing later, changes nothing;
- a full group or store, or an engine that fails or does not answer in time, raises
  :class:`StoreFull` or :class:`StoreUnavailable`, never another exception.

Beside the entries, two more kinds of state, kept apart from them (no group, no cap):

- **records**: bytes under string keys that may never expire, written unconditionally or only
  if they still hold what the caller read (``write_if``), and listed in key order by a prefix
  (``scan``); a record that expired is gone for good as the next writes come (no engine keeps
  it, nor its name in an index), so records written once and never read again cost nothing
  past their time;
- **queues**: named sets of items (strings), each due at a time; ``take`` hands out the items
  due now and hides each for a lease, so two processes never take one item at once, and an
  item whose taker died is due again when its lease ends (at least once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.settings import Settings

STATE_FILE = "state.sqlite"


class StoreError(Exception):
    """The store could not do what was asked; the message says why (never a secret)."""


class StoreUnavailable(StoreError):
    """The engine failed or did not answer in time."""


class StoreFull(StoreError):
    """The group, or the whole store, holds as many entries as it may."""


class Store(Protocol):
    async def add(self, key: str, value: bytes, ttl: float, *, group: str | None = None,
                  group_cap: int | None = None) -> bytes | None:
        """Write the entry unless the key is held; the value that holds it, if any."""

    async def get(self, key: str) -> bytes | None: ...

    async def swap(self, key: str, old: bytes, new: bytes, ttl: float, *,
                   within: float | None = None) -> bool:
        """Replace ``old`` by ``new`` (a new time to live, the same group); False if the key
        no longer holds ``old``, or if the write did not reach the store ``within`` seconds."""

    async def remove(self, key: str, old: bytes) -> bool:
        """Delete the entry if it still holds ``old``."""

    # ── Records and queues (webhooks: proxy/events/, issue 13) ──────────────────────────────

    async def read(self, key: str) -> bytes | None:
        """The record's value; None if there is none (or it expired)."""

    async def write(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Write the record whatever it held; ``ttl`` None: it never expires."""

    async def write_if(self, key: str, value: bytes, expect: bytes | None, *,
                       ttl: float | None = None) -> bool:
        """Write the record if it holds ``expect`` (None: if there is none); False if not."""

    async def erase(self, key: str, *, only: bytes | None = None) -> bool:
        """Delete the record (``only``: if it still holds that value); False if it did not."""

    async def scan(self, prefix: str, *, after: str = "", limit: int = 100
                   ) -> list[tuple[str, bytes]]:
        """Up to ``limit`` records whose keys start with ``prefix``, in key order, after the
        key ``after``."""

    async def schedule(self, queue: str, item: str, delay: float) -> None:
        """The item is due ``delay`` seconds from now (added, or moved if it is queued)."""

    async def take(self, queue: str, limit: int, lease: float) -> list[str]:
        """Up to ``limit`` items due now, earliest first, each due again ``lease`` seconds
        from now (it is the caller's until then: it unschedules or reschedules it)."""

    async def unschedule(self, queue: str, item: str) -> bool:
        """Take the item off the queue; False if it was not on it."""

    async def close(self) -> None: ...


def prefix_end(prefix: str) -> str:
    """The first key after every key that starts with ``prefix`` (for range scans)."""
    return prefix + "\U0010ffff"


async def open_store(settings: Settings, clock: Callable[[], float]) -> Store:
    """The store the settings name, open and checked (a Redis that would forget is refused
    unless the settings accept it). ``clock``: seconds, for the time to live of entries."""
    kind = settings.check().store_kind
    if kind == "memory":
        from proxy.store.memory import MemoryStore

        return MemoryStore(settings.idempotency_max_keys, clock)
    if kind == "redis":
        from proxy.store.redis import RedisStore, RedisUnsafe

        store = RedisStore.from_url(settings.redis_url or "", settings.idempotency_max_keys,
                                    volatile_ok=settings.redis_volatile_ok)
        try:
            await store.check_server()
        except RedisUnsafe:  # it answers, and would forget: the proxy does not start
            await store.close()
            raise
        except StoreUnavailable:  # not there yet: checked when it is (keyed requests 503)
            pass
        return store
    from proxy.store.sqlite import SqliteStore

    return await SqliteStore(settings.state_path / STATE_FILE, settings.idempotency_max_keys,
                             clock=clock).open()


__all__ = ["STATE_FILE", "Store", "StoreError", "StoreFull", "StoreUnavailable", "open_store",
           "prefix_end"]
