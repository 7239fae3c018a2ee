"""The ASGI application: the mapping table's operations as routes, and the proxy's own pages.

    app = create_app(Settings(sandbox=True))                      # the embedded sandbox
    app = create_app(settings, transport=httpx.MockTransport(f))  # tests hand in the wire
    app = create_app(settings, table=load_table(data), spec=spec)  # another table and contract

Building an app changes nothing outside it: what is process-wide (log redaction of the held
token, freezing start-up objects out of the garbage collector) is done by the entry point,
proxy/__main__.py. The app's long-lived parts are services (proxy/services.py), opened in
order when it starts and closed in reverse when it stops.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from proxy import docs, guard, health, problems
from proxy.auth import Tenant, credentials, tenant
from proxy.breaker import Breaker
from proxy.docs import load_spec
from proxy.endpoint import operation_routes
from proxy.events.api import routes as webhook_routes
from proxy.events.service import webhooks_service
from proxy.idempotency import Ledger
from proxy.mapping import MappingError, Table, load_table
from proxy.metrics import forget_dead_workers
from proxy.observability import Monitor, Observer, WatchedUpstream
from proxy.services import Service, lifespan
from proxy.settings import Settings
from proxy.store import open_store
from proxy.store.counters import open_counters
from proxy.transport import AiohttpTransport
from proxy.types import Clock
from proxy.validation import OperationValidator, compile_validators

SANDBOX_URL = "http://sandbox.invalid/api"
LEASE_MARGIN = 5.0  # seconds a running key outlives the upstream deadline before it is in doubt

Validators = dict[tuple[str, str], OperationValidator]


@functools.cache
def _packaged() -> tuple[Table, dict[str, Any], Validators]:
    """The packaged table and spec, read and compiled once per process (all read-only)."""
    spec = load_spec()
    return load_table(), spec, compile_validators(spec)


def _now() -> datetime:
    return datetime.now(UTC)


def _sandbox(workers: int) -> tuple[httpx.AsyncBaseTransport, list[BaseRoute], Any]:
    """The embedded sandbox: its XML API as the upstream's wire, its console's routes
    (/sandbox: what the phones would see), which exist in sandbox mode only, and itself."""
    from proxy.sandbox import console_routes
    from proxy.sandbox import create_app as create_sandbox
    from proxy.sandbox.__main__ import from_environment

    sandbox = from_environment()
    return (httpx.ASGITransport(app=create_sandbox(sandbox)),
            console_routes(sandbox, workers=workers), sandbox)


def _webhooks(settings: Settings, table: Table, validators: Validators, held: Tenant | None,
              clock: Clock, sandbox: Any) -> tuple[list[BaseRoute], list[Service]]:
    """The proxy's own /v1/webhooks and the service behind them, for a table with events:
    (proxy/events/); openapi.yaml must describe the routes."""
    if not table.events:
        return [], []
    try:
        served: list[BaseRoute] = list(webhook_routes(validators))
    except KeyError as exc:
        raise MappingError(f"openapi.yaml has no {exc.args[0]} (webhooks)") from exc
    return served, [webhooks_service(settings, table, validators, held,
                                     lambda: clock().timestamp(), sandbox)]


def _upstream_service(settings: Settings, table: Table, monitor: Monitor, url: str,
                      transport: httpx.AsyncBaseTransport | None, clock: Clock) -> Service:
    """The one pooled connection to the upstream, as ``state.upstream``."""

    @asynccontextmanager
    async def service(state: State) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.upstream_timeout,
                                connect=settings.upstream_connect_timeout)
        breaker = Breaker(settings.breaker_failures, settings.breaker_cooldown,
                          lambda: clock().timestamp())
        async with transport or AiohttpTransport(max_connections=200) as wire:
            state.upstream = WatchedUpstream(
                monitor, wire, url, table.statuses, timeout=timeout, unclosed=table.unclosed,
                max_answer_bytes=settings.max_answer_bytes, deadline=_deadline(settings),
                breaker=breaker, read_retries=settings.read_retries)
            yield

    return service


def _deadline(settings: Settings) -> float:
    return settings.upstream_timeout + settings.upstream_connect_timeout


def _ledger_service(settings: Settings, clock: Clock) -> Service:
    """The proxy's store (``state.store``) and the Idempotency-Key ledger on it
    (``state.ledger``)."""

    @asynccontextmanager
    async def service(state: State) -> AsyncIterator[None]:
        def seconds() -> float:
            return clock().timestamp()

        store = await open_store(settings, seconds)
        try:
            state.store = store
            state.ledger = Ledger(store, seconds, _deadline(settings) + LEASE_MARGIN,
                                  settings.idempotency_keys_per_credential)
            yield
        finally:
            await store.close()

    return service


def _guard_service(settings: Settings, quotas: tuple[guard.Quotas, dict[str, guard.Quotas]],
                   monitor: Monitor, clock: Clock) -> Service:
    """The spend guard (``state.guard``), its counters where the store is (``state.store``)."""

    @asynccontextmanager
    async def service(state: State) -> AsyncIterator[None]:
        counters = await open_counters(settings, state.store)
        state.guard = guard.Guard(counters, *quotas, clock, monitor.metrics)
        yield

    return service


@asynccontextmanager
async def _metrics_service(state: State) -> AsyncIterator[None]:
    forget_dead_workers()  # a restarted worker's predecessor no longer counts as in flight
    yield


def create_app(settings: Settings | None = None, *, table: Table | None = None,
               spec: dict[str, Any] | None = None,
               transport: httpx.AsyncBaseTransport | None = None,
               clock: Clock = _now, services: tuple[Service, ...] = ()) -> Starlette:
    """The proxy for ``table`` (default: the packaged mapping.yaml and statuses.yaml) and
    ``spec`` (default: the packaged openapi.yaml, which every operation must appear in).
    ``services`` run after the proxy's own (a test's, or a feature's)."""
    settings = (settings or Settings()).check()
    packaged_table, packaged_spec, packaged_validators = _packaged()
    table = table or packaged_table
    validators = packaged_validators if spec is None else compile_validators(spec)
    spec = spec or packaged_spec
    held = tenant(settings)  # a half-set single-tenant mode stops here, naming the settings
    quotas = guard.quotas(settings, held)  # so does a key's wrong setting
    url = settings.upstream_url
    console: list[BaseRoute] = []
    sandbox = None
    if transport is None and settings.sandbox:
        (transport, console, sandbox), url = _sandbox(settings.workers), SANDBOX_URL
    hooks, hook_services = _webhooks(settings, table, validators, held, clock, sandbox)
    monitor = Monitor(lambda: clock().timestamp())
    readiness = health.Readiness(monitor, health.probe_envelope(table),
                                 settings.readiness_window, settings.readiness_timeout)
    routes = [
        *operation_routes(table, validators, settings, clock),
        *hooks,
        *docs.spec_routes(spec, [(op.window.start, op.window.end) for op in table.operations
                                 if op.window], clock()),
        *health.routes(readiness),
        Route("/metrics", monitor.endpoint, methods=["GET"]),
        *docs.routes(),
        *problems.routes(table.statuses),
        *console,
    ]

    app = Starlette(
        routes=routes,
        lifespan=lifespan([_upstream_service(settings, table, monitor, url, transport, clock),
                           _ledger_service(settings, clock),
                           _guard_service(settings, quotas, monitor, clock),
                           _metrics_service, *hook_services, *services]),
        middleware=[Middleware(Observer, monitor=monitor)],
        exception_handlers=problems.HANDLERS)
    # No redirect to the path with or without its trailing slash: Starlette builds its Location
    # from the Host header, a client's POST would be resent elsewhere, and the paths are exact
    # in the contract. A 404 problem names the path that exists (problems.py).
    app.router.redirect_slashes = False
    app.state.authenticate = credentials if held is None else held.credentials
    app.state.tenant = held
    app.state.body_timeout = settings.body_timeout
    app.state.monitor = monitor
    app.state.validators = validators
    return app
