"""The webhook cell (issue 13): how long a report takes from the upstream to a receiver, and how
many deliveries a second the proxy makes.

    bench/run --webhooks                           # poll interval 1 s, one worker
    bench/run --webhooks --poll-interval 5 --workers 2 --recipients 1000

A fresh sandbox (``python -m proxy.sandbox --dlr-delay 0``: a send's reports are in the
upstream when its answer comes back) and a fresh proxy in front of it, both stopped by their
process group; a receiver in this process that verifies every signature with
``standardwebhooks``, as a user's would. Lag: one send to one recipient at a time, from the
send's answer to the webhook's arrival. Rate: one send to ``--recipients``, from the first
webhook to the last; with the lag's sends, at most 1,000 reports (they may share a minute, and
the upstream gives at most 1,000 rows of one minute).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from standardwebhooks.webhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import CACHE, free_port, serve  # bench/ is not a package

USERNAME, TOKEN = "hooks", "hooks-token"
KEY = base64.b64encode(os.urandom(32)).decode()


class Receiver:
    def __init__(self) -> None:
        self.secret = ""
        self.arrived: dict[str, float] = {}  # external id -> when its report arrived
        self.verified = 0

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        event: dict[str, Any] = Webhook(self.secret).verify(body, dict(request.headers))
        self.verified += 1
        external = event["data"].get("external_id")
        if event["type"] == "message.delivery_reported" and external:
            self.arrived.setdefault(external, time.perf_counter())
        return web.Response(status=204)


async def until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("the webhooks did not all arrive in time")
        await asyncio.sleep(0.005)


async def measure(proxy: int, sends: int, recipients: int, poll: float) -> dict[str, Any]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{proxy}", auth=(USERNAME, TOKEN),
                                 timeout=60) as client:
        created = (await client.post("/v1/webhooks", json={
            "url": url, "event_types": ["message.delivery_reported"]})).json()
        receiver.secret = created["secret"]
        lags = []
        for n in range(sends):
            # At a random moment of the poll cycle, as reports come (a send made right after
            # the last webhook would meet the poller at the same point of its cycle each time).
            await asyncio.sleep(random.uniform(0, poll))
            answer = await client.post("/v1/messages", json={
                "sender": "Bench", "text": "lag", "recipients": [
                    {"phone": "0521234567", "external_id": f"lag-{n}"}]})
            answer.raise_for_status()
            available = time.perf_counter()
            await until(lambda n=n: f"lag-{n}" in receiver.arrived, 10 + 3 * poll)
            lags.append(receiver.arrived[f"lag-{n}"] - available)
        batch = [{"phone": f"05{20_000_000 + i:08d}", "external_id": f"rate-{i}"}
                 for i in range(recipients)]
        (await client.post("/v1/messages", json={"sender": "Bench", "text": "rate",
                                                 "recipients": batch})).raise_for_status()
        sent = time.perf_counter()
        await until(lambda: sum(k.startswith("rate-") for k in receiver.arrived) == recipients,
                    120)
    await runner.cleanup()
    times = sorted(t for k, t in receiver.arrived.items() if k.startswith("rate-"))
    return {"lags": lags, "rate": (recipients - 1) / (times[-1] - times[0]),
            "whole": times[-1] - sent, "verified": receiver.verified}


def run(args: argparse.Namespace) -> dict[str, Any]:
    CACHE.mkdir(parents=True, exist_ok=True)
    accounts = CACHE / "webhooks-accounts.json"
    accounts.write_text(json.dumps([{"username": USERNAME, "token": TOKEN, "credits": 10**9}]))
    sandbox, proxy = free_port(), free_port()
    with ExitStack() as stack:
        state = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-webhooks-"))
        stack.enter_context(serve("webhooks-sandbox", [
            "-m", "proxy.sandbox", "--port", str(sandbox), "--accounts", str(accounts),
            "--dlr-delay", "0"], sandbox))
        stack.enter_context(serve("webhooks-proxy", [
            "-m", "proxy", "--port", str(proxy), "--log-level", "warning",
            "--workers", str(args.workers), "--state-dir", state,
            "--upstream-url", f"http://127.0.0.1:{sandbox}/api",
            "--webhook-poll-interval", str(args.poll_interval),
            "--webhook-allow-networks", "127.0.0.0/8", "--webhook-token-keys", KEY], proxy))
        return asyncio.run(measure(proxy, args.sends, args.recipients, args.poll_interval))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sends", type=int, default=20)
    parser.add_argument("--recipients", type=int, default=900)
    args = parser.parse_args()
    if not 1 < args.recipients <= 1000 - args.sends:
        sys.exit("webhooks: --recipients is 2 to 1000 less --sends (the most rows of one "
                 "minute one upstream answer gives)")
    found = run(args)
    lags = sorted(found["lags"])
    print(f"poll interval {args.poll_interval} s, {args.workers} worker(s), SQLite store:\n\n"
          "| report -> webhook lag p50 | p95 | max | deliveries/s | "
          f"{args.recipients} reports, send -> last webhook |\n| --- | --- | --- | --- | --- |\n"
          f"| {statistics.median(lags):.2f} s | {lags[int(len(lags) * 0.95) - 1]:.2f} s "
          f"| {lags[-1]:.2f} s | {found['rate']:.0f} | {found['whole']:.2f} s |")


if __name__ == "__main__":
    main()
