"""Webhooks as one of the app's services: the pollers and the dispatcher, supervised
(proxy/services.py), on the app's store and upstream.

    services = [..., webhooks_service(settings, table, validators, tenant, clock, sandbox)]
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.datastructures import State

from proxy.auth import Tenant
from proxy.events.api import Hub, moment
from proxy.events.deliveries import Deliveries, Delivery
from proxy.events.dispatcher import Dispatcher, Policy
from proxy.events.guard import Sender, allowed_networks
from proxy.events.poller import Poller
from proxy.events.sealing import Sealer, SealError
from proxy.events.subscriptions import Subscription, Subscriptions
from proxy.mapping import Table
from proxy.services import Service, background
from proxy.settings import Settings
from proxy.validation import OperationValidator

if TYPE_CHECKING:
    from proxy.sandbox import Sandbox

PANEL = "webhooks"
PANEL_ROWS = 100
KEPT_DAYS = 3  # a delivery's record outlives its last retry by this many days


class Panel:
    """The sandbox console's section of this process's latest webhook attempts (issue 17)."""

    COLUMNS = ("time", "webhook", "event", "type", "attempt", "status", "outcome")

    def __init__(self, sandbox: Sandbox | None) -> None:
        self.sandbox = sandbox
        self.rows: deque[dict[str, str | int | None]] = deque(maxlen=PANEL_ROWS)
        if sandbox is not None:
            from proxy.sandbox import Panel as View

            sandbox.add_panel(View(PANEL, "Webhook deliveries", self.COLUMNS,
                                   lambda: list(reversed(self.rows))))

    def noticed(self, delivery: Delivery, sub: Subscription) -> None:
        if self.sandbox is None or not delivery.attempts:
            return
        last = delivery.attempts[-1]
        self.rows.append({"time": moment(last.at), "webhook": sub.id, "event": delivery.event,
                          "type": delivery.type, "attempt": delivery.tries,
                          "status": last.status_code if last.status_code is not None
                          else last.error, "outcome": delivery.status})
        self.sandbox.panel_changed(PANEL)


def webhooks_service(settings: Settings, table: Table,
                     validators: dict[tuple[str, str], OperationValidator],
                     tenant: Tenant | None, clock: Callable[[], float],
                     sandbox: Any = None) -> Service:
    sealer = Sealer.from_setting(settings.webhook_token_keys) \
        if settings.webhook_token_keys else None
    allowed = allowed_networks(settings.webhook_allow_networks)
    delays = settings.webhook_delays
    retention = sum(delays) + KEPT_DAYS * 24 * 3600.0

    def token(sub: Subscription) -> str | None:
        if tenant is not None:
            return tenant.token
        if sub.token is None or sealer is None:
            return None
        try:
            return sealer.open(sub.token, sub.id)
        except SealError:
            return None

    @asynccontextmanager
    async def service(state: State) -> AsyncIterator[None]:
        subscriptions = Subscriptions(state.store)
        deliveries = Deliveries(state.store, retention, len(delays) + 1)
        state.webhooks = Hub(table, subscriptions, deliveries, sealer, tenant is not None,
                             allowed, settings.webhook_secret_grace, clock)
        panel = Panel(sandbox)
        async with AsyncExitStack() as stack:
            sender = await stack.enter_async_context(
                Sender(allowed, timeout=settings.webhook_timeout))
            dispatcher = Dispatcher(
                state.store, subscriptions, deliveries, sender,
                Policy(delays, settings.webhook_timeout, settings.webhook_disable_after),
                clock, state.monitor.metrics, panel.noticed)
            deliveries.wake = dispatcher.wake
            poller = Poller(table, state.store, lambda: state.upstream, validators,
                            subscriptions, deliveries, token, clock, state.monitor.metrics,
                            settings.webhook_poll_interval, settings.webhook_lease,
                            settings.webhook_low_credits)
            await stack.enter_async_context(background("webhook dispatcher", dispatcher.run))
            await stack.enter_async_context(background("webhook poller", poller.run))
            yield

    return service
