"""bench/ keeps measuring what it says: the floor answers what the proxy answers, the raw
upstream answers as the sandbox does, the hostile body is what the limits accept. No timing:
speed is bench/run's to measure (bench/RESULTS.md)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from bench import attacks, harness, profiles
from bench.servers import Server, started, wait_ready
from proxy.app import load_spec
from proxy.settings import Settings


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Server]]:
    """The raw upstream, and the floor and the proxy both in front of it."""
    with ExitStack() as stack:
        raw = stack.enter_context(started("raw", ["-m", "bench.raw_upstream", "--port", "{port}"]))
        url = f"{raw.url}/api"
        floor = stack.enter_context(started(
            "floor", ["-m", "bench.floor", "--upstream-url", url, "--port", "{port}"]))
        proxy = stack.enter_context(started(
            "proxy", ["-m", "proxy", "--upstream-url", url, "--port", "{port}"]))
        for server in (raw, floor, proxy):
            wait_ready(server)
        yield {"raw": raw, "floor": floor, "proxy": proxy}


def _answer(server: Server, request: harness.Request) -> httpx.Response:
    headers = dict(request.headers)
    if request.keyed:
        headers["Idempotency-Key"] = f"test-{request.name}"
    return httpx.request(request.method, server.url + request.path, content=request.body,
                         headers=headers, timeout=30)


@pytest.mark.parametrize("name", ["balance", "send_1", "send_1000", "dlr_1000"])
def test_the_floor_answers_what_the_proxy_answers(servers, name):
    op = next(op for op in harness.operations() if op.name == name)
    proxy = _answer(servers["proxy"], harness.request_of(op, harness.PROXY))
    floor = _answer(servers["floor"], harness.request_of(op, harness.FLOOR))
    assert proxy.status_code == floor.status_code == (202 if name.startswith("send") else 200)
    if op.rows is None:
        assert floor.json() == proxy.json()
    else:  # the proxy's page also says what it could not reach (issue 12); the rows are equal
        assert floor.json() == {"data": proxy.json()["data"]}
        assert len(proxy.json()["data"]) == op.rows


def test_the_proxys_keyed_send_is_replayed_not_sent_again(servers):
    op = next(op for op in harness.operations() if op.name == "send_1")
    request = harness.request_of(op, harness.PROXY)
    assert request.keyed
    first, again = _answer(servers["proxy"], request), _answer(servers["proxy"], request)
    assert again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"


def test_the_raw_upstream_answers_each_command_as_the_sandbox_did(servers):
    url = servers["raw"].url + "/api"
    for command, expected in (("balance", b"<balance>999999000</balance>"),
                              ("sms", b"<shipment_id>"), ("bulk", b"<shipment_id>"),
                              ("dlrByDate", b"<transactions><transaction>")):
        body = f"<?xml version='1.0'?>\n<{command}><user/></{command}>".encode()
        answer = httpx.post(url, content=body)
        assert answer.status_code == 200
        assert answer.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<' + command.encode())
        assert b"<status>0</status>" in answer.content and expected in answer.content
    report = httpx.post(url, content=b"<dlrByDate/>").content
    assert report.count(b"<transaction>") == 1000
    assert b"<status>997</status>" in httpx.post(url, content=b"<nonsense/>").content
    assert httpx.get(servers["raw"].url + "/nowhere").status_code == 404


def test_the_raw_upstream_keeps_the_connection_and_answers_pipelined_requests(servers):
    request = (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n<balance>"
               b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    with socket.create_connection(("127.0.0.1", servers["raw"].port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 2 or not received.endswith(b'"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed after {received!r}"
            received += chunk
    assert b"<balance>" in received and received.endswith(b'{"status":"ok"}')


def test_the_hostile_body_is_the_largest_the_limits_accept():
    schemas = load_spec()["components"]["schemas"]
    per_message = schemas["BulkMessage"]["properties"]["recipients"]["maxItems"]
    body = attacks.hostile_body(300_000)
    document = json.loads(body)
    sizes = [len(message["recipients"]) for message in document["messages"]]
    assert len(body) <= 300_000 and len(body) > 300_000 - 100
    assert max(sizes) == per_message and len(sizes) <= schemas["SendBulkRequest"][
        "properties"]["messages"]["maxItems"]
    assert {r["phone"] for m in document["messages"] for r in m["recipients"]} == {"x"}


def test_each_hostile_body_is_within_the_body_limit_and_the_largest_of_its_shape():
    limit = Settings().max_body_bytes
    bodies = attacks.hostile_bodies(limit)
    assert all(len(body) <= limit for _, body in bodies.values())
    for shape in ("empty arrays", "short strings"):
        assert len(bodies[shape][1]) > limit - 10
        assert len(json.loads(bodies[shape][1])["recipients"]) > 1_000_000
    wrong = json.loads(bodies["10,000 recipients, the last wrong"][1])["recipients"]
    assert len(wrong) == 10_000 and wrong[-1] == {"phone": "12345"}
    assert all(r["phone"] == "0501234567" for r in wrong[:-1])


def test_a_profile_is_summed_by_function_module_and_project_module(tmp_path):
    raw = tmp_path / "stacks.txt"
    raw.write_text(
        "run (uvicorn/server.py:10);handle (/x/site-packages/starlette/routing.py:5);"
        "emit (/w/proxy/emit.py:3) 3\n"
        "run (uvicorn/server.py:10);log (/w/proxy/logs.py:8);dumps (/usr/lib/python3.11/json/"
        "__init__.py:2) 1\n")
    profile = profiles.summarise("proxy", raw)
    assert profile.samples == 4
    assert profile.modules == {"proxy.emit": 3, "stdlib json": 1}
    assert profile.project == {"proxy.emit": 3, "proxy.logs": 1}
    assert profile.functions["run (uvicorn/server.py)"] == 4
