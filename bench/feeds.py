"""The feed cell (issue 12): 10,000 delivery reports read page by page through the proxy, the
time the upstream took for each page beside the proxy's.

    bench/run --feeds                 # both page sizes; bench/run --feeds --limits 1000
    bench/run --feeds --reports 30000

A fresh sandbox (``python -m proxy.sandbox`` with a ticking clock: 500 reports a minute, two
days ago) and a fresh proxy in front of it, both stopped by their process group. The proxy's
time is each page's wall time at the client; the upstream's is what the proxy's own
``smsleads_proxy_upstream_duration_seconds`` histogram counted for the same pages, so the
difference is the proxy's work: reading, merging, signing cursors, JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CACHE, free_port, serve  # bench/ is not a package

from proxy.mapping import load_table
from proxy.translate import build_envelope

USERNAME, TOKEN = "feeds", "feeds-token"
PER_SEND = 400  # two sends a minute at a 30-second tick: 800 reports a minute
TICK = 30
METRIC = re.compile(r'^smsleads_proxy_upstream_duration_seconds_(sum|count)\{command="(\w+)"\} '
                    r"([0-9.e+-]+)$", re.M)


def fill(sandbox: int, reports: int) -> None:
    """`reports` recipients with external ids, sent straight to the sandbox's XML API."""
    op = load_table().operation("sendMessage")
    with httpx.Client(timeout=60) as client:
        for first in range(0, reports, PER_SEND):
            recipients = [{"phone": f"+9725{20_000_000 + n:08d}", "external_id": f"r-{n}"}
                          for n in range(first, min(first + PER_SEND, reports))]
            document = {"auth": {"username": USERNAME}, "path": {}, "query": {},
                        "body": {"sender": "Bench", "text": "shipped", "recipients": recipients}}
            answer = client.post(f"http://127.0.0.1:{sandbox}/api",
                                 content=etree.tostring(build_envelope(op, document)),
                                 headers={"Authorization": f"Bearer {TOKEN}"})
            if b"<status>0</status>" not in answer.content:
                raise RuntimeError(f"the sandbox refused a send: {answer.text[:200]}")


def upstream_seconds(client: httpx.Client) -> tuple[float, float]:
    """(seconds, calls) the proxy's histogram counted for every command so far."""
    found = {"sum": 0.0, "count": 0.0}
    for kind, _, value in METRIC.findall(client.get("/metrics").text):
        found[kind] += float(value)
    return found["sum"], found["count"]


def walk(client: httpx.Client, start: datetime, limit: int) -> dict[str, float]:
    seconds_before, calls_before = upstream_seconds(client)
    times, ids = [], set()
    params: dict[str, str | int] = {"from": start.isoformat(), "limit": limit}
    rows = 0
    while True:
        began = time.perf_counter()
        page = client.get("/v1/reports/dlr", params=params)
        times.append(time.perf_counter() - began)
        body = page.json()
        if page.status_code != 200:
            raise RuntimeError(f"the proxy answered {page.status_code}: {page.text[:300]}")
        rows += len(body["data"])
        ids.update(row["external_id"] for row in body["data"])
        if "next_cursor" not in body:
            break
        params["cursor"] = body["next_cursor"]
    seconds_after, calls_after = upstream_seconds(client)
    pages = len(times)
    return {"limit": limit, "pages": pages, "rows": rows, "distinct": len(ids),
            "p50": statistics.median(times) * 1000,
            "p95": sorted(times)[max(0, int(pages * 0.95) - 1)] * 1000,
            "mean": statistics.fmean(times) * 1000,
            "upstream": (seconds_after - seconds_before) / pages * 1000,
            "calls": (calls_after - calls_before) / pages, "total": sum(times)}


def run(reports: int, limits: list[int]) -> list[dict[str, float]]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    accounts = CACHE / "feeds-accounts.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    accounts.write_text(json.dumps([{"username": USERNAME, "token": TOKEN, "credits": 10**9}]))
    sandbox_port, proxy_port = free_port(), free_port()
    with ExitStack() as stack:
        stack.enter_context(serve("feeds-sandbox", [
            "-m", "proxy.sandbox", "--port", str(sandbox_port), "--accounts", str(accounts),
            "--dlr-delay", "0", "--clock", start.isoformat(), "--tick", str(TICK)],
            sandbox_port))
        stack.enter_context(serve("feeds-proxy", [
            "-m", "proxy", "--port", str(proxy_port), "--log-level", "warning",
            "--upstream-url", f"http://127.0.0.1:{sandbox_port}/api"], proxy_port))
        fill(sandbox_port, reports)
        with httpx.Client(base_url=f"http://127.0.0.1:{proxy_port}", timeout=120,
                          auth=(USERNAME, TOKEN)) as client:
            walk(client, start - timedelta(hours=1), max(limits))  # warm-up, not counted
            return [walk(client, start - timedelta(hours=1), limit) for limit in limits]


def table(reports: int, results: list[dict[str, float]]) -> str:
    lines = [f"{reports:,} delivery reports, {PER_SEND * 60 // TICK:,} a minute, read from a "
             "window of two days (one upstream call of at most 7 days a read):", "",
             "| limit | pages | rows (distinct) | proxy ms/page p50 | p95 | upstream ms/page "
             "| upstream calls/page | proxy's own ms/page | whole walk s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['limit']:.0f} | {r['pages']:.0f} | {r['rows']:,.0f} "
                     f"({r['distinct']:,.0f}) | {r['p50']:.1f} | {r['p95']:.1f} | "
                     f"{r['upstream']:.1f} | {r['calls']:.2f} | {r['mean'] - r['upstream']:.1f} "
                     f"| {r['total']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--limits", type=int, nargs="+", default=[1000, 100])
    args = parser.parse_args()
    results = run(args.reports, args.limits)
    for result in results:
        if result["rows"] != args.reports or result["distinct"] != args.reports:
            sys.exit(f"feeds: the walk gave {result['rows']} rows, {result['distinct']} "
                     f"distinct, of {args.reports}")
    print(table(args.reports, results))


if __name__ == "__main__":
    main()
