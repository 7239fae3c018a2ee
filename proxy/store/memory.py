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

    async def close(self) -> None:
        self.entries.clear()
        self.groups.clear()
        self._expiry.clear()
