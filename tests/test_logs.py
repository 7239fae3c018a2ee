"""Structured logs as an operator reads them: one JSON line per request, request ids that tie
a client's report to a line, and no secret anywhere."""

from __future__ import annotations

import base64
import copy
import json
import logging
import re

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from pythonjsonlogger.json import JsonFormatter
from starlette.testclient import TestClient

from proxy import logs
from proxy.app import create_app
from tests.conftest import BASIC
from tests.processes import running

PASSWORD = "S3cretPassw0rd"
FIELDS = {"time", "level", "logger", "pid", "message", "request_id", "method", "route", "status",
          "duration_ms", "upstream_command", "upstream_status", "upstream_ms"}


def test_one_json_line_per_request_with_ids_and_no_secrets(tmp_path):
    wrong = "Basic " + base64.b64encode(b"demo:wrong-token-123").decode()
    with running(tmp_path, ["--sandbox"]) as server, httpx.Client(base_url=server.base) as client:
        kept = client.get("/v1/balance", headers={"Authorization": BASIC,
                                                  "X-Request-ID": "order-17.retry:2"})
        bearer = client.get("/v1/balance", headers={
            "Authorization": "Bearer demo-token", "X-SMSLeads-Username": "demo",
            "X-Request-ID": 'a "quoted" id'})
        too_long = client.get("/v1/balance", headers={"Authorization": BASIC,
                                                      "X-Request-ID": "x" * 129})
        created = client.post("/v1/subscribers", headers={"Authorization": BASIC}, json={
            "name": "Shop", "username": "shop01", "password": PASSWORD, "sender": "Shop",
            "credits": 5})
        refused = client.get("/v1/balance", headers={"Authorization": wrong})
        malformed = client.post("/v1/messages", content=b"{", headers={
            "Authorization": BASIC, "Content-Type": "application/json"})
        server.stop()
    responses = [kept, bearer, too_long, created, refused, malformed]

    assert kept.headers["x-request-id"] == "order-17.retry:2"
    for replaced in (bearer, too_long):
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])
    assert created.status_code == 201, created.text
    assert (refused.status_code, malformed.status_code) == (401, 400)
    for problem in (refused, malformed):
        assert problem.json()["request_id"] == problem.headers["x-request-id"]

    text = server.stderr.read_text("utf-8")
    assert all(line.startswith("{") for line in text.splitlines())  # JSON only, no access log
    for secret in ("demo-token", BASIC.split()[1], PASSWORD, "wrong-token-123",
                   base64.b64encode(b"demo:wrong-token-123").decode()):
        assert secret not in text
    lines = [line for line in server.log_lines() if line["logger"] == "smsleads_proxy.access"
             and line["route"] != "/healthz"]
    assert [line["request_id"] for line in lines] == [r.headers["x-request-id"] for r in responses]
    assert [(line["method"], line["route"], line["status"]) for line in lines] == [
        ("GET", "/v1/balance", 200), ("GET", "/v1/balance", 200), ("GET", "/v1/balance", 200),
        ("POST", "/v1/subscribers", 201), ("GET", "/v1/balance", 401),
        ("POST", "/v1/messages", 400)]
    assert [(line["upstream_command"], line["upstream_status"]) for line in lines] == [
        ("balance", "0"), ("balance", "0"), ("balance", "0"), ("addSub", "0"),
        ("balance", "3"), (None, None)]
    for line in lines:
        assert set(line) == FIELDS
        assert line["duration_ms"] >= 0
        if line["upstream_command"]:
            assert 0 <= line["upstream_ms"] <= line["duration_ms"]
    assert not any(line["logger"] == "uvicorn.access" for line in server.log_lines())


def test_a_bug_is_a_problem_with_the_request_id_and_a_logged_500(caplog):
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in the transport")

    app = create_app(transport=httpx.MockTransport(broken))
    with caplog.at_level(logging.INFO, logger=logs.REQUEST_LOGGER), \
            TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/balance", headers={"Authorization": BASIC,
                                                      "X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "bug-1"
    assert response.json()["request_id"] == "bug-1"
    assert response.json()["type"] == "/problems/internal-error"
    (record,) = [r for r in caplog.records if r.name == logs.REQUEST_LOGGER]
    assert (record.request_id, record.status, record.upstream_status) == ("bug-1", 500,
                                                                          "internal-error")


def test_the_formatter_scrubs_credentials_and_held_secrets():
    logs.hide("held-provider-token-9")
    record = logging.LogRecord("x", logging.ERROR, __file__, 1,
                               "sent Authorization: Basic ZGVtbzpkZW1vLXRva2Vu and "
                               "bearer abc.def~ and held-provider-token-9", None, None)
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"] == ("sent Authorization: Basic <redacted> and bearer <redacted> "
                               "and <redacted>")


def test_every_line_is_json_and_redacted_whoever_logs_it(capsys):
    """The proxy's own loggers and any library's (asyncio, redis, aiohttp) share one
    formatter: the idempotency warnings, for one, are JSON lines like the rest."""
    import logging.config
    from pathlib import Path

    for path in Path(logs.__file__).parent.rglob("*.py"):
        for name in re.findall(r"getLogger\(([^)]*)\)", path.read_text()):
            assert name in ("REQUEST_LOGGER", "") or name.startswith('"smsleads_proxy'), (
                path, name)
    names = ["", "uvicorn", "uvicorn.access", "smsleads_proxy"]
    kept = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                   logging.getLogger(name).propagate) for name in names}
    try:
        logging.config.dictConfig(logs.config("info"))
        logging.getLogger("smsleads_proxy.idempotency").warning(
            "could not settle an idempotency key", extra={"reason": "Redis failed"})
        logging.getLogger("asyncio").error("Task exception: Authorization: Bearer tok-123")
        logging.getLogger("some.library").info("below the root's level: not printed")
    finally:  # the process's logging as it was, for the tests after this one
        for name, (handlers, level, propagate) in kept.items():
            logger = logging.getLogger(name)
            logger.handlers[:], logger.propagate = handlers, propagate
            logger.setLevel(level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("smsleads_proxy.idempotency", "WARNING"), ("asyncio", "ERROR")]
    assert lines[0]["reason"] == "Redis failed"
    assert "tok-123" not in lines[1]["message"]


# ── The formatter's short way, held to python-json-logger's own ─────────────────────────────

# Pieces that make and almost make credentials: schemes in any case (and the letters Python's
# IGNORECASE also takes for s and i), every kind of space, quotes and escapes JSON writes.
_TEXT = st.lists(st.sampled_from([
    *"aBcR sS\t\n\u2003\u0085\u017f\u0131\u0130\"\\é😀=+/-_.~:", "Basic ", "bearer ",
    "BEARER\t", "Basic\u2003", "ba\u017fic ", "BAS\u0130C ", "held-secret-77", "dG9rZW4=", "x"]),
    max_size=12).map("".join)
_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT
    | st.datetimes() | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6)
_NAMES = st.sampled_from(["request_id", "route", "reason", "status", "_private", "color_message",
                          "detail", "upstream_ms"])


@given(message=_TEXT, args=st.lists(_VALUE, max_size=2), extra=st.dictionaries(_NAMES, _VALUE),
       level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]))
@settings(max_examples=300, deadline=None)
def test_the_formatters_short_way_writes_what_python_json_logger_writes(message, args, extra,
                                                                         level):
    logs.hide("held-secret-77")
    formatter = logs.JsonFormatter()
    text = message + " %s" * len(args)
    record = logging.getLogger("smsleads_proxy.x").makeRecord(
        "smsleads_proxy.x", level, __file__, 1, text, tuple(args), None, extra=extra)
    reference = logs.redact(JsonFormatter.format(formatter, copy.copy(record)))
    assert formatter.format(record) == reference


@given(_TEXT)
@settings(max_examples=500, deadline=None)
def test_redaction_finds_every_credential_the_pattern_finds(text):
    logs.hide("held-secret-77")
    expected = logs._CREDENTIALS.sub(rf"\1 {logs.REDACTED}", text).replace(
        "held-secret-77", logs.REDACTED)
    assert logs.redact(text) == expected
