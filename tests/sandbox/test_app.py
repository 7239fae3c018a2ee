"""The sandbox over HTTP, and its command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from proxy.sandbox import FixedClock, Sandbox, create_app
from proxy.sandbox import __main__ as cli
from tests.sandbox.support import envelope


@pytest.fixture
def http(sandbox: Sandbox) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sandbox)),
                             base_url="http://sandbox")


async def test_app_post_api_answers_xml_with_http_200(http: httpx.AsyncClient) -> None:
    async with http:
        response = await http.post("/api", content=envelope("balance"),
                                   headers={"Authorization": "Bearer demo-token",
                                            "Content-Type": "application/xml"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/xml; charset=utf-8"
    assert b"<message>Your balance is:1000</message>" in response.content


async def test_app_errors_are_http_200_too(http: httpx.AsyncClient) -> None:
    async with http:
        unauthorized = await http.post("/api", content=envelope("balance"))
        malformed = await http.post("/api", content=b"<<<",
                                    headers={"Authorization": "Bearer demo-token"})
    assert (unauthorized.status_code, malformed.status_code) == (200, 200)
    assert b"<status>504</status>" in unauthorized.content
    assert b"<status>1</status>" in malformed.content


async def test_app_records_the_request_body_as_received(sandbox: Sandbox,
                                                        http: httpx.AsyncClient) -> None:
    async with http:
        await http.post("/api", content=envelope("getCL"),
                        headers={"Authorization": "Bearer demo-token"})
    assert sandbox.requests[-1] == envelope("getCL")


async def test_app_healthz_and_other_routes(http: httpx.AsyncClient) -> None:
    async with http:
        health = await http.get("/healthz")
        wrong_method = await http.get("/api")
        unknown = await http.post("/v1/messages", content=b"")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (wrong_method.status_code, unknown.status_code) == (405, 404)


def test_cli_flags_win_over_environment() -> None:
    env = {"SANDBOX_PORT": "9100", "SANDBOX_QUIRKS": "true", "SANDBOX_SEED": "7",
           "SANDBOX_DB": "state.db"}
    args = cli.parse_args(["--port", "9200"], env)
    assert (args.host, args.port, args.quirks, args.seed, args.db) == (
        "127.0.0.1", 9200, True, 7, "state.db")
    assert cli.parse_args([], {}).seed is None


@pytest.mark.parametrize("suffix", ["json", "yaml"])
async def test_cli_accounts_file_adds_accounts(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"accounts.{suffix}"
    items = [{"username": "acme", "token": "acme-token", "credits": 70},
             {"username": "old", "token": "old-token", "credits": 5, "token_expired": True}]
    path.write_text(json.dumps(items) if suffix == "json" else
                    "- {username: acme, token: acme-token, credits: 70}\n"
                    "- {username: old, token: old-token, credits: 5, token_expired: true}\n")
    sandbox = cli.build(cli.parse_args(["--accounts", str(path), "--seed", "1"], {}))
    acme = await sandbox.handle(envelope("balance", username="acme"), "Bearer acme-token")
    old = await sandbox.handle(envelope("balance", username="old"), "Bearer old-token")
    assert b"<balance>70</balance>" in acme and b"<status>10</status>" in old


@pytest.mark.parametrize(("content", "error"), [
    ('{"username": "x"}', "expected a list"),
    ('[{"username": "x", "token": "t"}]', "needs username, token and credits"),
    ('[{"username": "x", "token": "t", "credits": 1, "colour": "red"}]', "unknown fields"),
])
def test_cli_bad_accounts_file_stops_with_a_message(tmp_path: Path, capsys: Any, content: str,
                                                    error: str) -> None:
    path = tmp_path / "accounts.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        cli.main(["--accounts", str(path)])
    assert error in str(stop.value.code)


def test_cli_main_prints_the_demo_credentials_and_serves(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: Any, tmp_path: Path) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(kwargs, app=app))
    cli.main(["--port", "9301", "--db", str(tmp_path / "s.db"), "--quirks"])
    out = capsys.readouterr().out
    assert "username demo, API token demo-token, 1000 credits" in out
    assert "curl -s http://127.0.0.1:9301/api -H 'Authorization: Bearer demo-token'" in out
    assert (served["host"], served["port"]) == ("127.0.0.1", 9301)
    assert (tmp_path / "s.db").exists()


async def test_app_serves_a_quirks_sandbox_too(clock: FixedClock) -> None:
    app = create_app(Sandbox(clock=clock, seed=1, quirks=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://sandbox") as http:
        response = await http.post("/api", content=envelope("balance"),
                                   headers={"Authorization": "Bearer demo-token"})
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<balance>\n')


def test_cli_clock_starts_where_told_and_ticks_per_exchange() -> None:
    args = cli.parse_args(["--clock", "2026-11-01T09:00:00+02:00"], {"SANDBOX_TICK": "15"})
    clock = cli.build(args).clock
    assert [clock.now().isoformat() for _ in range(2)] == [
        "2026-11-01T07:00:15+00:00", "2026-11-01T07:00:30+00:00"]  # the first: the seed's


@pytest.mark.parametrize(("flags", "error"), [
    (["--clock", "2026-11-01T09:00:00"], "is not a date-time with an offset"),
    (["--clock", "tomorrow"], "is not a date-time with an offset"),
    (["--clock", "2026-11-01T09:00:00+02:00", "--tick", "-1"], "only moves forward"),
])
def test_cli_bad_clock_stops_with_a_message(flags: list[str], error: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(flags)
    assert stop.value.code != 0
    assert error in str(stop.value.code) + capsys.readouterr().err
