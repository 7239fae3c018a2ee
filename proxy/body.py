"""Bodies read no further than a limit: the client's request and the upstream's answer.

    raw = await read_bounded(request.stream(), 1_048_576, request.headers.get("content-length"),
                             lambda: PayloadTooLarge("the body is over 1048576 bytes"))

A declared length over the limit is refused before a byte is read; a body without one (chunked)
is refused as soon as it passes the limit, so a 100 MB body never sits in memory.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable

from proxy.errors import MalformedRequest, ProblemError, UnsupportedMediaType
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
    try:
        value: JSON = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    except RecursionError as exc:
        raise MalformedRequest("the body is nested too deeply") from exc
    except ValueError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from exc
    return value
