"""Every row of proxy/statuses.yaml, through the app: the status and problem the client gets,
and what a keyed change that got it keeps (its `effect`): the answer replayed, the key freed
for another try, or the key held in doubt."""

from __future__ import annotations

import httpx
import pytest
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.errors import Outcome, Refusal
from proxy.mapping import load_table
from proxy.settings import Settings
from tests.conftest import BASIC, Recorder

STATUSES = load_table().statuses
REFUSALS = sorted((code, refusal) for code, refusal in STATUSES.codes.items()
                  if code not in STATUSES.success)
SEND = {"sender": "DemoAPI", "recipients": [{"phone": "0501234567"}], "text": "hi"}
DECL = '<?xml version="1.0" encoding="utf-8"?>'


def _send_twice(answer: bytes) -> tuple[httpx.Response, httpx.Response, int]:
    """A keyed send and its retry with the same key; how many reached the upstream."""
    recorder = Recorder(answer)
    app = create_app(Settings(), transport=httpx.MockTransport(recorder))
    headers = {"Authorization": BASIC, "Idempotency-Key": "row-1"}
    with TestClient(app) as client:
        first = client.post("/v1/messages", json=SEND, headers=headers)
        second = client.post("/v1/messages", json=SEND, headers=headers)
    return first, second, len(recorder.requests)


def _check(refusal: Refusal, code: int | None, message: str, first: httpx.Response,
           second: httpx.Response, calls: int) -> None:
    assert first.status_code == refusal.http
    assert first.headers["content-type"] == "application/problem+json"
    problem = first.json()
    assert problem["type"] == f"/problems/{refusal.slug}"
    assert problem["title"] == refusal.title
    assert problem.get("upstream_status") == code
    assert problem["upstream_message"] == message
    assert first.headers.get("retry-after") == (
        None if refusal.retry_after is None else str(refusal.retry_after))
    if refusal.effect is Outcome.FINAL:  # kept: the same answer again, nothing sent
        assert calls == 1
        assert (second.status_code, second.json()) == (first.status_code, problem)
        assert second.headers["idempotent-replayed"] == "true"
    elif refusal.effect is Outcome.NONE:  # freed: the retry is made again
        assert calls == 2
        assert second.status_code == refusal.http and "idempotent-replayed" not in second.headers
    else:  # in doubt: never sent again under the key
        assert calls == 1
        assert second.status_code == 409
        assert second.json()["type"] == "/problems/outcome-unknown"


@pytest.mark.parametrize(("code", "refusal"), REFUSALS, ids=[str(c) for c, _ in REFUSALS])
def test_each_upstream_code_is_answered_and_kept_as_its_row_says(code, refusal):
    answer = f"{DECL}<sms><status>{code}</status><message>said {code}</message></sms>"
    _check(refusal, code, f"said {code}", *_send_twice(answer.encode()))


def test_a_code_the_table_does_not_know_is_its_unknown_row():
    answer = f"{DECL}<sms><status>4242</status><message>what</message></sms>"
    _check(STATUSES.unknown, 4242, "what", *_send_twice(answer.encode()))


def test_a_refusal_without_a_message_carries_the_tables_words():
    code, _ = REFUSALS[0]
    answer = f"{DECL}<sms><status>{code}</status></sms>".encode()
    first, _, _ = _send_twice(answer)
    assert first.json()["upstream_message"] == STATUSES.messages[code]


@pytest.mark.parametrize("name", sorted(STATUSES.not_found))
def test_each_not_found_refusal_is_answered_and_kept_as_its_row_says(name):
    refusal = STATUSES.not_found[name]
    said = {"contact-list": "contact list id: 21518 does not exist",
            "contact": "phone 0501234567 does not exist in contact list id: 21518"}[name]
    recorder = Recorder(f"{DECL}<rmNumCL><status>0</status><errors><error>{said}</error>"
                        "</errors></rmNumCL>".encode())
    app = create_app(Settings(), transport=httpx.MockTransport(recorder))
    headers = {"Authorization": BASIC, "Idempotency-Key": "row-2"}
    with TestClient(app) as client:
        url = "/v1/contact-lists/21518/contacts/0501234567"
        first, second = client.delete(url, headers=headers), client.delete(url, headers=headers)
    _check(refusal, None, said, first, second, len(recorder.requests))
