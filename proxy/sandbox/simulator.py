"""The Sandbox: a stateful twin of the SMS Leads XML API behind one entry point.

    >>> sandbox = Sandbox(clock=FixedClock(datetime(2025, 6, 15, 12, 0, tzinfo=ISRAEL)), seed=1)
    >>> body = b"<balance><user><username>demo</username></user></balance>"
    >>> print((await sandbox.handle(body, "Bearer demo-token")).decode())
    <?xml version="1.0" encoding="utf-8"?>
    <balance><status>0</status><message>Your balance is:1000</message><balance>1000</balance>...

Besides the XML exchange, a developer plays the recipients and the network with ``receive``
(a reply), ``opt_out``, ``report`` (a delivery report now), ``advance`` (the clock) and
``reset`` (an account); the console (console.py) shows the state live through ``watch``.
"""

from __future__ import annotations

import os
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Concatenate, ParamSpec, TypeVar

from lxml import etree

from proxy.sandbox import control, views
from proxy.sandbox.accounts import DEMO_USERNAME, Account, authenticate, demo_account
from proxy.sandbox.clock import Clock, FixedClock, SystemClock
from proxy.sandbox.commands import COMMANDS, Call
from proxy.sandbox.control import Conflict
from proxy.sandbox.feed import Feed, Subscription
from proxy.sandbox.records import Delivery, Incoming
from proxy.sandbox.state import State
from proxy.sandbox.store import Change, Store
from proxy.sandbox.views import Panel, View
from proxy.sandbox.wire import Rejected, answer, command_of, parse, quirk

P = ParamSpec("P")
T = TypeVar("T")

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
        self.feed = Feed()
        self.panels: dict[str, Panel] = {}
        self._lock = threading.Lock()
        accounts = list(accounts)
        # What reset() goes back to: the demo account and the accounts given (as given).
        self._starts = {a.username: replace(a, verified=set(a.verified))
                        for a in (*accounts, demo_account())}
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
            raise Conflict("the sandbox runs on the system clock: start it with a fixed one "
                           "(--clock, SANDBOX_CLOCK; in Python Sandbox(clock=FixedClock(...))) "
                           "to move its time by hand")
        with self._lock:
            now = self.clock.advance(delta)
            self.state.process_due(now)
            self.state.flush()
            self._publish([])  # the clock moved, even when nothing fell due
        return now

    def receive(self, phone: str, text: str, *, to: str | None = None,
                username: str = DEMO_USERNAME) -> Incoming:
        """A handset ``phone`` sends ``text`` to the account's number ``to`` (by default the
        number it last got a reply-able message from, else the account's own): it appears in
        ``incoming``; "STOP" or "הסר" after a send with add_unsubscribe blacklists ``phone``.
        Phones are written as the API takes them (+972501234567, 050-123-4567, ...)."""
        with self._lock:
            return self._changing(control.reply, username, phone, text, to)

    def opt_out(self, phone: str, *, text: str = "STOP", username: str = DEMO_USERNAME
                ) -> Incoming:
        """``phone`` sends ``text`` (an opt-out word) and is blacklisted by the account,
        whatever it was sent."""
        with self._lock:
            return self._changing(control.opt_out, username, phone, text)

    def report(self, campaign_id: int, phone: str, outcome: str) -> Delivery:
        """The report of the pending delivery of ``campaign_id`` to ``phone`` arrives now:
        ``delivered``, ``failed`` or ``expired``."""
        with self._lock:
            return self._changing(control.report, campaign_id, phone, outcome)

    def reset(self, username: str) -> Account:
        """The account as the sandbox started it: credits, no campaigns, reports, messages,
        blacklist, contact lists or subscribers (the demo account's seeded ones come back)."""
        with self._lock:
            return self._changing(control.reset, username, self._starts.get(username))

    def _changing(self, action: Callable[Concatenate[State, datetime, P], T],
                  *args: P.args, **kwargs: P.kwargs) -> T:
        now = self.clock.now()
        self.state.process_due(now)
        try:
            return action(self.state, now, *args, **kwargs)
        finally:
            self.state.flush()

    # ── The console's view ─────────────────────────────────────────────────────────────────

    def snapshot(self) -> View:
        """Everything the console shows, now (views.py)."""
        with self._lock:
            self._catch_up()
            view = self._snapshot()
        return self._with_panels(view)

    def watch(self, subscription: Subscription) -> View:
        """Queue every change from now on for ``subscription``; the snapshot of now. Called
        again (a stale subscription), it starts the subscription afresh."""
        with self._lock:
            self._catch_up()
            subscription.stale = False
            subscription.drain()
            self.feed.add(subscription)
            self.state.observer = self._observe
            view = self._snapshot()
        return self._with_panels(view)

    def unwatch(self, subscription: Subscription) -> None:
        with self._lock:
            self.feed.remove(subscription)
            if not self.feed.subscriptions:
                self.state.observer = None

    def tick(self) -> float | None:
        """Let what fell due happen now (so that reports reach the console without waiting
        for the next request); on the system clock, the seconds until the next thing falls
        due, if anything will."""
        with self._lock:
            self._catch_up()
            due = self.state.next_due()
        if due is None or isinstance(self.clock, FixedClock):
            return None
        return max(0.0, (due - self.clock.now()).total_seconds())

    def add_panel(self, panel: Panel) -> None:
        """An extra section of the console (views.Panel), shown from the next snapshot on."""
        self.panels[panel.key] = panel
        self.panel_changed(panel.key)

    def panel_changed(self, key: str) -> None:
        """Send the panel's rows to the consoles watching now. Its ``rows()`` is called
        outside the sandbox's lock: it may ask the sandbox about anything."""
        change = {"kind": "panel", "key": key, "value": views.panel(self.panels[key])}
        self.feed.publish(views.event(self.clock.now(), {"changes": [change]}))

    def _catch_up(self) -> None:
        self.state.process_due(self.clock.now())
        self.state.flush()

    def _snapshot(self) -> View:
        return {"now": views.time(self.clock.now()),
                "clock": "fixed" if isinstance(self.clock, FixedClock) else "system",
                **views.snapshot(self.state)}

    def _with_panels(self, view: View) -> View:
        return {**view, "panels": [views.panel(panel) for panel in list(self.panels.values())]}

    def _observe(self, changes: list[Change]) -> None:
        shown = views.changes(changes)
        if shown:
            self._publish(shown)

    def _publish(self, shown: list[View]) -> None:
        if self.feed.subscriptions:
            self.feed.publish(views.event(self.clock.now(), {"changes": shown}))

    def close(self) -> None:
        if self.state.store is not None:
            self.state.store.close()


def _username(request: etree._Element) -> str | None:
    username = (request.findtext("user/username") or "").strip()
    return username or None
