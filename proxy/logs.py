"""Structured logs: one JSON object a line on stderr, for the proxy and for uvicorn alike.

    {"time": "2026-11-25T10:00:00.123+00:00", "level": "INFO", "logger": "smsleads_proxy.access",
     "pid": 7, "message": "request", "request_id": "4bf9…", "route": "/v1/contact-lists/{id}", …}

The proxy never logs a header or a body; as a second line of defence every formatted line is
scrubbed of Basic and Bearer credentials and of the secrets registered with :func:`hide`.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonEncoder
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

REQUEST_LOGGER = "smsleads_proxy.access"
REDACTED = "<redacted>"

# RFC 7617 / RFC 6750 §2.1 credentials, wherever a message or a traceback might carry them.
_CREDENTIALS = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
# What every such credential holds: the scheme's last letter, then a space. Looking for this
# first takes a fifth of the time of the pattern above, which then runs only where it may match.
_MAYBE_CREDENTIALS = re.compile(r"[cCrR]\s")
_hidden: set[str] = set()


def hide(secret: str) -> None:
    """Never print this text (the held SMS Leads token of single-tenant mode)."""
    if secret:
        _hidden.add(secret)


def redact(text: str) -> str:
    if _MAYBE_CREDENTIALS.search(text):
        text = _CREDENTIALS.sub(rf"\1 {REDACTED}", text)
    for secret in _hidden:
        text = text.replace(secret, REDACTED)
    return text


class JsonFormatter(_JsonFormatter):
    """python-json-logger's formatter, as configured below, with a shorter way for the lines
    nearly every record makes (no exception, no stack, no dict for a message): the same JSON,
    its fields in the same order (tests/test_logs.py holds the two equal), in half the time,
    which mattered on the line every request writes (bench/RESULTS.md)."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                           "process": "pid"},
            # uvicorn adds a coloured copy of its messages for terminals.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            json_ensure_ascii=False,
        )
        self._encode = JsonEncoder(ensure_ascii=False).encode  # as json.dumps(cls=…) does
        self._fields = [(name, self.rename_fields.get(name, name))
                        for name in self._required_fields]

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        if (record.exc_info or record.exc_text or record.stack_info
                or isinstance(record.msg, dict)):
            return redact(super().format(record))
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        fields = record.__dict__
        data = {renamed: fields.get(name) for name, renamed in self._fields}
        skip = self._skip_fields
        for key, value in fields.items():
            if key not in skip and not (isinstance(key, str) and key.startswith("_")):
                data[self.rename_fields.get(key, key)] = value
        return redact(self._encode(data))


def config(level: str) -> dict[str, Any]:
    """The logging configuration for uvicorn's ``log_config`` (each worker applies it);
    uvicorn's own access log is off: the proxy writes one richer line per request."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "smsleads_proxy": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
        # Everything else (asyncio, redis, aiohttp, a library's warning): JSON and redacted too.
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
