"""The sandbox's changes as a stream of events, for the console's server-sent events.

    subscription = Subscription(asyncio.get_running_loop())
    snapshot = sandbox.watch(subscription)        # the state now; changes queue from here on
    await subscription.wait(15.0)
    for event in subscription.drain(): ...

Each reader has its own queue, bounded: a reader that falls ``limit`` events behind is
marked ``stale`` and its queue emptied, so it starts again from a snapshot; nothing about
it grows with the sandbox's traffic. Events are published by whichever thread changed the
sandbox (under its lock); readers are woken on their own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

QUEUE_LIMIT = 256  # events a reader may fall behind before it gets a snapshot instead


class Subscription:
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = QUEUE_LIMIT) -> None:
        self.stale = False   # events were dropped: the reader needs a snapshot
        self.closed = False  # the feed ended (the server is stopping)
        self._events: deque[str] = deque()
        self._limit = limit
        self._loop = loop
        self._ready = asyncio.Event()

    def push(self, event: str) -> None:
        if self.stale:
            return  # the snapshot it will get holds this change too
        if len(self._events) >= self._limit:
            self._events.clear()
            self.stale = True
        else:
            self._events.append(event)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def drain(self) -> list[str]:
        events = []
        while self._events:
            events.append(self._events.popleft())
        return events

    async def wait(self, timeout: float) -> None:
        """Until an event waits, the feed closes, or ``timeout`` seconds have passed."""
        if not (self._events or self.stale or self.closed):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        self._ready.clear()

    def _wake(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._ready.set)


class Feed:
    """The readers of one sandbox's changes."""

    def __init__(self) -> None:
        self.subscriptions: set[Subscription] = set()
        self.closed = False

    def add(self, subscription: Subscription) -> None:
        self.subscriptions.add(subscription)
        if self.closed:
            subscription.close()

    def remove(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def publish(self, event: str) -> None:
        for subscription in list(self.subscriptions):
            subscription.push(event)

    def close(self) -> None:
        """End every stream, now and from now on."""
        self.closed = True
        for subscription in list(self.subscriptions):
            subscription.close()
