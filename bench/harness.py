"""The benchmark: the sandbox's XML API called directly, against the proxy in front of it.

    bench/run                         # the whole run, about 10 minutes; see --help
    bench/run --only balance --duration 5 --skip-rss --skip-workers --skip-micro
    bench/run --only balance --profile  # also where the proxy spends its CPU (py-spy)
    bench/run --proxy-args="--log-level warning"   # a variant of the proxy

Every cell gets a fresh sandbox (``python -m proxy.sandbox``) and a fresh proxy
(``python -m proxy --upstream-url …``) on free ports of 127.0.0.1, both uvicorn with uvloop
and httptools, one worker; wrk drives one of them for a bounded time; both are stopped by
their process id. The direct XML bodies are the envelopes the proxy's own table builds for
the same request, so both sides ask the sandbox for exactly the same work.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from lxml import etree

from proxy.mapping import load_table
from proxy.sandbox import ISRAEL
from proxy.translate import build_envelope

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
LUA = ROOT / "bench" / "lua" / "exchange.lua"
PYTHON = sys.executable
USERNAME, TOKEN = "bench", "bench-token"
CREDITS = 10**15  # a send to 1,000 costs 1,000; runs must never meet status 4
DESTINATIONS = 1000
CONCURRENCIES = (1, 32)
PROFILE_TOP = 40  # functions listed from a profile
PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "httpx", "httpcore", "aiohttp",
            "lxml", "jsonschema", "jsonschema-rs", "phonenumbers")
TABLE = load_table()


# ── Operations ───────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str                  # the proxy's path, with its query
    body: dict[str, Any] | None
    envelope: bytes            # the same request as direct XML
    proxy_expect: str          # in every proxy answer
    rows: int | None = None    # answer rows both sides must return (DLR)
    prepare: bool = False      # needs delivery reports in the sandbox first


def _recipients(count: int, prefix: str) -> list[dict[str, str]]:
    return [{"phone": f"050{1_000_000 + i:07d}", "external_id": f"{prefix}-{i}"}
            for i in range(count)]


def _envelope(operation_id: str, body: Any = None, query: dict[str, Any] | None = None) -> bytes:
    document: dict[str, Any] = {"auth": {"username": USERNAME}, "path": {}, "query": query or {}}
    if body is not None:
        document["body"] = body
    envelope = build_envelope(TABLE.operation(operation_id), document)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def operations() -> list[Operation]:
    now = datetime.now(ISRAEL).replace(second=0, microsecond=0)
    window = {"from": (now - timedelta(days=1)).isoformat(),
              "to": (now + timedelta(days=1)).isoformat()}
    one = {"sender": "BenchTest", "recipients": _recipients(1, "one"), "text": "Bench message"}
    many = {"sender": "BenchTest", "recipients": _recipients(DESTINATIONS, "many"),
            "text": "Bench message"}
    query = "&".join(f"{k}={v.replace('+', '%2B')}" for k, v in window.items())
    return [
        Operation("balance", "GET", "/v1/balance", None, _envelope("getBalance"), '"credits"'),
        Operation("send_1", "POST", "/v1/messages", one, _envelope("sendMessage", one),
                  '"campaign_id"'),
        Operation("send_1000", "POST", "/v1/messages", many, _envelope("sendMessage", many),
                  '"campaign_id"'),
        Operation("dlr_1000", "GET", f"/v1/reports/dlr?{query}", None,
                  _envelope("listDeliveryReports", query=window), '"data"',
                  rows=DESTINATIONS, prepare=True),
    ]


# ── Processes ────────────────────────────────────────────────────────────────────────────────


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def serve(name: str, args: list[str], port: int) -> Iterator[Server]:
    """A server process, up when /healthz answers, stopped by its pid (its group, for the
    workers uvicorn forks) however the block ends."""
    CACHE.mkdir(parents=True, exist_ok=True)
    log = (CACHE / f"{name}.log").open("wb")
    process = subprocess.Popen([PYTHON, *args], stdout=log, stderr=subprocess.STDOUT,
                               cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start in 30 s; see {log.name}") from None
                time.sleep(0.05)  # polling a process that has no readiness event
        yield Server(name, port, process)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


PROXY_ARGS: list[str] = []  # --proxy-args: extra flags for every proxy started


@contextmanager
def servers(workers: int = 1, dlr_delay: float = 2) -> Iterator[tuple[Server, Server]]:
    accounts = CACHE / "accounts.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    accounts.write_text(json.dumps([{"username": USERNAME, "token": TOKEN, "credits": CREDITS}]))
    sandbox_port, proxy_port = free_port(), free_port()
    with ExitStack() as stack:
        sandbox = stack.enter_context(serve(
            "sandbox", ["-m", "proxy.sandbox", "--port", str(sandbox_port), "--accounts",
                        str(accounts), "--dlr-delay", str(dlr_delay)], sandbox_port))
        proxy = stack.enter_context(serve(
            "proxy", ["-m", "proxy", "--port", str(proxy_port), "--workers", str(workers),
                      "--upstream-url", f"http://127.0.0.1:{sandbox_port}/api", *PROXY_ARGS],
            proxy_port))
        yield sandbox, proxy


# ── Requests ─────────────────────────────────────────────────────────────────────────────────

BASIC = "Basic " + base64.b64encode(f"{USERNAME}:{TOKEN}".encode()).decode()
XML_HEADERS = {"Content-Type": "application/xml; charset=utf-8", "Authorization": f"Bearer {TOKEN}"}


def proxy_headers(op: Operation) -> dict[str, str]:
    headers = {"Authorization": BASIC}
    if op.body is not None:
        headers["Content-Type"] = "application/json"
    return headers


def direct_once(sandbox: Server, op: Operation) -> bytes:
    answer = httpx.post(f"http://127.0.0.1:{sandbox.port}/api", content=op.envelope,
                        headers=XML_HEADERS, timeout=30)
    return answer.content


def check(sandbox: Server, proxy: Server, op: Operation) -> None:
    """Both sides answer this operation with a success (and the same rows) before any load."""
    direct = direct_once(sandbox, op)
    if b"<status>0</status>" not in direct:
        raise RuntimeError(f"{op.name}: the sandbox refused: {direct[:300]!r}")
    answer = httpx.request(op.method, f"http://127.0.0.1:{proxy.port}{op.path}", json=op.body,
                           headers=proxy_headers(op), timeout=30)
    if answer.status_code >= 300 or op.proxy_expect not in answer.text:
        raise RuntimeError(f"{op.name}: the proxy answered {answer.status_code}: "
                           f"{answer.text[:300]}")
    if op.rows is not None:
        rows = [direct.count(b"<transaction>"), len(answer.json()["data"])]
        if rows != [op.rows, op.rows]:
            raise RuntimeError(f"{op.name}: expected {op.rows} rows each, got {rows}")


def prepare(sandbox: Server, ops: list[Operation]) -> None:
    """A send to 1,000 destinations with external ids, then wait until its delivery reports
    are in (a sandbox started with ``--dlr-delay 0`` files them on its next request)."""
    op = next(o for o in ops if o.name == "send_1000")
    if b"<status>0</status>" not in direct_once(sandbox, op):
        raise RuntimeError("the preparing send was refused")
    dlr = next(o for o in ops if o.name == "dlr_1000")
    deadline = time.monotonic() + 20
    while direct_once(sandbox, dlr).count(b"<transaction>") < DESTINATIONS:
        if time.monotonic() > deadline:
            raise RuntimeError("the delivery reports did not come in within 20 s")
        time.sleep(0.1)  # with a dlr delay: the sandbox has no event to wait on


# ── wrk ──────────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def _wrk_command(url: str, concurrency: int, seconds: float) -> list[str]:
    return ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(LUA), url]


def _wrk_env(op: Operation, direct: bool) -> dict[str, str]:
    body_file = CACHE / f"{op.name}.{'xml' if direct else 'json'}"
    if direct:
        body_file.write_bytes(op.envelope)
        headers, method, expect = XML_HEADERS, "POST", "<status>0</status>"
    else:
        body_file.write_bytes(b"" if op.body is None else json.dumps(op.body).encode())
        headers, method, expect = proxy_headers(op), op.method, op.proxy_expect
    return {**os.environ, "BENCH_METHOD": method, "BENCH_EXPECT": expect,
            "BENCH_BODY_FILE": str(body_file) if (direct or op.body is not None) else "",
            "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items())}


def start_wrk(server: Server, op: Operation, direct: bool, concurrency: int,
              seconds: float) -> subprocess.Popen[str]:
    url = (f"http://127.0.0.1:{server.port}/api" if direct
           else f"http://127.0.0.1:{server.port}{op.path}")
    return subprocess.Popen(_wrk_command(url, concurrency, seconds), env=_wrk_env(op, direct),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish_wrk(process: subprocess.Popen[str], what: str) -> Load:
    output, _ = process.communicate(timeout=600)
    found = re.search(r"^BENCH (\{.*\})$", output, re.MULTILINE)
    if process.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed for {what}:\n{output}")
    data = json.loads(found.group(1))
    errors = data["errors"] + data["unexpected"]
    return Load(data["requests"] / (data["duration_us"] / 1e6), data["p50_us"] / 1000,
                data["p99_us"] / 1000, data["requests"], errors)


def wrk(server: Server, op: Operation, direct: bool, concurrency: int, seconds: float) -> Load:
    what = f"{op.name} {'direct' if direct else 'proxy'} c={concurrency}"
    return finish_wrk(start_wrk(server, op, direct, concurrency, seconds), what)


# ── The runs ─────────────────────────────────────────────────────────────────────────────────


@dataclass
class Row:
    op: str
    concurrency: int
    direct: Load
    proxy: Load
    ratios: list[float] = field(default_factory=list)  # of every repeat, --repeat

    @property
    def ratio(self) -> float:
        return self.proxy.rps / self.direct.rps

    @property
    def added_ms(self) -> float:
        return self.proxy.p50_ms - self.direct.p50_ms


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    workers: dict[str, tuple[float, float]] = field(default_factory=dict)  # op: (1, 2 workers)
    rss: dict[str, Any] | None = None
    micro: dict[str, float] = field(default_factory=dict)  # benchmark: median ms


def measured(sandbox: Server, proxy: Server, op: Operation, direct: bool, concurrency: int,
             args: argparse.Namespace, profile: bool = False) -> Load:
    server = sandbox if direct else proxy
    wrk(server, op, direct, concurrency, args.warmup)
    if not profile:
        return wrk(server, op, direct, concurrency, args.duration)
    load = start_wrk(server, op, direct, concurrency, args.duration)
    record_profile(proxy, op, min(args.duration - 1, 10))
    return finish_wrk(load, f"{op.name} profiled")


def cell(op: Operation, ops: list[Operation], concurrency: int, args: argparse.Namespace) -> Row:
    loads = {}
    for direct in (True, False):
        with servers(dlr_delay=0 if op.prepare else 2) as (sandbox, proxy):
            if op.prepare:
                prepare(sandbox, ops)
            check(sandbox, proxy, op)
            profile = args.profile and not direct and concurrency == max(CONCURRENCIES)
            loads[direct] = measured(sandbox, proxy, op, direct, concurrency, args, profile)
    row = Row(op.name, concurrency, loads[True], loads[False])
    print(f"  {op.name:<10} c={concurrency:<3} direct {row.direct.rps:8.0f} req/s  "
          f"proxy {row.proxy.rps:8.0f} req/s  ratio {row.ratio:.3f}", flush=True)
    return row


def workers_run(op: Operation, ops: list[Operation], args: argparse.Namespace) -> float:
    concurrency = max(CONCURRENCIES)
    with servers(workers=2, dlr_delay=0 if op.prepare else 2) as (sandbox, proxy):
        if op.prepare:
            prepare(sandbox, ops)
        check(sandbox, proxy, op)
        load = measured(sandbox, proxy, op, False, concurrency, args)
    print(f"  {op.name:<10} --workers 2 c={concurrency}: {load.rps:8.0f} req/s", flush=True)
    return load.rps


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def rss_run(ops: list[Operation], seconds: int) -> dict[str, Any]:
    """The proxy's resident memory, once a second, under a mixed load for ``seconds``."""
    mix = [op for op in ops if op.name in ("balance", "send_1", "dlr_1000")]
    with servers(dlr_delay=0) as (sandbox, proxy):
        prepare(sandbox, ops)
        for op in mix:
            check(sandbox, proxy, op)
        loads = [start_wrk(proxy, op, False, 8, seconds) for op in mix]
        samples = []
        start = time.monotonic()
        while any(load.poll() is None for load in loads) and time.monotonic() - start < seconds:
            samples.append((time.monotonic() - start, rss_kib(proxy.pid)))
            time.sleep(1)  # the sampling interval itself
        results = [finish_wrk(load, f"rss {op.name}") for load, op in zip(loads, mix, strict=True)]
    settled = [kib for at, kib in samples if at >= 10] or [kib for _, kib in samples]
    first, last = statistics.median(settled[:5]), statistics.median(settled[-5:])
    growth = (last - first) / first
    return {"seconds": seconds, "samples": len(samples), "first_mib": first / 1024,
            "last_mib": last / 1024, "max_mib": max(settled) / 1024, "growth": growth,
            "flat": abs(growth) <= 0.05, "requests": sum(r.requests for r in results),
            "errors": sum(r.errors for r in results),
            "series_mib": [round(kib / 1024, 1) for _, kib in samples]}


def record_profile(proxy: Server, op: Operation, seconds: float) -> None:
    """py-spy samples of the proxy under load: the raw stacks (flamegraph.pl reads them) and
    the functions where most samples fall, by inclusive share (async frames count while they
    run, not while they wait)."""
    out = CACHE / f"profile-{op.name}.txt"
    subprocess.run([str(Path(PYTHON).parent / "py-spy"), "record", "-p", str(proxy.pid),
                    "-d", str(max(1, int(seconds))), "-r", "250", "-f", "raw", "-o", str(out)],
                   check=True, capture_output=True)
    inclusive: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        total += int(samples)
        for frame in {re.sub(r":\d+\)$", ")", f) for f in stack.split(";")}:
            inclusive[frame] = inclusive.get(frame, 0) + int(samples)
    print(f"  py-spy, proxy, {op.name} c={max(CONCURRENCIES)} ({total} samples, {out}):")
    shown = [(n, f) for f, n in inclusive.items() if "runpy" not in f and "__main__" not in f]
    for count, frame in sorted(shown, reverse=True)[:PROFILE_TOP]:
        print(f"    {100 * count / total:5.1f}%  {frame}")


def micro(results: Results) -> None:
    out = CACHE / "micro.json"
    subprocess.run([PYTHON, "-m", "pytest", str(ROOT / "bench" / "test_conversions.py"), "-q",
                    "-p", "no:cacheprovider", "--benchmark-only", f"--benchmark-json={out}",
                    "--benchmark-columns=min,median,max,rounds"], check=True, cwd=ROOT)
    for bench in json.loads(out.read_text())["benchmarks"]:
        results.micro[bench["name"]] = bench["stats"]["median"] * 1000


# ── Report ───────────────────────────────────────────────────────────────────────────────────


def machine() -> str:
    cpu = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    wrk_name = wrk_version[1] if len(wrk_version) > 1 else "?"
    return (f"{os.cpu_count()} cores, {cpu.group(1) if cpu else platform.processor()}, "
            f"Python {platform.python_version()}, wrk {wrk_name}\n{', '.join(versions)}")


def table(results: Results) -> str:
    lines = ["| operation | c | direct req/s | proxy req/s | ratio | direct p50 | direct p99 | "
             "proxy p50 | proxy p99 | added p50 |", "|" + " --- |" * 10]
    for row in results.rows:
        added = f"{row.added_ms:.2f} ms" if row.concurrency == 1 else "—"
        errors = row.direct.errors + row.proxy.errors
        spread = (f" ({row.ratios[0]:.3f}-{row.ratios[-1]:.3f})" if len(row.ratios) > 1 else "")
        lines.append(
            f"| {row.op} | {row.concurrency} | {row.direct.rps:.0f} | {row.proxy.rps:.0f} | "
            f"**{row.ratio:.3f}**{spread} | {row.direct.p50_ms:.2f} ms | "
            f"{row.direct.p99_ms:.2f} ms | {row.proxy.p50_ms:.2f} ms | {row.proxy.p99_ms:.2f} ms | "
            f"{added} |"
            + (f" {errors} errors!" if errors else ""))
    return "\n".join(lines)


def targets(results: Results) -> list[tuple[str, str, bool]]:
    found: list[tuple[str, str, bool]] = []
    by = {(row.op, row.concurrency): row for row in results.rows}
    if (row := by.get(("balance", 32))) is not None:
        found.append(("proxy >= 0.20x direct req/s, balance, c=32", f"{row.ratio:.3f}x",
                      row.ratio >= 0.20))
        found.append(("proxy p99 <= 40 ms, balance, c=32", f"{row.proxy.p99_ms:.1f} ms",
                      row.proxy.p99_ms <= 40))
    if (row := by.get(("balance", 1))) is not None:
        found.append(("added p50 <= 0.5 ms, balance, c=1", f"{row.added_ms:.2f} ms",
                      row.added_ms <= 0.5))
    built = results.micro.get("test_envelope_for_10000_destinations_built")
    if built is not None:
        found.append(("10,000-destination send converted <= 10 ms", f"{built:.1f} ms",
                      built <= 10))
    if results.rss is not None:
        rss = results.rss
        found.append((f"RSS flat over {rss['seconds']} s (within 5%)",
                      f"{rss['first_mib']:.1f} -> {rss['last_mib']:.1f} MiB "
                      f"({rss['growth']:+.1%})", rss["flat"]))
    return found


def report(results: Results) -> None:
    print("\n## Machine\n\n" + machine())
    print("\n## Direct XML against the proxy (ratio = proxy / direct req/s)\n")
    if any(len(row.ratios) > 1 for row in results.rows):
        print("Each row is the median of its repeats by ratio; the range in brackets.\n")
    print(table(results))
    if results.workers:
        print("\n## --workers 2 (proxy req/s at c=32)\n")
        print("| operation | 1 worker | 2 workers | growth |\n| --- | --- | --- | --- |")
        for name, (one, two) in results.workers.items():
            print(f"| {name} | {one:.0f} | {two:.0f} | {two / one:.2f}x |")
    if results.rss is not None:
        rss = results.rss
        print(f"\n## Proxy RSS over {rss['seconds']} s of mixed load ({rss['requests']} requests, "
              f"{rss['errors']} errors)\n\nafter 10 s {rss['first_mib']:.1f} MiB, at the end "
              f"{rss['last_mib']:.1f} MiB, max {rss['max_mib']:.1f} MiB: "
              f"{'flat' if rss['flat'] else 'NOT flat'} ({rss['growth']:+.1%})\n"
              f"samples (MiB, 1/s): {' '.join(map(str, rss['series_mib']))}")
    if results.micro:
        print("\n## Conversions (pytest-benchmark, median)\n")
        for name, ms in results.micro.items():
            print(f"- {name}: {ms:.2f} ms")
    print("\n## Targets\n")
    for what, value, met in targets(results):
        print(f"- [{'x' if met else ' '}] {what}: {value}{'' if met else '  NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before each")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each cell, fresh servers each; the table shows the one "
                             "with the median ratio, and the range")
    parser.add_argument("--only", nargs="+", metavar="OP", help="balance send_1 send_1000 dlr_1000")
    parser.add_argument("--rss-seconds", type=int, default=60)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--skip-micro", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy samples of the proxy during each c=32 run")
    parser.add_argument("--proxy-args", default="", metavar="FLAGS",
                        help='extra proxy flags: --proxy-args="--log-level warning"')
    args = parser.parse_args()
    PROXY_ARGS.extend(args.proxy_args.split())
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is missing (Debian package wrk; bench/run installs it as root)")
    ops = operations()
    chosen = [op for op in ops if not args.only or op.name in args.only]
    results = Results()
    print(f"bench: {len(chosen)} operations x c={CONCURRENCIES}, {args.duration:g} s each",
          flush=True)
    for op in chosen:
        for concurrency in CONCURRENCIES:
            runs = sorted((cell(op, ops, concurrency, args) for _ in range(args.repeat)),
                          key=lambda row: row.ratio)
            median = runs[len(runs) // 2]
            median.ratios = [row.ratio for row in runs]
            results.rows.append(median)
    if not args.skip_workers:
        for op in chosen:
            one = next(r.proxy.rps for r in results.rows
                       if r.op == op.name and r.concurrency == max(CONCURRENCIES))
            results.workers[op.name] = (one, workers_run(op, ops, args))
    if not args.skip_rss:
        print(f"  proxy RSS over {args.rss_seconds} s …", flush=True)
        results.rss = rss_run(ops, args.rss_seconds)
    if not args.skip_micro:
        micro(results)
    report(results)


if __name__ == "__main__":
    main()
