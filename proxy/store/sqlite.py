"""The store in one SQLite file: every worker of one host shares it, and it outlives them.

The file is in WAL mode with ``synchronous=NORMAL``: a committed write survives the process
being killed (SIGKILL included), since it is in the operating system's hands; a power cut or
kernel crash may lose the last commits before the next checkpoint. Writers take the lock with
``BEGIN IMMEDIATE`` and wait for it at most ``busy_timeout`` seconds (a worker paused with the
lock held makes the others fail, not hang). Each process talks to the file from one thread of
its own, so the event loop never waits on a lock or a disk.

That thread commits in groups: the calls that arrive while it is busy run one after the other
in one transaction, committed once, and each is answered with its own result only then, so a
call returns once its write is committed, as when each call had a transaction of its own. A
group saves the commit (the pages every write touches written once) and the trips between the
threads (one a group, on a plain queue). A call that refuses (a full group, a write too late)
has written nothing but the removal of expired entries, which stands; a failure of SQLite or
of the disk rolls the whole group back and every call in it is told so. Under load this more
than halved the CPU a keyed send spends on its three writes (bench/RESULTS.md).

Entries that expired are deleted as new ones come; triggers keep the count of each group and
of the whole file, so a cap costs one lookup however large the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from proxy.store import StoreError, StoreFull, StoreUnavailable, prefix_end

T = TypeVar("T")
ALL = ""  # the count of every entry, beside the groups' counts
PURGE_BATCH = 64  # expired entries deleted by each add
MAX_GROUP = 64  # calls committed together at most

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL, grp TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_expiry ON entries (expires);
CREATE INDEX IF NOT EXISTS entries_by_group ON entries (grp, expires) WHERE grp IS NOT NULL;
CREATE TABLE IF NOT EXISTS counts (grp TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS entries_added AFTER INSERT ON entries BEGIN
    INSERT INTO counts VALUES ('', 1) ON CONFLICT (grp) DO UPDATE SET n = n + 1;
    INSERT INTO counts SELECT NEW.grp, 1 WHERE NEW.grp IS NOT NULL
        ON CONFLICT (grp) DO UPDATE SET n = n + 1;
END;
DROP TRIGGER IF EXISTS entries_deleted;
CREATE TRIGGER entries_deleted AFTER DELETE ON entries BEGIN
    UPDATE counts SET n = n - 1 WHERE grp = '' OR grp = OLD.grp;
    -- a group with nothing left leaves no row: made-up credentials leave no trace
    DELETE FROM counts WHERE grp = OLD.grp AND grp != '' AND n = 0;
END;
"""

# Records and queues (webhooks, issue 13): apart from the entries, no group, no cap.
RECORDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_expiry ON records (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS queued (
    queue TEXT NOT NULL, item TEXT NOT NULL, due REAL NOT NULL, PRIMARY KEY (queue, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queued_by_due ON queued (queue, due);
"""

Work = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _Call:
    """One call waiting for the store's thread, and, once its group is committed, its answer."""

    work: Work
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = field(default=None)


def _answer(calls: list[_Call]) -> None:
    """On the event loop: each call's result, unless its caller stopped waiting."""
    for call in calls:
        if call.future.cancelled():
            continue
        if call.error is not None:
            call.future.set_exception(call.error)
        else:
            call.future.set_result(call.result)


class SqliteStore:
    def __init__(self, path: Path, max_entries: int, *, clock: Callable[[], float] = time.time,
                 busy_timeout: float = 2.0) -> None:
        self.path, self.max_entries, self.clock = path, max_entries, clock
        self.busy_timeout = busy_timeout
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        # Taken to queue a call or the stop: no call is queued behind the stop, where nobody
        # would answer it and its caller would wait forever.
        self._queueing = threading.Lock()
        self._open = False

    async def open(self) -> SqliteStore:
        self._open = True
        self._thread = threading.Thread(target=self._serve, name="smsleads-store", daemon=True)
        self._thread.start()
        try:
            await self._run(self._connect)
        except BaseException:
            self._stop()
            raise
        return self

    def _connect(self, _: sqlite3.Connection | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript("BEGIN IMMEDIATE;" + SCHEMA + RECORDS_SCHEMA + "COMMIT;")
        self._db = db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work`` on this store's thread, in a transaction, answered once it is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._queueing:
            if not self._open:  # closed (the app stopping): a caller still busy is told so
                raise StoreUnavailable(f"the state file {self.path} is closed")
            self._calls.put(_Call(work, future))
        return await future

    # The store's thread

    def _serve(self) -> None:
        """Takes every call waiting, runs them in one transaction, commits, answers them."""
        while (first := self._calls.get()) is not None:
            calls = [first]
            while len(calls) < MAX_GROUP:
                try:
                    after = self._calls.get_nowait()
                except queue.Empty:
                    break
                if after is None:
                    self._calls.put(None)  # stop once these are answered
                    break
                calls.append(after)
            self._commit(calls)
            for loop in {call.future.get_loop() for call in calls}:
                # A loop that has closed (RuntimeError) has nobody waiting for these answers.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(
                        _answer, [call for call in calls if call.future.get_loop() is loop])
        if self._db is not None:
            self._db.close()
            self._db = None

    def _commit(self, calls: list[_Call]) -> None:
        db = self._db
        try:
            if db is None:  # opening: the connection is made by the call itself
                for call in calls:
                    call.result = call.work(db)  # type: ignore[arg-type]
                return
            db.execute("BEGIN IMMEDIATE")
            for call in calls:
                try:
                    call.result = call.work(db)
                except StoreError as refused:  # nothing written but expired entries' removal
                    call.error = refused
            db.commit()
        except (sqlite3.Error, OSError) as exc:
            if db is not None and db.in_transaction:
                db.rollback()
            failed = StoreUnavailable(
                f"the state file {self.path} failed: {type(exc).__name__}: {exc}")
            for call in calls:
                call.error = failed
        except BaseException as exc:  # a bug: told to every caller, not lost in this thread
            if db is not None and db.in_transaction:
                db.rollback()
            for call in calls:
                call.error = exc

    # The calls

    def _count(self, db: sqlite3.Connection, group: str) -> int:
        row = db.execute("SELECT n FROM counts WHERE grp = ?", (group,)).fetchone()
        return int(row[0]) if row else 0

    def _live(self, db: sqlite3.Connection, key: str, now: float) -> tuple[bytes] | None:
        row = db.execute("SELECT value, expires FROM entries WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if row[1] <= now:
            db.execute("DELETE FROM entries WHERE key = ?", (key,))
            return None
        return (bytes(row[0]),)

    async def add(self, key: str, value: bytes, ttl: float, *, group: str | None = None,
                  group_cap: int | None = None) -> bytes | None:
        def work(db: sqlite3.Connection) -> bytes | None:
            now = self.clock()
            held = self._live(db, key, now)
            if held is not None:
                return held[0]
            db.execute("DELETE FROM entries WHERE key IN (SELECT key FROM entries "
                       "WHERE expires <= ? LIMIT ?)", (now, PURGE_BATCH))
            # The count holds the group's expired entries too: they are deleted when it is full.
            if group is not None and group_cap is not None \
                    and self._count(db, group) >= group_cap:
                db.execute("DELETE FROM entries WHERE grp = ? AND expires <= ?", (group, now))
                if self._count(db, group) >= group_cap:
                    raise StoreFull(f"the group holds {group_cap} entries")
            if self._count(db, ALL) >= self.max_entries:
                db.execute("DELETE FROM entries WHERE expires <= ?", (now,))
                if self._count(db, ALL) >= self.max_entries:
                    raise StoreFull(f"the store holds {self.max_entries} entries")
            db.execute("INSERT INTO entries VALUES (?, ?, ?, ?)", (key, value, now + ttl, group))
            return None
        return await self._run(work)

    async def get(self, key: str) -> bytes | None:
        def work(db: sqlite3.Connection) -> bytes | None:
            row = db.execute("SELECT value, expires FROM entries WHERE key = ?",
                             (key,)).fetchone()
            return None if row is None or row[1] <= self.clock() else bytes(row[0])
        return await self._run(work)

    async def swap(self, key: str, old: bytes, new: bytes, ttl: float, *,
                   within: float | None = None) -> bool:
        deadline = None if within is None else time.monotonic() + within

        def work(db: sqlite3.Connection) -> bool:
            now = self.clock()
            if deadline is not None and time.monotonic() > deadline:
                held = self._live(db, key, now)
                if held is None or held[0] != old:
                    return False
                raise StoreUnavailable("the state file took too long to take a write")
            # One statement: the entry changes only if it is live and still holds ``old``.
            return db.execute("UPDATE entries SET value = ?, expires = ? "
                              "WHERE key = ? AND value = ? AND expires > ?",
                              (new, now + ttl, key, old, now)).rowcount > 0
        return await self._run(work)

    async def remove(self, key: str, old: bytes) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM entries WHERE key = ? AND value = ?",
                              (key, old)).rowcount > 0
        return await self._run(work)

    # ── Records and queues (webhooks, issue 13) ─────────────────────────────────────────────

    def _record(self, db: sqlite3.Connection, key: str) -> bytes | None:
        row = db.execute("SELECT value FROM records WHERE key = ? AND (expires IS NULL OR "
                         "expires > ?)", (key, self.clock())).fetchone()
        return None if row is None else bytes(row[0])

    def _put(self, db: sqlite3.Connection, key: str, value: bytes, ttl: float | None) -> None:
        now = self.clock()
        db.execute("DELETE FROM records WHERE key IN (SELECT key FROM records "
                   "WHERE expires <= ? LIMIT ?)", (now, PURGE_BATCH))
        db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?)",
                   (key, value, None if ttl is None else now + ttl))

    async def read(self, key: str) -> bytes | None:
        return await self._run(lambda db: self._record(db, key))

    async def write(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._run(lambda db: self._put(db, key, value, ttl))

    async def write_if(self, key: str, value: bytes, expect: bytes | None, *,
                       ttl: float | None = None) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            if self._record(db, key) != expect:
                return False
            self._put(db, key, value, ttl)
            return True
        return await self._run(work)

    async def erase(self, key: str, *, only: bytes | None = None) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            held = self._record(db, key)
            if held is None or (only is not None and held != only):
                return False
            db.execute("DELETE FROM records WHERE key = ?", (key,))
            return True
        return await self._run(work)

    async def scan(self, prefix: str, *, after: str = "", limit: int = 100
                   ) -> list[tuple[str, bytes]]:
        def work(db: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = db.execute(
                "SELECT key, value FROM records WHERE key >= ? AND key > ? AND key < ? AND "
                "(expires IS NULL OR expires > ?) ORDER BY key LIMIT ?",
                (prefix, after, prefix_end(prefix), self.clock(), limit)).fetchall()
            return [(str(key), bytes(value)) for key, value in rows]
        return await self._run(work)

    async def schedule(self, queue: str, item: str, delay: float) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO queued VALUES (?, ?, ?)",
                       (queue, item, self.clock() + delay))
        await self._run(work)

    async def take(self, queue: str, limit: int, lease: float) -> list[str]:
        def work(db: sqlite3.Connection) -> list[str]:
            now = self.clock()
            items = [str(row[0]) for row in db.execute(
                "SELECT item FROM queued WHERE queue = ? AND due <= ? ORDER BY due LIMIT ?",
                (queue, now, limit))]
            db.executemany("UPDATE queued SET due = ? WHERE queue = ? AND item = ?",
                           [(now + lease, queue, item) for item in items])
            return items
        return await self._run(work)

    async def unschedule(self, queue: str, item: str) -> bool:
        return await self._run(lambda db: db.execute(
            "DELETE FROM queued WHERE queue = ? AND item = ?", (queue, item)).rowcount > 0)

    def _stop(self) -> None:
        with self._queueing:
            self._open = False
        if self._thread is not None:
            self._calls.put(None)
            self._thread.join()
            self._thread = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._stop)
