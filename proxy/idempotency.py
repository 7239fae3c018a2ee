"""Idempotency-Key: a state-changing request made twice takes effect once.

The semantics of the IETF httpapi draft "The Idempotency-Key HTTP Header Field"
(draft-ietf-httpapi-idempotency-key-header), as Stripe applies them::

    POST /v1/messages  Idempotency-Key: 8e03978e-40d5-43e8-bc93-6894a57f9324
      first time                        the request runs; a final answer is kept 24 h
      same key, same request            the kept answer, `Idempotent-Replayed: true`, no call
      same key, the first still running 409 idempotency-key-in-use, Retry-After
      same key, a different request     422 idempotency-key-reused
      same key, first outcome unknown   409 outcome-unknown, no call: never sent twice

A key's record goes ``claimed -> dispatched -> done | doubt`` (or is removed)::

    claimed     the key is taken; nothing has gone upstream. Its lease is short: a claim whose
                process died, or whose write reached the store too late, frees the key when
                the lease ends, and a retry proceeds.
    dispatched  written, and confirmed by the store, before the upstream call: from here on
                the request may have reached SMS Leads. A dispatched record whose lease ran
                out (its process died mid-call) is in doubt.
    done        the final answer, replayed for 24 h.
    doubt       the request may have taken effect: never sent again under this key.

Which answers are kept follows :class:`~proxy.errors.Outcome` (statuses.yaml's `effect` for the
upstream's own answers): final answers are kept; a failure where nothing reached the upstream
removes the record, freeing the key; a failure after the request may have reached it (a read
timeout, a broken answer, a crash) holds it in doubt.

A key belongs to the credential that used it, not to its spelling: the record is addressed by
a SHA-256 of the username, of the credential's principal (auth.py: the token, or in
single-tenant mode the identified proxy API key) and of the key, so two credentials never meet
and nothing in the store names a token. Each credential's records are a group with a cap, so
one client cannot fill the store for the others; requests refused for their credentials keep
no record at all. The records live in the proxy's store (proxy/store/): SQLite by default,
shared by the workers of one host and kept across restarts; Redis for several hosts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import anyio
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
from proxy.store import Store, StoreError, StoreFull
from proxy.types import JSON

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
RETENTION = 24 * 3600.0  # seconds a key is kept (the draft's and Stripe's 24 hours)
CLAIM_LEASE = 5.0  # seconds a claim holds the key before it is dispatched (one store write)
DISPATCH_WITHIN = 2.0  # seconds the "dispatched" write may take to reach the store
KEPT_HEADERS = ("content-type", "location")
PREFIX = "idempotency:"

# The draft's value is an RFC 8941 sf-string ("..."); Stripe's clients send it bare. Either
# way 1-255 printable ASCII characters: no controls (no CR/LF), nothing to escape.
_BARE = re.compile(r"[!#-~]{1,255}")
_QUOTED = re.compile(r'"([ !#-\[\]-~]{1,255})"')

log = logging.getLogger("smsleads_proxy.idempotency")


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


# json.dumps with these options builds an encoder a call; these are built once.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_compact = json.JSONEncoder(separators=(",", ":")).encode


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def owner_of(username: str, principal: str) -> str:
    """Whose a key (or a webhook subscription, proxy/events/) is: a hash of the username and
    of the credential's principal (auth.Credentials.principal), never the principal itself.
    Usernames and principals hold no NUL: "\0" joins unambiguously."""
    return _digest(username, _digest(principal))


@dataclass(frozen=True, slots=True)
class Ticket:
    """One keyed request: where its record lives, whose it is and what it asked for."""

    slot: str
    owner: str  # the credential's group of records
    fingerprint: str

    @classmethod
    def of(cls, username: str, principal: str, key: str, request: JSON) -> Ticket:
        """``principal``: who presented the request (auth.Credentials.principal); only its
        hash is used (:func:`owner_of`). Keys hold no NUL either."""
        owner = owner_of(username, principal)
        return cls(PREFIX + _digest(owner, key), owner, _digest(_canonical(request)))


@dataclass(frozen=True, slots=True)
class Record:
    state: str  # claimed | dispatched | done | doubt
    fingerprint: str
    lease_until: float = 0.0
    nonce: str = ""  # tells two claims of one key apart
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""

    def dump(self) -> bytes:
        # Its fields by name, as dataclasses.asdict would give them, in a third of the time.
        return _compact({name: getattr(self, name) for name in _RECORD_FIELDS}).encode()

    @classmethod
    def load(cls, data: bytes) -> Record:
        return cls(**json.loads(data))


_RECORD_FIELDS = tuple(item.name for item in fields(Record))


@contextmanager
def _store_errors() -> Iterator[None]:
    """The store's failures as our problem, here only."""
    try:
        yield
    except StoreFull as exc:
        raise IdempotencyUnavailable(
            f"the proxy keeps no more Idempotency-Keys for these credentials now ({exc}); "
            "retry later, or send without a key") from exc
    except StoreError as exc:
        raise IdempotencyUnavailable(f"the proxy's key store failed: {exc}") from exc


Render = Callable[[ProblemError], Response]


class Ledger:
    """Runs keyed requests once: claims the key, marks it dispatched, keeps the outcome,
    answers repeats."""

    def __init__(self, store: Store, clock: Callable[[], float], lease: float,
                 per_owner: int) -> None:
        self.store, self.clock, self.lease, self.per_owner = store, clock, lease, per_owner

    async def run(self, ticket: Ticket, perform: Callable[[], Awaitable[Response]],
                  render: Render) -> Response:
        """``perform`` the request once for its key; ``render`` makes a problem a response
        to keep."""
        claim = await self._claim(ticket)
        if isinstance(claim, Record):  # a repeat: another request holds the key
            return self._repeat(claim, ticket)
        dispatched = Record("dispatched", ticket.fingerprint, self.clock() + self.lease,
                            uuid.uuid4().hex).dump()
        try:
            with _store_errors():
                taken = await self.store.swap(ticket.slot, claim, dispatched, RETENTION,
                                              within=DISPATCH_WITHIN)
        except IdempotencyUnavailable:
            if not await self._landed(ticket, dispatched, claim):
                raise  # nothing went out, and nothing says it did: the key is free
            taken = True  # the write landed, only its answer was lost: it is confirmed
        if not taken:  # our claim ran out and another request took the key over
            raise self._in_use(CLAIM_LEASE)
        try:
            response = await perform()
        except ProblemError as error:
            await self._settle(ticket, dispatched, error.outcome, render(error))
            raise
        except BaseException:  # a bug or a cancellation mid-call: it may have gone out
            with anyio.CancelScope(shield=True):
                await self._settle(ticket, dispatched, Outcome.UNKNOWN, None)
            raise
        await self._settle(ticket, dispatched, Outcome.FINAL, response)
        return response

    async def _claim(self, ticket: Ticket) -> bytes | Record:
        """The claim this request now holds, or the record of the request that holds the key."""
        claim = Record("claimed", ticket.fingerprint, self.clock() + CLAIM_LEASE,
                       uuid.uuid4().hex).dump()
        with _store_errors():
            for _ in range(3):  # the holder may go, or be taken over, between two reads
                held = await self.store.add(ticket.slot, claim, CLAIM_LEASE * 2,
                                            group=ticket.owner, group_cap=self.per_owner)
                if held is None:
                    return claim
                record = Record.load(held)
                if not (record.state == "claimed" and record.lease_until <= self.clock()
                        and record.fingerprint == ticket.fingerprint):
                    return record
                # A claim that never went out (its process died, or its write landed late):
                # the key is free again; take it over, unless another request just did.
                if await self.store.swap(ticket.slot, held, claim, CLAIM_LEASE * 2):
                    return claim
        return record  # still contended: a claim, which _repeat answers as in use

    def _in_use(self, wait: float) -> IdempotencyKeyInUse:
        return IdempotencyKeyInUse(
            f"the first request with this {HEADER} is still running; retry with the same key "
            "to get its answer", retry_after=max(1, math.ceil(min(wait, 5))))

    def _repeat(self, held: Record, ticket: Ticket) -> Response:
        if held.fingerprint != ticket.fingerprint:
            raise IdempotencyKeyReused(
                f"this {HEADER} was first used with another request (method, path, query or "
                "body differ); use a new key for a new request")
        if held.state == "done":
            return Response(held.body.encode(), status_code=held.status,
                            headers={**held.headers, REPLAYED: "true"})
        wait = held.lease_until - self.clock()
        if held.state == "claimed" or (held.state == "dispatched" and wait > 0):
            # A claim never went out: once its lease is over the next try takes it over.
            raise self._in_use(max(wait, 1.0))
        raise OutcomeUnknown(
            f"the first request with this {HEADER} reached the SMS Leads API but its answer "
            "was lost, so whether it took effect is unknown; the proxy will not send it "
            "again under this key. Check (e.g. the delivery reports) before sending it "
            "under a new key")

    async def _landed(self, ticket: Ticket, dispatched: bytes, claim: bytes) -> bool:
        """After a "dispatched" write whose answer was lost: True if the store holds it (the
        dispatch is confirmed after all), else the key is freed of both our records (a write
        still in flight is refused by its deadline), so a 503 never leaves a key in doubt
        for a request that was not sent. A store that cannot even say is given up on: the
        claim's lease frees the key; a late "dispatched" write is refused by its deadline."""
        try:
            if await self.store.get(ticket.slot) == dispatched:
                return True
        except StoreError:
            pass
        await self._forget(ticket, claim)
        await self._forget(ticket, dispatched)
        return False

    async def _forget(self, ticket: Ticket, record: bytes) -> None:
        try:
            await self.store.remove(ticket.slot, record)
        except StoreError as exc:  # the claim's lease frees the key all the same
            log.warning("could not free an idempotency key", extra={"reason": str(exc)})

    async def _settle(self, ticket: Ticket, dispatched: bytes, outcome: Outcome,
                      response: Response | None) -> None:
        if outcome is Outcome.NONE:
            await self._forget(ticket, dispatched)
            return
        if outcome is Outcome.FINAL and response is not None:
            record = _done(ticket, response)
        else:
            record = Record("doubt", ticket.fingerprint)
        try:
            await self.store.swap(ticket.slot, dispatched, record.dump(), RETENTION)
        except StoreError as exc:
            # The answer itself stands; the key stays "dispatched", then reads as in doubt.
            log.warning("could not settle an idempotency key", extra={"reason": str(exc)})


def _done(ticket: Ticket, response: Response) -> Record:
    headers = {name: value for name, value in response.headers.items() if name in KEPT_HEADERS}
    return Record("done", ticket.fingerprint, status=response.status_code, headers=headers,
                  body=bytes(response.body).decode("utf-8"))


__all__ = ["HEADER", "REPLAYED", "Ledger", "Record", "Ticket", "key_of", "owner_of"]
