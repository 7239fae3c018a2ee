"""One REST operation of the mapping table, end to end: the endpoint's pipeline.

    credentials -> Idempotency-Key -> {auth, path, query, body} -> the spec's checks
      -> report window -> envelope (translate.py) -> [ledger] -> upstream -> answer -> JSON

An operation the table computes (``compute:``) stops at the envelope: its computation
(proxy/compute.py) makes the answer from it, asking other operations of the table, each one
upstream call through this same pipeline, for what only the upstream knows.

An operation whose method is not safe (RFC 9110 §9.2.1) changes state: it honours an
Idempotency-Key (proxy/idempotency.py) and is never retried by the proxy itself.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import quote

from lxml import etree
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from proxy.auth import Authenticate, Credentials
from proxy.body import parse_json, read_bounded
from proxy.errors import PayloadTooLarge, UpstreamBadAnswer, UpstreamRefused
from proxy.idempotency import Ledger, Ticket, key_of
from proxy.mapping import MappingError, Operation, Table
from proxy.observability import request_id
from proxy.problems import ProblemResponse
from proxy.settings import Settings
from proxy.translate import apply_window, build_envelope, names_not_found, read_answer
from proxy.types import JSON, Clock
from proxy.upstream import Upstream
from proxy.validation import OperationValidator

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _read_body(request: Request, limit: int) -> bytes:
    return await read_bounded(
        request.stream(), limit, request.headers.get("content-length"),
        lambda: PayloadTooLarge(f"the body is over the limit of {limit} bytes"))


Endpoint = Callable[[Request], Awaitable[Response]]


Operations = Mapping[str, tuple[Operation, OperationValidator]]


def _endpoint(op: Operation, validator: OperationValidator, settings: Settings,
              clock: Clock, operations: Operations) -> Endpoint:
    # A computed operation changes nothing (it only asks GET operations): no key, no ledger,
    # so a repeat answers afresh (a preview's credits are those of now).
    changes_state = op.method not in SAFE_METHODS and op.compute is None

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
            document["body"] = parse_json(raw, request.headers.get("content-type", ""))
        validator.check(document, has_body="body" in document)
        if op.window is not None:
            apply_window(op.window, document, clock())
        envelope = build_envelope(op, document)

        async def perform() -> Response:
            upstream: Upstream = request.app.state.upstream
            if op.compute is not None:
                ask = functools.partial(_ask, operations, upstream, creds)
                return _respond(op, validator, await op.compute.run(envelope, ask))
            return _respond(op, validator, await _perform(
                op, validator, upstream, envelope, document, creds, safe=not changes_state))

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
                   envelope: etree._Element, document: dict[str, JSON],
                   creds: Credentials, *, safe: bool) -> JSON | None:
    """The upstream call and its answer as JSON (None for a 204)."""
    answer = await upstream.call(envelope, creds.token, safe=safe)
    missing = names_not_found(op, envelope, answer.root)
    if missing is not None:  # a success that says the URL's thing is not there
        refusal, said = missing
        raise UpstreamRefused(refusal, None, said)
    if op.success == 204:
        return None
    body = read_answer(op, answer.root, document)
    gaps = validator.answer.missing(body)
    if gaps:
        raise UpstreamBadAnswer(f"the upstream's answer lacks {', '.join(gaps)}",
                                upstream_status=answer.status)
    return body


async def _ask(operations: Operations, upstream: Upstream, creds: Credentials,
               operation_id: str, path: Mapping[str, str]) -> JSON:
    """What a computation asks: another (read-only) operation of the table, for the same
    credentials, its answer as JSON. Its refusals are the computed operation's."""
    op, validator = operations[operation_id]
    document: dict[str, JSON] = {"auth": {"username": creds.username}, "path": dict(path),
                                 "query": {}}
    return await _perform(op, validator, upstream, build_envelope(op, document), document,
                          creds, safe=True)


def _respond(op: Operation, validator: OperationValidator, body: JSON | None) -> Response:
    if body is None:
        return Response(status_code=204)
    headers = {}
    if op.location is not None and isinstance(body, dict):
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


def operation_routes(table: Table, validators: dict[tuple[str, str], OperationValidator],
            settings: Settings, clock: Clock) -> list[Route]:
    routes: list[OperationRoute] = []
    operations: dict[str, tuple[Operation, OperationValidator]] = {}
    for op in table.operations:
        validator = validators.get((op.method, op.path))
        if validator is None:
            raise MappingError(f"openapi.yaml has no {op.method} {op.path} ({op.operation_id})")
        operations[op.operation_id] = (op, validator)
    for op, validator in operations.values():
        endpoint = _endpoint(op, validator, settings, clock, operations)
        routes.append(OperationRoute(op.path, endpoint, methods=[op.method]))
    for route in routes:
        route.shadows = tuple(other for other in routes if other.path != route.path
                              and route.path_regex.match(other.path))
    return list(routes)
