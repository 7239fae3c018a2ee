"""A valid request for every operation, from openapi.yaml's own examples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from proxy.docs import load_spec
from proxy.mapping import Operation, load_table
from tests.conftest import deref

SPEC = load_spec()
TABLE = load_table()
OPERATIONS = TABLE.operations
# A computed operation (a preview) changes nothing, whatever its method: it takes no key.
STATE_CHANGING = [op for op in OPERATIONS if op.method != "GET" and op.compute is None]


def _deref(node: Any) -> Any:
    return deref(SPEC, node)


@dataclass(frozen=True)
class Call:
    method: str
    path: dict[str, str]
    query: dict[str, Any]
    body: Any

    def url(self, op: Operation, **path: str) -> str:
        values = {**self.path, **path}
        return op.path.format(**{k: quote(v, safe="") for k, v in values.items()})


def example(op: Operation) -> Call:
    operation = SPEC["paths"][op.path][op.method.lower()]
    path, query = {}, {}
    # A cursor is one the proxy made for an earlier page: a client never writes one.
    made = {op.feed.paging.cursor} if op.feed is not None else set()
    for parameter in map(_deref, operation.get("parameters", [])):
        if f"/{parameter['in']}/{parameter['name']}" in made:
            continue
        if parameter["in"] == "path":
            path[parameter["name"]] = parameter["example"]
        elif parameter["in"] == "query":
            query[parameter["name"]] = parameter["example"]
    media = operation.get("requestBody", {}).get("content", {}).get("application/json")
    return Call(op.method, path, query, None if media is None else media["example"])
