"""The store in one SQLite file: every worker of one host shares it, and it outlives them.

The file is in WAL mode with ``synchronous=NORMAL``: a committed write survives the process
being killed (SIGKILL included), since it is in the operating system's hands; a power cut or
kernel crash may lose the last commits before the next checkpoint. Writers take the lock with
``BEGIN IMMEDIATE`` and wait for it at most ``busy_timeout`` seconds (a worker paused with the
lock held makes the others fail, not hang). Each process talks to the file from one thread of
its own, so the event loop never waits on a lock or a disk.

Entries that expired are deleted as new ones come; triggers keep the count of each group and
of the whole file, so a cap costs one lookup however large the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from proxy.store import StoreFull, StoreUnavailable, prefix_end

T = TypeVar("T")
ALL = ""  # the count of every entry, beside the groups' counts
PURGE_BATCH = 64  # expired entries deleted by each add

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


class SqliteStore:
    def __init__(self, path: Path, max_entries: int, *, clock: Callable[[], float] = time.time,
                 busy_timeout: float = 2.0) -> None:
        self.path, self.max_entries, self.clock = path, max_entries, clock
        self.busy_timeout = busy_timeout
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="smsleads-store")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> SqliteStore:
        await self._run(self._connect)
        return self

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript("BEGIN IMMEDIATE;" + SCHEMA + RECORDS_SCHEMA + "COMMIT;")
        self._db = db

    async def _run(self, work: Callable[[], T]) -> T:
        """``work`` on this store's thread; sqlite3's and the file system's failures as
        StoreUnavailable (here only)."""
        def guarded() -> T:
            try:
                return work()
            except (sqlite3.Error, OSError) as exc:
                if self._db is not None and self._db.in_transaction:
                    self._db.rollback()
                raise StoreUnavailable(
                    f"the state file {self.path} failed: {type(exc).__name__}: {exc}") from exc
        return await asyncio.get_running_loop().run_in_executor(self._thread, guarded)

    def _db_ready(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("the state file is not open")
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (``BEGIN IMMEDIATE``), committed on the way out
        however the work returns, rolled back if it raises."""
        db = self._db_ready()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        db.commit()

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
        def work() -> bytes | None:
            with self._transaction() as db:
                now = self.clock()
                held = self._live(db, key, now)
                if held is not None:
                    return held[0]
                db.execute("DELETE FROM entries WHERE key IN (SELECT key FROM entries "
                           "WHERE expires <= ? LIMIT ?)", (now, PURGE_BATCH))
                if group is not None and group_cap is not None:
                    db.execute("DELETE FROM entries WHERE grp = ? AND expires <= ?",
                               (group, now))
                    if self._count(db, group) >= group_cap:
                        raise StoreFull(f"the group holds {group_cap} entries")
                if self._count(db, ALL) >= self.max_entries:
                    db.execute("DELETE FROM entries WHERE expires <= ?", (now,))
                    if self._count(db, ALL) >= self.max_entries:
                        raise StoreFull(f"the store holds {self.max_entries} entries")
                db.execute("INSERT INTO entries VALUES (?, ?, ?, ?)",
                           (key, value, now + ttl, group))
                return None
        return await self._run(work)

    async def get(self, key: str) -> bytes | None:
        def work() -> bytes | None:
            db = self._db_ready()
            row = db.execute("SELECT value, expires FROM entries WHERE key = ?",
                             (key,)).fetchone()
            return None if row is None or row[1] <= self.clock() else bytes(row[0])
        return await self._run(work)

    async def swap(self, key: str, old: bytes, new: bytes, ttl: float, *,
                   within: float | None = None) -> bool:
        deadline = None if within is None else time.monotonic() + within

        def work() -> bool:
            with self._transaction() as db:
                now = self.clock()
                held = self._live(db, key, now)
                if held is None or held[0] != old:
                    return False
                if deadline is not None and time.monotonic() > deadline:
                    raise StoreUnavailable("the state file took too long to take a write")
                db.execute("UPDATE entries SET value = ?, expires = ? WHERE key = ?",
                           (new, now + ttl, key))
                return True
        return await self._run(work)

    async def remove(self, key: str, old: bytes) -> bool:
        def work() -> bool:
            db = self._db_ready()
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
        return await self._run(lambda: self._record(self._db_ready(), key))

    async def write(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        def work() -> None:
            with self._transaction() as db:
                self._put(db, key, value, ttl)
        await self._run(work)

    async def write_if(self, key: str, value: bytes, expect: bytes | None, *,
                       ttl: float | None = None) -> bool:
        def work() -> bool:
            with self._transaction() as db:
                if self._record(db, key) != expect:
                    return False
                self._put(db, key, value, ttl)
                return True
        return await self._run(work)

    async def erase(self, key: str, *, only: bytes | None = None) -> bool:
        def work() -> bool:
            with self._transaction() as db:
                held = self._record(db, key)
                if held is None or (only is not None and held != only):
                    return False
                db.execute("DELETE FROM records WHERE key = ?", (key,))
                return True
        return await self._run(work)

    async def scan(self, prefix: str, *, after: str = "", limit: int = 100
                   ) -> list[tuple[str, bytes]]:
        def work() -> list[tuple[str, bytes]]:
            rows = self._db_ready().execute(
                "SELECT key, value FROM records WHERE key >= ? AND key > ? AND key < ? AND "
                "(expires IS NULL OR expires > ?) ORDER BY key LIMIT ?",
                (prefix, after, prefix_end(prefix), self.clock(), limit)).fetchall()
            return [(str(key), bytes(value)) for key, value in rows]
        return await self._run(work)

    async def schedule(self, queue: str, item: str, delay: float) -> None:
        def work() -> None:
            with self._transaction() as db:
                db.execute("INSERT OR REPLACE INTO queued VALUES (?, ?, ?)",
                           (queue, item, self.clock() + delay))
        await self._run(work)

    async def take(self, queue: str, limit: int, lease: float) -> list[str]:
        def work() -> list[str]:
            with self._transaction() as db:
                now = self.clock()
                items = [str(row[0]) for row in db.execute(
                    "SELECT item FROM queued WHERE queue = ? AND due <= ? ORDER BY due LIMIT ?",
                    (queue, now, limit))]
                db.executemany("UPDATE queued SET due = ? WHERE queue = ? AND item = ?",
                               [(now + lease, queue, item) for item in items])
                return items
        return await self._run(work)

    async def unschedule(self, queue: str, item: str) -> bool:
        def work() -> bool:
            with self._transaction() as db:
                return db.execute("DELETE FROM queued WHERE queue = ? AND item = ?",
                                  (queue, item)).rowcount > 0
        return await self._run(work)

    async def close(self) -> None:
        def work() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        try:
            await self._run(work)
        finally:
            self._thread.shutdown(wait=True)
