"""The spend guard's counters (proxy/store/counters.py), the same tests on every engine: limits'
memory storage, the SQLite state file (a real file; ours) and Redis (a real redis-server, on
the store's connection pool). Then what only the state file can show deterministically: its
windows slide as limits' Redis script makes them slide, and the guard's Retry-After is the
moment a refused hit fits."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from limits import RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError

import proxy.store.counters as counters_module
from proxy.guard import retry_after
from proxy.settings import Settings
from proxy.store.counters import RedisCounters, SqliteCounters, open_counters
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore

ENGINES = ["memory", "sqlite", "redis"]
TEN = RateLimitItemPerMinute(10)


@pytest.fixture(params=ENGINES)
async def counters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator:
    if request.param == "memory":
        store, settings = MemoryStore(100), Settings(store="memory")
    elif request.param == "sqlite":
        store = await SqliteStore(tmp_path / "state.sqlite", 100).open()
        settings = Settings(state_dir=str(tmp_path))
    else:
        url = request.getfixturevalue("redis_url")
        store, settings = RedisStore.from_url(url, 100), Settings(redis_url=url)
    try:
        yield await open_counters(settings, store)
    finally:
        await store.close()


async def test_a_counter_adds_gives_back_and_tells_its_expiry(counters):
    assert await counters.incr("budget", 3600, amount=5) == 5
    assert await counters.incr("budget", 3600, amount=3) == 8
    assert await counters.incr("budget", 3600, amount=-3) == 5
    assert await counters.get("budget") == 5
    assert await counters.get("other") == 0
    assert time.time() + 3590 < await counters.get_expiry("budget") <= time.time() + 3601


async def test_a_counter_lives_for_its_expiry(counters):
    await counters.incr("brief", 1, amount=2)
    await counters.incr("long", 60, amount=2)
    await asyncio.sleep(1.3)  # Redis keeps time itself: the counter must really expire
    assert await counters.get("brief") == 0
    assert await counters.incr("brief", 60, amount=1) == 1
    assert await counters.get("long") == 2


async def held(counters) -> set[str]:
    """The counters' keys the engine holds, whatever their values."""
    if isinstance(counters, SqliteCounters):
        rows = await counters.store._run(
            lambda db: db.execute("SELECT key FROM counters").fetchall())
        return {row[0] for row in rows}
    if isinstance(counters, RedisCounters):
        prefix = counters_module.PREFIX + ":"
        client = counters.bridge.get_connection()
        return {key.decode()[len(prefix):] async for key in client.scan_iter(prefix + "*")}
    return set(counters.storage)


async def test_a_counter_given_back_to_nothing_is_gone(counters):
    # A made-up credential's reservation, given back when SMS Leads refuses it, leaves nothing.
    await counters.incr("budget/a", 3600, amount=5)
    await counters.incr("budget/b", 3600, amount=5)
    assert await counters.give_back("budget/a", 2) == 3
    assert await counters.give_back("budget/b", 5) == 0
    assert await held(counters) == {"budget/a"}
    assert await counters.give_back("budget/a", 3) == 0
    assert await held(counters) == set()
    assert await counters.incr("budget/a", 3600, amount=4) == 4


async def test_a_sliding_window_takes_costs_up_to_its_limit(counters):
    limiter = SlidingWindowCounterRateLimiter(counters)
    taken = [await limiter.hit(TEN, "recipients", "alice", cost=cost) for cost in (4, 4, 3, 2, 1)]
    assert taken == [True, True, False, True, False]
    assert (await limiter.get_window_stats(TEN, "recipients", "alice")).remaining == 0
    assert await limiter.hit(TEN, "recipients", "bob", cost=10)  # another credential's own
    assert not await limiter.hit(TEN, "recipients", "carol", cost=11)  # never fits


async def test_of_concurrent_hits_exactly_the_limit_is_taken(counters):
    limiter = SlidingWindowCounterRateLimiter(counters)
    taken = await asyncio.gather(*(limiter.hit(TEN, "requests", "alice") for _ in range(30)))
    assert sum(taken) == 10


async def test_a_failing_state_file_is_a_storage_error(tmp_path):
    store = await SqliteStore(tmp_path / "state.sqlite", 100, busy_timeout=0.1).open()
    counters = await open_counters(Settings(state_dir=str(tmp_path)), store)
    holder = sqlite3.connect(tmp_path / "state.sqlite", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the lock, paused
        with pytest.raises(StorageError):
            await counters.incr("budget", 60)
        with pytest.raises(StorageError):
            await SlidingWindowCounterRateLimiter(counters).hit(TEN, "requests", "alice")
    finally:
        holder.close()
        await store.close()


# ── The state file: shared by a host's processes; windows that slide ───────────────────────


async def test_two_processes_share_one_window_in_the_state_file(tmp_path):
    path = tmp_path / "state.sqlite"
    store = await SqliteStore(path, 100).open()
    code = ("import asyncio\nfrom pathlib import Path\n"
            "from limits import RateLimitItemPerMinute\n"
            "from limits.aio.strategies import SlidingWindowCounterRateLimiter\n"
            "from proxy.store.sqlite import SqliteStore\n"
            "from proxy.store.counters import SqliteCounters\n"
            "async def main():\n"
            f"    s = await SqliteStore(Path({str(path)!r}), 100).open()\n"
            "    limiter = SlidingWindowCounterRateLimiter(await SqliteCounters(s).open())\n"
            "    item = RateLimitItemPerMinute(10)\n"
            "    print(sum([await limiter.hit(item, 'r', 'alice') for _ in range(20)]))\n"
            "    await s.close()\n"
            "asyncio.run(main())\n")
    try:
        limiter = SlidingWindowCounterRateLimiter(await SqliteCounters(store).open())
        other = subprocess.Popen([os.sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 text=True)
        ours = [await limiter.hit(TEN, "r", "alice") for _ in range(20)]
        theirs = int(other.communicate(timeout=60)[0])
        assert sum(ours) + theirs == 10
    finally:
        await store.close()


class Time:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def frozen(tmp_path, monkeypatch) -> AsyncIterator[tuple[SqliteCounters, Time]]:
    """The state file's counters on a clock the test moves (they read time.time())."""
    now = Time()
    monkeypatch.setattr(counters_module.time, "time", now)
    store = await SqliteStore(tmp_path / "state.sqlite", 100).open()
    try:
        yield await SqliteCounters(store).open(), now
    finally:
        await store.close()


async def test_a_window_slides_as_limits_redis_script_slides_it(frozen):
    counters, now = frozen
    key, expiry = TEN.key_for("r", "alice"), TEN.get_expiry()
    assert await counters.acquire_sliding_window_entry(key, 10, expiry, 10)
    now.now += 75  # the window that began with the first hit ended 15 s ago
    assert await counters.get_sliding_window(key, expiry) == (10, 45.0, 0, 105.0)
    # The previous window weighs 45/60 of its 10: 7, so 3 more fit and a fourth does not.
    assert await counters.acquire_sliding_window_entry(key, 10, expiry, 3)
    assert not await counters.acquire_sliding_window_entry(key, 10, expiry, 1)
    now.now += 200  # both windows are gone
    assert await counters.get_sliding_window(key, expiry) == (0, 0.0, 0, 0.0)
    assert await counters.acquire_sliding_window_entry(key, 10, expiry, 10)


@pytest.mark.parametrize(("hits", "later", "cost"), [
    ([10], 75, 4),      # the previous window must slide out enough
    ([10], 20, 1),      # the current window is too full: it must become the previous first
    ([6], 10, 5),
    ([3, 7], 30, 10),   # a whole window's cost: only once nothing weighs any more
    ([1], 0, 10),
])
async def test_retry_after_is_the_second_a_refused_hit_fits(frozen, hits, later, cost):
    counters, now = frozen
    key, expiry = TEN.key_for("r", "alice"), TEN.get_expiry()
    for amount in hits:
        assert await counters.acquire_sliding_window_entry(key, 10, expiry, amount)
        now.now += later
    assert not await counters.acquire_sliding_window_entry(key, 10, expiry, cost)
    wait = retry_after(await counters.get_sliding_window(key, expiry), 10, cost, expiry)
    start = now.now
    now.now = start + wait - 1
    assert not await counters.acquire_sliding_window_entry(key, 10, expiry, cost)
    now.now = start + wait
    assert await counters.acquire_sliding_window_entry(key, 10, expiry, cost)
