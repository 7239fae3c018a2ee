from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis
from starlette.applications import Starlette

from tests.processes import ROOT, free_port

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=ZoneInfo("Asia/Jerusalem"))
FIGURES: list[str] = []  # measured by tests, printed once at the end of the run
BASIC = "Basic " + base64.b64encode(b"demo:demo-token").decode()


class Recorder:
    """A stand-in upstream for tests of the translation: answers with fixed XML, records
    every request it got."""

    def __init__(self, answer: bytes | Callable[[httpx.Request], httpx.Response] = b"") -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if callable(self.answer):
            return self.answer(request)
        return httpx.Response(200, content=self.answer,
                              headers={"Content-Type": "application/xml; charset=utf-8"})

    @property
    def envelope(self) -> str:
        """The last envelope without its XML declaration."""
        body = self.requests[-1].content.decode("utf-8")
        return body.split("?>", 1)[1].strip() if body.startswith("<?xml") else body


def deref(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs ("#/components/...") in the OpenAPI document."""
    while "$ref" in node:
        target: Any = spec
        for token in node["$ref"][2:].split("/"):
            target = target[token.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def schema_leaves(spec: dict[str, Any], schema: dict[str, Any], at: str = ""
                  ) -> dict[str, dict[str, Any]]:
    """Every leaf of a schema by its path (/recipients/*/phone), with the leaf's schema."""
    schema = deref(spec, schema)
    leaves: dict[str, dict[str, Any]] = {}
    combined = [b for key in ("allOf", "anyOf", "oneOf") for b in schema.get(key, [])]
    for branch in combined:
        if set(branch) != {"required"}:  # a branch that only requires adds no field
            leaves |= schema_leaves(spec, branch, at)
    if "properties" in schema:
        for name, sub in schema["properties"].items():
            leaves |= schema_leaves(spec, sub, f"{at}/{name}")
    elif schema.get("type") == "array":
        leaves |= schema_leaves(spec, schema["items"], f"{at}/*")
    elif not combined:
        leaves[at] = schema
    return leaves


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


# ── Servers of their own: redis-server, the sandbox ─────────────────────────────────────


@contextmanager
def spawned(argv: list[str], ready: str, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """A process that says ``ready`` on its output when it serves (its own word, not a
    sleep); its output keeps flowing to a reader so a full pipe never blocks it; stopped by
    its PID."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, **popen)
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout or ():
            lines.put(line)
        lines.put(None)  # the end of its output: it exited

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen: list[str] = []
        while (line := lines.get(timeout=60)) is None or ready not in line:
            if line is None:
                pytest.fail(f"{argv[0]} exited before it was ready:\n{''.join(seen)}")
            seen.append(line)
        yield process
    finally:
        if process.poll() is None:  # a test may have stopped it itself
            os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        reader.join(timeout=10)
        process.stdout.close()


# The spend guard's rates off, for tests that send thousands of changes a second from one
# credential to test something else (tests/test_guard.py tests the rates).
UNGUARDED: dict[str, None] = {"requests_per_second": None, "recipients_per_minute": None}


@pytest.fixture(scope="session", autouse=True)
def session_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The run's own $XDG_STATE_HOME, for what session and module fixtures start (the client
    scenarios' proxy, test_server's): never the machine's, where every earlier run's keys and
    budgets are (a day's budget once carried over from run to run). Tests get their own below."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("session-state"))
    yield
    if before is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own $XDG_STATE_HOME: the proxy's default state file (proxy/store/sqlite.py)
    is the test's, in process and in the processes it starts."""
    home = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


def redis_argv(directory: Path, port: int, *options: str) -> list[str]:
    """A redis-server (Debian package) on 127.0.0.1, persisting in ``directory`` (append-only
    file on, as the proxy asks) unless ``options`` say otherwise."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run tests/run, which installs it")
    return [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(directory),
            *options]


@contextmanager
def redis_process(directory: Path, *options: str, port: int | None = None
                  ) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A redis-server of a test's own: its URL and its process (to pause, kill, restart)."""
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    with spawned(redis_argv(directory, port, *options), "Ready to accept connections") as process:
        yield f"redis://127.0.0.1:{port}/0", process


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis://127.0.0.1:<free port>, the session's redis-server."""
    with redis_process(tmp_path_factory.mktemp("redis")) as (url, _):
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's server, emptied for this test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


@contextmanager
def sandbox_process(accounts: list[dict[str, Any]], workdir: Path,
                    *args: str) -> Iterator[str]:
    """``python -m proxy.sandbox`` on a free port with extra accounts (and flags); its API URL."""
    port = free_port()
    file = workdir / "accounts.json"
    file.write_text(json.dumps(accounts))
    argv = [sys.executable, "-m", "proxy.sandbox", "--host", "127.0.0.1", "--port", str(port),
            "--accounts", str(file), "--seed", "1", "--dlr-delay", "0", *args]
    with spawned(argv, "Uvicorn running on", cwd=ROOT):
        yield f"http://127.0.0.1:{port}/api"


# ── The app in this event loop, lifespan included ────────────────────────────────────────


class Clock:
    """The app's clock, moved by the test: ``clock.advance(hours=24)``."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@asynccontextmanager
async def serving(app: Starlette, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """An async client on the app, its lifespan running (for tests that need concurrency)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy.test",
                                     headers=headers or {"Authorization": BASIC}) as client:
            yield client


# ── A misbehaving upstream (tests/faulty_upstream.py), its own process ───────────────────


class FaultyUpstream:
    def __init__(self, api_port: int, control_port: int) -> None:
        self.url = f"http://127.0.0.1:{api_port}/api"
        self.control = httpx.Client(base_url=f"http://127.0.0.1:{control_port}", timeout=10)

    def plan(self, *modes: str, mix: dict[str, int] | None = None, seed: int = 0) -> None:
        self.control.post("/plan", json={"modes": modes, "mix": mix or {"ok": 1}, "seed": seed})

    def listen(self, on: bool) -> None:
        self.control.post("/listen", json={"on": on})

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.control.get("/stats").json()
        return stats


@pytest.fixture(scope="session")
def faulty_upstream() -> Iterator[FaultyUpstream]:
    server = subprocess.Popen([sys.executable, "-m", "tests.faulty_upstream"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert server.stdout is not None
        _, api, control = server.stdout.readline().split()  # its own word that it listens
        upstream = FaultyUpstream(int(api), int(control))
        yield upstream
        upstream.control.close()
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


@pytest.fixture
def faulty(faulty_upstream: FaultyUpstream) -> FaultyUpstream:
    """The session's misbehaving upstream, listening and answering "ok" until told otherwise."""
    faulty_upstream.listen(True)
    faulty_upstream.plan()
    return faulty_upstream


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
