"""Idempotency-Key: a state-changing request made twice takes effect once.

The semantics of the IETF httpapi draft "The Idempotency-Key HTTP Header Field"
(draft-ietf-httpapi-idempotency-key-header), as Stripe applies them::

    POST /v1/messages  Idempotency-Key: 8e03978e-40d5-43e8-bc93-6894a57f9324
      first time                        the request runs; a final answer is kept 24 h
      same key, same request            the kept answer, `Idempotent-Replayed: true`, no call
      same key, the first still running 409 idempotency-key-in-use, Retry-After
      same key, a different request     422 idempotency-key-reused
      same key, first outcome unknown   409 outcome-unknown, no call: never sent twice

Which answers are kept follows :class:`~proxy.errors.Outcome`: the upstream's answers (success
or refusal) are final and replayed; a failure where nothing reached the upstream frees the key
for another try; a failure after the request may have reached it (a read timeout, a broken or
unreadable answer, a crash) holds the key "in doubt" for its 24 h, so a retry can never send
it a second time. A running record whose lease ran out (its process died) reads as in doubt.

A key belongs to the credentials that used it: the store is addressed by a SHA-256 of the
username, a SHA-256 of the token and the key, so two accounts never meet and nothing in the
store names a token. The store is this process's memory (bounded; when full, new keys get a
503 rather than forgetting kept answers early), or Redis (``REDIS_URL``) shared by every
process: claimed with an atomic ``SET NX PX``, settled with a compare-and-set script.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Protocol

import anyio
import redis.asyncio
import redis.exceptions
from starlette.datastructures import Headers
from starlette.responses import Response

from proxy.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyInvalid,
    IdempotencyKeyReused,
    IdempotencyUnavailable,
    Outcome,
    OutcomeUnknown,
    ProblemError,
)
from proxy.types import JSON

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
RETENTION = 24 * 3600.0  # seconds a key is kept (the draft's and Stripe's 24 hours)
KEPT_HEADERS = ("content-type", "location")
PREFIX = "smsleads-proxy:idempotency:"

# The draft's value is an RFC 8941 sf-string ("..."); Stripe's clients send it bare. Either
# way 1-255 printable ASCII characters: no controls (no CR/LF), nothing to escape.
_BARE = re.compile(r"[!#-~]{1,255}")
_QUOTED = re.compile(r'"([ !#-\[\]-~]{1,255})"')

log = logging.getLogger(__name__)


def key_of(headers: Headers) -> str | None:
    """The request's Idempotency-Key, None without one, or :class:`IdempotencyKeyInvalid`."""
    values = headers.getlist(HEADER)
    if not values:
        return None
    if len(values) > 1:
        raise IdempotencyKeyInvalid(f"send one {HEADER} header, not {len(values)}")
    quoted = _QUOTED.fullmatch(values[0])
    if quoted:
        return quoted.group(1)
    if _BARE.fullmatch(values[0]):
        return values[0]
    raise IdempotencyKeyInvalid(  # never echoed: it may carry anything
        f"an {HEADER} is 1 to 255 printable ASCII characters, bare or in double quotes")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Ticket:
    """One keyed request: where its record lives and what it asked for."""

    slot: str
    fingerprint: str

    @classmethod
    def of(cls, username: str, secret: str, key: str, request: JSON) -> Ticket:
        """``secret``: the token (or proxy API key) the client showed; only its hash is used.
        Usernames, secrets and keys hold no NUL (auth.py, key_of): "\0" joins unambiguously."""
        slot = PREFIX + _digest(username, _digest(secret), key)
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return cls(slot, _digest(canonical))


@dataclass(frozen=True, slots=True)
class Record:
    state: str  # running | done | doubt
    fingerprint: str
    owner: str = ""
    lease_until: float = 0.0
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def load(cls, data: bytes) -> Record:
        return cls(**json.loads(data))


class Store(Protocol):
    """Records by slot, each kept for the store's retention."""

    async def claim(self, slot: str, record: bytes) -> bytes | None:
        """Write the record unless the slot is taken; the record that holds it, if any."""

    async def replace(self, slot: str, old: bytes, new: bytes) -> None:
        """Write ``new`` if the slot still holds ``old``."""

    async def release(self, slot: str, old: bytes) -> None:
        """Free the slot if it still holds ``old``."""

    async def close(self) -> None: ...


class MemoryStore:
    """This process's records, oldest first; expired ones go as new ones come."""

    def __init__(self, max_keys: int, clock: Callable[[], float],
                 retention: float = RETENTION) -> None:
        self.max_keys, self.clock, self.retention = max_keys, clock, retention
        self.records: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _purge(self) -> None:
        now = self.clock()
        while self.records:
            slot, (expires, _) = next(iter(self.records.items()))
            if expires > now:
                return
            del self.records[slot]

    def _held(self, slot: str) -> bytes | None:
        self._purge()
        kept = self.records.get(slot)
        return None if kept is None else kept[1]

    def _put(self, slot: str, record: bytes) -> None:
        self.records[slot] = (self.clock() + self.retention, record)
        self.records.move_to_end(slot)  # the same retention for all: insertion order is expiry

    async def claim(self, slot: str, record: bytes) -> bytes | None:
        held = self._held(slot)
        if held is not None:
            return held
        if len(self.records) >= self.max_keys:
            # Forgetting a kept answer early could send something twice: refuse instead.
            raise IdempotencyUnavailable(f"the proxy already holds {self.max_keys} keys")
        self._put(slot, record)
        return None

    async def replace(self, slot: str, old: bytes, new: bytes) -> None:
        if self._held(slot) == old:
            self._put(slot, new)

    async def release(self, slot: str, old: bytes) -> None:
        if self._held(slot) == old:
            del self.records[slot]

    async def close(self) -> None:
        self.records.clear()


# KEYS[1] the slot; ARGV[1] the record expected; ARGV[2] the new one; ARGV[3] retention in ms.
_REPLACE = """if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return false"""
_RELEASE = """if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0"""


@contextmanager
def _redis_errors() -> Iterator[None]:
    """redis-py's exceptions as our problem, here only (the URL may hold a password: unsaid)."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise IdempotencyUnavailable(
            f"the proxy's key store (Redis) failed: {type(exc).__name__}") from exc


class RedisStore:
    """Records in Redis, shared by every proxy process that names the same server."""

    def __init__(self, client: redis.asyncio.Redis, retention: float = RETENTION) -> None:
        self.client, self.retention_ms = client, int(retention * 1000)
        self._replace = client.register_script(_REPLACE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        # Short socket timeouts: a hung Redis must fail a keyed request, not hang it.
        return cls(redis.asyncio.from_url(url, socket_timeout=2, socket_connect_timeout=2))

    async def claim(self, slot: str, record: bytes) -> bytes | None:
        with _redis_errors():
            for _ in range(3):  # the holder may expire between SET and GET: try again
                if await self.client.set(slot, record, nx=True, px=self.retention_ms):
                    return None
                held = await self.client.get(slot)
                if isinstance(held, bytes):  # None: it expired since the SET
                    return held
        raise IdempotencyUnavailable("the key store did not settle on a record for this key")

    async def replace(self, slot: str, old: bytes, new: bytes) -> None:
        with _redis_errors():
            await self._replace(keys=[slot], args=[old, new, self.retention_ms])

    async def release(self, slot: str, old: bytes) -> None:
        with _redis_errors():
            await self._release(keys=[slot], args=[old])

    async def close(self) -> None:
        await self.client.aclose()


Render = Callable[[ProblemError], Response]


class Ledger:
    """Runs keyed requests once: claims the key, keeps the outcome, answers repeats."""

    def __init__(self, store: Store, clock: Callable[[], float], lease: float) -> None:
        self.store, self.clock, self.lease = store, clock, lease

    async def run(self, ticket: Ticket, perform: Callable[[], Awaitable[Response]],
                  render: Render) -> Response:
        """``perform`` the request once for its key; ``render`` makes a problem a response
        to keep."""
        running = Record("running", ticket.fingerprint, uuid.uuid4().hex,
                         self.clock() + self.lease).dump()
        held = await self.store.claim(ticket.slot, running)
        if held is not None:
            return self._repeat(Record.load(held), ticket)
        try:
            response = await perform()
        except ProblemError as error:
            await self._settle(ticket, running, error.outcome, render(error))
            raise
        except BaseException:  # a bug or a cancellation mid-call: it may have gone out
            with anyio.CancelScope(shield=True):
                await self._settle(ticket, running, Outcome.UNKNOWN, None)
            raise
        await self._settle(ticket, running, Outcome.FINAL, response)
        return response

    def _repeat(self, held: Record, ticket: Ticket) -> Response:
        if held.fingerprint != ticket.fingerprint:
            raise IdempotencyKeyReused(
                f"this {HEADER} was first used with another request (method, path, query or "
                "body differ); use a new key for a new request")
        if held.state == "done":
            return Response(held.body.encode(), status_code=held.status,
                            headers={**held.headers, REPLAYED: "true"})
        wait = held.lease_until - self.clock()
        if held.state == "running" and wait > 0:
            raise IdempotencyKeyInUse(
                f"the first request with this {HEADER} is still running; retry with the "
                "same key to get its answer", retry_after=max(1, math.ceil(min(wait, 5))))
        raise OutcomeUnknown(
            f"the first request with this {HEADER} reached the SMS Leads API but its answer "
            "was lost, so whether it took effect is unknown; the proxy will not send it "
            "again under this key. Check (e.g. the delivery reports) before sending it "
            "under a new key")

    async def _settle(self, ticket: Ticket, running: bytes, outcome: Outcome,
                      response: Response | None) -> None:
        try:
            if outcome is Outcome.NONE:
                await self.store.release(ticket.slot, running)
                return
            if outcome is Outcome.FINAL and response is not None:
                record = _done(ticket, response)
            else:
                record = Record("doubt", ticket.fingerprint)
            await self.store.replace(ticket.slot, running, record.dump())
        except IdempotencyUnavailable as exc:
            # The answer itself stands; the key stays "running", then reads as in doubt.
            log.warning("could not settle an idempotency key: %s", exc.detail)


def _done(ticket: Ticket, response: Response) -> Record:
    headers = {name: value for name, value in response.headers.items() if name in KEPT_HEADERS}
    return Record("done", ticket.fingerprint, status=response.status_code, headers=headers,
                  body=bytes(response.body).decode("utf-8"))


def open_store(redis_url: str, max_keys: int, clock: Callable[[], float]) -> Store:
    if redis_url:
        return RedisStore.from_url(redis_url)
    return MemoryStore(max_keys, clock)


__all__ = ["HEADER", "REPLAYED", "Ledger", "MemoryStore", "Record", "RedisStore", "Store",
           "Ticket", "key_of", "open_store"]
