"""A circuit breaker in front of the upstream, one per process.

    closed --(N failures in a row)--> open --(cooldown over)--> half-open: one probe goes out
       ^                               ^                              |
       +------(the probe succeeds)-----+--------(the probe fails)-----+

While open, a call fails at once with :class:`UpstreamSuspended` (503 with Retry-After)
instead of tying up a connection and the client for a connect timeout each time (Nygard,
"Release It!", 2nd ed., ch. 5 "Circuit Breaker"). Hand-written: the libraries' glue (their
own exceptions, listeners and wall clocks) would be longer than this, and a test could not
drive their clocks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from proxy.errors import UpstreamSuspended


class Breaker:
    def __init__(self, failures: int = 5, cooldown: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold, self.cooldown, self.clock = failures, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() >= self.opened_at + self.cooldown else "open"

    def admit(self) -> bool:
        """Let a call go out, or raise :class:`UpstreamSuspended`. True if the call is the
        half-open probe."""
        if self.opened_at is None:
            return False
        wait = self.opened_at + self.cooldown - self.clock()
        if wait > 0 or self.probing:
            raise UpstreamSuspended(
                f"the last {self.failures} calls to the SMS Leads API failed; the proxy "
                "does not call it for a while and nothing was sent",
                retry_after=max(1, math.ceil(wait)))
        self.probing = True
        return True

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self, probe: bool) -> None:
        self.failures += 1
        if probe or self.failures >= self.threshold:
            self.opened_at, self.probing = self.clock(), False

    def abandoned(self, probe: bool) -> None:
        """The call ended without a verdict (cancelled): a probe frees its place."""
        if probe:
            self.probing = False
