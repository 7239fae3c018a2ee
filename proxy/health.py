"""``/healthz`` (this process answers) and ``/readyz`` (and so does the upstream).

/readyz is ready when the upstream answered, with any ``<status>``, within
``--readiness-window`` seconds. When nothing went upstream that long, it sends the mapping
table's probe (``readiness.probe``): that operation's envelope with no username and no token,
which the upstream refuses with an XML status. A refusal is an answer; silence, a timeout or
something that is not its XML is not. One probe at a time: concurrent checks wait for it.
"""

from __future__ import annotations

import asyncio

from lxml import etree
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.errors import NotReady, UpstreamError, UpstreamRefused
from proxy.mapping import Table
from proxy.observability import Monitor
from proxy.translate import build_envelope
from proxy.upstream import Upstream


def probe_envelope(table: Table) -> etree._Element | None:
    if table.probe is None:
        return None
    return build_envelope(table.operation(table.probe), {"auth": {}})


class Readiness:
    def __init__(self, monitor: Monitor, probe: etree._Element | None, window: float,
                 timeout: float) -> None:
        self.monitor, self.probe = monitor, probe
        self.window, self.timeout = window, timeout
        self._lock = asyncio.Lock()

    def _recent(self) -> float | None:
        age = self.monitor.answered_within()
        # A negative age is a wall clock set back: not trusted, the probe decides.
        return age if age is not None and 0 <= age <= self.window else None

    async def check(self, upstream: Upstream) -> float:
        """Seconds since the upstream last answered; :class:`NotReady` when it will not."""
        age = self._recent()
        if age is not None:
            return age
        async with self._lock:
            age = self._recent()  # another check's probe may have just answered
            if age is not None:
                return age
            if self.probe is None:
                raise NotReady("nothing went upstream lately and the table has no probe")
            try:
                await upstream.call(self.probe, None, safe=True, timeout=self.timeout)
            except UpstreamRefused:
                pass  # the expected answer: no credentials, but an XML <status>
            except UpstreamError as exc:
                raise NotReady(f"the SMS Leads API did not answer the probe: {exc.detail}") from exc
        return self._recent() or 0.0

    async def readyz(self, request: Request) -> Response:
        age = await self.check(request.app.state.upstream)
        return JSONResponse({"status": "ready", "upstream_answered_seconds_ago": round(age, 3)})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def routes(readiness: Readiness) -> list[Route]:
    return [Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readiness.readyz, methods=["GET"])]
