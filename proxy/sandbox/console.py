"""``/sandbox``: the sandbox's console. A page that shows what the phones would see, live, and
lets a developer act as the recipients; every action is also a JSON call of its own.

    routes = console_routes(sandbox)   # python -m proxy.sandbox; python -m proxy --sandbox

The page and its assets come from ``static/`` (no CDN, a strict Content-Security-Policy).
Calls (README, "The sandbox"): ``GET /sandbox/api/state`` (a snapshot), ``GET
/sandbox/api/events`` (server-sent events: a ``snapshot``, then ``change``\\ s), and the
actions, each a ``POST`` of a JSON object: ``replies``, ``opt-outs``, ``delivery-reports``,
``clock``, ``resets``. Bad input is a problem (proxy/errors.py); the host app renders it.

Requiring ``application/json`` is also what keeps other web pages from posting to these
calls: a browser asks first (CORS), and the console grants nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from proxy.errors import (
    FieldError,
    MalformedRequest,
    PayloadTooLarge,
    RequestInvalid,
    RouteNotFound,
    SandboxConflict,
    UnsupportedMediaType,
)
from proxy.sandbox import views
from proxy.sandbox.accounts import DEMO_USERNAME, dump_account
from proxy.sandbox.control import Conflict, Invalid, NotFound
from proxy.sandbox.feed import Feed, Subscription
from proxy.sandbox.records import dump_delivery, dump_incoming
from proxy.sandbox.simulator import Sandbox

STATIC = Path(__file__).resolve().parent / "static"
PAGE = (STATIC / "console.html").read_text("utf-8")
# Scripts, styles and images from this origin only, no inline script or style; the page
# calls nothing but this origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}
NO_STORE = {"Cache-Control": "no-store"}
HEARTBEAT = 15.0          # seconds between comments on an idle stream (proxies keep it open)
MAX_BODY = 64 * 1024      # an action's JSON body
MAX_ADVANCE = timedelta(days=366)
_NUMBER = (int, float)

Fields = dict[str, tuple[type | tuple[type, ...], bool]]  # name -> (JSON type, required)


# ── Reading an action ────────────────────────────────────────────────────────────────────


async def _body(request: Request) -> dict[str, Any]:
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json, not {media or 'no Content-Type'}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise PayloadTooLarge(f"the body is over the limit of {MAX_BODY} bytes")
    try:
        value = json.loads(raw.decode("utf-8"))
    except RecursionError as exc:
        raise MalformedRequest("the body is nested too deeply") from exc
    except ValueError as exc:  # UnicodeDecodeError too
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise RequestInvalid([FieldError("/body", "must be an object")])
    return value


def _kind(expected: type | tuple[type, ...]) -> str:
    return "a number" if expected == _NUMBER else "a string"


def _checked(body: dict[str, Any], fields: Fields) -> dict[str, Any]:
    """The body's fields, each of its JSON type; unknown and missing ones are refused."""
    errors = [FieldError(f"/body/{name}", "is not a field of this call")
              for name in body if name not in fields]
    for name, (expected, required) in fields.items():
        if name not in body:
            if required:
                errors.append(FieldError(f"/body/{name}", "is required"))
        elif isinstance(body[name], bool) or not isinstance(body[name], expected):
            errors.append(FieldError(f"/body/{name}", f"must be {_kind(expected)}"))
    if errors:
        raise RequestInvalid(errors)
    return body


def _campaign_id(value: str | int) -> int:
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise RequestInvalid([FieldError("/body/campaign_id", "must be a campaign id (digits)")])
    return int(text)


def _seconds(value: float) -> timedelta:
    if not 0 < value <= MAX_ADVANCE.total_seconds():
        raise RequestInvalid([FieldError("/body/seconds", "must be more than 0 and at most "
                                                          f"{MAX_ADVANCE.days} days")])
    return timedelta(seconds=value)


@contextmanager
def _translated() -> Iterator[None]:
    """The sandbox's refusals as problems (the one place they are translated)."""
    try:
        yield
    except NotFound as exc:
        raise RouteNotFound(str(exc)) from exc
    except Invalid as exc:
        raise RequestInvalid([FieldError(f"/body/{exc.field}", exc.message)]) from exc
    except Conflict as exc:
        raise SandboxConflict(str(exc)) from exc


# ── Server-sent events ───────────────────────────────────────────────────────────────────

_FEEDS: weakref.WeakSet[Feed] = weakref.WeakSet()


def _end_streams_on_exit(feed: Feed) -> None:
    """uvicorn waits for every response to finish before it stops, and an event stream never
    does: on SIGINT or SIGTERM the streams end first, then the server's own handler runs."""
    _FEEDS.add(feed)
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only; a server elsewhere stops otherwise
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if callable(previous) and not isinstance(previous, _EndingStreams):
            signal.signal(signum, _EndingStreams(previous))


class _EndingStreams:
    """A signal handler that ends the console's streams, then calls the one it replaced."""

    def __init__(self, previous: Callable[[int, FrameType | None], Any]) -> None:
        self.previous = previous

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        try:
            for feed in list(_FEEDS):
                feed.close()
        finally:
            self.previous(signum, frame)


def _event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"


async def _stream(sandbox: Sandbox, process: dict[str, int]) -> AsyncIterator[str]:
    """A snapshot, then every change, until the client leaves (Starlette cancels the stream)
    or the server stops (the feed closes)."""
    subscription = Subscription(asyncio.get_running_loop())
    _end_streams_on_exit(sandbox.feed)
    try:
        snapshot = sandbox.watch(subscription)
        yield "retry: 2000\n" + _event("snapshot", views.event_of({**snapshot, **process}))
        while not subscription.closed:
            due = sandbox.tick()
            await subscription.wait(HEARTBEAT if due is None else min(HEARTBEAT, due + 0.01))
            if subscription.stale:
                snapshot = sandbox.watch(subscription)
                yield _event("snapshot", views.event_of({**snapshot, **process}))
            events = subscription.drain()
            for event in events:
                yield _event("change", event)
            if not events:
                yield ": keep-alive\n\n"
    finally:
        sandbox.unwatch(subscription)


# ── The routes ───────────────────────────────────────────────────────────────────────────


def console_routes(sandbox: Sandbox, *, workers: int = 1) -> list[BaseRoute]:
    """The console of ``sandbox``; ``workers``: the processes serving it, each with a
    sandbox of its own (the page says so when there are several)."""
    process = {"pid": os.getpid(), "workers": workers}

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers=PAGE_HEADERS)

    async def state(request: Request) -> Response:
        return JSONResponse({**sandbox.snapshot(), **process}, headers=NO_STORE)

    async def events(request: Request) -> Response:
        return StreamingResponse(_stream(sandbox, process), media_type="text/event-stream",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    async def replies(request: Request) -> Response:
        body = _checked(await _body(request), {"phone": (str, True), "text": (str, True),
                                               "account": (str, False), "to": (str, False)})
        with _translated():
            message = sandbox.receive(body["phone"], body["text"], to=body.get("to"),
                                      username=body.get("account", DEMO_USERNAME))
        return JSONResponse(views.incoming(dump_incoming(message)), status_code=201)

    async def opt_outs(request: Request) -> Response:
        body = _checked(await _body(request), {"phone": (str, True), "text": (str, False),
                                               "account": (str, False)})
        with _translated():
            message = sandbox.opt_out(body["phone"], text=body.get("text", "STOP"),
                                      username=body.get("account", DEMO_USERNAME))
        return JSONResponse(views.incoming(dump_incoming(message)), status_code=201)

    async def delivery_reports(request: Request) -> Response:
        body = _checked(await _body(request), {"campaign_id": ((str, int), True),
                                               "phone": (str, True), "outcome": (str, True)})
        campaign_id = _campaign_id(body["campaign_id"])
        with _translated():
            delivery = sandbox.report(campaign_id, body["phone"], body["outcome"])
        campaign = sandbox.state.campaigns[campaign_id]
        view = views.delivery(dump_delivery(delivery), campaign.phase, campaign.reply_to)
        return JSONResponse({"campaign_id": str(campaign_id), **view})

    async def clock(request: Request) -> Response:
        body = _checked(await _body(request), {"seconds": (_NUMBER, True)})
        delta = _seconds(body["seconds"])
        with _translated():
            now = sandbox.advance(delta)
        return JSONResponse({"now": views.time(now)})

    async def resets(request: Request) -> Response:
        body = _checked(await _body(request), {"account": (str, True)})
        with _translated():
            account = sandbox.reset(body["account"])
        return JSONResponse(views.account(dump_account(account)))

    actions: dict[str, Callable[[Request], Any]] = {
        "replies": replies, "opt-outs": opt_outs, "delivery-reports": delivery_reports,
        "clock": clock, "resets": resets,
    }
    return [
        Route("/sandbox", page, methods=["GET"]),
        Route("/sandbox/api/state", state, methods=["GET"]),
        Route("/sandbox/api/events", events, methods=["GET"]),
        *(Route(f"/sandbox/api/{name}", action, methods=["POST"])
          for name, action in actions.items()),
        Mount("/sandbox/static", StaticFiles(directory=STATIC), name="sandbox-static"),
    ]
