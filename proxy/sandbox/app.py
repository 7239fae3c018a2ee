"""The sandbox over HTTP: ``POST /api`` like the real endpoint, ``GET /healthz``, and the
console at ``/sandbox`` (console.py).

    app = create_app(Sandbox())
    httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox")

Every well-formed exchange is HTTP 200, errors included: the <status> says what happened
(docs/upstream-protocol.md#transport). Other paths are 404, other methods 405; the
console's refusals are problems (application/problem+json), as the proxy's are.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.errors import ProblemError
from proxy.sandbox.console import console_routes
from proxy.sandbox.simulator import Sandbox

XML = "application/xml; charset=utf-8"


async def _problem(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ProblemError):
        raise exc
    return JSONResponse(exc.as_json(), status_code=exc.status, headers=exc.headers,
                        media_type="application/problem+json")


def create_app(sandbox: Sandbox) -> Starlette:
    async def api(request: Request) -> Response:
        body = await request.body()
        return Response(await sandbox.handle(body, request.headers.get("authorization")),
                        media_type=XML)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/api", api, methods=["POST"]),
                            Route("/healthz", healthz, methods=["GET"]),
                            *console_routes(sandbox)],
                    exception_handlers={ProblemError: _problem})
    app.state.sandbox = sandbox
    return app
