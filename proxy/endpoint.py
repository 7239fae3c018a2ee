"""One REST operation of the mapping table, end to end: the endpoint's pipeline.

    credentials -> Idempotency-Key -> {auth, path, query, body} -> the spec's checks
      -> report window -> envelope (translate.py) -> [ledger] -> upstream -> answer -> JSON

An operation whose method is not safe (RFC 9110 §9.2.1) changes state: it honours an
Idempotency-Key (proxy/idempotency.py) and is never retried by the proxy itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


def _endpoint(op: Operation, validator: OperationValidator, settings: Settings,
              clock: Clock) -> Endpoint:
    changes_state = op.method not in SAFE_METHODS

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
                   envelope: etree._Element, document: dict[str, JSON],
                   creds: Credentials, *, safe: bool) -> Response:
    """The upstream call and its answer as the client's response."""
    answer = await upstream.call(envelope, creds.token, safe=safe)
    missing = names_not_found(op, envelope, answer.root)
    if missing is not None:  # a success that says the URL's thing is not there
        refusal, said = missing
        raise UpstreamRefused(refusal, None, said)
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


def operation_routes(table: Table, validators: dict[tuple[str, str], OperationValidator],
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
