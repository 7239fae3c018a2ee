"""The store's promises (proxy/store/__init__.py), the same tests on every engine: memory,
SQLite (a real file) and Redis (a real redis-server)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from proxy.settings import Settings
from proxy.store import StoreFull, StoreUnavailable, open_store
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore, RedisUnsafe
from proxy.store.sqlite import SqliteStore
from tests.conftest import redis_process

ENGINES = ["memory", "sqlite", "redis"]


class Now:
    def __init__(self) -> None:
        self.seconds = 1_000_000.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture(params=ENGINES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator:
    if request.param == "memory":
        engine = MemoryStore(5)
    elif request.param == "sqlite":
        engine = await SqliteStore(tmp_path / "state.sqlite", 5).open()
    else:
        engine = RedisStore.from_url(request.getfixturevalue("redis_url"), 5)
    try:
        yield engine
    finally:
        await engine.close()


async def test_add_writes_once_and_tells_the_holder(store):
    assert await store.add("k", b"first", 60) is None
    assert await store.add("k", b"second", 60) == b"first"
    assert await store.get("k") == b"first"
    assert await store.get("other") is None


async def test_of_two_concurrent_adds_one_wins(store):
    results = await asyncio.gather(*(store.add("k", f"v{i}".encode(), 60) for i in range(10)))
    winners = [i for i, held in enumerate(results) if held is None]
    assert len(winners) == 1
    assert all(held == f"v{winners[0]}".encode() for held in results if held is not None)


async def test_swap_and_remove_only_change_what_the_caller_read(store):
    await store.add("k", b"a", 60)
    assert not await store.swap("k", b"x", b"b", 60)
    assert await store.swap("k", b"a", b"b", 60)
    assert await store.get("k") == b"b"
    assert not await store.remove("k", b"a")
    assert await store.remove("k", b"b")
    assert await store.get("k") is None
    assert not await store.swap("k", b"b", b"c", 60)


async def test_an_entry_lives_for_its_time_to_live(store):
    await store.add("short", b"v", 0.2)
    await store.add("long", b"v", 60)
    await asyncio.sleep(0.4)  # Redis keeps time itself: the entry must really expire
    assert await store.get("short") is None
    assert await store.add("short", b"again", 60) is None
    assert await store.get("long") == b"v"


async def test_a_group_has_a_cap_and_removing_frees_room(store):
    for i in range(3):
        assert await store.add(f"g{i}", b"v", 60, group="tenant-a", group_cap=3) is None
    with pytest.raises(StoreFull):
        await store.add("g3", b"v", 60, group="tenant-a", group_cap=3)
    assert await store.add("b0", b"v", 60, group="tenant-b", group_cap=3) is None  # others go on
    assert await store.remove("g0", b"v")
    assert await store.add("g3", b"v", 60, group="tenant-a", group_cap=3) is None
    assert await store.swap("g3", b"v", b"w", 60)  # a swap keeps the entry in its group
    with pytest.raises(StoreFull):
        await store.add("g4", b"v", 60, group="tenant-a", group_cap=3)


async def test_the_store_has_a_cap_and_expired_entries_make_room(store):
    for i in range(4):
        await store.add(f"k{i}", b"v", 60)
    await store.add("brief", b"v", 0.2)
    with pytest.raises(StoreFull):
        await store.add("k5", b"v", 60)
    await asyncio.sleep(0.4)
    assert await store.add("k5", b"v", 60) is None


async def test_a_swap_that_reaches_the_store_too_late_changes_nothing(store, monkeypatch):
    await store.add("k", b"claimed", 60)
    if isinstance(store, RedisStore):  # the server's clock judges: a deadline already past
        import proxy.store.redis as engine
        monkeypatch.setattr(engine.time, "time", lambda: 0.0)
        with pytest.raises(StoreUnavailable):
            await store.swap("k", b"claimed", b"dispatched", 60, within=1.0)
    elif isinstance(store, SqliteStore):
        with pytest.raises(StoreUnavailable):
            await store.swap("k", b"claimed", b"dispatched", 60, within=-1.0)
    else:  # memory: nothing stands between the call and the write
        assert await store.swap("k", b"claimed", b"dispatched", 60, within=0.0)
        return
    monkeypatch.undo()
    assert await store.get("k") == b"claimed"


# ── Records and queues (webhooks, issue 13) ─────────────────────────────────────────────────


async def test_a_record_is_written_whatever_it_held_and_may_never_expire(store):
    assert await store.read("r") is None
    await store.write("r", b"one")
    await store.write("r", b"two")
    assert await store.read("r") == b"two"
    await store.write("brief", b"v", ttl=0.2)
    await asyncio.sleep(0.4)
    assert await store.read("brief") is None
    assert await store.read("r") == b"two"  # no time to live: still there
    assert await store.get("r") is None  # records are not entries


async def test_records_are_apart_from_the_entries_cap(store):
    for i in range(5):  # the store holds 5 entries at most
        await store.add(f"k{i}", b"v", 60)
    for i in range(20):
        await store.write(f"r{i}", b"v")
    assert await store.read("r19") == b"v"


async def test_write_if_changes_a_record_only_from_what_the_caller_read(store):
    assert await store.write_if("r", b"first", None)
    assert not await store.write_if("r", b"second", None)  # it exists now
    assert not await store.write_if("r", b"second", b"other")
    assert await store.write_if("r", b"second", b"first")
    assert await store.read("r") == b"second"
    assert await store.write_if("lease", b"me", None, ttl=0.2)
    await asyncio.sleep(0.4)
    assert await store.write_if("lease", b"you", None, ttl=60)  # the expired one is gone


async def test_of_concurrent_write_ifs_on_a_new_record_one_wins(store):
    results = await asyncio.gather(*(store.write_if("r", f"v{i}".encode(), None)
                                     for i in range(10)))
    assert results.count(True) == 1
    assert await store.read("r") == f"v{results.index(True)}".encode()


async def test_erase_deletes_a_record_or_only_the_value_read(store):
    await store.write("r", b"v")
    assert not await store.erase("r", only=b"other")
    assert await store.erase("r", only=b"v")
    assert await store.read("r") is None
    assert not await store.erase("r")
    await store.write("s", b"w")
    assert await store.erase("s")
    assert await store.scan("") == []


async def test_scan_lists_a_prefix_in_key_order_page_by_page(store):
    for key in ("sub:b", "sub:a", "sub:c", "subway", "other:a", "sub:\u05d0"):
        await store.write(key, key.encode())
    await store.write("sub:gone", b"v", ttl=0.2)
    await asyncio.sleep(0.4)
    assert [k for k, _ in await store.scan("sub:")] == ["sub:a", "sub:b", "sub:c",
                                                         "sub:\u05d0"]
    first = await store.scan("sub:", limit=2)
    assert first == [("sub:a", b"sub:a"), ("sub:b", b"sub:b")]
    rest = await store.scan("sub:", after=first[-1][0], limit=2)
    assert [k for k, _ in rest] == ["sub:c", "sub:\u05d0"]
    assert await store.scan("sub:", after=rest[-1][0]) == []
    assert [k for k, _ in await store.scan("")][:2] == ["other:a", "sub:a"]


async def held_records(store) -> int:
    """What the engine holds for records, expired or not: the dict, the table's rows, or the
    names in Redis's index and expiry sets (Redis forgets an expired key, not its name)."""
    if isinstance(store, MemoryStore):
        return len(store.records)
    if isinstance(store, SqliteStore):
        with closing(sqlite3.connect(store.path)) as db:
            return int(db.execute("SELECT count(*) FROM records").fetchone()[0])
    return sum([await store.client.zcard(name) for name in store._records])


async def test_records_that_expired_leave_nothing_behind_as_writes_go_on(store):
    """Records nobody reads again (a webhook event's "seen" marker): once expired, the next
    writes forget them, so the store holds what lives, however many came and went."""
    for i in range(300):
        await store.write(f"seen:{i:03d}", b"", ttl=0.2)
    await asyncio.sleep(0.4)
    for i in range(10):
        await store.write(f"kept:{i}", b"v")
    assert await held_records(store) == 10
    assert [k for k, _ in await store.scan("")] == [f"kept:{i}" for i in range(10)]


async def test_take_hands_out_each_due_item_once_until_its_lease_ends(store):
    await store.schedule("q", "later", 60)
    await store.schedule("q", "b", 0)
    await store.schedule("q", "a", -1)  # due earlier: taken first
    await store.schedule("other", "x", 0)
    assert await store.take("q", 10, lease=0.3) == ["a", "b"]
    assert await store.take("q", 10, lease=0.3) == []  # leased
    await asyncio.sleep(0.5)  # the taker died: due again
    assert sorted(await store.take("q", 1, lease=60) + await store.take("q", 1, lease=60)) \
        == ["a", "b"]
    assert await store.unschedule("q", "a")
    assert not await store.unschedule("q", "a")
    await store.schedule("q", "b", 0)  # rescheduled: due again now
    assert await store.take("q", 10, lease=60) == ["b"]
    assert await store.take("other", 10, lease=60) == ["x"]


async def test_of_concurrent_takers_each_item_goes_to_one(store):
    for i in range(30):
        await store.schedule("q", f"i{i:02d}", 0)
    taken = await asyncio.gather(*(store.take("q", 4, lease=60) for _ in range(10)))
    flat = [item for items in taken for item in items]
    assert sorted(flat) == [f"i{i:02d}" for i in range(30)]


# ── SQLite: one file for every worker of a host, and what a crash leaves ───────────────────


async def test_a_call_to_a_closed_state_file_is_refused_not_left_waiting(tmp_path):
    """A request still busy while the app stops (its ledger's last write comes after the
    store closed) is told the store is unavailable; before, it waited forever for a thread
    that had stopped, and so did the worker's shutdown. The wait_for only turns such a hang
    into a failure."""
    store = await SqliteStore(tmp_path / "state.sqlite", 100).open()
    assert await store.add("k", b"v", 60) is None
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await asyncio.wait_for(store.get("k"), 30)


async def test_two_processes_share_one_state_file(tmp_path):
    path = tmp_path / "state.sqlite"
    mine = await SqliteStore(path, 100).open()
    code = ("import asyncio, sys\nfrom pathlib import Path\n"
            "from proxy.store.sqlite import SqliteStore\n"
            "async def main():\n"
            f"    s = await SqliteStore(Path({str(path)!r}), 100).open()\n"
            "    held = [await s.add(f'k{i}', b'theirs', 60) for i in range(20)]\n"
            "    print(sum(h is None for h in held))\n"
            "    await s.close()\n"
            "asyncio.run(main())\n")
    try:
        other = subprocess.Popen([os.sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 text=True)
        ours = [await mine.add(f"k{i}", b"mine", 60) for i in range(20)]
        theirs = int(other.communicate(timeout=60)[0])
        assert sum(held is None for held in ours) + theirs == 20  # each key taken once
        for i in range(20):
            assert await mine.get(f"k{i}") in (b"mine", b"theirs")
    finally:
        await mine.close()


async def test_a_committed_write_survives_sigkill(tmp_path):
    path = tmp_path / "state.sqlite"
    code = ("import asyncio, os, signal\nfrom pathlib import Path\n"
            "from proxy.store.sqlite import SqliteStore\n"
            "async def main():\n"
            f"    s = await SqliteStore(Path({str(path)!r}), 100).open()\n"
            "    await s.add('kept', b'v', 3600)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "asyncio.run(main())\n")
    done = subprocess.run([os.sys.executable, "-c", code], check=False)
    assert done.returncode == -signal.SIGKILL
    store = await SqliteStore(path, 100).open()
    try:
        assert await store.get("kept") == b"v"
    finally:
        await store.close()


async def test_groups_that_empty_leave_no_row_behind(tmp_path):
    """Made-up credentials each make a group whose key is freed: nothing of them stays."""
    store = await SqliteStore(tmp_path / "state.sqlite", 100).open()
    try:
        for index in range(20):
            await store.add(f"k{index}", b"v", 60, group=f"stranger-{index}", group_cap=5)
            assert await store.remove(f"k{index}", b"v")
        await store.add("kept", b"v", 60, group="honest", group_cap=5)

        def rows(db: sqlite3.Connection) -> list[tuple[str, int]]:
            return db.execute("SELECT grp, n FROM counts ORDER BY grp").fetchall()

        assert await store._run(rows) == [("", 1), ("honest", 1)]
    finally:
        await store.close()


async def test_an_unwritable_state_directory_is_unavailable_not_a_crash(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="state file"):
        await SqliteStore(blocker / "state.sqlite", 10).open()


# ── Redis: what it must be ──────────────────────────────────────────────────────────────────


async def test_a_redis_that_does_not_persist_is_refused_unless_accepted(tmp_path):
    with redis_process(tmp_path, "--appendonly", "no") as (url, _):
        with pytest.raises(RedisUnsafe, match="append-only file is off"):
            await open_store(Settings(redis_url=url), lambda: 0.0)
        accepted = await open_store(Settings(redis_url=url, redis_volatile_ok=True),
                                    lambda: 0.0)
        assert await accepted.add("k", b"v", 60) is None
        await accepted.close()


async def test_a_redis_that_evicts_is_refused(tmp_path):
    with redis_process(tmp_path, "--maxmemory-policy", "allkeys-lru") as (url, _), \
            pytest.raises(RedisUnsafe, match="maxmemory-policy is allkeys-lru"):
        await open_store(Settings(redis_url=url), lambda: 0.0)


async def test_a_redis_not_there_yet_is_checked_when_it_answers(tmp_path):
    from tests.processes import free_port

    store = await open_store(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"),
                             lambda: 0.0)
    try:
        with pytest.raises(StoreUnavailable):
            await store.add("k", b"v", 60)
    finally:
        await store.close()
