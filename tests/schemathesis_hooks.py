"""schemathesis hooks for tests/test_schemathesis.py (tests/schemathesis.toml loads them): what
schemathesis generates, made into what a client sends, where a rule relates a value to
something no schema can see.

- A client sends a new Idempotency-Key with each new request (openapi.yaml, IdempotencyKey):
  the same key with another request is refused by design. Keys that schemathesis drew valid
  are made unique; invalid ones (negative tests) are kept.
- A report window lies in the last 365 days, `from` before `to`: a rule between two
  parameters and the clock. Valid dates (2001 to 2067, as the schema admits) are moved, in
  order, into the last 364 days; `from` after `to` is swapped. Windows outside the rule are
  tests/test_report_pages.py's and tests/test_operations.py's.
- A client sends back only a cursor the proxy gave, with the query it gave it for (the
  links `nextPage` follow them); a made-up cursor is dropped.
- A client subscribes a webhook URL of its own, which reaches a public address: no request
  may leave this machine, so a URL the schema admits becomes one on 127.0.0.1 where nothing
  listens (the run allows loopback); one it refuses (a negative test) is kept as drawn.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis

from proxy.docs import load_spec
from proxy.mapping import load_table

HEADER = "Idempotency-Key"
VALID = re.compile(r'(?:[!#-~]{1,255}|"[ !#-\[\]-~]{1,255}")')  # openapi.yaml's pattern
TABLE = load_table()
FEEDS = {op.operation_id: op for op in TABLE.operations if op.feed is not None}
WINDOWS = {op.operation_id: op.window for op in TABLE.operations if op.window is not None}
# The dates openapi.yaml's pattern admits, mapped onto the last 364 days.
FIRST, LAST = datetime(2001, 1, 1, tzinfo=UTC), datetime(2068, 1, 1, tzinfo=UTC)
GIVEN: dict[str, dict[str, Any]] = {}  # cursor -> the query it was given for
HOOK_URL = "http://127.0.0.1:9/smsleads"  # the discard port: nothing listens, nothing leaves
_SPEC = load_spec()["components"]["schemas"]["CreateWebhookRequest"]["properties"]["url"]
WEBHOOK_URL = re.compile(_SPEC["pattern"])


def _name(pointer: str) -> str:
    return pointer.rpartition("/")[2]


def _recent(value: Any, now: datetime) -> str | None:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    if moment is None or moment.tzinfo is None or not FIRST <= moment < LAST:
        return None
    share = (moment - FIRST) / (LAST - FIRST)
    return (now - timedelta(days=364) + share * (timedelta(days=364) - timedelta(minutes=1))
            ).isoformat()


def _window(operation_id: str, query: dict[str, Any]) -> None:
    window = WINDOWS.get(operation_id)
    if window is None:
        return
    now = datetime.now(UTC)
    names = (_name(window.start), _name(window.end))
    moved = {name: _recent(query.get(name), now) for name in names}
    for name, value in moved.items():
        if value is not None:
            query[name] = value
    start, end = (moved[name] for name in names)
    if start is not None and end is not None and start > end:
        query[names[0]], query[names[1]] = end, start


def _cursor(operation_id: str, query: dict[str, Any]) -> bool:
    """The query to send with a cursor the proxy gave (True), or without a made-up one."""
    op = FEEDS.get(operation_id)
    if op is None or op.feed is None:
        return False
    name, limit = _name(op.feed.paging.cursor), _name(op.feed.paging.limit)
    cursor = query.get(name)
    if not isinstance(cursor, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,1024}", cursor):
        return False  # a cursor the schema refuses: a negative test, kept as drawn
    given = GIVEN.get(cursor)
    if given is None or given["operation"] != operation_id:
        del query[name]
        return False
    kept = {limit: query[limit]} if limit in query else {}
    query.clear()
    query.update(given["query"], **kept, **{name: cursor})
    return True


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == HEADER.lower() and isinstance(value, str) and VALID.fullmatch(value):
            headers[name] = str(uuid.uuid4())
    operation_id = case.operation.definition.raw.get("operationId", "")
    if isinstance(case.query, dict) and not _cursor(operation_id, case.query):
        _window(operation_id, case.query)
    if operation_id == "createWebhook" and isinstance(case.body, dict):
        url = case.body.get("url")
        if isinstance(url, str) and len(url) <= _SPEC["maxLength"] and WEBHOOK_URL.match(url):
            case.body["url"] = HOOK_URL


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    operation_id = case.operation.definition.raw.get("operationId", "")
    op = FEEDS.get(operation_id)
    if op is None or op.feed is None or response.status_code != 200:
        return
    cursor = response.json().get("next_cursor")
    if isinstance(cursor, str):
        paging = op.feed.paging
        query = {k: v for k, v in (case.query or {}).items()
                 if k not in (_name(paging.cursor), _name(paging.limit))}
        GIVEN[cursor] = {"operation": operation_id, "query": query}
