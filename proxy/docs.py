"""The contract as served: ``/openapi.yaml``, ``/openapi.json`` and ``/docs``.

``/docs`` is Swagger UI 5 (which reads OpenAPI 3.1) served from the proxy itself, no CDN.

The assets come from the ``swagger-ui-bundle-v2`` package; only the few the page loads are
served. The page fetches ``/openapi.json`` and points its ``servers`` at the page's own origin,
so "Try it out" calls the proxy that served the docs, whatever address reached it (the file's
``servers`` names the default local address).
"""

from __future__ import annotations

import json
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


def spec_routes(spec: dict[str, Any]) -> list[Route]:
    """The spec the app was built from: the packaged file as it is, and the same as JSON."""
    as_yaml = spec_bytes() if spec == load_spec() else yaml.safe_dump(
        spec, allow_unicode=True, sort_keys=False).encode()
    as_json = json.dumps(spec, ensure_ascii=False).encode()

    async def openapi_yaml(request: Request) -> Response:
        return Response(as_yaml, media_type="application/yaml")

    async def openapi_json(request: Request) -> Response:
        return Response(as_json, media_type="application/json")

    return [Route("/openapi.yaml", openapi_yaml, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"])]


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
