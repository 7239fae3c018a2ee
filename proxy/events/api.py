"""``/v1/webhooks``: the proxy's own resources, beside the table's operations.

    POST   /v1/webhooks                                       subscribe (the secret, once)
    GET    /v1/webhooks, /v1/webhooks/{webhook_id}            read
    DELETE /v1/webhooks/{webhook_id}                          unsubscribe
    POST   /v1/webhooks/{webhook_id}/secret/rotations         a new secret (the old one signs
                                                              beside it for the grace period)
    POST   /v1/webhooks/{webhook_id}/test                     a webhook.test event
    GET    /v1/webhooks/{webhook_id}/deliveries               the latest deliveries, attempts
    POST   /v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry

openapi.yaml describes them (``x-smsleads-own``: no upstream command) and checks every request,
as for the table's operations; a change takes an Idempotency-Key (proxy/idempotency.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.auth import Credentials
from proxy.body import parse_json, request_body
from proxy.endpoint import answer
from proxy.errors import (
    FieldError,
    RequestInvalid,
    WebhookConflict,
    WebhookKeyMissing,
    WebhookNotFound,
    WebhooksUnavailable,
)
from proxy.events.deliveries import TESTS_PER_HOUR, Deliveries, Delivery, Event, event_id
from proxy.events.guard import Network, check_url
from proxy.events.sealing import Sealer
from proxy.events.signing import new_secret
from proxy.events.subscriptions import Secret, Subscription, Subscriptions, new_id
from proxy.idempotency import Ledger, Ticket, key_of, owner_of
from proxy.mapping import Table
from proxy.observability import request_id
from proxy.problems import ProblemResponse
from proxy.store import StoreError, StoreFull
from proxy.translate import build_envelope
from proxy.types import JSON
from proxy.validation import OperationValidator

TEST_EVENT = "webhook.test"  # the proxy's own event type: POST .../test
PAGE = 100  # deliveries a page of the listing shows, newest first
MAX_BODY = 64 * 1024
VERIFIED_FOR = 60.0  # seconds a token the upstream accepted is taken as good without asking
VERIFIED_MAX = 10_000  # credentials remembered so


def moment(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def webhook_view(sub: Subscription, now: float) -> dict[str, JSON]:
    view: dict[str, JSON] = {"id": sub.id, "url": sub.url, "event_types": list(sub.types),
                             "created_at": moment(sub.created_at),
                             "status": "enabled" if sub.enabled else "disabled"}
    if sub.description:
        view["description"] = sub.description
    if sub.disabled_reason:
        view["disabled_reason"] = sub.disabled_reason
    if sub.failing_since is not None:
        view["failing_since"] = moment(sub.failing_since)
    ends = [s.until for s in sub.secrets if s.until is not None and s.until > now]
    if ends:
        view["previous_secret_until"] = moment(max(ends))
    return view


def delivery_view(delivery: Delivery) -> dict[str, JSON]:
    view: dict[str, JSON] = {
        "id": delivery.event, "event_type": delivery.type, "status": delivery.status,
        "created_at": moment(delivery.created_at), "attempt_count": delivery.tries,
        "attempts": [{key: value for key, value in (
            ("at", moment(a.at)), ("status_code", a.status_code), ("error", a.error),
            ("duration_ms", a.duration_ms)) if value is not None}
            for a in reversed(delivery.attempts)]}
    if delivery.next_at is not None and delivery.status == "pending":
        view["next_attempt_at"] = moment(delivery.next_at)
    if delivery.reason:
        view["reason"] = delivery.reason
    return view


@contextmanager
def _kept() -> Iterator[None]:
    """The store's failures as our problem, here only."""
    try:
        yield
    except StoreError as exc:
        raise WebhooksUnavailable(f"the proxy's store failed: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Hub:
    """What the routes, the poller and the dispatcher share in one process."""

    table: Table
    subscriptions: Subscriptions
    deliveries: Deliveries
    sealer: Sealer | None
    single_tenant: bool
    allowed: tuple[Network, ...]
    grace: float
    clock: Callable[[], float]
    verified: dict[str, float] = field(default_factory=dict)  # owner -> good until


Handler = Callable[[Request, Credentials, dict[str, JSON]], Awaitable[Response]]


def routes(validators: dict[tuple[str, str], OperationValidator]) -> list[Route]:
    """The webhook routes, each checked by its operation of openapi.yaml."""
    table: list[tuple[str, str, Handler]] = [
        ("POST", "/v1/webhooks", _create),
        ("GET", "/v1/webhooks", _list),
        ("GET", "/v1/webhooks/{webhook_id}", _get),
        ("DELETE", "/v1/webhooks/{webhook_id}", _delete),
        ("POST", "/v1/webhooks/{webhook_id}/secret/rotations", _rotate),
        ("POST", "/v1/webhooks/{webhook_id}/test", _test),
        ("GET", "/v1/webhooks/{webhook_id}/deliveries", _deliveries),
        ("POST", "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", _retry),
    ]
    return [Route(path, _endpoint(method, path, handler, validators[(method, path)]),
                  methods=[method]) for method, path, handler in table]


def _endpoint(method: str, path: str, handler: Handler,
              validator: OperationValidator) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        creds: Credentials = request.app.state.authenticate(request.headers)
        key = key_of(request.headers) if method != "GET" else None
        document: dict[str, JSON] = {
            "path": dict(request.path_params),
            "query": validator.coerce_query(request.query_params.multi_items())}
        if validator.body is not None:
            raw = await request_body(request, MAX_BODY, request.app.state.body_timeout)
            if raw.strip():
                document["body"] = parse_json(raw, request.headers.get("content-type", ""))
        validator.check(document, has_body="body" in document)
        await _verify(request, creds)
        if key is None:
            with _kept():
                return await handler(request, creds, document)
        ledger: Ledger = request.app.state.ledger
        asked: JSON = {"operation": f"{method} {path}", **document}

        async def perform() -> Response:
            with _kept():
                return await handler(request, creds, document)

        return await ledger.run(Ticket.of(creds.username, creds.principal, key, asked), perform,
                                lambda error: ProblemResponse(error, request_id(request)))

    endpoint.__name__ = f"{method.lower()}_{path}"
    return endpoint


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.webhooks
    return hub


def _body(document: dict[str, JSON]) -> dict[str, JSON]:
    body = document.get("body")
    return body if isinstance(body, dict) else {}


def _path(document: dict[str, JSON], name: str) -> str:
    path = document["path"]
    return str(path.get(name, "")) if isinstance(path, dict) else ""


async def _mine(request: Request, creds: Credentials, document: dict[str, JSON]
                ) -> Subscription:
    sub_id = _path(document, "webhook_id")
    sub = await _hub(request).subscriptions.owned(owner_of(creds.username, creds.principal),
                                                  sub_id)
    if sub is None:
        raise WebhookNotFound(f"no webhook {sub_id} for these credentials")
    return sub


async def _create(request: Request, creds: Credentials, document: dict[str, JSON]) -> Response:
    hub, body = _hub(request), _body(document)
    url = str(body.get("url", ""))
    reason = check_url(url, hub.allowed)
    if reason is not None:
        raise RequestInvalid([FieldError("/body/url", reason)])
    sub_id, now = new_id(), hub.clock()
    token = None
    if not hub.single_tenant:
        if hub.sealer is None:
            raise WebhookKeyMissing(
                "to poll for events the proxy must keep your token, and it keeps none in "
                "clear: its operator must set --webhook-token-keys/SMSLEADS_WEBHOOK_TOKEN_KEYS "
                "(or run it in single-tenant mode)")
        token = hub.sealer.seal(creds.token, sub_id)
    types = body.get("event_types")
    secret = new_secret()
    sub = Subscription(sub_id, owner_of(creds.username, creds.principal), creds.username, url,
                       tuple(dict.fromkeys(str(t) for t in types))
                       if isinstance(types, list) else (), str(body.get("description", "")),
                       now, (Secret(secret),), token)
    if not await hub.subscriptions.add(sub):
        raise WebhookConflict("these credentials hold as many webhooks as they may: delete one")
    return JSONResponse({**webhook_view(sub, now), "secret": secret}, status_code=201,
                        headers={"Location": f"/v1/webhooks/{quote(sub.id)}"})


async def _verify(request: Request, creds: Credentials) -> None:
    """In multi-tenant mode, the client's token works (the table's readiness probe, sent with
    it; remembered for a minute): a token the upstream refuses is its 401, as for the table's
    operations, and never reads or makes a subscription. Single-tenant keys are the proxy's."""
    hub = _hub(request)
    owner, now = owner_of(creds.username, creds.principal), hub.clock()
    if hub.single_tenant or hub.table.probe is None or hub.verified.get(owner, 0.0) > now:
        return
    op = hub.table.operation(hub.table.probe)
    document: dict[str, JSON] = {"auth": {"username": creds.username}, "path": {}, "query": {}}
    validators: dict[tuple[str, str], OperationValidator] = request.app.state.validators
    await answer(op, validators[(op.method, op.path)], request.app.state.upstream,
                 build_envelope(op, document), document, creds, safe=True)
    if len(hub.verified) >= VERIFIED_MAX:
        hub.verified.clear()
    hub.verified[owner] = now + VERIFIED_FOR


async def _list(request: Request, creds: Credentials, document: dict[str, JSON]) -> Response:
    hub = _hub(request)
    subs = await hub.subscriptions.of_owner(owner_of(creds.username, creds.principal))
    now = hub.clock()
    return JSONResponse({"data": [webhook_view(sub, now) for sub in subs]})


async def _get(request: Request, creds: Credentials, document: dict[str, JSON]) -> Response:
    return JSONResponse(webhook_view(await _mine(request, creds, document), _hub(request).clock()))


async def _delete(request: Request, creds: Credentials, document: dict[str, JSON]) -> Response:
    await _hub(request).subscriptions.remove(await _mine(request, creds, document))
    return Response(status_code=204)


async def _rotate(request: Request, creds: Credentials, document: dict[str, JSON]) -> Response:
    hub, sub = _hub(request), await _mine(request, creds, document)
    secret, now = new_secret(), hub.clock()
    changed = await hub.subscriptions.change(sub.id, lambda s: s.rotated(secret, now, hub.grace))
    if changed is None:
        raise WebhookNotFound(f"no webhook {sub.id} for these credentials")
    return JSONResponse({**webhook_view(changed, now), "secret": secret})


def _enabled(sub: Subscription) -> None:
    if not sub.enabled:
        raise WebhookConflict(f"the webhook {sub.id} is disabled ({sub.disabled_reason}): "
                              "subscribe again to receive events")


async def _test(request: Request, creds: Credentials, document: dict[str, JSON]) -> Response:
    hub, sub = _hub(request), await _mine(request, creds, document)
    _enabled(sub)
    now = hub.clock()
    event = Event(event_id(sub.id, TEST_EVENT, new_id()), TEST_EVENT, moment(now) or "",
                  {"webhook_id": sub.id}, sub.account)
    try:
        await hub.deliveries.count_test(sub.id, event.id)
    except StoreFull as exc:
        raise WebhookConflict(f"the webhook {sub.id} had its {TESTS_PER_HOUR} test events of "
                              f"the last hour ({exc}): try again later") from exc
    await hub.deliveries.offer(sub, event, now)
    delivery = await hub.deliveries.get(sub.id, event.id)
    if delivery is None:
        raise WebhooksUnavailable("the test event was not kept")
    return JSONResponse(delivery_view(delivery), status_code=202)


async def _deliveries(request: Request, creds: Credentials, document: dict[str, JSON]
                      ) -> Response:
    sub = await _mine(request, creds, document)
    query = document["query"]
    cursor = query.get("cursor") if isinstance(query, dict) else None
    found, after = await _hub(request).deliveries.of_webhook(
        sub.id, PAGE, None if cursor is None else str(cursor))
    body: dict[str, JSON] = {"data": [delivery_view(d) for d in found]}
    headers = {}
    if after is not None:
        body["next_cursor"] = after
        headers["Link"] = f'<{request.url.path}?{urlencode({"cursor": after})}>; rel="next"'
    return JSONResponse(body, headers=headers)


async def _retry(request: Request, creds: Credentials, document: dict[str, JSON]) -> Response:
    hub, sub = _hub(request), await _mine(request, creds, document)
    _enabled(sub)
    delivery_id = _path(document, "delivery_id")
    delivery = await hub.deliveries.get(sub.id, delivery_id)
    retried = None if delivery is None else await hub.deliveries.retry(delivery, hub.clock())
    if retried is None:
        raise WebhookNotFound(f"no delivery {delivery_id} of the webhook {sub.id}")
    return JSONResponse(delivery_view(retried), status_code=202)
