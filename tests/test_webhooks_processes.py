"""Webhooks end to end with real processes (issue 13, "Done when"): the proxy (two workers on
the SQLite default, or two processes on one redis-server), the standalone sandbox (``python -m
proxy.sandbox``) and a receiver (tests/webhook_receiver.py) that verifies every signature with
``standardwebhooks`` and refuses each event's first attempts. Poll intervals, leases and
retries are seconds here (settings), so each test takes seconds."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import redis_process, sandbox_process
from tests.processes import ROOT, Server, running

KEY = base64.b64encode(bytes(range(32))).decode()
FAST = {"SMSLEADS_WEBHOOK_POLL_INTERVAL": "0.3", "SMSLEADS_WEBHOOK_LEASE": "2",
        "SMSLEADS_WEBHOOK_TIMEOUT": "2", "SMSLEADS_WEBHOOK_RETRIES": "0.3,0.5,1,1,2,2",
        "SMSLEADS_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8", "SMSLEADS_WEBHOOK_TOKEN_KEYS": KEY}
ACCOUNT = {"username": "hooks", "token": "hooks-token", "credits": 10_000, "source": "0500000000"}
AUTH = ("hooks", "hooks-token")
TYPES = ["message.delivery_reported", "message.received", "recipient.opted_out"]
WAIT = 60.0  # seconds at most for what the tests wait on (seconds, when it works)


class Receiver:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/hook"
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def configure(self, secrets: list[str], refuse: int) -> None:
        self.client.post("/control", json={"secrets": secrets, "refuse": refuse})

    def received(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self.client.get("/received").json()
        return answer

    def accepted(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.received()
                if r["status"] == 204 and (kind is None or r["type"] == kind)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    process = subprocess.Popen([sys.executable, "-m", "tests.webhook_receiver"],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        found = Receiver(int(process.stdout.readline()))
        yield found
        found.client.close()
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def until(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)  # another process's progress: there is no event to wait on here
    raise AssertionError(f"not in {timeout} s: {what}")


def subscribe(proxy: Server, receiver: Receiver, types: list[str] = TYPES) -> dict[str, Any]:
    answer = httpx.post(f"{proxy.base}/v1/webhooks", auth=AUTH, timeout=30,
                        json={"url": receiver.url, "event_types": types})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def send(proxy: Server, count: int, prefix: str) -> str:
    recipients = [{"phone": f"05{20_000_000 + i:08d}", "external_id": f"{prefix}-{i}"}
                  for i in range(count)]
    answer = httpx.post(f"{proxy.base}/v1/messages", auth=AUTH, timeout=30,
                        json={"sender": "Hooks", "text": "shipped", "recipients": recipients})
    assert answer.status_code == 202, answer.text
    campaign: str = answer.json()["campaign_id"]
    return campaign


def reports(receiver: Receiver, prefix: str) -> dict[str, set[str]]:
    """external id -> the event ids that reached the receiver (accepted) for it."""
    found: dict[str, set[str]] = {}
    for seen in receiver.accepted("message.delivery_reported"):
        external = seen["data"].get("external_id", "")
        if external.startswith(prefix):
            found.setdefault(external, set()).add(seen["id"])
    return found


@contextmanager
def proxy_on(tmp_path: Path, upstream: str, *args: str,
             env: dict[str, str] | None = None) -> Iterator[Server]:
    with running(tmp_path, ["--upstream-url", upstream, *args],
                 env={**FAST, **(env or {})}) as proxy:
        yield proxy


def test_a_send_to_50_gives_50_verified_events_and_a_kill_loses_none(tmp_path, receiver):
    """Two workers on the SQLite default; the receiver refuses each event twice; the proxy is
    SIGKILLed while deliveries are under way and started again: every report arrives, each
    under one id, verified."""
    accounts = [ACCOUNT]
    with sandbox_process(accounts, tmp_path) as upstream:
        with proxy_on(tmp_path, upstream, "--workers", "2") as proxy:
            created = subscribe(proxy, receiver)
            receiver.configure([created["secret"]], refuse=2)
            send(proxy, 50, "kill")
            until(lambda: len(receiver.received()) >= 20, "20 attempts before the kill")
            assert proxy.kill() == -signal.SIGKILL
        with proxy_on(tmp_path, upstream, "--workers", "2") as proxy:
            done = until(lambda: (found := reports(receiver, "kill")) and len(found) == 50
                         and found, "every report after the restart")
            deliveries = httpx.get(f"{proxy.base}/v1/webhooks/{created['id']}/deliveries",
                                   auth=AUTH).json()["data"]
    assert all(len(ids) == 1 for ids in done.values())  # one id per report
    received = receiver.received()
    assert all(r["verified"] for r in received)
    assert all(r["header_id"] == r["id"] for r in received)
    refused = [r for r in received if r["status"] == 503]
    assert {r["id"] for r in refused} >= {i for ids in done.values() for i in ids}  # retried
    ours = [d for d in deliveries if d["event_type"] == "message.delivery_reported"]
    assert len(ours) == 50 and all(d["status"] == "succeeded" for d in ours)
    # The newest attempt delivered, the ones before were refused (an attempt the kill cut off
    # before its record was written is on the receiver's side only: at least once).
    assert all(d["attempts"][0]["status_code"] == 204 for d in ours)
    assert all(a.get("status_code") in (503, None) for d in ours for a in d["attempts"][1:])
    assert sum(d["attempt_count"] for d in ours) >= 2 * 50


def test_a_reply_and_a_stop_made_in_the_sandbox_arrive_as_events(tmp_path, receiver):
    with sandbox_process([ACCOUNT], tmp_path) as upstream, \
            proxy_on(tmp_path, upstream) as proxy:
        created = subscribe(proxy, receiver)
        receiver.configure([created["secret"]], refuse=0)
        control = upstream.removesuffix("/api") + "/sandbox/api"
        reply = httpx.post(f"{control}/replies", json={
            "account": "hooks", "phone": "0521234567", "text": "yes please"})
        stop = httpx.post(f"{control}/opt-outs", json={"account": "hooks",
                                                       "phone": "0527654321"})
        assert (reply.status_code, stop.status_code) == (201, 201), (reply.text, stop.text)
        received = until(lambda: (r := receiver.accepted("message.received")) and len(r) >= 2
                         and receiver.accepted("recipient.opted_out") and r,
                         "the reply, the STOP and the opt-out")
        opted = receiver.accepted("recipient.opted_out")
    assert sorted((r["data"]["sender"], r["data"]["text"]) for r in received) == [
        ("+972521234567", "yes please"), ("+972527654321", "STOP")]
    assert [r["data"]["phone"] for r in opted] == ["+972527654321"]
    assert set(opted[0]["data"]) == {"phone", "added_at"}  # the blacklist's row, exactly


def test_two_proxies_on_one_redis_deliver_each_event_with_one_id(tmp_path, receiver):
    with redis_process(tmp_path / "redis") as (redis_url, _), \
            sandbox_process([ACCOUNT], tmp_path) as upstream, \
            proxy_on(tmp_path, upstream, env={"REDIS_URL": redis_url}) as first, \
            proxy_on(tmp_path, upstream, env={"REDIS_URL": redis_url}) as second:
        created = subscribe(first, receiver)
        receiver.configure([created["secret"]], refuse=1)
        send(second, 50, "redis")
        done = until(lambda: (found := reports(receiver, "redis")) and len(found) == 50
                     and found, "every report")
        time.sleep(1.0)  # time for a second poller, were there one, to send its own copies
        done = reports(receiver, "redis")
        listed = httpx.get(f"{second.base}/v1/webhooks", auth=AUTH).json()["data"]
    assert all(len(ids) == 1 for ids in done.values())
    accepted = [r for r in receiver.accepted("message.delivery_reported")
                if r["data"]["external_id"].startswith("redis")]
    # Duplicates only as retries of one id: at most one acceptance per id but for a retry
    # that crossed its answer, never two ids for one report.
    assert len({r["id"] for r in accepted}) == 50
    assert [sub["id"] for sub in listed] == [created["id"]]


def test_a_subscription_to_a_private_address_is_refused(tmp_path, receiver):
    with sandbox_process([ACCOUNT], tmp_path) as upstream, \
            running(tmp_path, ["--upstream-url", upstream],
                    env={"SMSLEADS_WEBHOOK_TOKEN_KEYS": KEY}) as proxy:
        for url in ("http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data",
                    "http://[fd00:ec2::254]/", receiver.url, "http://localhost:9/x"):
            answer = httpx.post(f"{proxy.base}/v1/webhooks", auth=AUTH,
                                json={"url": url, "event_types": TYPES})
            assert answer.status_code == 422, (url, answer.text)
            assert answer.json()["errors"][0]["pointer"] == "/body/url"
            assert "not public" in answer.json()["errors"][0]["detail"]
        assert httpx.get(f"{proxy.base}/v1/webhooks", auth=AUTH).json() == {"data": []}
