"""Everything that can go wrong, as RFC 9457 problems.

    ProblemError                   500  a bug (its traceback follows the request's log line)
                                   -> application/problem+json, one handler in app.py
    ├── ClientError                the request is wrong; nothing was sent upstream
    │   ├── MalformedRequest       400  the body is not JSON (or not UTF-8)
    │   ├── InvalidCursor          400  a cursor altered, or made for other credentials or query
    │   ├── Unauthorized           401  no usable credentials
    │   ├── RouteNotFound          404  no such resource
    │   ├── MethodNotAllowed       405
    │   ├── RequestTimeout         408  the headers came too slowly (proxy/server.py)
    │   ├── PayloadTooLarge        413
    │   ├── UnsupportedMediaType   415
    │   ├── RequestInvalid         422  with `errors`: a JSON pointer and a detail per field
    │   ├── HeadersTooLarge        431  the request line and headers are too long (server.py)
    │   ├── SandboxConflict        409  a sandbox console action that its state refuses
    │   ├── WebhookNotFound        404  no such webhook subscription or delivery (issue 13)
    │   └── WebhookConflict        409  a disabled subscription; too many subscriptions
    ├── ServerBusy                 503  every connection a worker may hold is busy (server.py)
    ├── WebhooksUnavailable        503  the store that keeps webhooks failed
    ├── WebhookKeyMissing          501  multi-tenant webhooks without keys to seal tokens
    ├── IdempotencyError           about an Idempotency-Key; nothing was sent upstream
    │   ├── IdempotencyKeyInvalid  400  not 1-255 printable characters
    │   ├── IdempotencyKeyInUse    409  the first request with the key is still running
    │   ├── OutcomeUnknown         409  the first request with the key may have acted
    │   ├── IdempotencyKeyReused   422  the key came with a different request
    │   └── IdempotencyUnavailable 503  the key store cannot be reached, or is full
    ├── GuardRefused               the spend guard's (guard.py); nothing was sent upstream
    │   ├── RateLimited            429  too many requests, or recipients, for these credentials
    │   ├── BudgetExceeded         429  the send would cross a credit budget of the credentials
    │   └── LimitsUnavailable      503  the guard's counters cannot be reached
    └── UpstreamError              about SMS Leads; carries upstream_status/upstream_message
        ├── UpstreamRefused        the upstream answered a status code (statuses.yaml decides)
        ├── UpstreamUnreachable    503  no connection: nothing was sent
        │   └── UpstreamSuspended  503  recent calls failed: the circuit breaker is open
        ├── UpstreamTimeout        504  no answer in time
        ├── UpstreamBadAnswer      502  an answer that is not the XML we expect
        └── NotReady               503  /readyz: no answer lately, nor to the probe

Each class also says what the failure means for the request's effect (:class:`Outcome`):
idempotency.py stores final answers, frees the key when nothing happened and holds it in
doubt otherwise (README, "Failure semantics").

Foreign exceptions (httpx, lxml, json, redis, limits) are translated to these in exactly one
place each: upstream.py for the wire, app.py for the request body, idempotency.py for the key
store, guard.py for the guard's counters, sandbox/console.py for the sandbox's own control
errors and the console's request bodies.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from proxy.types import JSON

PROBLEM_BASE = "/problems/"
MAX_FIELD_ERRORS = 50  # a body with 500,000 unknown keys must not answer 500,000 errors


class Outcome(enum.Enum):
    """What a failed request did upstream, as far as the proxy can know."""

    NONE = "none"        # nothing was done: the same request may be tried again
    FINAL = "final"      # the upstream's own answer: stored and replayed for its key
    UNKNOWN = "unknown"  # it may have acted: its key is held in doubt, never resent


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field: a JSON pointer into the request document (/body/..., /query/...)."""

    pointer: str
    detail: str

    def as_json(self) -> dict[str, JSON]:
        return {"pointer": self.pointer, "detail": self.detail}


class ProblemError(Exception):
    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"
    outcome: Outcome = Outcome.UNKNOWN  # an unforeseen failure never frees a key
    retry_after: int | None = None  # seconds, sent as Retry-After (RFC 9110 §10.2.3)

    def __init__(self, detail: str, *, retry_after: int | None = None,
                 **extensions: JSON) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions
        self.headers: dict[str, str] = {}
        wait = self.retry_after if retry_after is None else retry_after
        if wait is not None:
            self.headers["Retry-After"] = str(wait)

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    def as_json(self) -> dict[str, JSON]:
        body: dict[str, JSON] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        body.update(self.extensions)
        return body


class ClientError(ProblemError):
    outcome = Outcome.NONE


class MalformedRequest(ClientError):
    status, slug, title = 400, "malformed-request", "The request body is not valid JSON"


class InvalidCursor(ClientError):
    status, slug, title = 400, "invalid-cursor", (
        "The cursor was not made for this query and these credentials")


class Unauthorized(ClientError):
    status, slug, title = 401, "unauthorized", "Credentials are missing or malformed"

    # RFC 9110 §11.6.1: both schemes the proxy accepts (README, Authentication).
    CHALLENGE = 'Basic realm="SMS Leads", charset="UTF-8", Bearer realm="SMS Leads"'

    def __init__(self, detail: str, challenge: str = CHALLENGE) -> None:
        super().__init__(detail)
        self.headers["WWW-Authenticate"] = challenge


class RouteNotFound(ClientError):
    status, slug, title = 404, "not-found", "No such resource"


class MethodNotAllowed(ClientError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed on this resource"


class PayloadTooLarge(ClientError):
    status, slug, title = 413, "payload-too-large", "The request body is too large"


class UnsupportedMediaType(ClientError):
    status, slug, title = 415, "unsupported-media-type", "The request body must be JSON"


class RequestTimeout(ClientError):
    status, slug, title = 408, "request-timeout", "The request did not arrive in time"


class HeadersTooLarge(ClientError):
    status, slug, title = 431, "headers-too-large", "The request's headers are too large"


class RequestInvalid(ClientError):
    status, slug, title = 422, "invalid-request", "The request has invalid fields"

    def __init__(self, errors: list[FieldError]) -> None:
        detail = "; ".join(f"{e.pointer}: {e.detail}" for e in errors[:5])
        if len(errors) > MAX_FIELD_ERRORS:  # the validator stops counting past the limit
            detail += f"; and more (the first {MAX_FIELD_ERRORS} are listed)"
        elif len(errors) > 5:
            detail += f"; and {len(errors) - 5} more"
        super().__init__(detail, errors=[e.as_json() for e in errors[:MAX_FIELD_ERRORS]])
        self.errors = errors


class SandboxConflict(ClientError):
    """The sandbox console's control calls (proxy/sandbox/console.py): a delivery already
    reported, a clock that is the system's, an account with nothing to reset to."""

    status, slug, title = 409, "sandbox-conflict", "The sandbox cannot do that in its state"


# ── Webhooks (proxy/events/, issue 13) ──────────────────────────────────────────────────────


class WebhookNotFound(ClientError):
    status, slug, title = 404, "webhook-not-found", "No such webhook subscription or delivery"


class WebhookConflict(ClientError):
    """The subscriptions' state refuses it now (disabled, 20 held, the hour's test events
    spent). Nothing was done, so its Idempotency-Key is freed, not kept with the 409: the same
    request with the same key goes through once the state changes (README, Failure
    semantics)."""

    status, slug, title = 409, "webhook-conflict", "The webhook subscription cannot do that now"


class WebhooksUnavailable(ProblemError):
    status, slug, title = 503, "webhooks-unavailable", "Webhooks cannot be read or kept now"
    outcome = Outcome.NONE
    retry_after = 5


class WebhookKeyMissing(ProblemError):
    status, slug, title = 501, "webhook-token-key-missing", (
        "The proxy has no key to keep a client's token sealed")
    outcome = Outcome.NONE


class ServerBusy(ProblemError):
    status, slug, title = 503, "server-busy", "The proxy is answering as many requests as it can"
    outcome = Outcome.NONE  # refused before the request was read
    retry_after = 1


class IdempotencyError(ProblemError):
    outcome = Outcome.NONE


class IdempotencyKeyInvalid(IdempotencyError):
    status, slug, title = 400, "invalid-idempotency-key", "The Idempotency-Key is malformed"


class IdempotencyKeyInUse(IdempotencyError):
    status, slug, title = 409, "idempotency-key-in-use", (
        "A request with this Idempotency-Key is still running")
    retry_after = 1


class OutcomeUnknown(IdempotencyError):
    status, slug, title = 409, "outcome-unknown", (
        "The request with this Idempotency-Key may or may not have taken effect")


class IdempotencyKeyReused(IdempotencyError):
    status, slug, title = 422, "idempotency-key-reused", (
        "This Idempotency-Key was used for a different request")


class IdempotencyUnavailable(IdempotencyError):
    status, slug, title = 503, "idempotency-unavailable", (
        "Idempotency-Keys cannot be honoured right now")
    retry_after = 5


class GuardRefused(ProblemError):
    outcome = Outcome.NONE  # refused before anything went upstream: the key is freed


class RateLimited(GuardRefused):
    status, slug, title = 429, "rate-limited", (
        "These credentials are over a rate limit of the proxy")


class BudgetExceeded(GuardRefused):
    status, slug, title = 429, "budget-exceeded", (
        "The send would cross a credit budget of these credentials")


class LimitsUnavailable(GuardRefused):
    status, slug, title = 503, "limits-unavailable", (
        "The proxy cannot check its rate limits and budgets right now")
    retry_after = 5


class UpstreamError(ProblemError):
    status, slug, title = 502, "upstream-error", "The SMS Leads API failed"


@dataclass(frozen=True, slots=True)
class Refusal:
    """How statuses.yaml presents one upstream code: the problem, and what the request did."""

    http: int
    slug: str
    title: str
    effect: Outcome = Outcome.FINAL
    retry_after: int | None = None


class UpstreamRefused(UpstreamError):
    """A non-success <status>; its HTTP status and type come from the status table."""

    def __init__(self, refusal: Refusal, upstream_status: int | None, upstream_message: str,
                 detail: str | None = None) -> None:
        extensions: dict[str, JSON] = {"upstream_message": upstream_message}
        if upstream_status is not None:
            extensions["upstream_status"] = upstream_status
        super().__init__(detail or upstream_message or refusal.title,
                         retry_after=refusal.retry_after, **extensions)
        self.status, self.slug, self.title = refusal.http, refusal.slug, refusal.title
        self.outcome = refusal.effect  # statuses.yaml says what the request did


class UpstreamUnreachable(UpstreamError):
    status, slug, title = 503, "upstream-unreachable", "The SMS Leads API cannot be reached"
    outcome = Outcome.NONE  # no connection, so no request reached it
    retry_after = 5


class UpstreamSuspended(UpstreamUnreachable):
    slug, title = "upstream-suspended", "The SMS Leads API is failing; calls are paused"


class UpstreamTimeout(UpstreamError):
    status, slug, title = 504, "upstream-timeout", "The SMS Leads API did not answer in time"


class UpstreamBadAnswer(UpstreamError):
    status, slug, title = 502, "upstream-bad-answer", "The SMS Leads API gave an unreadable answer"


class NotReady(UpstreamError):
    status, slug, title = 503, "not-ready", "The SMS Leads API has not answered lately"
