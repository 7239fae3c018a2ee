"""Counters shared by every process, as the `limits` library's storages, on the store's engines.

    counters = open_counters(settings, store)       # the engine the store has
    limiter = SlidingWindowCounterRateLimiter(counters)
    await limiter.hit(parse("60000/minute"), "recipients", who, cost=250)
    await counters.incr("budget:...", expiry=172800, amount=250)

The algorithm of a rate limit is the library's: sliding window counters (two fixed windows,
the previous weighted by how much of it still overlaps the last window's length), which cost
two integers per key whatever the traffic, and take a cost per hit (a send's recipients). Its
storages for memory and Redis are used as they are (Redis on the store's own connection pool);
for the SQLite state file, shared by the workers of one host, :class:`SqliteCounters` is a
`limits` storage of its own, in a table beside the store's, on the store's connection and
thread, in its commit groups. It follows the library's Redis scripts: a window starts at its
first hit, and the current counter, once its window is over, becomes the previous one.

Beside limits' interface, every engine gives back in one step (:class:`GivesBack`): a counter
taken down to nothing is deleted at once, so that what a credential reserved and got back
leaves no trace, however many made-up credentials try (a budget's counter otherwise outlives
its day by another), and no reservation landing in between is lost.

Failures come out as ``limits.errors.StorageError`` (``wrap_exceptions``), for the caller to
translate in one place. The counters know nothing of what they count.
"""

from __future__ import annotations

import math
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from limits.aio.storage import MemoryStorage, RedisStorage, SlidingWindowCounterSupport, Storage
from limits.errors import StorageError

from proxy.store import Store, StoreError

if TYPE_CHECKING:
    import redis.asyncio

    from proxy.settings import Settings
    from proxy.store.sqlite import SqliteStore

PREFIX = "smsleads-proxy:limits"  # Redis keys, beside the store's (proxy/store/redis.py)
PURGE_BATCH = 64  # expired counters deleted by each write

T = TypeVar("T")
Work = Callable[[sqlite3.Connection, float], T]  # a transaction's work, given the time

SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_by_expiry ON counters (expires);
"""


# DECRBY, and the key deleted when nothing is left: one script, so one step for Redis.
GIVE_BACK = """
local left = redis.call('DECRBY', KEYS[1], ARGV[1])
if left <= 0 then redis.call('DEL', KEYS[1]) end
return left
"""


class GivesBack(ABC):
    @abstractmethod
    async def give_back(self, key: str, amount: int) -> int:
        """Take ``amount`` off the counter, deleting it if nothing is left; what is left."""


@contextmanager
def _wrapped(storage: Storage) -> Iterator[None]:
    """The engine's failures as limits' StorageError, as its own methods raise them."""
    try:
        yield
    except storage.base_exceptions as exc:
        raise StorageError(exc) from exc


class MemoryCounters(MemoryStorage, GivesBack):
    async def give_back(self, key: str, amount: int) -> int:
        left = await self.decr(key, amount)  # and nothing awaited before the key goes
        if left <= 0:
            await self.clear(key)
        return left


class RedisCounters(RedisStorage, GivesBack):
    def __init__(self, url: str, client: redis.asyncio.Redis) -> None:
        super().__init__(url, wrap_exceptions=True, implementation="redispy", key_prefix=PREFIX,
                         # documented by limits, typed there as if options were scalars
                         connection_pool=client.connection_pool)  # type: ignore[arg-type]
        self._give_back = client.register_script(GIVE_BACK)

    async def give_back(self, key: str, amount: int) -> int:
        with _wrapped(self):
            return int(await self._give_back([f"{PREFIX}:{key}"], [amount]))


def _redis_url(url: str) -> str:
    """limits' spelling of a Redis URL: ``async+redis://``, ``async+redis+unix://``."""
    scheme, _, rest = url.partition("://")
    return f"async+{'redis+unix' if scheme == 'unix' else scheme}://{rest}"


async def open_counters(settings: Settings, store: Store) -> Storage:
    """The counters of the store's engine: the state file's table, the store's Redis, or this
    process's memory."""
    kind = settings.store_kind
    if kind == "memory":
        return MemoryCounters(wrap_exceptions=True)
    if kind == "redis":
        from proxy.store.redis import RedisStore

        if not isinstance(store, RedisStore):
            raise TypeError("the redis counters need the redis store")
        return RedisCounters(_redis_url(settings.redis_url or ""), store.client)
    from proxy.store.sqlite import SqliteStore

    if not isinstance(store, SqliteStore):
        raise TypeError("the sqlite counters need the sqlite store")
    return await SqliteCounters(store).open()


class SqliteCounters(Storage, SlidingWindowCounterSupport, GivesBack):
    """`limits` counters in the SQLite state file: one row a counter, ``(value, expires)``."""

    STORAGE_SCHEME = None  # made by open_counters, never from a URI

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(wrap_exceptions=True)
        self.store = store

    async def open(self) -> SqliteCounters:
        def make(db: sqlite3.Connection) -> None:
            for statement in SCHEMA.split(";"):  # in the store's transaction, as every call
                if statement.strip():
                    db.execute(statement)
        await self.store._run(make)
        return self

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return StoreError  # the store's thread turns sqlite3's and the disk's failures into it

    # ── one transaction on the store's thread ────────────────────────────────────────────

    def _live(self, db: sqlite3.Connection, key: str, now: float) -> tuple[int, float] | None:
        row = db.execute("SELECT value, expires FROM counters WHERE key = ?", (key,)).fetchone()
        return None if row is None or row[1] <= now else (int(row[0]), float(row[1]))

    def _put(self, db: sqlite3.Connection, key: str, value: int, expires: float) -> None:
        db.execute("INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
                   "SET value = excluded.value, expires = excluded.expires",
                   (key, value, expires))

    async def _write(self, work: Work[T]) -> T:
        def run(db: sqlite3.Connection) -> T:
            now = time.time()
            db.execute("DELETE FROM counters WHERE key IN (SELECT key FROM counters "
                       "WHERE expires <= ? LIMIT ?)", (now, PURGE_BATCH))
            return work(db, now)
        return await self.store._run(run)

    async def _read(self, work: Work[T]) -> T:
        return await self.store._run(lambda db: work(db, time.time()))

    # ── Storage ──────────────────────────────────────────────────────────────────────────

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        def work(db: sqlite3.Connection, now: float) -> int:
            held = self._live(db, key, now)
            value, expires = (amount, now + expiry) if held is None else (
                held[0] + amount, held[1])
            self._put(db, key, value, expires)
            return value
        return await self._write(work)

    async def give_back(self, key: str, amount: int) -> int:
        def work(db: sqlite3.Connection, now: float) -> int:
            held = self._live(db, key, now)
            left = (0 if held is None else held[0]) - amount
            if held is None or left <= 0:
                db.execute("DELETE FROM counters WHERE key = ?", (key,))
            else:
                self._put(db, key, left, held[1])
            return left
        with _wrapped(self):
            return await self._write(work)

    async def get(self, key: str) -> int:
        held = await self._read(lambda db, now: self._live(db, key, now))
        return 0 if held is None else held[0]

    async def get_expiry(self, key: str) -> float:
        held = await self._read(lambda db, now: self._live(db, key, now))
        return time.time() if held is None else held[1]

    async def check(self) -> bool:
        try:
            await self._read(lambda db, now: db.execute("SELECT 1").fetchone())
        except StoreError:
            return False
        return True

    async def reset(self) -> int | None:
        return await self._write(lambda db, now: int(db.execute("DELETE FROM counters").rowcount))

    async def clear(self, key: str) -> None:
        await self._write(lambda db, now: db.execute("DELETE FROM counters WHERE key = ?",
                                                     (key,)))

    # ── SlidingWindowCounterSupport, as limits' Redis script does it ─────────────────────

    def _window(self, db: sqlite3.Connection, key: str, expiry: int,
                now: float) -> tuple[int, float, int, float]:
        """(previous count, its seconds to live, current count, its seconds to live), the
        current counter made the previous one first if its window is over."""
        current, previous = f"{{{key}}}", f"{{{key}}}/-1"
        held = self._live(db, current, now)
        if held is not None and held[1] - now < expiry:
            self._put(db, previous, held[0], held[1])
            self._put(db, current, 0, held[1] + expiry)
        before, now_held = self._live(db, previous, now), self._live(db, current, now)
        return (0 if before is None else before[0], 0.0 if before is None else before[1] - now,
                0 if now_held is None else now_held[0],
                0.0 if now_held is None else now_held[1] - now)

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int,
                                           amount: int = 1) -> bool:
        if amount > limit:
            return False

        def work(db: sqlite3.Connection, now: float) -> bool:
            previous, previous_ttl, current, current_ttl = self._window(db, key, expiry, now)
            if math.floor(previous * previous_ttl / expiry) + current + amount > limit:
                return False
            expires = now + current_ttl if current_ttl > 0 else now + 2 * expiry
            self._put(db, f"{{{key}}}", current + amount, expires)
            return True
        return await self._write(work)

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return await self._write(lambda db, now: self._window(db, key, expiry, now))

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        await self.clear(f"{{{key}}}")
        await self.clear(f"{{{key}}}/-1")
