"""The store in this process's memory: nothing shared, nothing kept across a restart. Only on
explicit choice (``--store memory``); the default is SQLite (proxy/store/sqlite.py)."""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from proxy.store import StoreFull


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires: float
    group: str | None


class MemoryStore:
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        self.max_entries, self.clock = max_entries, clock
        self.entries: dict[str, _Entry] = {}
        self.groups: Counter[str] = Counter()
        self._expiry: list[tuple[float, str]] = []  # a heap; stale items are skipped
        self.records: dict[str, tuple[bytes, float | None]] = {}  # value, expiry
        self._record_expiry: list[tuple[float, str]] = []  # a heap, as _expiry
        self.queues: dict[str, dict[str, float]] = {}  # queue -> item -> due

    def _purge(self) -> None:
        now = self.clock()
        while self._expiry and self._expiry[0][0] <= now:
            expires, key = heapq.heappop(self._expiry)
            entry = self.entries.get(key)
            if entry is not None and entry.expires == expires:
                self._drop(key, entry)

    def _drop(self, key: str, entry: _Entry) -> None:
        del self.entries[key]
        if entry.group is not None:
            self.groups[entry.group] -= 1
            if not self.groups[entry.group]:
                del self.groups[entry.group]

    def _put(self, key: str, entry: _Entry) -> None:
        self.entries[key] = entry
        heapq.heappush(self._expiry, (entry.expires, key))

    async def add(self, key: str, value: bytes, ttl: float, *, group: str | None = None,
                  group_cap: int | None = None) -> bytes | None:
        self._purge()
        held = self.entries.get(key)
        if held is not None:
            return held.value
        if len(self.entries) >= self.max_entries:
            raise StoreFull(f"the store holds {self.max_entries} entries")
        if group is not None and group_cap is not None and self.groups[group] >= group_cap:
            raise StoreFull(f"the group holds {group_cap} entries")
        if group is not None:
            self.groups[group] += 1
        self._put(key, _Entry(value, self.clock() + ttl, group))
        return None

    async def get(self, key: str) -> bytes | None:
        self._purge()
        held = self.entries.get(key)
        return None if held is None else held.value

    async def swap(self, key: str, old: bytes, new: bytes, ttl: float, *,
                   within: float | None = None) -> bool:
        self._purge()  # nothing stands between the call and the write here: always in time
        held = self.entries.get(key)
        if held is None or held.value != old:
            return False
        self._put(key, _Entry(new, self.clock() + ttl, held.group))
        return True

    async def remove(self, key: str, old: bytes) -> bool:
        self._purge()
        held = self.entries.get(key)
        if held is None or held.value != old:
            return False
        self._drop(key, held)
        return True

    # ── Records and queues (webhooks, issue 13) ─────────────────────────────────────────────

    def _record(self, key: str) -> bytes | None:
        held = self.records.get(key)
        if held is None:
            return None
        if held[1] is not None and held[1] <= self.clock():
            del self.records[key]
            return None
        return held[0]

    async def read(self, key: str) -> bytes | None:
        return self._record(key)

    def _set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Write the record, and forget those that expired (nothing else would read them)."""
        now = self.clock()
        while self._record_expiry and self._record_expiry[0][0] <= now:
            ended, gone = heapq.heappop(self._record_expiry)
            if self.records.get(gone, (b"", None))[1] == ended:
                del self.records[gone]
        self.records[key] = (value, None if ttl is None else now + ttl)
        if ttl is not None:
            heapq.heappush(self._record_expiry, (now + ttl, key))

    async def write(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._set(key, value, ttl)

    async def write_if(self, key: str, value: bytes, expect: bytes | None, *,
                       ttl: float | None = None) -> bool:
        if self._record(key) != expect:
            return False
        self._set(key, value, ttl)
        return True

    async def erase(self, key: str, *, only: bytes | None = None) -> bool:
        held = self._record(key)
        if held is None or (only is not None and held != only):
            return False
        del self.records[key]
        return True

    async def scan(self, prefix: str, *, after: str = "", limit: int = 100
                   ) -> list[tuple[str, bytes]]:
        found: list[tuple[str, bytes]] = []
        for key in sorted(k for k in self.records if k.startswith(prefix) and k > after):
            value = self._record(key)
            if value is not None:
                found.append((key, value))
                if len(found) == limit:
                    break
        return found

    async def schedule(self, queue: str, item: str, delay: float) -> None:
        self.queues.setdefault(queue, {})[item] = self.clock() + delay

    async def take(self, queue: str, limit: int, lease: float) -> list[str]:
        items, now = self.queues.get(queue, {}), self.clock()
        due = sorted((at, item) for item, at in items.items() if at <= now)[:limit]
        for _, item in due:
            items[item] = now + lease
        return [item for _, item in due]

    async def unschedule(self, queue: str, item: str) -> bool:
        return self.queues.get(queue, {}).pop(item, None) is not None

    async def close(self) -> None:
        self.records.clear()
        self._record_expiry.clear()
        self.queues.clear()
        self.entries.clear()
        self.groups.clear()
        self._expiry.clear()
