"""/healthz says the process answers; /readyz says the upstream answered lately, and probes it
(without credentials) when nothing went upstream for a while."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.mapping import MappingError, load_table
from proxy.sandbox import Sandbox
from proxy.sandbox import create_app as create_sandbox
from proxy.settings import Settings
from tests.conftest import BASIC, NOW, Recorder

BALANCE = b"<balance><status>0</status><message>Your balance is:7</message><balance>7</balance></balance>"
NO_TOKEN = b"<balance><status>504</status><message>Token not found</message></balance>"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self):
        return self.now


def client_for(upstream, clock: Clock, **settings) -> TestClient:
    app = create_app(Settings(**settings), transport=httpx.MockTransport(upstream), clock=clock)
    return TestClient(app)


def test_healthz_answers_without_asking_the_upstream():
    recorder = Recorder(BALANCE)
    with client_for(recorder, Clock()) as client:
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert recorder.requests == []


def test_readyz_probes_with_the_tables_envelope_and_no_credentials():
    recorder = Recorder(NO_TOKEN)
    with client_for(recorder, Clock()) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ready"
    (probe,) = recorder.requests
    assert "authorization" not in probe.headers
    assert recorder.envelope == "<balance><user/></balance>"


def test_readyz_trusts_a_recent_answer_and_probes_again_after_the_window():
    recorder, clock = Recorder(BALANCE), Clock()
    with client_for(recorder, clock, readiness_window=30) as client:
        client.get("/v1/balance", headers={"Authorization": BASIC})
        clock.now += timedelta(seconds=29)
        ready = client.get("/readyz")
        assert len(recorder.requests) == 1  # the client's call was proof enough
        clock.now += timedelta(seconds=2)
        again = client.get("/readyz")
    assert ready.status_code == again.status_code == 200
    assert ready.json()["upstream_answered_seconds_ago"] == 29
    assert len(recorder.requests) == 2
    assert "authorization" not in recorder.requests[1].headers


def test_readyz_is_503_when_the_upstream_does_not_answer():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with client_for(down, Clock()) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/not-ready"
    assert "did not answer the probe" in problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]


def test_readyz_is_503_when_the_upstream_answers_something_else_than_its_xml():
    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"<html><body>Maintenance</body></html>")

    with client_for(html, Clock()) as client:
        assert client.get("/readyz").status_code == 503


def test_readyz_against_the_sandbox():
    transport = httpx.ASGITransport(app=create_sandbox(Sandbox(seed=1)))
    with TestClient(create_app(transport=transport)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200, response.text


def test_a_probe_naming_no_operation_stops_the_table_loading():
    data = yaml.safe_load(resources.files("proxy").joinpath("mapping.yaml").read_text("utf-8"))
    data["readiness"]["probe"] = "getBalanse"
    with pytest.raises(MappingError, match=r"readiness\.probe: no operation 'getBalanse'"):
        load_table(data)
