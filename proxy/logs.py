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
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

REQUEST_LOGGER = "smsleads_proxy.access"
REDACTED = "<redacted>"

# RFC 7617 / RFC 6750 §2.1 credentials, wherever a message or a traceback might carry them.
_CREDENTIALS = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9\-._~+/]+=*", re.IGNORECASE)
_hidden: set[str] = set()


def hide(secret: str) -> None:
    """Never print this text (the held SMS Leads token of single-tenant mode)."""
    if secret:
        _hidden.add(secret)


def redact(text: str) -> str:
    text = _CREDENTIALS.sub(rf"\1 {REDACTED}", text)
    for secret in _hidden:
        text = text.replace(secret, REDACTED)
    return text


class JsonFormatter(_JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                           "process": "pid"},
            # uvicorn adds a coloured copy of its messages for terminals.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


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
