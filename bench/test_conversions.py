"""Conversion micro-benchmarks, outside the test suite (``bench/run`` runs them):

    .venv/bin/python -m pytest bench/test_conversions.py --benchmark-only

The DLR answer is the sandbox's own bytes for a 1,000-destination send whose reports came in.
The assertions check that each benchmark converts what it claims to; none is about time.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from lxml import etree

from proxy.docs import load_spec
from proxy.mapping import Operation, load_table
from proxy.sandbox import ISRAEL, FixedClock, Sandbox
from proxy.translate import build_envelope, read_answer
from proxy.upstream import parse_answer, read_status
from proxy.validation import OperationValidator, compile_validators

TABLE = load_table()
START = datetime(2026, 11, 25, 12, 0, tzinfo=ISRAEL)
AUTH = {"username": "demo"}


def operation(operation_id: str) -> Operation:
    return TABLE.operation(operation_id)


def validator(op: Operation) -> OperationValidator:
    return compile_validators(load_spec())[(op.method, op.path)]


def send_document(destinations: int) -> dict[str, Any]:
    recipients = [{"phone": f"050{1_000_000 + i:07d}", "external_id": f"bench-{i}"}
                  for i in range(destinations)]
    body = {"sender": "BenchTest", "recipients": recipients, "text": "Bench message"}
    return {"auth": AUTH, "path": {}, "query": {}, "body": body}


def dlr_document() -> dict[str, Any]:
    query = {"from": (START - timedelta(days=1)).isoformat(),
             "to": (START + timedelta(days=1)).isoformat()}
    return {"auth": AUTH, "path": {}, "query": query}


async def _dlr_answer() -> bytes:
    sandbox = Sandbox(clock=FixedClock(START), seed=6)
    sandbox.state.accounts["demo"].credits = 10**9
    send = etree.tostring(build_envelope(operation("sendMessage"), send_document(1000)))
    assert b"<status>0</status>" in await sandbox.handle(send, "Bearer demo-token")
    sandbox.advance(timedelta(minutes=1))  # the reports come in
    ask = etree.tostring(build_envelope(operation("listDeliveryReports"), dlr_document()))
    return await sandbox.handle(ask, "Bearer demo-token")


@pytest.fixture(scope="module")
def dlr_answer() -> bytes:
    return asyncio.run(_dlr_answer())


def test_envelope_for_10000_destinations_built(benchmark: Any) -> None:
    op, document = operation("sendMessage"), send_document(10_000)

    def convert() -> bytes:
        envelope = build_envelope(op, document)
        return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")

    body = benchmark(convert)
    assert body.count(b"<phone ") == 10_000


def test_request_for_10000_destinations_validated(benchmark: Any) -> None:
    op, document = operation("sendMessage"), send_document(10_000)
    check = validator(op).check
    benchmark(check, document, True)  # raises RequestInvalid if anything were wrong


def test_dlr_answer_with_1000_rows_parsed(benchmark: Any, dlr_answer: bytes) -> None:
    op, document = operation("listDeliveryReports"), dlr_document()

    def convert() -> dict[str, Any]:
        answer = read_status(parse_answer(dlr_answer, TABLE.unclosed), TABLE.statuses)
        return read_answer(op, answer.root, document)

    body = benchmark(convert)
    assert len(body["data"]) == 1000
    assert body["data"][0]["external_id"] == "bench-0"
