"""The one door to the SMS Leads API: send an envelope, get a checked answer.

A process has one :class:`Upstream`, opened in the app's lifespan around one pooled wire:
proxy/transport.py's on aiohttp in production, or any ``httpx.AsyncBaseTransport`` (tests and
the embedded sandbox hand in ``MockTransport`` or ``ASGITransport``), called through httpx's
transport interface by :class:`HttpxWire`. Neither goes through httpx's client, which would
only add cookies, redirects and default headers a proxy has no use for, and their cost
(bench/). Both wires raise httpx's exceptions; those and lxml's are translated here, and only
here, into :mod:`proxy.errors`.

Around each call: a deadline for the whole exchange (a server that trickles its answer one
byte at a time never trips httpx's per-read timeout), the circuit breaker (proxy/breaker.py),
and for reads only, retries on connection failures, when nothing reached the upstream. A
command that changes state is never retried here: the client retries it with its
Idempotency-Key (proxy/idempotency.py).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx
from lxml import etree
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from proxy.body import read_bounded
from proxy.breaker import Breaker
from proxy.emit import Envelope
from proxy.errors import (
    Outcome,
    UpstreamBadAnswer,
    UpstreamError,
    UpstreamRefused,
    UpstreamSuspended,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.mapping import StatusTable
from proxy.transport import AiohttpTransport, Read

T = TypeVar("T")

# Backoff between read retries: "full jitter", a random wait up to 0.1 s, 0.2 s, 0.4 s ... 1 s
# (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015).
BACKOFF, BACKOFF_CAP = 0.1, 1.0
UNKNOWN_EFFECT = (
    "; it may or may not have acted on the request. Retrying with the same "
    "Idempotency-Key never sends it twice")

# A hardened parser: no DTD, no entities, no network, no huge trees (billion laughs, XXE).
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
    huge_tree=False, remove_comments=True, remove_pis=True,
)
_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>")
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_WRAPPER = "answer"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)  # the settings' defaults


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    message: str
    root: etree._Element


def parse_answer(body: bytes, unclosed: tuple[str, ...] = ()) -> etree._Element:
    """The element holding <status>, tolerant of the upstream's quirks
    (docs/upstream-protocol.md#quirks).

    The answer is wrapped in a synthetic root, so an answer without a root (two top-level
    elements: docs/upstream-protocol.md#root-less-rmnumbl-answer) reads like any other;
    elements named in ``unclosed`` may end with an opening tag instead of a closing one
    (``<shipment_id>1<shipment_id>``: docs/upstream-protocol.md#unclosed-shipment_id).
    """
    declaration = _DECLARATION.match(body)
    encoding = "utf-8"
    if declaration:
        named = _ENCODING.search(declaration.group())
        encoding = named.group(1).decode("ascii") if named else "utf-8"
        body = body[declaration.end():]
    try:
        text = body.decode(encoding)
    except (LookupError, UnicodeDecodeError) as exc:
        raise UpstreamBadAnswer(f"the answer is not valid {encoding}") from exc
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise UpstreamBadAnswer("the answer carries a DTD, which is never expanded")
    for name in unclosed:
        opening, pattern, closed = _unclosed(name)
        if opening in text:
            text = pattern.sub(closed, text)
    try:
        wrapper = etree.fromstring(f"<{_WRAPPER}>{text}</{_WRAPPER}>", _PARSER)
    except etree.XMLSyntaxError as exc:
        raise UpstreamBadAnswer(f"the answer is not well-formed XML: {exc}") from exc
    if _child(wrapper, "status") is not None:
        return wrapper
    roots = [child for child in wrapper if isinstance(child.tag, str)]
    if len(roots) == 1 and _child(roots[0], "status") is not None:
        return roots[0]
    raise UpstreamBadAnswer("the answer has no <status>")


@functools.cache
def _unclosed(name: str) -> tuple[str, re.Pattern[str], str]:
    """An element the upstream may leave unclosed: its opening tag, the pattern of the unclosed
    form and what it becomes."""
    return f"<{name}>", re.compile(rf"<{name}>([^<]*)<{name}>"), rf"<{name}>\1</{name}>"


def _child(node: etree._Element, tag: str) -> etree._Element | None:
    """``node.find(tag)`` for a plain tag, without ElementPath (a fifth of the time)."""
    return next(node.iterchildren(tag), None)


def _child_text(node: etree._Element, tag: str) -> str:
    child = _child(node, tag)
    return (child.text if child is not None else None) or ""


def read_status(root: etree._Element, statuses: StatusTable) -> Answer:
    """Check <status>: a success code passes, anything else is an UpstreamRefused."""
    raw = _child_text(root, "status").strip()
    message = _child_text(root, "message").strip()
    try:
        code = int(raw)
    except ValueError as exc:
        raise UpstreamBadAnswer(f"the answer's <status> is not a number: {raw[:40]!r}") from exc
    if code not in statuses.success:
        raise UpstreamRefused(statuses.refusal(code), code,
                              message or statuses.messages.get(code, ""))
    return Answer(code, message, root)


def _translated(exc: httpx.HTTPError | TimeoutError) -> UpstreamError:
    """httpx's exceptions as our problems (the model: httpx's map_httpcore_exceptions)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamUnreachable("connecting to the SMS Leads API timed out")
    if isinstance(exc, httpx.ConnectError):
        return UpstreamUnreachable("the SMS Leads API refused or dropped the connection")
    if isinstance(exc, httpx.PoolTimeout):  # waiting for one of our own connections: nothing sent
        return UpstreamUnreachable("no connection to the SMS Leads API was free in time")
    if isinstance(exc, httpx.TimeoutException | TimeoutError):  # TimeoutError: the deadline
        return UpstreamTimeout("the SMS Leads API did not answer in time")
    return UpstreamBadAnswer(
        f"the exchange with the SMS Leads API broke: {type(exc).__name__}")


def _connection_failed(exc: BaseException) -> bool:
    """Worth another try for a read: the request never reached the upstream."""
    return isinstance(exc, UpstreamUnreachable) and not isinstance(exc, UpstreamSuspended)


Sleep = Callable[[float], Awaitable[None]]
Timeouts = Mapping[str, float | None]  # httpx's: connect, read, write, pool


class Wire(Protocol):
    """One POST and its answer, handed to ``read`` while the connection is held."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts,
                   read: Read[T]) -> T: ...


class HttpxWire:
    """Any httpx transport as a wire: ``MockTransport`` and ``ASGITransport`` in tests and for
    the embedded sandbox."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeouts: Timeouts,
                   read: Read[T]) -> T:
        request = httpx.Request("POST", url, content=body, headers=headers,
                                extensions={"timeout": dict(timeouts)})
        answer = await self.transport.handle_async_request(request)
        try:
            return await read(answer.status_code, answer.headers.get("content-length"),
                              answer.aiter_bytes())
        finally:
            await answer.aclose()


def wire_of(transport: httpx.AsyncBaseTransport | AiohttpTransport) -> Wire:
    return transport if isinstance(transport, AiohttpTransport) else HttpxWire(transport)


class Upstream:
    def __init__(self, transport: httpx.AsyncBaseTransport | AiohttpTransport, url: str,
                 statuses: StatusTable, *,
                 timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 unclosed: tuple[str, ...] = (), max_answer_bytes: int = 8 * 1024 * 1024,
                 deadline: float = 35.0, breaker: Breaker | None = None,
                 read_retries: int = 2, sleep: Sleep = asyncio.sleep) -> None:
        self.wire, self.url, self.statuses = wire_of(transport), url, statuses
        self.timeout = timeout.as_dict()
        self.unclosed, self.max_answer_bytes = unclosed, max_answer_bytes
        self.deadline, self.breaker = deadline, breaker or Breaker()
        self.read_retries, self.sleep = read_retries, sleep

    async def call(self, envelope: Envelope | etree._Element, token: str | None, *,
                   safe: bool = False, timeout: float | None = None) -> Answer:
        """Send one command, written (proxy/emit.py) or as a tree. ``safe`` (a read) may be
        retried when no connection was made; ``token`` None sends no credentials (the
        readiness probe, health.py); ``timeout`` replaces the configured timeouts and the
        deadline for this call."""
        body = (envelope.body if isinstance(envelope, Envelope)
                else etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))
        headers = {"Content-Type": "application/xml; charset=utf-8"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            try:
                return await self._attempt(body, headers, timeout)
            except UpstreamError as exc:
                if not safe or not _connection_failed(exc):
                    raise
                failed = exc
            return await self._retried(failed, body, headers, timeout)
        except UpstreamError as error:
            if not safe and error.outcome is Outcome.UNKNOWN:
                error.detail += UNKNOWN_EFFECT
            raise

    async def _retried(self, failed: UpstreamError, body: bytes, headers: dict[str, str],
                       timeout: float | None) -> Answer:
        """A read whose first attempt could make no connection, tried again. tenacity's loop,
        which cost 7% of a simple read's CPU on every call (bench/RESULTS.md), starts only
        now, handed that failure as its own first attempt: same tries, same waits."""
        first: list[UpstreamError] = [failed]

        async def attempt() -> Answer:
            if first:
                raise first.pop()
            return await self._attempt(body, headers, timeout)

        retrying = AsyncRetrying(
            retry=retry_if_exception(_connection_failed),
            stop=stop_after_attempt(1 + self.read_retries),
            wait=wait_random_exponential(multiplier=BACKOFF, max=BACKOFF_CAP),
            sleep=self.sleep, reraise=True)
        answer: Answer = await retrying(attempt)
        return answer

    async def _attempt(self, body: bytes, headers: dict[str, str],
                       timeout: float | None) -> Answer:
        probe = self.breaker.admit()
        limits = self.timeout if timeout is None else httpx.Timeout(timeout).as_dict()
        try:
            try:
                async with asyncio.timeout(self.deadline if timeout is None else timeout):
                    data = await self.wire.post(self.url, body, headers, limits, self._read)
            except (httpx.HTTPError, TimeoutError) as exc:
                raise _translated(exc) from exc
            root = parse_answer(data, self.unclosed)
        except UpstreamError:
            self.breaker.failed(probe)
            raise
        except BaseException:  # cancelled: no verdict on the upstream's health
            self.breaker.abandoned(probe)
            raise
        self.breaker.succeeded()  # a refusal below is a healthy upstream saying no
        return read_status(root, self.statuses)

    async def _read(self, status: int, declared: str | None, chunks: AsyncIterable[bytes]
                    ) -> bytes:
        """The body of a 200, read no further than the limit (a 100 MB answer is refused)."""
        if status != 200:
            raise UpstreamBadAnswer(f"the SMS Leads API answered HTTP {status}")
        data = await read_bounded(
            chunks, self.max_answer_bytes, declared,
            lambda: UpstreamBadAnswer("the answer is larger than the proxy accepts"))
        if not data.strip():
            raise UpstreamBadAnswer("the SMS Leads API answered with an empty body")
        return data


__all__ = ["Answer", "HttpxWire", "Upstream", "UpstreamError", "Wire", "parse_answer",
           "read_status"]
