"""Bodies read no further than a limit: the client's request and the upstream's answer.

    raw = await read_bounded(request.stream(), 1_048_576, request.headers.get("content-length"),
                             lambda: PayloadTooLarge("the body is over 1048576 bytes"))

A declared length over the limit is refused before a byte is read; a body without one (chunked)
is refused as soon as it passes the limit, so a 100 MB body never sits in memory.

Parsing is bounded too: what a JSON body costs to parse, in time and memory, is the number of
values it holds, not its bytes. Every value but the first of an object or an array follows a
comma, so the ``{``, ``[`` and ``,`` outside strings bound them: a body with ``n`` of these
separators holds at most ``n + 1`` values. No request needs more than :data:`MAX_SEPARATORS`
(the largest, 10,000 contacts with six fields each, has 90,002) nor :data:`MAX_OBJECTS` objects
(the largest holds 1,000 messages and 10,000 recipients), so a body with more is refused
before it is built whole: 8 MB of ``{"phone":"1"}`` would take half a second of the event loop
and 140 MB, 8 MB of ``[]`` 1.5 s (600 ms of it the garbage collector).

Counting the separators anywhere in the bytes settles most bodies; only one whose strings might
hold the difference has its strings told apart (in 10-20 ms for 8 MB), and is counted no
further than the limit. Objects are counted by the parser itself.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
from collections.abc import AsyncIterable, Callable

from starlette.requests import Request

from proxy.errors import (
    MalformedRequest,
    PayloadTooLarge,
    ProblemError,
    RequestTimeout,
    UnsupportedMediaType,
)
from proxy.types import JSON


async def read_bounded(chunks: AsyncIterable[bytes], limit: int, declared: str | None,
                       refuse: Callable[[], ProblemError]) -> bytes:
    """The whole body, or ``refuse()`` raised once it is known to exceed ``limit`` bytes."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise refuse()
    data = bytearray()
    async for chunk in chunks:
        data += chunk
        if len(data) > limit:
            raise refuse()
    return bytes(data)


async def request_body(request: Request, limit: int, timeout: float) -> bytes:
    """A request's body, refused with 413 past ``limit`` bytes, and with 408 if it has not
    arrived ``timeout`` seconds after its headers did: a client that trickles its body a byte
    at a time holds a connection and a request slot no longer than that."""
    try:
        async with asyncio.timeout(timeout):
            return await read_bounded(
                request.stream(), limit, request.headers.get("content-length"),
                lambda: PayloadTooLarge(f"the body is over the limit of {limit} bytes"))
    except TimeoutError as exc:
        raise RequestTimeout(
            f"the body did not arrive within {timeout:g} s of its headers") from exc


MAX_OBJECTS = 20_000  # tests/test_hostile.py checks every operation's largest body holds fewer
MAX_SEPARATORS = 100_000  # and fewer separators than this
# A body's skeleton: its quotes and separators, nothing else (once no quote is escaped). Strings
# are then runs of separators between quotes, skipped at the speed of a search for the next
# quote; MAX_SEPARATORS + 1 separators between them, from the start, is a body over the limit.
_SKELETON = bytes(byte for byte in range(256) if byte not in b'"{[,')
_SEPARATORS = re.compile(rb'(?:(?:"[^"]*+"?)*+[{\[,]){%d}+' % (MAX_SEPARATORS + 1))


class _TooMany(Exception):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"the body holds more than {limit:,} {what}; no request needs that many")


class _Counter:
    """Counts the objects the parser builds, and stops it past the limit."""

    def __init__(self) -> None:
        self.objects = 0

    def object(self, pairs: list[tuple[str, JSON]]) -> dict[str, JSON]:
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise _TooMany("JSON objects", MAX_OBJECTS)
        return dict(pairs)


def _skeleton(raw: bytes) -> bytes:
    """The body's quotes and separators, in order, with no quote escaped."""
    if b"\\" in raw:  # escaped backslashes, then escaped quotes, removed: JSON's order
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    return raw.translate(None, _SKELETON)


def _count_separators(skeleton: bytes) -> None:
    """Raises _TooMany if the body has more than MAX_SEPARATORS separators outside strings."""
    if len(skeleton) - skeleton.count(b'"') <= MAX_SEPARATORS:
        return  # even counting those inside strings
    if _SEPARATORS.match(skeleton):
        raise _TooMany("commas and opening brackets outside strings", MAX_SEPARATORS)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes, content_type: str) -> JSON:
    """A request body as JSON: UTF-8 ``application/json`` (or ``+json``), RFC 8259 strictly."""
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as application/json, not {media or 'no Content-Type'}")
    charset = params.lower().partition("charset=")[2].strip().strip('"')
    if charset and charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"send the body as UTF-8, not {charset}")
    counter = _Counter()
    # Every "{" may open an object: a body with few is parsed natively (fast); one with many,
    # with a count of the objects that stops the parser past the limit.
    skeleton = _skeleton(raw)
    hook = counter.object if skeleton.count(b"{") > MAX_OBJECTS else None
    collecting = gc.isenabled()
    try:
        _count_separators(skeleton)
        # What the parser builds is bounded and holds no cycle: nothing for the collector to
        # find, which would otherwise walk it over and over as it grows (10,000 recipients:
        # 12 ms to parse, 2 ms without).
        gc.disable()
        value: JSON = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
                                 object_pairs_hook=hook)
    except _TooMany as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    except RecursionError as exc:
        raise MalformedRequest("the body is nested too deeply") from exc
    except ValueError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from exc
    finally:
        if collecting:
            gc.enable()
    return value
