"""The floor: the leanest proxy of the same requests this stack can make, for comparison.

    python -m bench.floor --port 9200 --upstream-url http://127.0.0.1:9100/api

The proxy's stack and nothing else: Starlette routes under uvicorn (uvloop, httptools, one
worker), one aiohttp request on one pooled session per call, lxml to build the envelope and to
read the answer, a JSON response. No authentication (every call uses the bench account), no
validation, no logs, metrics, idempotency, breaker or retries; an answer that is not a success
is a 502. It serves the benchmark's four requests the way the proxy does: balance, a send,
a delivery report read into the same JSON fields.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from typing import Any

import aiohttp
import uvicorn
import yaml
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.sandbox import ISRAEL

USERNAME, TOKEN = "bench", "bench-token"
UPSTREAM_TIME = "%d/%m/%y %H:%M"


def _states() -> dict[str, str]:
    enums = yaml.safe_load(resources.files("proxy").joinpath("mapping.yaml").read_text("utf-8"))
    return {code: name for name, codes in enums["enums"]["dlr_state"].items() for code in codes}


STATES = _states()


def _envelope(command: str) -> etree._Element:
    root = etree.Element(command)
    etree.SubElement(etree.SubElement(root, "user"), "username").text = USERNAME
    return root


def _upstream_time(text: str) -> str:
    return datetime.fromisoformat(text).astimezone(ISRAEL).strftime(UPSTREAM_TIME)


@functools.lru_cache(maxsize=4096)
def _iso(text: str) -> str:
    return datetime.strptime(text, UPSTREAM_TIME).replace(tzinfo=ISRAEL).isoformat()


def _text(row: etree._Element, tag: str) -> str | None:
    return (row.findtext(tag) or "").strip() or None


class Floor:
    def __init__(self, url: str) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/xml; charset=utf-8",
                        "Authorization": f"Bearer {TOKEN}"}
        self.session: aiohttp.ClientSession | None = None

    async def call(self, envelope: etree._Element) -> etree._Element | Response:
        """The answer's root, or a 502 when it is not a success."""
        if self.session is None:
            raise RuntimeError("the lifespan opens the session")
        body = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        async with self.session.post(self.url, data=body, headers=self.headers) as answer:
            data = await answer.read()
        root = etree.fromstring(data)
        if root.findtext("status") != "0":
            return JSONResponse({"error": root.findtext("message")}, status_code=502)
        return root

    async def balance(self, request: Request) -> Response:
        root = await self.call(_envelope("balance"))
        if isinstance(root, Response):
            return root
        return JSONResponse({"credits": int(root.findtext("balance") or "0")})

    async def send(self, request: Request) -> Response:
        body: dict[str, Any] = json.loads(await request.body())
        envelope = _envelope("sms")
        etree.SubElement(envelope, "source").text = body["sender"]
        destinations = etree.SubElement(envelope, "destinations")
        for recipient in body["recipients"]:
            phone = etree.SubElement(destinations, "phone")
            phone.text = recipient["phone"]
            if "external_id" in recipient:
                phone.set("id", recipient["external_id"])
        etree.SubElement(envelope, "message").text = body["text"]
        root = await self.call(envelope)
        if isinstance(root, Response):
            return root
        return JSONResponse({"campaign_id": _text(root, "shipment_id")}, status_code=202)

    async def reports(self, request: Request) -> Response:
        envelope = _envelope("dlrByDate")
        etree.SubElement(etree.SubElement(envelope, "transactions"), "external_id").text = "null"
        etree.SubElement(envelope, "from").text = _upstream_time(request.query_params["from"])
        etree.SubElement(envelope, "to").text = _upstream_time(request.query_params["to"])
        root = await self.call(envelope)
        if isinstance(root, Response):
            return root
        data = []
        for row in root.iterfind("transactions/transaction"):
            fields = {child.tag: (child.text or "").strip() or None for child in row}
            status, date = fields.get("status") or "", fields.get("date")
            data.append({"external_id": fields.get("external_id"),
                         "campaign_id": fields.get("shipment_id"),
                         "state": STATES.get(status, "unknown"), "status_code": int(status),
                         "description": fields.get("en_message"),
                         "description_he": fields.get("he_message"),
                         "reported_at": _iso(date) if date else None})
        return JSONResponse({"data": data})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def create_app(url: str) -> Starlette:
    floor = Floor(url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as session:
            floor.session = session
            yield

    return Starlette(lifespan=lifespan, routes=[
        Route("/v1/balance", floor.balance, methods=["GET"]),
        Route("/v1/messages", floor.send, methods=["POST"]),
        Route("/v1/reports/dlr", floor.reports, methods=["GET"]),
        Route("/healthz", floor.healthz, methods=["GET"]),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream-url", required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.upstream_url), host=args.host, port=args.port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
