"""A webhook receiver, its own process, as a user would write one: it verifies every request
with the ``standardwebhooks`` reference library and refuses the first attempts of each event.

    python -m tests.webhook_receiver      # prints "<port>" when it listens on 127.0.0.1

    POST /hook        a webhook: 503 for its event's first ``refuse`` attempts, then 204;
                      401 if its signature does not verify
    POST /control     {"secrets": [...], "refuse": n}
    GET  /received    every request: {"id", "type", "data", "verified", "status", "signatures"}
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    def __init__(self) -> None:
        self.secrets: list[str] = []
        self.refuse = 0
        self.seen: Counter[str] = Counter()
        self.received: list[dict[str, Any]] = []

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        verified = [s for s in self.secrets if _verifies(s, body, headers)]
        event = json.loads(body)
        self.seen[event["id"]] += 1
        status = 204 if self.seen[event["id"]] > self.refuse else 503
        if not verified:
            status = 401
        self.received.append({"id": event["id"], "type": event["type"], "data": event["data"],
                              "header_id": headers.get("webhook-id"), "verified": verified,
                              "status": status,
                              "signatures": len(headers.get("webhook-signature", "").split())})
        return web.Response(status=status)

    async def control(self, request: web.Request) -> web.Response:
        asked = await request.json()
        self.secrets = list(asked.get("secrets", self.secrets))
        self.refuse = int(asked.get("refuse", self.refuse))
        return web.json_response({"ok": True})

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response(self.received)


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


async def main() -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    app.router.add_post("/control", receiver.control)
    app.router.add_get("/received", receiver.list)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    print(sock.getsockname()[1], flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
