"""The contract as served: ``/openapi.yaml``, ``/openapi.json`` and ``/docs``.

``/docs`` is Swagger UI 5 (which reads OpenAPI 3.1) served from the proxy itself, no CDN.

The assets come from the ``swagger-ui-bundle-v2`` package; only the few the page loads are
served. The page fetches ``/openapi.json`` and points its ``servers`` at the page's own origin,
so "Try it out" calls the proxy that served the docs, whatever address reached it (the file's
``servers`` names the default local address).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from swagger_ui_bundle import swagger_ui_path

from proxy.errors import RouteNotFound

SPEC_FILE = "openapi.yaml"  # packaged with the proxy (a link to the repository's openapi.yaml)


def spec_bytes() -> bytes:
    return resources.files("proxy").joinpath(SPEC_FILE).read_bytes()


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(spec_bytes().decode("utf-8"))
    return spec


def spec_routes(spec: dict[str, Any], windows: Iterable[tuple[str, str]] = (),
                now: datetime | None = None) -> list[Route]:
    """The spec the app was built from: the packaged file as it is, and the same as JSON;
    with ``now``, the examples of the ``windows``' parameters (pointers to their start and
    end) moved to the day before it."""
    as_yaml = spec_bytes() if spec == load_spec() else yaml.safe_dump(
        spec, allow_unicode=True, sort_keys=False).encode()
    if now is not None:
        spec, as_yaml = _recent_windows(spec, as_yaml, dict(windows), now)
    as_json = json.dumps(spec, ensure_ascii=False).encode()

    async def openapi_yaml(request: Request) -> Response:
        return Response(as_yaml, media_type="application/yaml")

    async def openapi_json(request: Request) -> Response:
        return Response(as_json, media_type="application/json")

    return [Route("/openapi.yaml", openapi_yaml, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"])]


def _recent_windows(spec: dict[str, Any], as_yaml: bytes, windows: dict[str, str],
                    now: datetime) -> tuple[dict[str, Any], bytes]:
    """A report window must start within the last 365 days
    (docs/upstream-protocol.md#report-windows): the file's fixed example dates would stop
    working a year on. Served, the
    window's examples are yesterday, so "Try it out" and a run from the examples always work.
    The YAML keeps its form: only the example values change."""
    spec = copy.deepcopy(spec)
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = {**dict.fromkeys(windows.values(), midnight.isoformat()),
           **dict.fromkeys(windows, (midnight - timedelta(days=1)).isoformat())}
    moved: dict[str, str] = {}
    for parameter in _parameters(spec):
        where = f"/{parameter.get('in')}/{parameter.get('name')}"
        if where in day and isinstance(parameter.get("example"), str):
            moved[parameter["example"]] = parameter["example"] = day[where]
    text = as_yaml.decode("utf-8")
    for old, new in moved.items():
        text = text.replace(f"example: '{old}'", f"example: '{new}'")
    return spec, text.encode("utf-8")


def _parameters(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every parameter object of the spec once, its components' included, in file order."""
    found = list(spec.get("components", {}).get("parameters", {}).values())
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict):
                found += [p for p in operation.get("parameters", ()) if "$ref" not in p]
    return [p for p in found if isinstance(p, dict)]


ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png")

PAGE = """\
<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>SMS Leads REST proxy: API docs</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="/docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

INIT = """\
fetch("/openapi.json")
  .then((answer) => answer.json())
  .then((spec) => {
    spec.servers = [{url: window.location.origin, description: "this proxy"}];
    window.ui = SwaggerUIBundle({
      spec: spec,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      presets: [SwaggerUIBundle.presets.apis],
      deepLinking: true,
      displayOperationId: true,
      validatorUrl: null,
    });
  });
"""

# Scripts and styles from this origin only (Swagger UI sets some inline styles; its images are
# data: URLs); the page may call nothing but this origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'none'")


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": CSP})


async def init(request: Request) -> Response:
    return Response(INIT, media_type="text/javascript")


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise RouteNotFound(f"no resource at {request.url.path}")
    return FileResponse(Path(str(swagger_ui_path)) / name)


def routes() -> list[Route]:
    return [Route("/docs", page, methods=["GET"]),
            Route("/docs/init.js", init, methods=["GET"]),
            Route("/docs/{name}", asset, methods=["GET"])]
