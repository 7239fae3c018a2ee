"""One REST operation of the mapping table, end to end: the endpoint's pipeline.

    credentials -> Idempotency-Key -> {auth, path, query, body} -> the spec's checks
      -> report window -> envelope (translate.py) -> [ledger] -> upstream -> answer -> JSON

An operation the table computes (``compute:``) stops at the envelope: its computation
(proxy/compute.py) makes the answer from it, asking other operations of the table, each one
upstream call through this same pipeline, for what only the upstream knows.

An operation whose method is not safe (RFC 9110 §9.2.1) changes state: it honours an
Idempotency-Key (proxy/idempotency.py), is never retried by the proxy itself, and passes the
spend guard (proxy/guard.py) on its way upstream, after the ledger: a replay is not counted.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from urllib.parse import quote, urlencode

from lxml import etree
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from proxy import feeds
from proxy.auth import Authenticate, Credentials
from proxy.body import parse_json, request_body
from proxy.emit import Envelope, compile_envelope
from proxy.errors import (
    FieldError,
    RequestInvalid,
    UpstreamBadAnswer,
    UpstreamRefused,
)
from proxy.guard import LIMITS_PATH, Guard, limits_route
from proxy.idempotency import Ledger, Ticket, key_of
from proxy.mapping import Feed, MappingError, Operation, Paging, Table, Window
from proxy.observability import request_id
from proxy.problems import ProblemResponse
from proxy.settings import Settings
from proxy.translate import (
    MISSING,
    Missing,
    apply_window,
    build_envelope,
    names_not_found,
    put,
    read_answer,
    resolve,
)
from proxy.types import JSON, Clock
from proxy.upstream import Upstream
from proxy.validation import OperationValidator

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INCOMPLETE_HEADER = "X-SMSLeads-Incomplete"  # a feed's minutes the upstream's cap cut
MAX_LINK = 8000


Endpoint = Callable[[Request], Awaitable[Response]]


Operations = Mapping[str, tuple[Operation, OperationValidator]]


def _endpoint(op: Operation, validator: OperationValidator, settings: Settings,
              clock: Clock, operations: Operations) -> Endpoint:
    # A computed operation changes nothing (it only asks GET operations): no key, no ledger,
    # so a repeat answers afresh (a preview's credits are those of now).
    changes_state = op.method not in SAFE_METHODS and op.compute is None
    write_envelope = compile_envelope(op)  # the envelope as text (proxy/emit.py)

    async def endpoint(request: Request) -> Response:
        authenticate: Authenticate = request.app.state.authenticate
        creds = authenticate(request.headers)
        key = key_of(request.headers) if changes_state else None
        document: dict[str, JSON] = {
            "auth": {"username": creds.username},
            "path": dict(request.path_params),
            "query": validator.coerce_query(request.query_params.multi_items()),
        }
        raw = (await request_body(request, settings.max_body_bytes, settings.body_timeout)
               if validator.body else b"")
        if raw.strip():
            document["body"] = parse_json(raw, request.headers.get("content-type", ""))
        validator.check(document, has_body="body" in document)
        if op.feed is not None and op.window is not None:  # the loader requires both
            return await _feed_page(op, op.feed, op.window, validator, request, document,
                                    creds, clock())
        if op.window is not None:
            apply_window(op.window, document, clock())
        envelope = write_envelope(document)

        async def perform() -> Response:
            upstream: Upstream = request.app.state.upstream
            if op.compute is not None:  # it reads the envelope as a tree, never sent
                ask = functools.partial(_ask, operations, upstream, creds)
                return _respond(op, await op.compute.run(build_envelope(op, document), ask))
            if changes_state:
                return await _guarded(op, validator, request.app.state.guard, upstream,
                                      envelope, document, creds, operations)
            return await _perform(op, validator, upstream, envelope, document, creds, safe=True)

        if key is None:
            return await perform()
        asked: JSON = {"operation": op.operation_id, "path": document["path"],
                       "query": document["query"], "body": document.get("body")}
        # Keys belong to the credential, not its spelling: its token, or in single-tenant mode
        # the identified proxy API key (every client shares the held token).
        ledger: Ledger = request.app.state.ledger
        return await ledger.run(Ticket.of(creds.username, creds.principal, key, asked), perform,
                                lambda error: ProblemResponse(error, request_id(request)))

    endpoint.__name__ = op.operation_id
    return endpoint


async def answer(op: Operation, validator: OperationValidator, upstream: Upstream,
                 envelope: Envelope | etree._Element, document: dict[str, JSON],
                 creds: Credentials,
                 *, safe: bool) -> dict[str, JSON] | None:
    """The upstream call and its answer as JSON (None for a 204)."""
    got = await upstream.call(envelope, creds.token, safe=safe)
    missing = names_not_found(
        op, envelope.body if isinstance(envelope, Envelope) else envelope, got.root)
    if missing is not None:  # a success that says the URL's thing is not there
        refusal, said = missing
        raise UpstreamRefused(refusal, None, said)
    if op.success == 204:
        return None
    body = read_answer(op, got.root, document)
    gaps = validator.answer.missing(body)
    if gaps:
        raise UpstreamBadAnswer(f"the upstream's answer lacks {', '.join(gaps)}",
                                upstream_status=got.status)
    return body


async def _ask(operations: Operations, upstream: Upstream, creds: Credentials,
               operation_id: str, path: Mapping[str, str]) -> JSON:
    """What a computation asks: another (read-only) operation of the table, for the same
    credentials, its answer as JSON. Its refusals are the computed operation's."""
    op, validator = operations[operation_id]
    document: dict[str, JSON] = {"auth": {"username": creds.username}, "path": dict(path),
                                 "query": {}}
    return await answer(op, validator, upstream, build_envelope(op, document), document,
                         creds, safe=True)


async def _perform(op: Operation, validator: OperationValidator, upstream: Upstream,
                   envelope: Envelope, document: dict[str, JSON],
                   creds: Credentials, *, safe: bool) -> Response:
    """The upstream call and its answer as the client's response."""
    return _respond(op, await answer(op, validator, upstream, envelope, document, creds,
                                      safe=safe))


async def _guarded(op: Operation, validator: OperationValidator, guard: Guard,
                   upstream: Upstream, envelope: Envelope, document: dict[str, JSON],
                   creds: Credentials, operations: Operations) -> Response:
    """A change, past the spend guard: its rate, and for a send (``spends:``) its recipients
    and credit budgets, counted as its preview counts them."""
    await guard.admit(creds, sends=op.spends is not None)
    if op.spends is None or not guard.counts_sends(creds):
        return await _perform(op, validator, upstream, envelope, document, creds, safe=False)
    ask = functools.partial(_ask, operations, upstream, creds)
    spend = await guard.count(op.spends, envelope.body, ask)
    async with guard.spending(creds, spend):
        return await _perform(op, validator, upstream, envelope, document, creds, safe=False)


def _respond(op: Operation, body: JSON | None) -> Response:
    if body is None:
        return Response(status_code=204)
    headers = {}
    if op.location is not None and isinstance(body, dict):
        # The ids come from the upstream: percent-encoded, they cannot break the header.
        headers["Location"] = op.location.format_map(
            {name: quote(str(value), safe="") for name, value in body.items()})
    return JSONResponse(body, status_code=op.success, headers=headers)


async def _feed_page(op: Operation, feed: Feed, window: Window, validator: OperationValidator,
                     request: Request, document: dict[str, JSON], creds: Credentials,
                     now: datetime) -> Response:
    """One page of a feed (proxy/feeds.py): from the window's start, or from a cursor."""
    paging = feed.paging
    query = document["query"] if isinstance(document["query"], dict) else {}
    names = {_name(paging.cursor), _name(paging.limit)}
    made_for = feeds.fingerprint(op.operation_id, {k: v for k, v in query.items()
                                                   if k not in names})
    # With the account's token in the key, a single-tenant proxy's clients cannot forge one.
    key = feeds.cursor_key(creds.username, f"{creds.token}\0{creds.principal}")
    limit = _limit(paging, resolve(document, paging.limit))
    cursor = resolve(document, paging.cursor)
    if isinstance(cursor, str):
        position: feeds.Position | None = feeds.decode(cursor, key, made_for)
    else:
        position = _first(op, window, document, now)
    fetch = fetcher(op, feed, window, validator, request.app.state.upstream, document, creds,
                    now)
    page = feeds.Page([], None) if position is None else await feeds.read_page(
        feed, window, position, limit, feeds.batches(feed, window, document), fetch)
    return _page_response(feed, request, page, key, made_for)


def fetcher(op: Operation, feed: Feed, window: Window, validator: OperationValidator,
            upstream: Upstream, document: dict[str, JSON], creds: Credentials,
            now: datetime) -> feeds.Fetch:
    """How a walk over the feed of ``op`` reads its rows: one call per window and batch."""
    query = document["query"] if isinstance(document.get("query"), dict) else {}
    # A walk slower than its window's start's last minute in the upstream's year reads on from
    # the year's edge: older rows are no longer kept (docs/upstream-protocol.md#paging).
    earliest = feeds.minute_of(now - timedelta(days=window.max_age_days)) + 1

    async def fetch(start: int, stop: int, batch: feeds.Batch) -> list[feeds.Row]:
        if stop < earliest:
            return []
        start = max(start, earliest)
        asked = {**document, "query": dict(query) if isinstance(query, dict) else {}}
        put(asked, window.start, feeds.moment_of(start))
        put(asked, window.end, feeds.moment_of(stop))
        if batch is not None and feed.batch is not None:
            put(asked, feed.batch, list(batch))
        body = await answer(op, validator, upstream, build_envelope(op, asked), asked, creds,
                            safe=True)
        rows = resolve(body or {}, feed.rows)
        return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []

    return fetch


def _name(pointer: str) -> str:
    return pointer.rpartition("/")[2]


def _limit(paging: Paging, asked: JSON | Missing) -> int:
    if asked is MISSING:
        return paging.default_limit
    if not isinstance(asked, int) or isinstance(asked, bool) or not (
            1 <= asked <= paging.max_limit):
        raise RequestInvalid([FieldError(paging.limit,
                                         f"must be an integer from 1 to {paging.max_limit}")])
    return asked


def _first(op: Operation, window: Window, document: dict[str, JSON],
           now: datetime) -> feeds.Position | None:
    """A walk's first position: the window, its end no later than now (None: it is empty)."""
    bounds = apply_window(window, document, now, splits=True)
    build_envelope(op, document)  # a date the upstream cannot carry is a 422 naming it
    if bounds is None:
        return None
    begin, finish = bounds
    start, end = feeds.minute_of(begin), feeds.minute_of(min(finish, now))
    return feeds.Position(end, start) if start <= end else None


def _page_response(feed: Feed, request: Request, page: feeds.Page, key: bytes,
                   made_for: bytes) -> Response:
    body: dict[str, JSON] = {}
    put(body, feed.rows, list(page.rows))
    headers = {}
    if page.next is not None:
        cursor = feeds.encode(page.next, key, made_for)
        body["next_cursor"] = cursor
        name = _name(feed.paging.cursor)
        pairs = [(k, v) for k, v in request.query_params.multi_items() if k != name]
        # RFC 8288 §3.2: a reference relative to the request's own URL; none longer than
        # servers must read (RFC 9110 §4.1: 8,000 octets), such as one naming 1,500 ids.
        url = f"{request.url.path}?{urlencode([*pairs, (name, cursor)])}"
        if len(url) <= MAX_LINK:
            headers["Link"] = f'<{url}>; rel="next"'
    if page.cuts:
        body["incomplete"] = [{"minute": cut.minute, "reachable": cut.reachable}
                              for cut in page.cuts]
        # An RFC 8941 list of strings with a parameter.
        headers[INCOMPLETE_HEADER] = ", ".join(f'"{cut.minute}";reachable={cut.reachable}'
                                               for cut in page.cuts)
    if page.overlap is not None:
        body["overlap"] = {"minute": page.overlap[0], "rows": page.overlap[1]}
    return JSONResponse(body, headers=headers)


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
    limits = validators.get(("GET", LIMITS_PATH))
    if limits is None or table.credits is None:
        return list(routes)
    credits = table.credits  # the spend guard's own operation, if the spec and the table have it
    return [*routes, limits_route(limits, lambda upstream, creds: _ask(
        operations, upstream, creds, credits, {}))]
