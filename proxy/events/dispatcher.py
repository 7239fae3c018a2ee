"""The dispatcher: takes due deliveries off the store's queue and posts them, signed.

Every worker of every replica runs one; the queue hands each due item to one of them, leased
for the time an attempt may take, so an attempt cut short by a crash is made again when the
lease ends (at least once, the same event id). After an attempt:

- a 2xx answer in time: succeeded;
- 410 Gone: the receiver asks to hear no more: failed, and the subscription disabled;
- anything else (another status, no answer, a redirect, a refused address): retried after the
  next delay of the schedule (``--webhook-retries``), each jittered by up to a fifth so
  receivers coming back are not met by every retry at once; after the last, failed. An
  endpoint that has failed every attempt for ``--webhook-disable-after`` seconds is disabled.

Deliveries are not ordered: retries and several dispatchers overtake one another.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

import anyio
from anyio.abc import TaskStatus

from proxy.events.deliveries import QUEUE, Attempt, Deliveries, Delivery
from proxy.events.guard import REFUSED, Sender
from proxy.events.guard import Attempt as Posted
from proxy.events.signing import signed_headers
from proxy.events.subscriptions import Subscription, Subscriptions
from proxy.metrics import Metrics
from proxy.store import Store, StoreError

IDLE = 0.25      # seconds between looks at the queue when nothing was due
JITTER = 0.2     # a retry's delay, give or take this share
GONE = 410

log = logging.getLogger("smsleads_proxy.webhooks")


@dataclass(frozen=True, slots=True)
class Policy:
    delays: tuple[float, ...]  # seconds before each retry
    timeout: float
    disable_after: float
    concurrency: int = 32


class Dispatcher:
    def __init__(self, store: Store, subscriptions: Subscriptions, deliveries: Deliveries,
                 sender: Sender, policy: Policy, clock: Callable[[], float],
                 metrics: Metrics, noticed: Callable[[Delivery, Subscription], None]) -> None:
        self.store, self.subscriptions, self.deliveries = store, subscriptions, deliveries
        self.sender, self.policy, self.clock, self.metrics = sender, policy, clock, metrics
        self.noticed = noticed  # after each attempt (the sandbox console's panel)
        self.due = anyio.Event()

    def wake(self) -> None:
        """Something is due now: look at once instead of at the next idle tick."""
        self.due.set()

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        slots = anyio.Semaphore(self.policy.concurrency)
        task_status.started()
        async with anyio.create_task_group() as group:
            while True:
                free = slots.value
                items = await self._take(free) if free else []
                for item in items:
                    await slots.acquire()
                    group.start_soon(self._attempt, item, slots)
                if not items:
                    with anyio.move_on_after(IDLE):
                        await self.due.wait()
                    self.due = anyio.Event()

    async def _take(self, limit: int) -> list[str]:
        try:
            # Leased for twice an attempt's timeout: the attempt and its record.
            return await self.store.take(QUEUE, limit, 2 * self.policy.timeout + 1)
        except StoreError as exc:
            log.warning("the webhook queue cannot be read", extra={"reason": str(exc)})
            return []

    async def _attempt(self, item: str, slots: anyio.Semaphore) -> None:
        try:
            await self.attempt(item)
        except StoreError as exc:  # the item is leased: it comes back when the lease ends
            log.warning("a webhook attempt could not be kept",
                        extra={"item": item, "reason": str(exc)})
        finally:
            slots.release()

    async def attempt(self, item: str) -> None:
        """One attempt of the delivery ``<webhook id>/<event id>``."""
        webhook, _, event = item.partition("/")
        sub = await self.subscriptions.get(webhook)
        delivery = await self.deliveries.get(webhook, event)
        if sub is None or delivery is None or delivery.status != "pending":
            await self.store.unschedule(QUEUE, item)  # deleted, expired, or done by another
            return
        if not sub.enabled:
            await self._finish(delivery, sub, "failed", "the subscription is disabled")
            return
        now = self.clock()
        posted = await self.sender.post(sub.url, delivery.body.encode("utf-8"),
                                        signed_headers(sub.signing_keys(now), event, now,
                                                       delivery.body))
        attempt = Attempt(now, posted.status, posted.error, round(posted.seconds * 1000, 1))
        self.metrics.webhook_attempts.labels(_outcome(posted)).inc()
        log.info("webhook attempt", extra={
            "event_id": event, "webhook_id": webhook, "delivery_id": item,
            "attempt": delivery.tries + 1, "status_code": posted.status, "error": posted.error,
            "duration_ms": attempt.duration_ms})
        await self._after(delivery.tried(attempt), sub, posted, now)

    async def _after(self, tried: Delivery, sub: Subscription, posted: Posted,
                     now: float) -> None:
        if posted.delivered:
            await self._finish(tried, sub, "succeeded", None)
            if sub.failing_since is not None:
                await self.subscriptions.change(sub.id, lambda s: replace(s, failing_since=None))
            return
        if posted.status == GONE:
            await self._finish(tried, sub, "failed", "the endpoint answered 410 Gone")
            await self._disable(sub, now, "the endpoint answered 410 Gone")
            return
        failing = sub.failing_since if sub.failing_since is not None else now
        if now - failing >= self.policy.disable_after:
            await self._disable(sub, now, f"every attempt failed for {now - failing:.0f} s")
        elif sub.failing_since is None:
            await self.subscriptions.change(sub.id, lambda s: replace(
                s, failing_since=s.failing_since or now))
        if tried.tries >= tried.last_try or tried.tries > len(self.policy.delays):
            await self._finish(tried, sub, "failed", "every attempt failed")
            return
        delay = self.policy.delays[min(tried.tries, len(self.policy.delays)) - 1]
        delay *= random.uniform(1 - JITTER, 1 + JITTER)
        await self._keep(tried, sub, replace(tried, next_at=now + delay))
        await self.store.schedule(QUEUE, tried.item, delay)

    async def _finish(self, tried: Delivery, sub: Subscription, status: str,
                      reason: str | None) -> None:
        await self._keep(tried, sub, replace(tried, status=status, reason=reason, next_at=None))
        await self.store.unschedule(QUEUE, tried.item)
        self.metrics.webhook_deliveries.labels(status).inc()

    async def _keep(self, tried: Delivery, sub: Subscription, new: Delivery) -> None:
        """The attempt's record, unless the delivery was retried by hand meanwhile (then
        only the attempt is added)."""
        kept = await self.deliveries.change(tried, lambda held: new if held.tries + 1 ==
                                            new.tries else held.tried(new.attempts[-1]))
        if kept is not None:
            self.noticed(kept, sub)

    async def _disable(self, sub: Subscription, now: float, reason: str) -> None:
        await self.subscriptions.change(sub.id, lambda s: s.disabled(now, reason))
        log.warning("webhook subscription disabled",
                    extra={"webhook_id": sub.id, "reason": reason})


def _outcome(posted: Posted) -> str:
    if posted.delivered:
        return "delivered"
    if posted.status is not None:
        return "rejected"
    return "refused" if posted.error and REFUSED in posted.error else "no_answer"
