"""A faithful, stateful simulator of the SMS Leads XML API: the proxy's default upstream.

    sandbox = Sandbox(clock=FixedClock(datetime(2025, 6, 15, 12, 0, tzinfo=ISRAEL)), seed=1)
    answer = await sandbox.handle(body, "Bearer demo-token")
    sandbox.advance(timedelta(seconds=2))     # the delivery reports come in

``python -m proxy.sandbox`` serves it over HTTP (``POST /api``).
"""

from __future__ import annotations

from proxy.sandbox.accounts import Account
from proxy.sandbox.app import create_app
from proxy.sandbox.clock import ISRAEL, Clock, FixedClock, SystemClock, TickingClock
from proxy.sandbox.simulator import Sandbox

__all__ = ["ISRAEL", "Account", "Clock", "FixedClock", "Sandbox", "SystemClock", "TickingClock",
           "create_app"]
