"""The benchmark's processes: servers on free ports of 127.0.0.1 and wrk in front of them.

Every server is a fresh ``python -m …`` process in its own session, up when its /healthz
answers, stopped by its process id (its group, for the workers uvicorn forks) however the
block that started it ends: started, waited for and stopped as the tests' are
(tests/processes.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.processes import free_port, spawn, stop_group, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
LUA = ROOT / "bench" / "lua" / "exchange.lua"
PYTHON = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def started(name: str, args: list[str], grace: float = 15) -> Iterator[Server]:
    """A ``python`` process on a free port (``{port}`` in ``args`` is replaced by it), not yet
    waited for (:func:`wait_ready`), stopped after the block."""
    CACHE.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [PYTHON, *(arg.format(port=port) for arg in args)]
    server = Server(name, port, spawn(argv, CACHE / f"{name}.log", stdout=True))
    try:
        yield server
    finally:
        stop(server, grace)


def wait_ready(server: Server, seconds: float = 60) -> None:
    wait_healthy(server.process, server.url, CACHE / f"{server.name}.log", seconds)


def stop(server: Server, grace: float = 15) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace`` seconds."""
    stop_group(server.process, grace)


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """User and system CPU of a process so far (``/proc/PID/stat``, fields 14 and 15), or of
    one of its threads (``/proc/PID/task/TID/stat``)."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    fields = Path(path).read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


# ── wrk ──────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Request:
    """One request as wrk repeats it (exchange.lua reads it from the environment)."""

    name: str
    method: str
    path: str
    body: bytes | None
    headers: Mapping[str, str]
    expect: str            # a plain substring every answer must contain
    keyed: bool = False    # a fresh Idempotency-Key on every request


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float | None = None  # the server's CPU per request, where measured
    upstream_cpu_us: float | None = None  # its upstream's, where measured
    loop_cpu_us: float | None = None  # of cpu_us, the main thread's (the event loop's)


def _environment(request: Request) -> dict[str, str]:
    body_file = ""
    if request.body is not None:
        CACHE.mkdir(parents=True, exist_ok=True)
        path = CACHE / f"{request.name}.body"
        path.write_bytes(request.body)
        body_file = str(path)
    return {**os.environ, "BENCH_METHOD": request.method, "BENCH_EXPECT": request.expect,
            "BENCH_BODY_FILE": body_file, "BENCH_KEY": "1" if request.keyed else "",
            "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in request.headers.items())}


def start_wrk(server: Server, request: Request, concurrency: int,
              seconds: float) -> subprocess.Popen[str]:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
               "--timeout", "10s", "-s", str(LUA), server.url + request.path]
    return subprocess.Popen(command, env=_environment(request), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish_wrk(process: subprocess.Popen[str], what: str) -> Load:
    output, _ = process.communicate(timeout=600)
    found = re.search(r"^BENCH (\{.*\})$", output, re.MULTILINE)
    if process.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed for {what}:\n{output}")
    data = json.loads(found.group(1))
    return Load(data["requests"] / (data["duration_us"] / 1e6), data["p50_us"] / 1000,
                data["p99_us"] / 1000, data["requests"], data["errors"] + data["unexpected"])


def wrk(server: Server, request: Request, concurrency: int, seconds: float,
        upstream: Server | None = None) -> Load:
    """wrk for ``seconds``, with the server's CPU per request (one process: no workers), its
    main thread's, and its upstream's. CPU per request is what the machine's other load
    disturbs least."""
    watched = [server] if upstream is None else [server, upstream]
    before = [cpu_seconds(each.pid) for each in watched]
    loop_before = cpu_seconds(server.pid, server.pid)
    load = finish_wrk(start_wrk(server, request, concurrency, seconds),
                      f"{request.name} on {server.name} c={concurrency}")
    requests = max(1, load.requests)
    loop = 1e6 * (cpu_seconds(server.pid, server.pid) - loop_before) / requests
    used = [1e6 * (cpu_seconds(each.pid) - then) / requests
            for each, then in zip(watched, before, strict=True)]
    return dataclasses.replace(load, cpu_us=used[0], loop_cpu_us=loop,
                               upstream_cpu_us=used[1] if len(used) > 1 else None)


# ── The stacks measured ──────────────────────────────────────────────────────────────────────

USERNAME, TOKEN = "bench", "bench-token"  # the account every upstream knows (raw_upstream.py)
CREDITS = 10**15  # the sandbox's: a send to 1,000 costs 1,000; runs must never meet status 4


def _sandbox_args(dlr_delay: float) -> list[str]:
    accounts = CACHE / "accounts.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    accounts.write_text(json.dumps([{"username": USERNAME, "token": TOKEN, "credits": CREDITS}]))
    return ["-m", "proxy.sandbox", "--accounts", str(accounts), "--dlr-delay", str(dlr_delay),
            "--port", "{port}"]


# wrk is one credential sending thousands a second: the spend guard's default rates
# (proxy/guard.py) would refuse nearly all of it. --proxy-args, coming after, may set them
# again, to measure the guard (bench/RESULTS.md, issue 15).
UNGUARDED = ("--requests-per-second", "none", "--recipients-per-minute", "none")


@contextmanager
def stack(upstream: str, front: str | None, *, proxy_args: tuple[str, ...] = (),
          workers: int = 1, dlr_delay: float = 2, grace: float = 15) -> Iterator[list[Server]]:
    """The upstream ("raw": bench/raw_upstream.py, or "sandbox") and what stands in front
    of it ("proxy", "floor" or None), started together, both up when the block runs."""
    args = (["-m", "bench.raw_upstream", "--port", "{port}"] if upstream == "raw"
            else _sandbox_args(dlr_delay))
    with started(upstream, args, grace) as back:
        servers = [back]
        if front is None:
            wait_ready(back)
            yield servers
            return
        url = f"{back.url}/api"
        # The proxy's state (its Idempotency-Keys) in a directory of its own, removed after:
        # in the default one, every run's keys piled up until the cap refused new ones.
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="state-", dir=CACHE) as state:
            front_args = (["-m", "bench.floor", "--upstream-url", url, "--port", "{port}"]
                          if front == "floor" else
                          ["-m", "proxy", "--upstream-url", url, "--workers", str(workers),
                           "--state-dir", state, *UNGUARDED, *proxy_args, "--port", "{port}"])
            with started(front, front_args, grace) as server:
                servers.append(server)
                for each in servers:
                    wait_ready(each)
                yield servers
