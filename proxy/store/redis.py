"""The store in Redis: shared by every proxy process, on any host, that names the server.

Each operation is one Lua script, so it is atomic on the server. An entry is kept under
``<prefix>entry:<key>`` with its group's name in front of its value; the groups, and the
whole store, are sorted sets of keys by expiry, trimmed as entries are added, so a cap costs
a count. ``swap(..., within=s)`` compares the server's own clock (``TIME``) with the deadline
the proxy sets: a write delayed by a paused server or a slow network, arriving late, is
refused instead of taking effect after the caller has given up.

What Redis must be, checked when the store opens (:func:`check_server`): persistent (the
append-only file on; without it a restart of Redis forgets every entry), never evicting
(``maxmemory-policy noeviction``: an evicted entry is forgotten early), and with a clock within
a second or two of this host's. A server that is not is refused unless the operator accepts
the risk (``--redis-volatile-ok``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.store import StoreFull, StoreUnavailable, prefix_end

PREFIX = "smsleads-proxy:"
MAX_SKEW = 2.0  # seconds between this host's clock and the server's

# KEYS: entry, group set, all set; ARGV: value, ttl ms, group ('' for none), group cap
# (0: none), max entries. Returns {0} added, {1, held} held, {2} store full, {3} group full.
_ADD = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[2])
local held = redis.call('GET', KEYS[1])
if held then return {1, held} end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return {2} end
if ARGV[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if tonumber(ARGV[4]) > 0 and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
    return {3}
  end
  redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
redis.call('ZADD', KEYS[3], now + ttl, KEYS[1])
redis.call('SET', KEYS[1], ARGV[3] .. '\\n' .. ARGV[1], 'PX', ttl)
return {0}
"""

# KEYS: entry, all set; ARGV: old value, new value, ttl ms, deadline ms (0: none), prefix of
# group sets. Returns 1 swapped, 0 not held, -1 too late.
_SWAP = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if tonumber(ARGV[4]) > 0 and now > tonumber(ARGV[4]) then return -1 end
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local cut = string.find(held, '\\n', 1, true)
local group, value = string.sub(held, 1, cut - 1), string.sub(held, cut + 1)
if value ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], group .. '\\n' .. ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], 'XX', now + ttl, KEYS[1])
if group ~= '' then
  redis.call('ZADD', ARGV[5] .. group, 'XX', now + ttl, KEYS[1])
  local set = ARGV[5] .. group
  if redis.call('PTTL', set) < ttl then redis.call('PEXPIRE', set, ttl) end
end
return 1
"""

# KEYS: entry, all set; ARGV: old value, prefix of group sets. Returns 1 removed, 0 not held.
_REMOVE = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local cut = string.find(held, '\\n', 1, true)
local group, value = string.sub(held, 1, cut - 1), string.sub(held, cut + 1)
if value ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
if group ~= '' then redis.call('ZREM', ARGV[2] .. group, KEYS[1]) end
return 1
"""


# ── Records and queues (webhooks, issue 13) ─────────────────────────────────────────────────
# A record is a plain string key (with PX when it expires); a sorted set, all scores 0, lists
# every record key, so a prefix is a lexical range. Redis forgets an expired key by itself, not
# its name in the index: a second sorted set holds the names of the records that expire, by
# expiry, and each write first drops up to PURGE_BATCH names of expired records from both (so
# the index holds the live records, and a few that expired since the last writes: a scan skips
# those). A queue is a sorted set of items by due time, in the server's clock.

_NOW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""

PURGE_BATCH = 100  # names of expired records each write drops from the index

# KEYS: index, expiries; ARGV[#ARGV]: how many to drop.
_PURGE = _NOW + """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[#ARGV]))
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('ZREM', KEYS[2], unpack(gone))
end
"""

# KEYS: index, expiries, record; ARGV: value, ttl ms (0: none), mode (0 any, 1 absent,
# 2 holds), expected, purge batch.
_WRITE = _PURGE + """
local held = redis.call('GET', KEYS[3])
if ARGV[3] == '1' and held then return 0 end
if ARGV[3] == '2' and held ~= ARGV[4] then return 0 end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ttl)
  redis.call('ZADD', KEYS[2], now + ttl, KEYS[3])
else
  redis.call('SET', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], KEYS[3])
end
redis.call('ZADD', KEYS[1], 0, KEYS[3])
return 1
"""

# KEYS: index, expiries, record; ARGV: mode (0 any, 1 holds), expected, purge batch.
# Returns 1 erased, 0 not.
_ERASE = _PURGE + """
local held = redis.call('GET', KEYS[3])
if held and ARGV[1] == '1' and held ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], KEYS[3])
redis.call('ZREM', KEYS[2], KEYS[3])
if held then return 1 end
return 0
"""

# KEYS: queue; ARGV: item, delay ms.
_SCHEDULE = _NOW + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS: queue; ARGV: limit, lease ms. Returns the items taken.
_TAKE = _NOW + """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, item in ipairs(items) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), item)
end
return items
"""


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _ms(seconds: float | None) -> int:
    return 0 if seconds is None else max(1, int(seconds * 1000))


class RedisUnsafe(StoreUnavailable):
    """The server answers, but would forget entries (or misjudge deadlines)."""


@contextmanager
def _unavailable() -> Iterator[None]:
    """redis-py's exceptions as the store's, here only (the URL may hold a password: unsaid)."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise StoreUnavailable(f"Redis failed: {type(exc).__name__}") from exc


def _value(held: bytes) -> bytes:
    return held.partition(b"\n")[2]


class RedisStore:
    def __init__(self, client: redis.asyncio.Redis, max_entries: int,
                 prefix: str = PREFIX, *, volatile_ok: bool = False) -> None:
        self.client, self.max_entries, self.prefix = client, max_entries, prefix
        self.volatile_ok = volatile_ok
        self.verified = False  # check_server passed since the last connection failure
        self.offset = 0.0  # the server's clock minus this host's, measured by check_server
        self._add = client.register_script(_ADD)
        self._swap = client.register_script(_SWAP)
        self._remove = client.register_script(_REMOVE)
        self._write = client.register_script(_WRITE)
        self._erase = client.register_script(_ERASE)
        self._schedule = client.register_script(_SCHEDULE)
        self._take = client.register_script(_TAKE)

    @classmethod
    def from_url(cls, url: str, max_entries: int, *, timeout: float = 2.0,
                 volatile_ok: bool = False) -> RedisStore:
        # Short socket timeouts: a hung Redis must fail a request, not hang it. A connection
        # found broken (Redis restarted since it was pooled) is tried once more on a new one;
        # a timeout never is. Every script is safe to repeat: a repeat that finds its own
        # first attempt done changes nothing and says "held", which sends nothing.
        client = redis.asyncio.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
            retry_on_error=[redis.exceptions.ConnectionError])
        return cls(client, max_entries, volatile_ok=volatile_ok)

    @contextmanager
    def _calling(self) -> Iterator[None]:
        try:
            with _unavailable():
                yield
        except StoreUnavailable:
            self.verified = False  # it may come back as another server: check it again
            raise

    async def _ready(self) -> None:
        if not self.verified:
            await self.check_server()

    def _entry(self, key: str) -> str:
        return f"{self.prefix}entry:{key}"

    @property
    def _all(self) -> str:
        return f"{self.prefix}all"

    @property
    def _groups(self) -> str:
        return f"{self.prefix}group:"

    async def add(self, key: str, value: bytes, ttl: float, *, group: str | None = None,
                  group_cap: int | None = None) -> bytes | None:
        if group is not None and "\n" in group:
            raise ValueError("a group name has no line break")
        await self._ready()
        with self._calling():
            answer = await self._add(
                keys=[self._entry(key), self._groups + (group or ""), self._all],
                args=[value, max(1, int(ttl * 1000)), group or "", group_cap or 0,
                      self.max_entries])
        if answer[0] == 1:
            held: bytes = answer[1]
            return _value(held)
        if answer[0] == 2:
            raise StoreFull(f"the store holds {self.max_entries} entries")
        if answer[0] == 3:
            raise StoreFull(f"the group holds {group_cap} entries")
        return None

    async def get(self, key: str) -> bytes | None:
        await self._ready()
        with self._calling():
            held = await self.client.get(self._entry(key))
        return None if held is None else _value(held if isinstance(held, bytes) else held.encode())

    async def swap(self, key: str, old: bytes, new: bytes, ttl: float, *,
                   within: float | None = None) -> bool:
        # The deadline in the server's own time, so a skew between the clocks neither widens
        # nor narrows the window in which a late write still lands.
        deadline = 0 if within is None else int((time.time() + self.offset + within) * 1000)
        await self._ready()
        with self._calling():
            answer = await self._swap(keys=[self._entry(key), self._all],
                                      args=[old, new, max(1, int(ttl * 1000)), deadline,
                                            self._groups])
        if answer == -1:
            raise StoreUnavailable("Redis took the write too late")
        return bool(answer == 1)

    async def remove(self, key: str, old: bytes) -> bool:
        await self._ready()
        with self._calling():
            answer = await self._remove(keys=[self._entry(key), self._all],
                                        args=[old, self._groups])
        return bool(answer == 1)

    # ── Records and queues (webhooks, issue 13) ─────────────────────────────────────────────

    def _record(self, key: str) -> str:
        return f"{self.prefix}record:{key}"

    @property
    def _records(self) -> list[str]:
        """The index of record names, and the names of those that expire by expiry."""
        return [f"{self.prefix}records", f"{self.prefix}records:expiries"]

    def _queue(self, name: str) -> str:
        return f"{self.prefix}queue:{name}"

    async def read(self, key: str) -> bytes | None:
        await self._ready()
        with self._calling():
            held = await self.client.get(self._record(key))
        return None if held is None else _bytes(held)

    async def _written(self, key: str, value: bytes, ttl: float | None, mode: int,
                       expect: bytes) -> bool:
        await self._ready()
        with self._calling():
            answer = await self._write(keys=[*self._records, self._record(key)],
                                       args=[value, _ms(ttl), mode, expect, PURGE_BATCH])
        return bool(answer == 1)

    async def write(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._written(key, value, ttl, 0, b"")

    async def write_if(self, key: str, value: bytes, expect: bytes | None, *,
                       ttl: float | None = None) -> bool:
        return await self._written(key, value, ttl, 1 if expect is None else 2, expect or b"")

    async def erase(self, key: str, *, only: bytes | None = None) -> bool:
        await self._ready()
        with self._calling():
            answer = await self._erase(keys=[*self._records, self._record(key)],
                                       args=[0 if only is None else 1, only or b"",
                                             PURGE_BATCH])
        return bool(answer == 1)

    async def scan(self, prefix: str, *, after: str = "", limit: int = 100
                   ) -> list[tuple[str, bytes]]:
        await self._ready()
        found: list[tuple[str, bytes]] = []
        start = self._record(max(prefix, after))
        low = f"({start}" if after >= prefix else f"[{start}"
        high = f"({self._record(prefix_end(prefix))}"
        cut = len(self._record(""))
        index = self._records[0]
        with self._calling():
            while len(found) < limit:
                names = await self.client.zrangebylex(index, low, high, 0, limit - len(found))
                if not names:
                    break
                values = await self.client.mget(names)
                found += [(_bytes(name).decode()[cut:], _bytes(value))
                          for name, value in zip(names, values, strict=True) if value is not None]
                low = "(" + _bytes(names[-1]).decode()
        return found

    async def schedule(self, queue: str, item: str, delay: float) -> None:
        await self._ready()
        with self._calling():
            await self._schedule(keys=[self._queue(queue)], args=[item, int(delay * 1000)])

    async def take(self, queue: str, limit: int, lease: float) -> list[str]:
        await self._ready()
        with self._calling():
            items = await self._take(keys=[self._queue(queue)], args=[limit, _ms(lease)])
        return [_bytes(item).decode() for item in items]

    async def unschedule(self, queue: str, item: str) -> bool:
        await self._ready()
        with self._calling():
            return bool(await self.client.zrem(self._queue(queue), item))

    async def check_server(self) -> None:
        """Refuse a Redis that would forget entries or misjudge deadlines, unless told."""
        problems = []
        with self._calling():
            asked = time.time()
            seconds, micros = await self.client.time()
            # The server read its clock about half-way through the round trip.
            self.offset = seconds + micros / 1e6 - (asked + time.time()) / 2
            skew = abs(self.offset)
            try:
                config = await self.client.config_get("appendonly")
                config |= await self.client.config_get("maxmemory-policy")
            except redis.exceptions.ResponseError:  # CONFIG disabled (managed services)
                config = {}
        if skew > MAX_SKEW:
            problems.append(f"its clock is {skew:.1f} s away from this host's")
        if config.get("appendonly") != "yes":
            problems.append("its append-only file is off (a restart of Redis forgets "
                            "every key)" if config else "CONFIG GET is refused, so whether "
                            "it persists and never evicts cannot be checked")
        elif config.get("maxmemory-policy") != "noeviction":
            problems.append(f"its maxmemory-policy is {config.get('maxmemory-policy')}, not "
                            "noeviction (a full Redis would forget keys early)")
        if problems and not (self.volatile_ok and all("clock" not in p for p in problems)):
            raise RedisUnsafe("Redis is not safe for Idempotency-Keys: " + "; ".join(problems))
        self.verified = True

    async def close(self) -> None:
        await self.client.aclose()
