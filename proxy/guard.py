"""The spend guard: rate limits and credit budgets per credential, checked before a request goes
upstream, so that a runaway loop, a leaked key or a list sent to twice cannot spend the account.

    policy          counts                                          over
    requests        requests that change state                      1 s, sliding
    recipients      the destinations of sends                       60 s, sliding
    daily-credits   the credits of sends, and given to subscribers  the day, from midnight in Israel
    hourly-credits  the credits of sends, and given to subscribers  the hour, from its start

A credential is the SMS Leads token, or in single-tenant mode the proxy API key that was
recognised (auth.Credentials.principal); each may have its own quotas (a key's line of the keys
file). Only what really goes upstream is counted: the guard runs in the operation's ``perform``
(proxy/endpoint.py), which an idempotent replay never reaches. Reads are never counted.

A send is counted by its preview's computation (mapping.yaml's ``spends:``, proxy/compute.py):
every phone, and every member of the contact lists it names (asked of the upstream, one read a
list, as the preview does), once per message; one credit per SMS part per destination. Credits
given to a subscriber count against the budgets as a send's do (``spends: {transfer: ...}``):
its holder spends them where no limit of the proxy's reaches.

Budgets are reserved before the send goes out and settled after it: the charge stays when the
send went out or may have (a timeout, a lost answer, a cancellation, a bug), and is given back
when it was refused with nothing done, by the upstream or before reaching it (an error whose
Outcome is not unknown).

Rate limits are the `limits` library's sliding window counters, a budget a counter per period
whose key names the period's start (proxy/store/counters.py). The counters live where the
store does, shared by every worker and host; when they cannot be reached, requests that change
state are refused (503): a guard that opens when its counters fail guards nothing. Refusals are
429 with ``Retry-After`` and the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers-11,
§3 and §4): ``RateLimit-Policy`` lists the credential's policies for the operation,
``RateLimit`` the one that was crossed. Recipients and credits are this API's own quota units.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from typing import cast
from zoneinfo import ZoneInfo

import anyio
from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import SlidingWindowCounterSupport, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from lxml import etree
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.auth import Credentials, Tenant
from proxy.compute import Ask, Computation, Spend
from proxy.errors import (
    BudgetExceeded,
    GuardRefused,
    LimitsUnavailable,
    Outcome,
    ProblemError,
    RateLimited,
)
from proxy.metrics import Metrics
from proxy.settings import OPTIONS, Settings, SettingsError, named
from proxy.store.counters import GivesBack
from proxy.types import JSON, Clock
from proxy.upstream import Upstream
from proxy.validation import OperationValidator

ISRAEL = ZoneInfo("Asia/Jerusalem")  # the provider's day, and its customers'
POLICY_HEADER, LIMIT_HEADER = "RateLimit-Policy", "RateLimit"
# The proxy's own envelope, parsed to be counted: nothing in it to resolve.
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)

log = logging.getLogger("smsleads_proxy.guard")


@dataclass(frozen=True, slots=True)
class Policy:
    name: str     # in the RateLimit fields, problems, metrics and GET /v1/limits
    setting: str  # its field of Settings; a key of the keys file names it by its flag
    unit: str     # what it counts
    window: int   # seconds (nominal for a day: 23 or 25 hours when Israel's clocks change)
    sends: bool   # it counts sends only; else every request that changes state

    @property
    def rate(self) -> bool:
        return self.unit != "credits"  # credits are budgets: calendar periods, reserved


POLICIES = (
    Policy("requests", "requests_per_second", "requests", 1, sends=False),
    Policy("recipients", "recipients_per_minute", "recipients", 60, sends=True),
    Policy("daily-credits", "daily_credits", "credits", 24 * 3600, sends=True),
    Policy("hourly-credits", "hourly_credits", "credits", 3600, sends=True),
)
Quotas = Mapping[str, int]  # a credential's, by policy name; a policy it lacks does not apply


def quotas(settings: Settings, tenant: Tenant | None) -> tuple[Quotas, dict[str, Quotas]]:
    """Every credential's quotas, and single-tenant keys' own (by principal), from the settings
    and the keys file; a wrong name or value there stops the start."""
    default = {p.name: value for p in POLICIES
               if (value := getattr(settings, p.setting)) is not None}
    keys = {} if tenant is None else {
        "key:" + key.hex(): _own(default, chosen, tenant.lines.get(key, 0))
        for key, chosen in tenant.settings.items()}
    return default, keys


def _own(default: Quotas, chosen: Mapping[str, str], line: int) -> Quotas:
    own = dict(default)
    by_flag = {o.flag[2:]: o for o in OPTIONS if o.field in {p.setting for p in POLICIES}}
    where = f"invalid {named('api_keys_file')}, line {line}"
    for name, text in chosen.items():
        option = by_flag.get(name)
        if option is None:
            raise SettingsError(f"{where}: a key's setting is one of {', '.join(by_flag)}, "
                                f"not {name[:40]!r}")
        try:
            value = option.parse(text)
        except ValueError as exc:
            raise SettingsError(f"{where}: {name}={text[:40]!r} "
                                f"({exc if 'must' in str(exc) else 'not a number'})") from exc
        policy = next(p for p in POLICIES if p.setting == option.field)
        if value is None:
            own.pop(policy.name, None)
        else:
            own[policy.name] = value
    return own


def _who(creds: Credentials) -> str:
    """The counters' name for a credential: a digest, so that no counter names a token."""
    return hashlib.sha256(f"{creds.username}\0{creds.principal}".encode()).hexdigest()[:40]


def _item(policy: Policy, quota: int) -> RateLimitItem:
    return (RateLimitItemPerSecond if policy.window == 1 else RateLimitItemPerMinute)(quota)


def period(policy: Policy, now: datetime) -> tuple[datetime, datetime]:
    """The budget period ``now`` falls in, in Israel time: [start, end)."""
    local = now.astimezone(ISRAEL)
    if policy.window == 3600:
        start = local.replace(minute=0, second=0, microsecond=0)
        return start, (start.astimezone(UTC) + timedelta(hours=1)).astimezone(ISRAEL)
    start = datetime.combine(local.date(), day_time(0), ISRAEL)  # midnight always exists there
    return start, datetime.combine(local.date() + timedelta(days=1), day_time(0), ISRAEL)


def _until(end: datetime, now: datetime) -> float:
    """Seconds from ``now`` to ``end``, in real time: Python subtracts two times of one zone as
    wall clock times, an hour off across a change of Israel's clocks."""
    return end.timestamp() - now.timestamp()


def retry_after(window: tuple[int, float, int, float], limit: int, cost: int,
                expiry: int) -> int:
    """Seconds until a sliding window counter takes ``cost`` more: the previous window's count
    weighs less as it slides out (limits' weighted count), and the current one becomes the
    previous when its own window ends."""
    previous, previous_ttl, current, current_ttl = window
    if current + cost <= limit:  # the previous window's share must shrink below the room
        room = limit - current - cost
        wait = 0.0 if previous == 0 else previous_ttl - (room + 1) * expiry / previous
    else:  # only once the current window is the previous one, and has slid out enough
        ends = max(0.0, current_ttl - expiry)
        wait = ends + expiry - (limit - cost + 1) * expiry / current
    return max(1, math.floor(wait) + 1)  # strictly after: at the very moment it may not fit


@dataclass(frozen=True, slots=True)
class _Reserved:
    key: str
    credits: int


class Guard:
    def __init__(self, counters: Storage, default: Quotas, keys: Mapping[str, Quotas],
                 clock: Clock, metrics: Metrics) -> None:
        self.counters, self.default, self.keys = counters, default, keys
        self.windows = cast(SlidingWindowCounterSupport, counters)
        self.giving = cast(GivesBack, counters)  # every engine of open_counters
        self.limiter = SlidingWindowCounterRateLimiter(counters)
        self.clock, self.metrics = clock, metrics

    def quotas(self, creds: Credentials) -> Quotas:
        return self.keys.get(creds.principal, self.default)

    # ── the checks, in the order an operation meets them ───────────────────────────────────

    async def admit(self, creds: Credentials, *, sends: bool) -> None:
        """A request that changes state: within its requests a second, or 429."""
        quotas = self.quotas(creds)
        if "requests" in quotas:
            await self._rate(_who(creds), quotas, POLICIES[0], 1, sends=sends)

    def counts_sends(self, creds: Credentials) -> bool:
        """Whether a send of these credentials must be counted: a policy of sends applies."""
        quotas = self.quotas(creds)
        return any(p.sends and p.name in quotas for p in POLICIES)

    async def count(self, computation: Computation, envelope: bytes, ask: Ask) -> Spend:
        """What sending ``envelope`` spends, as its preview counts it. Only reads (a list's
        members) are made here: a refusal of one is the send's (a list that is not there), and
        a read that failed leaves nothing in doubt, the send not having gone out."""
        if computation.spend is None:
            raise TypeError(f"the {computation.name} computation counts no send")
        try:
            return await computation.spend(etree.fromstring(envelope, PARSER), ask)
        except ProblemError as error:
            if error.outcome is Outcome.UNKNOWN:
                error.outcome = Outcome.NONE  # a read changes nothing: the key is freed
            raise

    @asynccontextmanager
    async def spending(self, creds: Credentials, spend: Spend) -> AsyncIterator[None]:
        """Around a send: its budgets reserved and its recipients counted before, or 429; the
        budgets given back after it if it was refused with nothing done."""
        quotas, who, now = self.quotas(creds), _who(creds), self.clock()
        reserved: list[_Reserved] = []
        try:
            for policy in POLICIES:
                if not policy.rate and policy.name in quotas:
                    reserved.append(await self._reserve(who, quotas, policy, spend, now))
            if "recipients" in quotas and spend.destinations:  # a transfer has none
                await self._rate(who, quotas, POLICIES[1], spend.destinations, sends=True)
        except BaseException:
            await self._give_back(reserved)
            raise
        try:
            yield
        except ProblemError as error:
            if error.outcome is not Outcome.UNKNOWN:
                await self._give_back(reserved)
            raise

    # ── rates ──────────────────────────────────────────────────────────────────────────────

    async def _rate(self, who: str, quotas: Quotas, policy: Policy, cost: int, *,
                    sends: bool) -> None:
        quota = quotas[policy.name]
        item = _item(policy, quota)
        counted = min(cost, quota)  # a send larger than the whole quota fills an empty window
        with self._counters():
            if await self.limiter.hit(item, policy.name, who, cost=counted):
                return
            window = await self.windows.get_sliding_window(item.key_for(policy.name, who),
                                                           item.get_expiry())
        wait = retry_after(window, quota, counted, item.get_expiry())
        left = max(0, quota - math.floor(window[0] * window[1] / item.get_expiry()) - window[2])
        if policy.sends:
            detail = (f"these credentials may send to {quota} recipients a minute, and this "
                      f"send has {cost}" + ("" if cost <= quota else
                                            ", more than a minute's: it goes out only when "
                                            "nothing else went out in the last minute"))
        else:
            detail = f"these credentials may make {quota} requests that change state a second"
        raise self._refused(RateLimited(f"{detail}; nothing was sent: retry in {wait} s",
                                        retry_after=wait, violated_policies=[policy.name]),
                            quotas, policy, left, wait, sends=sends)

    # ── budgets ────────────────────────────────────────────────────────────────────────────

    def _budget_key(self, who: str, policy: Policy, now: datetime) -> tuple[str, int, datetime]:
        start, end = period(policy, now)
        # Kept a day past its period, whatever its clock: only its own period reads it.
        expiry = int(_until(end, now)) + 24 * 3600
        return f"budget/{policy.name}/{who}/{start.astimezone(UTC):%Y%m%dT%H}", expiry, end

    async def _reserve(self, who: str, quotas: Quotas, policy: Policy, spend: Spend,
                       now: datetime) -> _Reserved:
        quota = quotas[policy.name]
        key, expiry, end = self._budget_key(who, policy, now)
        with self._counters():
            spent = await self.counters.incr(key, expiry, amount=spend.credits)
            if spent <= quota:
                return _Reserved(key, spend.credits)
            await self.giving.give_back(key, spend.credits)
        spent -= spend.credits
        wait = max(1, math.ceil(_until(end, now)))
        kind = "day (from midnight, Israel time)" if policy.window > 3600 else "hour"
        what = "send" if spend.destinations else "transfer to a subscriber"
        detail = (f"this {what} costs {spend.credits} credits"
                  + ("" if spend.exact else " at least") +
                  f"; these credentials may spend {quota} credits a {kind}, and {spent} are "
                  f"spent; nothing was sent. The budget starts again at {end.isoformat()}")
        raise self._refused(
            BudgetExceeded(detail, retry_after=wait, violated_policies=[policy.name],
                           budget=quota, spent=spent, requested=spend.credits,
                           resets_at=end.isoformat()),
            quotas, policy, max(0, quota - spent), wait, sends=True)

    async def _give_back(self, reserved: list[_Reserved]) -> None:
        with anyio.CancelScope(shield=True):
            for budget in reserved:
                try:
                    await self.giving.give_back(budget.key, budget.credits)
                except StorageError as exc:  # the charge stays: the budget errs on the safe side
                    log.warning("could not give back a send's credits to its budget",
                                extra={"reason": str(exc)})

    # ── answers ────────────────────────────────────────────────────────────────────────────

    @contextmanager
    def _counters(self) -> Iterator[None]:
        """The counters' failures as our problem, here only."""
        try:
            yield
        except StorageError as exc:
            self.metrics.guard_refusals.labels("unavailable").inc()
            raise LimitsUnavailable(
                "the proxy's rate limit counters failed, so nothing was sent; retry later "
                f"({type(exc.storage_error).__name__})") from exc

    def _refused(self, error: GuardRefused, quotas: Quotas, policy: Policy, left: int,
                 wait: int, *, sends: bool) -> GuardRefused:
        self.metrics.guard_refusals.labels(policy.name).inc()
        error.headers[POLICY_HEADER] = policy_field(quotas, sends=sends)
        error.headers[LIMIT_HEADER] = f'"{policy.name}";r={left};t={wait}'
        return error

    async def report(self, creds: Credentials, available: JSON) -> JSON:
        """``GET /v1/limits``: the credential's quotas, what is left of each, and when budgets
        start again; beside them the account's ``available`` credits."""
        quotas, who, now = self.quotas(creds), _who(creds), self.clock()
        found: list[JSON] = []
        with self._counters():
            for policy in POLICIES:
                if policy.name in quotas:
                    found.append(await self._state(who, quotas[policy.name], policy, now))
        return {"time_zone": ISRAEL.key, "available_credits": available, "policies": found}

    async def _state(self, who: str, quota: int, policy: Policy, now: datetime) -> JSON:
        state: dict[str, JSON] = {"name": policy.name, "unit": policy.unit, "quota": quota,
                                  "window": policy.window,
                                  "counts": "sends" if policy.sends else "changes"}
        if policy.rate:
            item = _item(policy, quota)
            previous, previous_ttl, current, _ = await self.windows.get_sliding_window(
                item.key_for(policy.name, who), item.get_expiry())
            used = math.floor(previous * previous_ttl / item.get_expiry()) + current
            state["remaining"] = max(0, quota - used)
        else:
            key, _, end = self._budget_key(who, policy, now)
            spent = max(0, await self.counters.get(key))
            state.update(spent=spent, remaining=max(0, quota - spent), resets_at=end.isoformat())
        return state


def policy_field(quotas: Quotas, *, sends: bool) -> str:
    """``RateLimit-Policy``: the credential's policies that apply to the operation (§3)."""
    return ", ".join(
        f'"{p.name}";q={quotas[p.name]}' + ("" if p.unit == "requests" else f';qu="{p.unit}"')
        + f";w={p.window}" for p in POLICIES if p.name in quotas and (sends or not p.sends))


# ── GET /v1/limits ────────────────────────────────────────────────────────────────────────

LIMITS_PATH = "/v1/limits"


AskCredits = Callable[[Upstream, Credentials], Awaitable[JSON]]


def limits_route(validator: OperationValidator, credits: AskCredits) -> Route:
    """``GET /v1/limits``, the credential's own quotas and what is left of them (openapi.yaml's
    getLimits). Read when asked rather than sent on every answer: it costs the counters a read
    a policy, which no other request pays, and says when each budget starts again. The
    account's credits are asked of SMS Leads (mapping.yaml's ``limits.credits``), with the
    credentials, so that ones it refuses get its refusal rather than counters."""

    async def endpoint(request: Request) -> Response:
        creds: Credentials = request.app.state.authenticate(request.headers)
        query = validator.coerce_query(request.query_params.multi_items())
        validator.check({"auth": {"username": creds.username}, "path": {}, "query": query},
                        has_body=False)
        account = await credits(request.app.state.upstream, creds)
        guard: Guard = request.app.state.guard
        return JSONResponse(await guard.report(
            creds, account.get("credits") if isinstance(account, dict) else None))

    endpoint.__name__ = "getLimits"
    return Route(LIMITS_PATH, endpoint, methods=["GET"])
