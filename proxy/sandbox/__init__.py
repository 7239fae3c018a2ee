"""A faithful, stateful simulator of the SMS Leads XML API: the proxy's default upstream.

    sandbox = Sandbox(clock=FixedClock(datetime(2025, 6, 15, 12, 0, tzinfo=ISRAEL)), seed=1)
    answer = await sandbox.handle(body, "Bearer demo-token")
    sandbox.advance(timedelta(seconds=2))     # the delivery reports come in

``python -m proxy.sandbox`` serves it over HTTP (``POST /api``), with its console at
``/sandbox`` (console.py).
"""

from __future__ import annotations

from proxy.sandbox.accounts import Account
from proxy.sandbox.app import create_app
from proxy.sandbox.clock import ISRAEL, Clock, FixedClock, SystemClock, TickingClock
from proxy.sandbox.console import console_routes
from proxy.sandbox.control import Conflict, ControlError, Invalid, NotFound
from proxy.sandbox.simulator import Sandbox
from proxy.sandbox.views import Panel

__all__ = ["ISRAEL", "Account", "Clock", "Conflict", "ControlError", "FixedClock", "Invalid",
           "NotFound", "Panel", "Sandbox", "SystemClock", "TickingClock", "console_routes",
           "create_app"]
