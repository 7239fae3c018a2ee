"""Every request observed once: a request id, one JSON log line, Prometheus metrics.

    X-Request-ID: 4bf92f3577b34da6a3ce929d0e0e4736    (echoed; generated when absent)

A client's ``X-Request-ID`` is kept when it looks like an id (1 to 128 of ``A-Z a-z 0-9 . _ :
-``), so it can be searched for in the logs; anything else is replaced, so that no header can
smuggle a line break or a secret into a log. The id is echoed on the response and in every
problem body (``request_id``).

The per-request record travels in a context variable, so the upstream call made deep in the
endpoint (:class:`WatchedUpstream`) adds its command, status and time to the request's line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from lxml import etree
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.emit import Envelope
from proxy.errors import UpstreamError
from proxy.logs import REQUEST_LOGGER
from proxy.metrics import CONTENT_TYPE, Metrics
from proxy.upstream import Answer, Upstream

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED = "<unmatched>"  # one label for every path no route knows: bounded cardinality
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Any token is a method to HTTP; labels keep to these so clients cannot mint new series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_log = logging.getLogger(REQUEST_LOGGER)


@dataclass(slots=True)
class Exchange:
    """What the request log line and the metrics say about one request."""

    request_id: str
    method: str
    route: str = UNMATCHED
    status: int = 500  # until a response starts: an exception escaped
    command: str | None = None
    upstream_status: str | None = None
    upstream_seconds: float = 0.0


_current: ContextVar[Exchange | None] = ContextVar("smsleads_proxy_exchange", default=None)


def request_id(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def _request_id(scope: Scope) -> str:
    offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
    return offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex


def _outcome(exc: UpstreamError) -> str:
    """The upstream's <status>, or the failure's kind when there was none."""
    status = exc.extensions.get("upstream_status")
    return str(status) if isinstance(status, int) else exc.slug


class Monitor:
    """One per app: its metrics, its request log, and when the upstream last answered."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = Metrics()
        self.clock = clock  # seconds; the app hands in its own clock, so tests can move it
        self.last_answer: float | None = None

    def answered_within(self) -> float | None:
        """Seconds since the upstream last answered (any <status>), None if it never did."""
        return None if self.last_answer is None else self.clock() - self.last_answer

    def called(self, command: str, status: str, seconds: float) -> None:
        """One upstream call ended: its <status> or its failure's kind, and its time."""
        if status.lstrip("-").isdigit():  # a <status> came back: the upstream is up
            self.last_answer = self.clock()
        self.metrics.called(command, status, seconds)
        exchange = _current.get()
        if exchange is not None:
            exchange.command, exchange.upstream_status = command, status
            exchange.upstream_seconds += seconds

    def finish(self, exchange: Exchange, seconds: float) -> None:
        self.metrics.answered(exchange.route, exchange.method, exchange.status, seconds)
        _log.info("request", extra={
            "request_id": exchange.request_id,
            "method": exchange.method,
            "route": exchange.route,
            "status": exchange.status,
            "duration_ms": round(seconds * 1000, 2),
            "upstream_command": exchange.command,
            "upstream_status": exchange.upstream_status,
            "upstream_ms": round(exchange.upstream_seconds * 1000, 2)
            if exchange.command else None,
        })

    async def endpoint(self, request: Request) -> Response:
        """``GET /metrics``."""
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)


class WatchedUpstream(Upstream):
    """The upstream client whose every call is counted, timed, added to the request's log line
    and remembered for /readyz. The command is the envelope's root, from the mapping table."""

    def __init__(self, monitor: Monitor, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monitor = monitor

    async def call(self, envelope: Envelope | etree._Element, *args: Any,
                   **kwargs: Any) -> Answer:
        started, status = time.perf_counter(), "internal-error"  # unless told otherwise below
        try:
            answer = await super().call(envelope, *args, **kwargs)
            status = str(answer.status)
            return answer
        except UpstreamError as exc:
            status = _outcome(exc)
            raise
        except asyncio.CancelledError:  # the client went away mid-call
            status = "cancelled"
            raise
        finally:
            self.monitor.called(str(envelope.tag), status, time.perf_counter() - started)


def _templates(routes: list[BaseRoute]) -> dict[Any, str]:
    """Starlette puts the matched endpoint in the scope; this maps it back to its template."""
    return {route.endpoint: route.path for route in routes if isinstance(route, Route)}


class Observer:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which would run the endpoint in another
    context and hide the context variable from it)."""

    def __init__(self, app: ASGIApp, monitor: Monitor) -> None:
        self.app, self.monitor = app, monitor
        self.templates: dict[Any, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "other"
        exchange = Exchange(_request_id(scope), method)
        scope.setdefault("state", {})["request_id"] = exchange.request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, exchange.request_id)
            await send(message)

        token = _current.set(exchange)
        started = time.perf_counter()
        self.monitor.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.monitor.metrics.in_flight.dec()
            exchange.route = self._template(scope)
            self.monitor.finish(exchange, time.perf_counter() - started)
            _current.reset(token)

    def _template(self, scope: Scope) -> str:
        if self.templates is None:
            self.templates = _templates(scope["app"].routes)
        return self.templates.get(scope.get("endpoint"), UNMATCHED)
