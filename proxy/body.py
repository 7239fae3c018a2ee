"""Bodies read no further than a limit: the client's request and the upstream's answer.

    raw = await read_bounded(request.stream(), 1_048_576, request.headers.get("content-length"),
                             lambda: PayloadTooLarge("the body is over 1048576 bytes"))

A declared length over the limit is refused before a byte is read; a body without one (chunked)
is refused as soon as it passes the limit, so a 100 MB body never sits in memory.

Parsing is bounded too: what a JSON body costs to parse, in time and memory, is the number of
values it holds, not its bytes. No request needs more than :data:`MAX_OBJECTS` objects (the
largest holds 1,000 messages and 10,000 recipients) nor :data:`MAX_NUMBERS`
numbers, so a body with more is refused as soon as the parser has seen that many, never built
whole: 8 MB of ``{"phone":"1"}`` would take half a second of the event loop and 140 MB.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable

from proxy.errors import MalformedRequest, PayloadTooLarge, ProblemError, UnsupportedMediaType
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


MAX_OBJECTS = 20_000  # tests/test_hostile.py checks every operation's largest body holds fewer
MAX_NUMBERS = 20_000


class _TooMany(Exception):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"the body holds more than {limit:,} JSON {what}; no request needs "
                         "that many")


class _Counter:
    """Counts what the parser builds, and stops it past a limit."""

    def __init__(self) -> None:
        self.objects = self.numbers = 0

    def object(self, pairs: list[tuple[str, JSON]]) -> dict[str, JSON]:
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            raise _TooMany("objects", MAX_OBJECTS)
        return dict(pairs)

    def number(self, text: str) -> int | float:
        self.numbers += 1
        if self.numbers > MAX_NUMBERS:
            raise _TooMany("numbers", MAX_NUMBERS)
        return float(text) if any(c in text for c in ".eE") else int(text)


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
    hook = counter.object if raw.count(b"{") > MAX_OBJECTS else None
    try:
        value: JSON = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
                                 parse_int=counter.number, parse_float=counter.number,
                                 object_pairs_hook=hook)
    except _TooMany as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    except RecursionError as exc:
        raise MalformedRequest("the body is nested too deeply") from exc
    except ValueError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from exc
    return value
