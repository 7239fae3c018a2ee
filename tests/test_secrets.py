"""No token (nor password) in any log line, problem body or response header, over a whole
scenario: real HTTP into uvicorn, real HTTP out to the sandbox process and to a misbehaving
upstream, Redis for the keys, every logger of the process captured at DEBUG."""

from __future__ import annotations

import base64
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from proxy.app import create_app
from proxy.settings import Settings
from tests.conftest import FIGURES, FaultyUpstream, sandbox_process

TOKEN = "Zq9-s3cr3t-T0KEN-4711"
OTHER_TOKEN = "Xy7-0ther-T0KEN-0815"
PASSWORD = "pa55-w0rd-Sub"
SECRETS = [TOKEN, OTHER_TOKEN, PASSWORD,
           base64.b64encode(f"alice:{TOKEN}".encode()).decode(),
           base64.b64encode(f"bob:{TOKEN}".encode()).decode(),
           base64.b64encode(f"alice:{OTHER_TOKEN}".encode()).decode(),
           base64.b64encode(TOKEN.encode()).decode()]
MESSAGE = {"sender": "Alice", "recipients": [{"phone": "0501234567"}], "text": "hi"}


@contextmanager
def served(app: Starlette) -> Iterator[str]:
    """The app under uvicorn in a thread, its logging left to the root logger."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue before uvicorn runs: no wait for it to start
    config = uvicorn.Config(app, log_config=None, log_level="debug", access_log=True,
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _basic(username: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()}


def _scenario(client: httpx.Client) -> list[httpx.Response]:
    alice = _basic("alice", TOKEN)
    now = datetime.now().astimezone()
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": now.isoformat()}
    key = {"Idempotency-Key": "scenario-1"}
    calls = [
        ("GET", "/v1/balance", alice, None),
        ("GET", "/v1/balance", {"Authorization": f"Bearer {TOKEN}", "X-SMSLeads-Username": "alice"}, None),
        ("POST", "/v1/messages", {**alice, **key}, MESSAGE),
        ("POST", "/v1/messages", {**alice, **key}, MESSAGE),                     # replayed
        ("POST", "/v1/messages", {**alice, **key}, dict(MESSAGE, text="other")),  # 422
        ("POST", "/v1/messages/bulk", alice, {"messages": [MESSAGE, MESSAGE]}),
        ("GET", "/v1/reports/dlr", alice, window),
        ("GET", "/v1/incoming-messages", alice, window),
        ("POST", "/v1/contact-lists", alice, {"name": "L", "contacts": [{"phone": "0521234567"}]}),
        ("GET", "/v1/contact-lists", alice, None),
        ("POST", "/v1/subscribers", alice, {"name": "Sub", "username": "sub-1",
                                            "password": PASSWORD, "sender": "Sub", "credits": 5}),
        ("POST", "/v1/subscribers/sub-1/wallet/transfers", alice,
         {"password": PASSWORD, "credits": 1}),
        ("GET", "/v1/subscribers", alice, None),
        ("POST", "/v1/messages", alice, {"sender": "Alice", "text": "x",
                                         "recipients": [{"phone": "123"}]}),      # 422
        ("POST", "/v1/messages", {**alice, "Content-Type": "application/json"}, b"{nope"),  # 400
        ("POST", "/v1/messages", _basic("alice", OTHER_TOKEN), MESSAGE),        # upstream 3
        ("GET", "/v1/balance", _basic("bob", TOKEN), None),                    # upstream 11
        ("GET", "/v1/balance", {"Authorization": f"Bearer {TOKEN}"}, None),     # no username
        ("GET", "/v1/balance", {"Authorization": "Basic !!" + TOKEN}, None),    # malformed
        ("GET", "/v1/balance", {"Authorization": f"Digest {TOKEN}"}, None),     # unknown scheme
        ("DELETE", "/v1/contact-lists/999999", alice, None),                   # 404
    ]
    responses = []
    for method, url, headers, body in calls:
        if isinstance(body, bytes):
            responses.append(client.request(method, url, headers=headers, content=body))
        elif method == "GET":
            responses.append(client.request(method, url, headers=headers, params=body))
        else:
            responses.append(client.request(method, url, headers=headers, json=body))
    return responses


def _faults(client: httpx.Client, faulty: FaultyUpstream) -> list[httpx.Response]:
    alice = _basic("alice", TOKEN)
    responses = []
    for mode in ("hang", "reset", "html", "garbage", "trickle"):
        faulty.plan(mode)
        responses.append(client.post("/v1/messages", headers=alice, json=MESSAGE))
    faulty.listen(False)
    try:
        responses += [client.get("/v1/balance", headers=alice) for _ in range(3)]  # breaker
    finally:
        faulty.listen(True)
    return responses


def test_no_secret_in_any_log_line_problem_or_header(tmp_path, redis_url, faulty, caplog):
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records reach it
    accounts = [{"username": "alice", "token": TOKEN, "credits": 100, "source": "Alice"},
                {"username": "bob", "token": OTHER_TOKEN, "credits": 100}]
    with sandbox_process(accounts, tmp_path) as sandbox_url:
        main = create_app(Settings(upstream_url=sandbox_url, redis_url=redis_url))
        broken = create_app(Settings(upstream_url=faulty.url, upstream_timeout=0.3,
                                     upstream_connect_timeout=0.3, breaker_failures=5))
        with served(main) as main_url, served(broken) as broken_url:
            with httpx.Client(base_url=main_url, timeout=10) as client:
                responses = _scenario(client)
            with httpx.Client(base_url=broken_url, timeout=10) as client:
                responses += _faults(client, faulty)

    statuses = sorted({r.status_code for r in responses})
    assert {200, 201, 202, 400, 401, 404, 422, 502, 503, 504} <= set(statuses), statuses
    assert any(r.headers.get("idempotent-replayed") for r in responses)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [formatter.format(record) for record in caplog.records]
    loggers = {record.name.split(".")[0] for record in caplog.records}
    assert {"uvicorn", "httpx", "httpcore"} <= loggers, loggers  # the capture really works
    for secret in SECRETS:
        for line in lines:
            assert secret not in line, line
        for response in responses:
            assert secret not in response.text, response.text
            for name, value in response.headers.items():
                assert secret not in value, (name, value)
    FIGURES.append(f"secrets: {len(responses)} answers ({statuses}), {len(lines)} log lines from "
          f"{sorted(loggers)}: no token or password in any")


def test_the_search_would_find_a_leak(caplog):
    """The test above is not vacuous: a token that is logged is found."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("proxy.anything").debug("calling with %s", TOKEN)
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    with pytest.raises(AssertionError):
        for record in caplog.records:
            assert TOKEN not in formatter.format(record)
