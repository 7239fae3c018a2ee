"""The Sandbox: a stateful twin of the SMS Leads XML API behind one entry point.

    >>> sandbox = Sandbox(clock=FixedClock(datetime(2025, 6, 15, 12, 0, tzinfo=ISRAEL)), seed=1)
    >>> body = b"<balance><user><username>demo</username></user></balance>"
    >>> print((await sandbox.handle(body, "Bearer demo-token")).decode())
    <?xml version="1.0" encoding="utf-8"?>
    <balance><status>0</status><message>Your balance is:1000</message><balance>1000</balance>...
"""

from __future__ import annotations

import os
import random
import threading
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta

from lxml import etree

from proxy.sandbox.accounts import DEMO_USERNAME, Account, authenticate
from proxy.sandbox.clock import Clock, FixedClock, SystemClock
from proxy.sandbox.commands import COMMANDS, Call
from proxy.sandbox.phones import mobile, national
from proxy.sandbox.state import State
from proxy.sandbox.store import Store
from proxy.sandbox.wire import Rejected, answer, command_of, parse, quirk

_MALFORMED_ROOT = "error"  # the root of the answer to a request that is not XML at all


class Sandbox:
    """All state lives in memory, or in the SQLite file ``db_path`` (kept across restarts:
    a file that already holds a sandbox keeps its seed and its accounts, ``accounts`` only
    adds the missing ones). ``seed`` fixes ids, random numbers and report outcomes."""

    def __init__(self, *, clock: Clock | None = None, seed: int | None = None,
                 quirks: bool = False, accounts: Iterable[Account] = (),
                 dlr_delay: timedelta = timedelta(seconds=2), failure_rate: float = 0.1,
                 db_path: str | os.PathLike[str] | None = None) -> None:
        if not 0 <= failure_rate <= 1:
            raise ValueError("failure_rate must lie between 0 and 1")
        if dlr_delay < timedelta(0):
            raise ValueError("dlr_delay must not be negative")
        self.clock: Clock = clock or SystemClock()
        self.quirks = quirks
        self.requests: deque[bytes] = deque(maxlen=1000)
        self._lock = threading.Lock()
        store = None if db_path is None else Store(db_path)
        if seed is None:
            seed = random.SystemRandom().randrange(2**32)
        try:
            self.state = State(seed=seed, dlr_delay=dlr_delay, failure_rate=failure_rate,
                               now=self.clock.now(), accounts=accounts, store=store)
        except BaseException:
            if store is not None:
                store.close()
            raise

    async def handle(self, body: bytes, authorization: str | None) -> bytes:
        """One XML exchange; ``authorization`` is the raw Authorization header. It never
        awaits, so concurrent calls on one event loop take turns."""
        return self.exchange(body, authorization)

    def exchange(self, body: bytes, authorization: str | None) -> bytes:
        self.requests.append(body)
        command = _MALFORMED_ROOT
        with self._lock:
            now = self.clock.now()
            self.state.process_due(now)
            try:
                request = parse(body)
                command = command_of(request)
                handler = COMMANDS.get(command)
                if handler is None:
                    raise Rejected(997)
                account = authenticate(self.state.by_token, authorization, _username(request))
                reply = handler(Call(self.state, account, request, now))
                out = answer(command, reply.status, reply.message, reply.body)
            except Rejected as refusal:
                out = answer(command, refusal.code, refusal.message)
            finally:
                self.state.flush()
        return quirk(out, command) if self.quirks else out

    def advance(self, delta: timedelta) -> datetime:
        """Move the FixedClock on and let whatever fell due happen (sends, reports, replies)."""
        if not isinstance(self.clock, FixedClock):
            raise TypeError("advance() needs a Sandbox(clock=FixedClock(...))")
        with self._lock:
            now = self.clock.advance(delta)
            self.state.process_due(now)
            self.state.flush()
        return now

    def receive(self, phone: str, text: str, *, to: str, username: str = DEMO_USERNAME) -> None:
        """A handset ``phone`` sends ``text`` to the account's number ``to``: it appears in
        ``incoming``; "STOP" or "הסר" after a send with add_unsubscribe blacklists ``phone``."""
        source = mobile(phone)
        if source is None or username not in self.state.accounts:
            raise ValueError("receive() needs a mobile phone and an existing account")
        with self._lock:
            self.state.process_due(self.clock.now())
            self.state.receive(username, source, national(to.strip()), text, self.clock.now())
            self.state.flush()

    def close(self) -> None:
        if self.state.store is not None:
            self.state.store.close()


def _username(request: etree._Element) -> str | None:
    username = (request.findtext("user/username") or "").strip()
    return username or None
