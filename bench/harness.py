"""The benchmark: the proxy against the floor of its stack, and against direct calls.

    bench/run                            # everything, about 11 minutes on two cores
    bench/run --quick                    # the same, 3 s a cell: about 4 minutes
    bench/run --only balance --skip direct workers rss hostile slow micro   # about 1 minute
    bench/run --only balance --profile   # also where the proxy's and the floor's CPU goes
    bench/run --proxy-args="--log-level warning"   # a variant of the proxy

Four sides, each a fresh set of processes per cell (uvicorn with uvloop and httptools, one
worker), wrk driving the front one for a bounded time, all stopped by their process id:

- floor: the leanest proxy of the same requests (bench/floor.py) in front of a raw-protocol
  upstream that answers canned sandbox answers (bench/raw_upstream.py, never the bound);
- proxy: ``python -m proxy`` in front of the same raw upstream;
- direct: the sandbox's XML API called directly (``python -m proxy.sandbox``), with the
  envelopes the proxy's own table builds for the same request;
- proxy on sandbox: the proxy in front of that sandbox.

The send to one recipient carries a fresh Idempotency-Key on every proxy request (the
idempotency store on its default); the floor has no such thing. Then the checklist of the
targets (issue 16, issue 10's hostile cell).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from lxml import etree

from bench import attacks, profiles
from bench.servers import (
    CACHE,
    PYTHON,
    ROOT,
    TOKEN,
    USERNAME,
    Load,
    Request,
    Server,
    finish_wrk,
    rss_kib,
    stack,
    start_wrk,
    wrk,
)
from proxy.mapping import load_table
from proxy.sandbox import ISRAEL
from proxy.settings import load_settings
from proxy.translate import build_envelope

DESTINATIONS = 1000
CONCURRENCIES = (1, 32)
PACKAGES = ("starlette", "uvicorn", "uvloop", "httptools", "httpx", "aiohttp", "lxml",
            "jsonschema", "jsonschema-rs", "phonenumbers", "redis")
TABLE = load_table()
BASIC = "Basic " + base64.b64encode(f"{USERNAME}:{TOKEN}".encode()).decode()
XML_HEADERS = {"Content-Type": "application/xml; charset=utf-8", "Authorization": f"Bearer {TOKEN}"}


# ── Operations and sides ─────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    path: str                  # the proxy's path, with its query
    body: dict[str, Any] | None
    envelope: bytes            # the same request as direct XML
    expect: str                # in every proxy answer
    rows: int | None = None    # answer rows every side must return (DLR)
    prepare: bool = False      # the sandbox needs delivery reports first
    keyed: bool = False        # the proxy's requests carry an Idempotency-Key each


@dataclass(frozen=True)
class Side:
    name: str
    upstream: str              # "raw" or "sandbox"
    front: str | None          # "floor", "proxy", or None: wrk calls the upstream


FLOOR, PROXY = Side("floor", "raw", "floor"), Side("proxy", "raw", "proxy")
DIRECT, SANDBOXED = Side("direct", "sandbox", None), Side("proxy on sandbox", "sandbox", "proxy")
SIDES = (FLOOR, PROXY, DIRECT, SANDBOXED)


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
                  '"campaign_id"', keyed=True),
        Operation("send_1000", "POST", "/v1/messages", many, _envelope("sendMessage", many),
                  '"campaign_id"'),
        Operation("dlr_1000", "GET", f"/v1/reports/dlr?{query}", None,
                  _envelope("listDeliveryReports", query=window), '"data"',
                  rows=DESTINATIONS, prepare=True),
    ]


def request_of(op: Operation, side: Side, keyed: bool | None = None) -> Request:
    """What wrk sends to this side for this operation."""
    if side.front is None:
        return Request(f"{op.name}-direct", "POST", "/api", op.envelope, XML_HEADERS,
                       "<status>0</status>")
    headers = {"Authorization": BASIC}
    if op.body is not None:
        headers["Content-Type"] = "application/json"
    body = None if op.body is None else json.dumps(op.body).encode()
    keyed = op.keyed and side.front == "proxy" if keyed is None else keyed
    return Request(f"{op.name}-{side.front}", op.method, op.path, body, headers, op.expect, keyed)


def check(server: Server, request: Request, rows: int | None) -> None:
    """One request answered with a success (and the rows) before any load."""
    headers = dict(request.headers)
    if request.keyed:
        headers["Idempotency-Key"] = f"bench-check-{time.time_ns()}"
    answer = httpx.request(request.method, server.url + request.path, content=request.body,
                           headers=headers, timeout=30)
    if answer.status_code >= 300 or request.expect not in answer.text:
        raise RuntimeError(f"{request.name}: {server.name} answered {answer.status_code}: "
                           f"{answer.text[:300]}")
    if rows is not None:
        found = (answer.text.count("<transaction>") if request.path == "/api"
                 else len(answer.json()["data"]))
        if found != rows:
            raise RuntimeError(f"{request.name}: expected {rows} rows, got {found}")


def prepare(sandbox: Server, ops: list[Operation]) -> None:
    """A send to 1,000 destinations with external ids, then wait until its delivery reports
    are in (a sandbox started with ``--dlr-delay 0`` files them on its next request)."""
    send = next(o for o in ops if o.name == "send_1000")
    check(sandbox, request_of(send, DIRECT), None)
    report = request_of(next(o for o in ops if o.name == "dlr_1000"), DIRECT)
    deadline = time.monotonic() + 20
    while True:
        answer = httpx.post(sandbox.url + "/api", content=report.body, headers=report.headers)
        if answer.text.count("<transaction>") >= DESTINATIONS:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the delivery reports did not come in within 20 s")
        time.sleep(0.1)  # with a dlr delay: the sandbox has no event to wait on


# ── The runs ─────────────────────────────────────────────────────────────────────────────────


@dataclass
class Row:
    op: str
    concurrency: int
    runs: list[dict[str, Load]] = field(default_factory=list)  # one per repeat, by side

    def ratio(self, run: dict[str, Load], over: str, under: str) -> float | None:
        if over in run and under in run and run[under].rps:
            return run[over].rps / run[under].rps
        return None

    @property
    def median(self) -> dict[str, Load]:
        """The repeat with the median proxy/floor ratio (or the first, without a floor)."""
        ranked = sorted(self.runs, key=lambda run: self.ratio(run, "proxy", "floor") or 0)
        return ranked[len(ranked) // 2]

    def spread(self, over: str, under: str) -> str:
        found = sorted(r for run in self.runs if (r := self.ratio(run, over, under)) is not None)
        return f" ({found[0]:.2f}-{found[-1]:.2f})" if len(found) > 1 else ""

    def cpu_spread(self) -> str:
        found = sorted(run["floor"].cpu_us / run["proxy"].cpu_us for run in self.runs
                       if run.get("floor") and run.get("proxy") and run["floor"].cpu_us
                       and run["proxy"].cpu_us)
        return f" ({found[0]:.2f}-{found[-1]:.2f})" if len(found) > 1 else ""

    def rps_range(self, side: str) -> str:
        found = sorted(run[side].rps for run in self.runs if side in run)
        return f" ({found[0]:.0f}-{found[-1]:.0f})" if len(found) > 1 else ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    upstream_rps: float | None = None
    workers: dict[str, float] = field(default_factory=dict)  # "1", "2": proxy balance c=32
    rss: dict[str, Any] | None = None
    hostile: list[dict[str, Any]] = field(default_factory=list)
    slow: dict[str, Any] | None = None
    micro: dict[str, float] = field(default_factory=dict)  # benchmark: median ms
    profiles: list[tuple[profiles.Profile, float | None]] = field(default_factory=list)

    def row(self, op: str, concurrency: int) -> Row | None:
        return next((r for r in self.rows if (r.op, r.concurrency) == (op, concurrency)), None)

    def load(self, op: str, concurrency: int, side: str) -> Load | None:
        row = self.row(op, concurrency)
        return row.median.get(side) if row else None


def measure(op: Operation, ops: list[Operation], side: Side, concurrency: int,
            args: argparse.Namespace, profile: bool = False) -> tuple[Load, Any]:
    delay = 0 if op.prepare else 2
    with stack(side.upstream, side.front, proxy_args=args.proxy_args, dlr_delay=delay) as servers:
        target = servers[-1]
        if op.prepare and side.upstream == "sandbox":
            prepare(servers[0], ops)
        request = request_of(op, side)
        check(target, request, op.rows)
        wrk(target, request, concurrency, args.warmup)
        upstream = servers[0] if len(servers) > 1 else None
        load = wrk(target, request, concurrency, args.duration, upstream)
        found = None
        if profile:
            running = start_wrk(target, request, concurrency, args.duration)
            found = profiles.record(target.pid, f"{side.front}-{op.name}",
                                    min(args.duration - 1, 10))
            finish_wrk(running, f"{op.name} profiled")
    return load, found


def cells(op: Operation, ops: list[Operation], concurrency: int, args: argparse.Namespace,
          results: Results) -> Row:
    row = Row(op.name, concurrency)
    sides = [side for side in SIDES if side.upstream == "raw" or "direct" not in args.skip]
    for _ in range(args.repeat):
        run: dict[str, Load] = {}
        for side in sides:
            profile = (args.profile and side.upstream == "raw" and not row.runs
                       and concurrency == max(CONCURRENCIES))
            run[side.name], found = measure(op, ops, side, concurrency, args, profile)
            if found is not None:
                results.profiles.append((found, run[side.name].loop_cpu_us))
        row.runs.append(run)
        line = "  ".join(f"{name} {load.rps:7.0f}" for name, load in run.items())
        print(f"  {op.name:<10} c={concurrency:<3} {line} req/s", flush=True)
    return row


def upstream_capacity(ops: list[Operation], args: argparse.Namespace) -> float:
    """The raw upstream alone, balance at c=32: what it could serve the proxy."""
    balance = next(o for o in ops if o.name == "balance")
    with stack("raw", None) as (upstream,):
        request = request_of(balance, DIRECT)
        wrk(upstream, request, 32, 1)
        return wrk(upstream, request, 32, min(args.duration, 5)).rps


def workers_run(ops: list[Operation], args: argparse.Namespace) -> float:
    balance = next(o for o in ops if o.name == "balance")
    with stack("raw", "proxy", proxy_args=args.proxy_args, workers=2) as (_, proxy):
        request = request_of(balance, PROXY)
        check(proxy, request, None)
        wrk(proxy, request, 32, args.warmup)
        load = wrk(proxy, request, 32, args.duration)  # CPU: the supervisor only
    print(f"  balance    --workers 2 c=32: {load.rps:8.0f} req/s", flush=True)
    return load.rps


def rss_run(ops: list[Operation], seconds: int, args: argparse.Namespace) -> dict[str, Any]:
    """The proxy's resident memory, once a second, under a mixed load for ``seconds``:
    balance, a send to one (no key: keys are kept by design) and the 1,000-row report."""
    mix = [op for op in ops if op.name in ("balance", "send_1", "dlr_1000")]
    with stack("raw", "proxy", proxy_args=args.proxy_args) as (_, proxy):
        requests = [request_of(op, PROXY, keyed=False) for op in mix]
        for request in requests:
            check(proxy, request, None)
        loads = [start_wrk(proxy, request, 8, seconds) for request in requests]
        samples = []
        start = time.monotonic()
        while any(load.poll() is None for load in loads) and time.monotonic() - start < seconds:
            samples.append((time.monotonic() - start, rss_kib(proxy.pid)))
            time.sleep(1)  # the sampling interval itself
        done = [finish_wrk(load, f"rss {r.name}") for load, r in zip(loads, requests, strict=True)]
    settled = [kib for at, kib in samples if at >= 10] or [kib for _, kib in samples]
    first, last = statistics.median(settled[:5]), statistics.median(settled[-5:])
    growth = (last - first) / first
    return {"seconds": seconds, "first_mib": first / 1024, "last_mib": last / 1024,
            "max_mib": max(settled) / 1024, "growth": growth, "flat": abs(growth) <= 0.05,
            "requests": sum(r.requests for r in done), "errors": sum(r.errors for r in done),
            "series_mib": [round(kib / 1024, 1) for _, kib in samples]}


def micro(results: Results) -> None:
    out = CACHE / "micro.json"
    subprocess.run([PYTHON, "-m", "pytest", str(ROOT / "bench" / "test_conversions.py"), "-q",
                    "-p", "no:cacheprovider", "-p", "no:randomly", "--benchmark-only",
                    f"--benchmark-json={out}", "--benchmark-columns=min,median,max,rounds"],
                   check=True, cwd=ROOT)
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
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    wrk_name = wrk_version[1] if len(wrk_version) > 1 else "?"
    return (f"{os.cpu_count()} cores, {cpu.group(1) if cpu else platform.processor()}, "
            f"load average {os.getloadavg()[0]:.1f} at the end, Python "
            f"{platform.python_version()}, wrk {wrk_name}, commit {commit or '?'}\n"
            f"{', '.join(versions)}")


def _ms(value: float) -> str:
    return f"{value:.2f} ms"


def _us(load: Load) -> str:
    """CPU per request, and what of it other threads than the event loop's took (the SQLite
    store's) when that is more than a few percent."""
    if not load.cpu_us:
        return "—"
    others = load.cpu_us - (load.loop_cpu_us or load.cpu_us)
    return f"{load.cpu_us:.0f} µs" + (f" ({others:.0f} off the loop)"
                                      if others > 0.05 * load.cpu_us else "")


def floor_table(results: Results) -> str:
    lines = ["| operation | c | floor req/s | proxy req/s | proxy/floor | floor p50 | proxy p50 "
             "| added p50 | floor p99 | proxy p99 | floor CPU/req | proxy CPU/req | by CPU |",
             "|" + " --- |" * 13]
    for row in results.rows:
        run = row.median
        floor, proxy = run.get("floor"), run.get("proxy")
        if floor is None or proxy is None:
            continue
        added = _ms(proxy.p50_ms - floor.p50_ms) if row.concurrency == 1 else "—"
        errors = floor.errors + proxy.errors
        lines.append(
            f"| {row.op} | {row.concurrency} | {floor.rps:.0f}{row.rps_range('floor')} | "
            f"{proxy.rps:.0f}{row.rps_range('proxy')} | "
            f"**{proxy.rps / floor.rps:.2f}**{row.spread('proxy', 'floor')} | "
            f"{_ms(floor.p50_ms)} | {_ms(proxy.p50_ms)} | {added} | {_ms(floor.p99_ms)} | "
            f"{_ms(proxy.p99_ms)} | {_us(floor)} | {_us(proxy)} | "
            f"{_by_cpu(floor, proxy)}{row.cpu_spread()} |"
            + (f" {errors} errors!" if errors else ""))
    upstream = [load.upstream_cpu_us for row in results.rows for side, load in row.median.items()
                if side in ("floor", "proxy") and load.upstream_cpu_us is not None]
    if upstream:
        lines.append(f"\nThe raw upstream's CPU per request meanwhile: {min(upstream):.0f}-"
                     f"{max(upstream):.0f} µs. \"by CPU\": floor CPU/req ÷ proxy CPU/req, the "
                     "ratio the machine's other load disturbs least.")
    return "\n".join(lines)


def _by_cpu(floor: Load, proxy: Load) -> str:
    return f"{floor.cpu_us / proxy.cpu_us:.2f}" if floor.cpu_us and proxy.cpu_us else "—"


def direct_table(results: Results) -> str:
    lines = ["| operation | c | direct req/s | proxy req/s | proxy/direct | direct p50 | "
             "proxy p50 | added p50 | direct p99 | proxy p99 |", "|" + " --- |" * 10]
    for row in results.rows:
        run = row.median
        direct, proxy = run.get("direct"), run.get("proxy on sandbox")
        if direct is None or proxy is None:
            continue
        added = _ms(proxy.p50_ms - direct.p50_ms) if row.concurrency == 1 else "—"
        errors = direct.errors + proxy.errors
        lines.append(
            f"| {row.op} | {row.concurrency} | {direct.rps:.0f} | {proxy.rps:.0f} | "
            f"**{proxy.rps / direct.rps:.2f}**{row.spread('proxy on sandbox', 'direct')} | "
            f"{_ms(direct.p50_ms)} | {_ms(proxy.p50_ms)} | {added} | {_ms(direct.p99_ms)} | "
            f"{_ms(proxy.p99_ms)} |" + (f" {errors} errors!" if errors else ""))
    return "\n".join(lines)


Target = tuple[str, str, bool]


def _judged(name: str, said: str, met: bool, *loads: Load) -> Target:
    """A target, unless a run it reads had answers wrong (the guard's 429s, say): then the
    figure measures those answers, not the request."""
    errors = sum(load.errors for load in loads)
    if errors:
        return name, f"{said}; {errors} wrong answers: not a measurement", False
    return name, said, met


def _floor_targets(results: Results) -> list[Target]:
    found: list[Target] = []
    proxy, floor = (results.load("balance", 32, side) for side in ("proxy", "floor"))
    if proxy and floor:
        ratio = proxy.rps / floor.rps
        found.append(_judged("balance, c=32: proxy >= 0.70x the floor",
                             f"{ratio:.2f}x (by CPU per request {_by_cpu(floor, proxy)}x)",
                             ratio >= 0.70, proxy, floor))
    for op in ("balance", "send_1"):
        proxy, floor = (results.load(op, 1, side) for side in ("proxy", "floor"))
        if proxy and floor:
            added = proxy.p50_ms - floor.p50_ms
            found.append(_judged(f"{op}, c=1: added p50 <= 0.10 ms over the floor's",
                                 f"{added:.2f} ms ({proxy.p50_ms:.2f} vs {floor.p50_ms:.2f})",
                                 added <= 0.10, proxy, floor))
    proxy, floor = (results.load("send_1", 32, side) for side in ("proxy", "floor"))
    if proxy and floor:
        ratio = proxy.rps / floor.rps
        found.append(_judged("keyed send to 1, c=32: >= 0.50x the floor's unkeyed send",
                             f"{ratio:.2f}x (by CPU per request {_by_cpu(floor, proxy)}x)",
                             ratio >= 0.50, proxy, floor))
    for op in ("balance", "send_1"):
        proxy, floor = (results.load(op, 32, side) for side in ("proxy", "floor"))
        if proxy and floor:
            found.append(_judged(f"{op}, c=32: p99 <= 2x the floor's",
                                 f"{proxy.p99_ms:.1f} ms vs {floor.p99_ms:.1f} ms "
                                 f"({proxy.p99_ms / floor.p99_ms:.1f}x)",
                                 proxy.p99_ms <= 2 * floor.p99_ms, proxy, floor))
    if "2" in results.workers and "1" in results.workers:
        growth = results.workers["2"] / results.workers["1"]
        found.append(("--workers 2 >= 1.6x one worker, balance c=32 (where the cores allow)",
                      f"{growth:.2f}x ({os.cpu_count()} cores shared with wrk and the upstream)",
                      growth >= 1.6))
    built = results.micro.get("test_envelope_for_10000_destinations_built")
    if built is not None:
        found.append(("10,000-destination envelope built <= 8 ms", f"{built:.1f} ms",
                      built <= 8))
    return found


def _abuse_targets(results: Results) -> list[Target]:
    found: list[Target] = []
    for h in results.hostile:
        answered = h["answered_s"]
        said = (f"{answered:.2f} s (HTTP {h['status']})" if answered is not None
                else f"no answer within {h['bound_s']:g} s"
                + (" (stopped: memory)" if h["memory_capped"] else ""))
        found.append((f"hostile body: {h['shape']} ({h['body_bytes']:,} bytes, made-up "
                      "credentials) answered <= 0.5 s", said,
                      answered is not None and answered <= 0.5))
        found.append(("/healthz p99 <= 50 ms meanwhile",
                      f"{h['health_p99_ms']:.0f} ms (max {h['health_max_ms']:.0f} ms, "
                      f"{h['health_polls']} polls)", h["health_p99_ms"] <= 50))
        found.append(("RSS growth <= 50 MB meanwhile", f"{h['rss_growth_mib']:.0f} MiB",
                      h["rss_growth_mib"] * 1.048576 <= 50))
    if (s := results.slow) is not None:
        found.append((f"{s['connections']} slow-header connections closed by the proxy "
                      f"within {s['seconds']:g} s (a header-read timeout)",
                      f"{s['closed_by_proxy']} closed, {s['still_open']} still open",
                      s["still_open"] == 0 and s["opened"] > 0))
    return found


def _old_targets(results: Results) -> list[Target]:
    """Issue 6's, against direct calls to the sandbox."""
    found: list[Target] = []
    proxy, direct = (results.load("balance", 32, s) for s in ("proxy on sandbox", "direct"))
    if proxy and direct:
        found.append(("balance, c=32: proxy >= 0.20x direct", f"{proxy.rps / direct.rps:.2f}x",
                      proxy.rps / direct.rps >= 0.20))
        found.append(("balance, c=32: proxy p99 <= 40 ms", f"{proxy.p99_ms:.1f} ms",
                      proxy.p99_ms <= 40))
    proxy, direct = (results.load("balance", 1, s) for s in ("proxy on sandbox", "direct"))
    if proxy and direct:
        added = proxy.p50_ms - direct.p50_ms
        found.append(("balance, c=1: added p50 <= 0.5 ms over direct", f"{added:.2f} ms",
                      added <= 0.5))
    if (rss := results.rss) is not None:
        found.append((f"RSS flat over {rss['seconds']} s (within 5%)",
                      f"{rss['first_mib']:.1f} -> {rss['last_mib']:.1f} MiB "
                      f"({rss['growth']:+.1%})", rss["flat"]))
    return found


def _checklist(title: str, targets: list[Target]) -> None:
    if targets:
        print(f"\n{title}\n")
        for what, value, met in targets:
            print(f"- {'MET    ' if met else 'NOT MET'}  {what}: {value}")


def _report_attacks(results: Results) -> None:
    if results.hostile:
        print("\n## Hostile bodies (issue 10), each once to a fresh proxy, made-up Basic "
              "credentials\n")
    for h in results.hostile:
        answered = (f"answered HTTP {h['status']} in {h['answered_s']:.2f} s"
                    if h["answered_s"] is not None else
                    f"no answer within {h['bound_s']:g} s ({h['error'] or 'stopped'}"
                    + (", the proxy stopped at the memory cap)" if h["memory_capped"] else ")"))
        print(f"- {h['shape']}: {h['body_bytes']:,} bytes to {h['path']}: {answered}; "
              f"meanwhile /healthz p99 {h['health_p99_ms']:.0f} ms (max "
              f"{h['health_max_ms']:.0f} ms over {h['health_polls']} polls), the proxy's RSS "
              f"+{h['rss_growth_mib']:.0f} MiB.")
    if (s := results.slow) is not None:
        alone, beside = s["alone"], s["beside"]
        with_them = (f"{beside.rps:.0f} req/s, p99 {beside.p99_ms:.1f} ms, {beside.errors} "
                     "errors" if beside else "no answer at all")
        print(f"\n## Slow-header clients (issue 10, HTTP limits)\n\n"
              f"balance c=32 on one proxy: alone {alone.rps:.0f} req/s (p99 "
              f"{alone.p99_ms:.1f} ms); beside {s['connections']} slow-header connections "
              f"({s['opened']} opened in {s['opened_in_s']:.1f} s, {s['refused']} refused): "
              f"{with_them}.\nClosed by the proxy: {s['closed_by_proxy']}"
              + (f" (first after {s['first_close_s']:.1f} s, median {s['median_close_s']:.1f} s;"
                 f" answers {s['close_answers']})" if s["closed_by_proxy"] else "")
              + f"; still open at the end: {s['still_open']}.")


def report(results: Results) -> None:
    print("\n## Machine\n\n" + machine())
    if results.upstream_rps is not None:
        print(f"\nThe raw upstream alone: {results.upstream_rps:.0f} req/s (balance, c=32).")
    if any(len(row.runs) > 1 for row in results.rows):
        print("\nEach row is the repeat with the median proxy/floor ratio; ranges in brackets.")
    if any("floor" in row.median for row in results.rows):
        print("\n## The proxy against the floor (both in front of the raw upstream)\n")
        print(floor_table(results))
    if any("direct" in row.median for row in results.rows):
        print("\n## The proxy against direct calls to the sandbox\n")
        print(direct_table(results))
    if results.workers:
        print(f"\n## --workers 2, balance c=32: {results.workers.get('1', 0):.0f} -> "
              f"{results.workers.get('2', 0):.0f} req/s")
    if (rss := results.rss) is not None:
        print(f"\n## Proxy RSS over {rss['seconds']} s of mixed load ({rss['requests']} "
              f"requests, {rss['errors']} errors)\n\n{rss['first_mib']:.1f} -> "
              f"{rss['last_mib']:.1f} MiB, max {rss['max_mib']:.1f} MiB ({rss['growth']:+.1%})"
              f"\nsamples (MiB, 1/s): {' '.join(map(str, rss['series_mib']))}")
    _report_attacks(results)
    if results.micro:
        print("\n## Conversions (pytest-benchmark, median)\n")
        for name, ms in results.micro.items():
            print(f"- {name}: {ms:.2f} ms")
    for profile, cpu_us in results.profiles:
        print(f"\n## Profile: {profiles.report(profile, cpu_us)}")
    _checklist("## Targets (issue 16; issue 10's hostile cell)",
               _floor_targets(results) + _abuse_targets(results))
    _checklist("## Earlier targets (issue 6)", _old_targets(results))


# ── Main ─────────────────────────────────────────────────────────────────────────────────────

PARTS = ("table", "direct", "workers", "rss", "hostile", "slow", "micro")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before each")
    parser.add_argument("--quick", action="store_true",
                        help="3 s runs, 1 s warm-up, 20 s of RSS, 10 s bounds: about 4 minutes")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each cell, fresh processes each; the table shows the one "
                             "with the median proxy/floor ratio, and the ranges")
    parser.add_argument("--only", nargs="+", metavar="OP", default=[],
                        help="operations: balance send_1 send_1000 dlr_1000")
    parser.add_argument("--skip", nargs="+", choices=PARTS, default=[], metavar="PART",
                        help=f"parts left out: {' '.join(PARTS)}")
    parser.add_argument("--rss-seconds", type=int, default=60)
    parser.add_argument("--hostile-seconds", type=float, default=20,
                        help="how long the hostile body may take before the cell gives up")
    parser.add_argument("--slow-connections", type=int, default=1000,
                        help="slow-header connections held open beside normal clients")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy samples of the proxy and the floor during each c=32 run")
    parser.add_argument("--proxy-args", default="", metavar="FLAGS",
                        help='extra proxy flags: --proxy-args="--log-level warning"')
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.rss_seconds = 3, 1, 20
        args.hostile_seconds = min(args.hostile_seconds, 10)
    args.proxy_args = tuple(args.proxy_args.split())
    return args


def main() -> None:
    args = arguments()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is missing (Debian package wrk; bench/run installs it as root)")
    ops = operations()
    chosen = [op for op in ops if not args.only or op.name in args.only]
    results = Results()
    started = time.monotonic()
    print(f"bench: {len(chosen)} operations x c={CONCURRENCIES}, {args.duration:g} s each",
          flush=True)
    if "table" in args.skip:
        chosen = []
    else:
        results.upstream_rps = upstream_capacity(ops, args)
    for op in chosen:
        for concurrency in CONCURRENCIES:
            results.rows.append(cells(op, ops, concurrency, args, results))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("workers", lambda: results.workers.update(
            {"1": getattr(results.load("balance", 32, "proxy"), "rps", 0.0),
             "2": workers_run(ops, args)})),
        ("rss", lambda: setattr(results, "rss", rss_run(ops, args.rss_seconds, args))),
        ("hostile", lambda: setattr(results, "hostile", attacks.hostile(
            load_settings(list(args.proxy_args)).max_body_bytes, args.hostile_seconds,
            args.proxy_args))),
        ("slow", lambda: setattr(results, "slow", attacks.slow_headers(
            request_of(ops[0], PROXY), args.slow_connections, max(args.duration, 10),
            args.warmup, args.proxy_args))),
        ("micro", lambda: micro(results)),
    ]
    for name, step in steps:
        if name not in args.skip:
            print(f"  {name} …", flush=True)
            step()
    report(results)
    print(f"\nbench: {time.monotonic() - started:.0f} s")
    results.profiles.clear()  # kept as .cache/bench/profile-*.txt
    (CACHE / "results.json").write_text(json.dumps(dataclasses.asdict(results), indent=1))


if __name__ == "__main__":
    main()
