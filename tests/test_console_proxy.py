"""The sandbox console on the proxy: one sandbox behind the API and /sandbox in sandbox mode,
nothing of it against the real upstream, and an open event stream never holds up a stop."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.settings import Settings
from tests.processes import free_port, running

AUTH = ("demo", "demo-token")
WINDOW = {"from": "2026-11-25T00:00:00+02:00", "to": "2026-11-25T23:59:00+02:00"}
MESSAGE = {"sender": "DemoAPI", "text": "Your order has shipped",
           "recipients": [{"phone": "+972501234567", "external_id": "order-17"},
                          {"phone": "052-765-4321"}]}


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    for name, value in {"SANDBOX_CLOCK": "2026-11-25T22:14:00+02:00", "SANDBOX_SEED": "1",
                        "SANDBOX_DLR_DELAY": "2"}.items():
        monkeypatch.setenv(name, value)
    return TestClient(create_app(Settings(sandbox=True, workers=3)))


def test_the_console_and_the_api_share_one_sandbox(proxy: TestClient) -> None:
    with proxy:
        campaign_id = proxy.post("/v1/messages", auth=AUTH, json=MESSAGE).json()["campaign_id"]
        state = proxy.get("/sandbox/api/state").json()
        assert [c["id"] for c in state["campaigns"]] == [campaign_id]
        assert (state["accounts"][0]["credits"], state["workers"]) == (998, 3)

        proxy.post("/sandbox/api/delivery-reports", json={
            "campaign_id": campaign_id, "phone": "052-765-4321", "outcome": "expired"})
        proxy.post("/sandbox/api/clock", json={"seconds": 2})
        reports = proxy.get("/v1/reports/dlr", auth=AUTH, params=WINDOW).json()["data"]
        assert [(r.get("external_id", ""), r["state"]) for r in reports] == [
            ("", "expired"), ("order-17", "delivered")]

        proxy.post("/sandbox/api/replies", json={"phone": "+972501234567", "text": "תודה!"})
        incoming = proxy.get("/v1/incoming-messages", auth=AUTH, params=WINDOW).json()["data"]
        assert incoming[-1] == {"sender": "+972501234567", "recipient": "+972500000000",
                                "text": "תודה!", "received_at": "2026-11-25T22:14:00+02:00"}

        proxy.post("/sandbox/api/opt-outs", json={"phone": "052-765-4321"})
        blacklist = proxy.get("/v1/blacklist", auth=AUTH, params=WINDOW).json()["data"]
        assert {"phone": "+972527654321", "added_at": "2026-11-25T22:14:00+02:00"} in blacklist
        refused = proxy.post("/v1/messages", auth=AUTH, json={**MESSAGE, "recipients": [
            {"phone": "052-765-4321"}]})
        assert refused.json()["type"] == "/problems/all-recipients-blacklisted"


def test_a_console_refusal_is_the_proxys_problem(proxy: TestClient) -> None:
    with proxy:
        refused = proxy.post("/sandbox/api/resets", json={"account": "nobody"})
        wrong = proxy.get("/sandbox/api/replies")
    assert refused.status_code == 404 and refused.json()["request_id"]
    assert refused.headers["content-type"] == "application/problem+json"
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST")


@pytest.mark.parametrize("path", ["/sandbox", "/sandbox/api/state", "/sandbox/api/events",
                                  "/sandbox/static/console.js"])
def test_nothing_of_the_console_against_the_real_upstream(path: str) -> None:
    with TestClient(create_app(Settings())) as client:
        read = client.get(path)
        acted = client.post("/sandbox/api/resets", json={"account": "demo"})
    for response in (read, acted):
        assert response.status_code == 404
        assert response.json()["type"] == "/problems/not-found"


def _listen(url: str, seen: list[str], ready: threading.Event) -> None:
    with httpx.stream("GET", url, timeout=httpx.Timeout(5, read=60)) as response:
        for line in response.iter_lines():
            seen.append(line)
            if line.startswith("event: snapshot"):
                ready.set()
    seen.append("<ended>")


def _stopped_with_a_stream_open(base: str, stop: Any) -> list[str]:
    seen: list[str] = []
    ready = threading.Event()
    reader = threading.Thread(target=_listen, args=(base + "/sandbox/api/events", seen, ready),
                              daemon=True)
    reader.start()
    assert ready.wait(20), seen
    # SIGTERM, as docker stop: uvicorn stops gracefully and re-raises it (-15); a server that
    # waited for the stream would be killed (-9) after 30 s.
    assert stop() == -signal.SIGTERM
    reader.join(10)
    return seen


def test_an_open_event_stream_does_not_hold_up_a_stopping_proxy(tmp_path) -> None:
    with running(tmp_path, ["--sandbox"]) as server:
        seen = _stopped_with_a_stream_open(server.base, server.stop)
        said = [line["message"] for line in server.log_lines()]
    assert seen[-1] == "<ended>"
    assert "Application shutdown complete." in said


def test_an_open_event_stream_does_not_hold_up_a_stopping_sandbox(tmp_path) -> None:
    port = free_port()
    with running(tmp_path, ["--port", str(port)], port=port,
                 command=[sys.executable, "-m", "proxy.sandbox"]) as server:
        page = httpx.get(server.base + "/sandbox")
        assert page.status_code == 200 and "Sandbox console" in page.text
        seen = _stopped_with_a_stream_open(server.base, server.stop)
    assert seen[-1] == "<ended>"
