"""/metrics as Prometheus scrapes it: by route template, method and status; upstream calls by
command and upstream status; latency histograms; in-flight requests; summed over workers."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.metrics import forget_dead_workers
from tests.conftest import BASIC, NOW, Recorder
from tests.processes import running

BALANCE = b"<balance><status>0</status><message>Your balance is:7</message><balance>7</balance></balance>"
REFUSED = b"<balance><status>3</status><message>Username or password is incorrect</message></balance>"
LIST = (b"<getCLbyID><status>0</status><message>ok</message><cl><id>21518</id><name>VIP</name>"
        b"<numbers></numbers></cl></getCLbyID>")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of one scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def test_requests_are_counted_by_route_template_method_and_status():
    def upstream(request: httpx.Request) -> httpx.Response:
        body = request.content
        answer = LIST if b"getCLbyID" in body else REFUSED if b"wrong" in body else BALANCE
        return httpx.Response(200, content=answer)

    app = create_app(transport=httpx.MockTransport(Recorder(upstream)), clock=lambda: NOW)
    wrong = "Basic " + base64.b64encode(b"wrong:token").decode()
    with TestClient(app, headers={"Authorization": BASIC}) as client:
        for _ in range(2):
            assert client.get("/v1/balance").status_code == 200
        assert client.get("/v1/balance", headers={"Authorization": wrong}).status_code == 401
        assert client.get("/v1/balance", headers={"Authorization": ""}).status_code == 401
        assert client.get("/v1/contact-lists/21518").status_code == 200
        assert client.get("/v1/contact-lists/99").status_code == 200
        assert client.get("/no/such/thing").status_code == 404
        assert client.request("BREW", "/v1/balance").status_code == 405
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    scrape = samples(response.text)
    requests = "smsleads_proxy_requests_total"
    assert value(scrape, requests, route="/v1/balance", method="GET", status="200") == 2
    assert value(scrape, requests, route="/v1/balance", method="GET", status="401") == 2
    assert value(scrape, requests, route="/v1/contact-lists/{id}", method="GET", status="200") == 2
    assert value(scrape, requests, route="<unmatched>", method="GET", status="404") == 1
    assert value(scrape, requests, route="/v1/balance", method="other", status="405") == 1
    assert not any("21518" in str(labels) for _, labels in scrape)  # never the raw path
    calls = "smsleads_proxy_upstream_calls_total"
    assert value(scrape, calls, command="balance", upstream_status="0") == 2
    assert value(scrape, calls, command="balance", upstream_status="3") == 1
    assert value(scrape, calls, command="getCLbyID", upstream_status="0") == 2
    histogram = "smsleads_proxy_request_duration_seconds_count"
    assert value(scrape, histogram, route="/v1/balance", method="GET") == 4
    assert value(scrape, "smsleads_proxy_upstream_duration_seconds_count", command="balance") == 3
    assert value(scrape, "smsleads_proxy_upstream_duration_seconds_bucket",
                 command="balance", le="+Inf") == 3


def test_an_unreachable_upstream_is_counted_by_its_failure():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with TestClient(create_app(transport=httpx.MockTransport(down)),
                    headers={"Authorization": BASIC}) as client:
        assert client.get("/v1/balance").status_code == 503
        scrape = samples(client.get("/metrics").text)
    assert value(scrape, "smsleads_proxy_upstream_calls_total",
                 command="balance", upstream_status="upstream-unreachable") == 1


async def test_in_flight_counts_requests_being_answered():
    release, arrived = asyncio.Event(), asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await release.wait()
        return httpx.Response(200, content=BALANCE)

    app = create_app(transport=httpx.MockTransport(slow))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
        pending = asyncio.create_task(client.get("/v1/balance", headers={"Authorization": BASIC}))
        await arrived.wait()
        during = samples((await client.get("/metrics")).text)
        release.set()
        assert (await pending).status_code == 200
        after = samples((await client.get("/metrics")).text)
    gauge = "smsleads_proxy_requests_in_flight"
    assert value(during, gauge) == 2  # the held request and the scrape itself
    assert value(after, gauge) == 1  # the scrape alone


def _balance(base: str) -> int:
    response = httpx.get(base + "/v1/balance", headers={"Authorization": BASIC,
                                                        "Connection": "close"})
    return response.status_code


def test_two_workers_add_up_and_the_metrics_directory_goes_at_exit(tmp_path):
    with running(tmp_path, ["--sandbox", "--workers", "2"]) as server:
        (start,) = [line for line in server.log_lines() if line["message"] == "starting"]
        directory = Path(start["metrics_dir"])
        assert directory.is_dir()
        sent, pids = 0, set()
        with ThreadPoolExecutor(8) as pool:
            # Until both workers have answered some (the kernel decides who accepts); bounded.
            for _ in range(25):
                assert set(pool.map(_balance, [server.base] * 16)) == {200}
                sent += 16
                pids = {line["pid"] for line in server.log_lines()
                        if line.get("route") == "/v1/balance"}
                if len(pids) == 2:
                    break
        assert len(pids) == 2, "one worker answered everything"
        for _ in range(4):  # whichever worker answers the scrape sees the sum
            scrape = samples(httpx.get(server.base + "/metrics",
                                       headers={"Connection": "close"}).text)
            assert value(scrape, "smsleads_proxy_requests_total",
                         route="/v1/balance", method="GET", status="200") == sent
            assert value(scrape, "smsleads_proxy_upstream_calls_total",
                         command="balance", upstream_status="0") == sent
        assert {path.name.split("_")[0] for path in directory.iterdir()} >= {"counter",
                                                                               "histogram"}
        assert server.stop() == 0
    assert not directory.exists()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ



def test_a_dead_workers_in_flight_gauge_is_dropped_but_its_counts_stay(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # a worker that is no more
    dead.wait()
    for name in (f"gauge_livesum_{dead.pid}.db", f"counter_{dead.pid}.db",
                 f"gauge_livesum_{os.getpid()}.db"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    forget_dead_workers()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead.pid}.db", f"gauge_livesum_{os.getpid()}.db"])
