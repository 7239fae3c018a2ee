"""The ASGI application: one generic endpoint per operation of the mapping table.

    app = create_app(Settings(sandbox=True))                      # the embedded sandbox
    app = create_app(settings, transport=httpx.MockTransport(f))  # tests hand in the wire

An operation whose method is not safe (RFC 9110 §9.2.1) changes state: it honours an
Idempotency-Key (proxy/idempotency.py) and is never retried by the proxy itself.
"""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

import httpx
import yaml
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from proxy import docs, health, logs, problems
from proxy.auth import Authenticate, Credentials, credentials, tenant
from proxy.breaker import Breaker
from proxy.emit import Envelope, compile_envelope
from proxy.errors import (
    MalformedRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    ProblemError,
    Refusal,
    RouteNotFound,
    UnsupportedMediaType,
    UpstreamBadAnswer,
    UpstreamRefused,
)
from proxy.idempotency import Ledger, Ticket, key_of, open_store
from proxy.mapping import MappingError, Operation, Table, load_table
from proxy.metrics import forget_dead_workers
from proxy.observability import REQUEST_ID_HEADER, Monitor, Observer, WatchedUpstream, request_id
from proxy.settings import Settings
from proxy.translate import apply_window, names_not_found, read_answer
from proxy.transport import AiohttpTransport
from proxy.types import JSON
from proxy.upstream import Upstream
from proxy.validation import OperationValidator, compile_validators

SANDBOX_URL = "http://sandbox.invalid/api"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LEASE_MARGIN = 5.0  # seconds a running key outlives the upstream deadline before it is in doubt
NOT_FOUND = Refusal(404, "not-found", "The resource named in the URL does not exist")


def load_spec() -> dict[str, Any]:
    text = resources.files("proxy").joinpath("openapi.yaml").read_text("utf-8")
    spec: dict[str, Any] = yaml.safe_load(text)
    return spec


@functools.cache
def _tables() -> tuple[Table, dict[str, Any], dict[tuple[str, str], OperationValidator]]:
    """The packaged tables and spec, read and compiled once per process (all read-only)."""
    spec = load_spec()
    return load_table(), spec, compile_validators(spec)


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"

    def __init__(self, error: ProblemError, request_id: str | None = None) -> None:
        body = error.as_json()
        if request_id is not None:  # the same id as the X-Request-ID header and the log line
            body["request_id"] = request_id
        super().__init__(body, status_code=error.status, headers=error.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it exceeds the limit (never read whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
    return bytes(data)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse_json(raw: bytes, content_type: str) -> JSON:
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as application/json, not {media or 'no Content-Type'}")
    charset = params.lower().partition("charset=")[2].strip().strip('"')
    if charset and charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"send the body as UTF-8, not {charset}")
    try:
        value: JSON = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    except RecursionError as exc:
        raise MalformedRequest("the body is nested too deeply") from exc
    except ValueError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from exc
    return value


Endpoint = Callable[[Request], Awaitable[Response]]


Clock = Callable[[], datetime]


def _endpoint(op: Operation, validator: OperationValidator, settings: Settings,
              clock: Clock) -> Endpoint:
    changes_state = op.method not in SAFE_METHODS
    build_envelope = compile_envelope(op)

    async def endpoint(request: Request) -> Response:
        authenticate: Authenticate = request.app.state.authenticate
        creds = authenticate(request.headers)
        key = key_of(request.headers) if changes_state else None
        document: dict[str, JSON] = {
            "auth": {"username": creds.username},
            "path": dict(request.path_params),
            "query": validator.coerce_query(request.query_params.multi_items()),
        }
        raw = await _read_body(request, settings.max_body_bytes) if validator.body else b""
        if raw.strip():
            document["body"] = _parse_json(raw, request.headers.get("content-type", ""))
        validator.check(document, has_body="body" in document)
        if op.window is not None:
            apply_window(op.window, document, clock())
        envelope = build_envelope(document)

        async def perform() -> Response:
            return await _perform(op, validator, request.app.state.upstream, envelope,
                                  document, creds, safe=not changes_state)

        if key is None:
            return await perform()
        asked: JSON = {"operation": op.operation_id, "path": document["path"],
                       "query": document["query"], "body": document.get("body")}
        # Keys belong to the credentials the client showed: its token, or in single-tenant
        # mode the proxy API key it presented (every client shares the held token).
        shown = creds.token if request.app.state.tenant is None else (
            request.headers.get("authorization", ""))
        ledger: Ledger = request.app.state.ledger
        return await ledger.run(Ticket.of(creds.username, shown, key, asked), perform,
                                lambda error: ProblemResponse(error, request_id(request)))

    endpoint.__name__ = op.operation_id
    return endpoint


async def _perform(op: Operation, validator: OperationValidator, upstream: Upstream,
                   envelope: Envelope, document: dict[str, JSON],
                   creds: Credentials, *, safe: bool) -> Response:
    """The upstream call and its answer as the client's response."""
    answer = await upstream.call(envelope, creds.token, safe=safe)
    missing = names_not_found(op, envelope.body, answer.root)
    if missing is not None:
        raise UpstreamRefused(NOT_FOUND, answer.status, missing)
    if op.success == 204:
        return Response(status_code=204)
    body = read_answer(op, answer.root, document)
    gaps = validator.answer.missing(body)
    if gaps:
        raise UpstreamBadAnswer(f"the upstream's answer lacks {', '.join(gaps)}",
                                upstream_status=answer.status)
    headers = {}
    if op.location is not None:
        # The ids come from the upstream: percent-encoded, they cannot break the header.
        headers["Location"] = op.location.format_map(
            {name: quote(str(value), safe="") for name, value in body.items()})
    return JSONResponse(body, status_code=op.success, headers=headers)


class OperationRoute(Route):
    """A route whose template yields to the concrete paths it would also match: the
    .../contacts/removals of a list is not its contact "removals" (OpenAPI 3.1 §4.8.8:
    concrete paths are matched before their templated counterparts)."""

    shadows: tuple[Route, ...] = ()

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and any(
                route.matches(scope)[0] is not Match.NONE for route in self.shadows):
            return Match.NONE, {}
        return match, child


def _allowed(request: Request) -> str:
    """Every method of the resource (RFC 9110 §15.5.6). Each operation is its own route, and
    Starlette's 405 names only the methods of the first route that matched the path."""
    methods = {method for route in request.app.routes
               if isinstance(route, Route) and route.matches(request.scope)[0] is not Match.NONE
               for method in route.methods or ()}
    return ", ".join(sorted(methods))


async def _problem(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ProblemError):
        return ProblemResponse(exc, request_id(request))
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        error: ProblemError = MethodNotAllowed(f"{request.method} is not allowed here")
        error.headers["Allow"] = _allowed(request)
        return ProblemResponse(error, request_id(request))
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        return ProblemResponse(RouteNotFound(f"no resource at {request.url.path}"),
                               request_id(request))
    raise exc


async def _bug(request: Request, exc: Exception) -> Response:
    """A bug: Starlette's ServerErrorMiddleware calls this for the answer, then re-raises so
    that uvicorn logs the traceback. It runs outside Observer, hence the header here."""
    found = request_id(request)
    response = ProblemResponse(ProblemError("the proxy failed; its log names this request"),
                               found)
    if found is not None:
        response.headers[REQUEST_ID_HEADER] = found
    return response


def _routes(table: Table, validators: dict[tuple[str, str], OperationValidator],
            settings: Settings, clock: Clock) -> list[Route]:
    routes: list[OperationRoute] = []
    for op in table.operations:
        validator = validators.get((op.method, op.path))
        if validator is None:
            raise MappingError(f"openapi.yaml has no {op.method} {op.path} ({op.operation_id})")
        endpoint = _endpoint(op, validator, settings, clock)
        routes.append(OperationRoute(op.path, endpoint, methods=[op.method]))
    for route in routes:
        route.shadows = tuple(other for other in routes if other.path != route.path
                              and route.path_regex.match(other.path))
    return list(routes)


def _now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings | None = None, *,
               transport: httpx.AsyncBaseTransport | None = None,
               clock: Clock = _now) -> Starlette:
    settings = settings or Settings()
    table, spec, validators = _tables()
    url = settings.upstream_url
    held = tenant(settings)  # a half-set single-tenant mode stops here, naming the settings
    if held is not None:
        logs.hide(held.token)
    monitor = Monitor(lambda: clock().timestamp())
    readiness = health.Readiness(monitor, health.probe_envelope(table),
                                 settings.readiness_window, settings.readiness_timeout)
    if transport is None and settings.sandbox:
        from proxy.sandbox import create_app as create_sandbox
        from proxy.sandbox.__main__ import from_environment

        transport = httpx.ASGITransport(app=create_sandbox(from_environment()))
        url = SANDBOX_URL

    def seconds() -> float:
        return clock().timestamp()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.upstream_timeout,
                                connect=settings.upstream_connect_timeout)
        deadline = settings.upstream_timeout + settings.upstream_connect_timeout
        breaker = Breaker(settings.breaker_failures, settings.breaker_cooldown, seconds)
        store = open_store(settings.redis_url or "", settings.idempotency_max_keys, seconds)
        try:
            async with transport or AiohttpTransport(max_connections=200) as wire:
                app.state.upstream = WatchedUpstream(
                    monitor, wire, url, table.statuses, timeout=timeout,
                    unclosed=table.unclosed, max_answer_bytes=settings.max_answer_bytes,
                    deadline=deadline, breaker=breaker, read_retries=settings.read_retries)
                app.state.ledger = Ledger(store, seconds, deadline + LEASE_MARGIN)
                forget_dead_workers()
                # Start-up's ~60,000 objects (spec, tables, validators) live as long as the
                # process; frozen, they drop out of the collector's full passes, each a
                # 10-15 ms pause of every request in flight here (bench/RESULTS.md: p99).
                gc.collect()
                gc.freeze()
                yield
        finally:
            await store.close()

    spec_json = json.dumps(spec, ensure_ascii=False).encode()
    spec_yaml = resources.files("proxy").joinpath("openapi.yaml").read_bytes()

    async def openapi_yaml(request: Request) -> Response:
        return Response(spec_yaml, media_type="application/yaml")

    async def openapi_json(request: Request) -> Response:
        return Response(spec_json, media_type="application/json")

    routes = [
        *_routes(table, validators, settings, clock),
        Route("/openapi.yaml", openapi_yaml, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *health.routes(readiness),
        Route("/metrics", monitor.endpoint, methods=["GET"]),
        *docs.routes(),
        *problems.routes(table.statuses),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(Observer, monitor=monitor)],
                    exception_handlers={ProblemError: _problem, HTTPException: _problem,
                                        500: _bug})
    app.state.authenticate = credentials if held is None else held.credentials
    app.state.tenant = held
    app.state.monitor = monitor
    return app
