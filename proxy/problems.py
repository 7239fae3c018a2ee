"""Problems on the wire: every :class:`~proxy.errors.ProblemError` rendered as
``application/problem+json`` by one set of handlers, and ``/problems/<type>``, where every
problem ``type`` the proxy sends resolves to a page saying what it means (RFC 9457 §3.1.1:
a type URI, dereferenced, "SHOULD provide human-readable documentation"). The catalogue is read
from the error classes and the status table, so a new problem type or upstream code documents
itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Match, Route

from proxy.errors import PROBLEM_BASE, MethodNotAllowed, ProblemError, RouteNotFound
from proxy.mapping import StatusTable
from proxy.observability import REQUEST_ID_HEADER, request_id


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"

    def __init__(self, error: ProblemError, request_id: str | None = None) -> None:
        body = error.as_json()
        if request_id is not None:  # the same id as the X-Request-ID header and the log line
            body["request_id"] = request_id
        super().__init__(body, status_code=error.status, headers=error.headers)


def _routes(request: Request, path: str | None = None) -> list[Route]:
    """The routes of the request's path (or of ``path``), whatever their methods."""
    scope = request.scope if path is None else {**request.scope, "path": path}
    return [route for route in request.app.routes
            if isinstance(route, Route) and route.matches(scope)[0] is not Match.NONE]


def _allowed(request: Request) -> str:
    """Every method of the resource (RFC 9110 §15.5.6). Each operation is its own route, and
    Starlette's 405 names only the methods of the first route that matched the path."""
    return ", ".join(sorted({method for route in _routes(request)
                             for method in route.methods or ()}))


def _not_found(request: Request) -> RouteNotFound:
    """404, naming the path without its trailing slash when that one exists (app.py turns
    Starlette's redirect off)."""
    path = request.url.path
    if path.endswith("/") and path != "/" and _routes(request, path.rstrip("/")):
        return RouteNotFound(f"no resource at {path}; the resource is {path.rstrip('/')}")
    return RouteNotFound(f"no resource at {path}")


async def _problem(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ProblemError):
        return ProblemResponse(exc, request_id(request))
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        error: ProblemError = MethodNotAllowed(f"{request.method} is not allowed here")
        error.headers["Allow"] = _allowed(request)
        return ProblemResponse(error, request_id(request))
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        return ProblemResponse(_not_found(request), request_id(request))
    raise exc


async def _bug(request: Request, exc: Exception) -> Response:
    """A bug: Starlette's ServerErrorMiddleware calls this for the answer, then re-raises so
    that uvicorn logs the traceback. It runs outside Observer, hence the header here."""
    found = request_id(request)
    response = ProblemResponse(ProblemError("the proxy failed; its log names this request"),
                               found)
    if found is not None:
        response.headers[REQUEST_ID_HEADER] = found
    return response


# Starlette's exception_handlers: our problems, its own 404/405, and 500 for a bug.
HANDLERS = {ProblemError: _problem, HTTPException: _problem, 500: _bug}

CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
STYLE = "body{font:16px/1.5 system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em}"


@dataclass(slots=True)
class ProblemType:
    slug: str
    status: int
    title: str
    upstream: list[tuple[int, str]] = field(default_factory=list)  # (code, upstream's text)


def _classes(cls: type[ProblemError]) -> list[type[ProblemError]]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _classes(direct))]


def catalogue(statuses: StatusTable) -> dict[str, ProblemType]:
    found = {cls.slug: ProblemType(cls.slug, cls.status, cls.title)
             for cls in _classes(ProblemError) if "slug" in vars(cls)}
    for code, refusal in sorted(statuses.codes.items()):
        if code in statuses.success:
            continue
        entry = found.setdefault(refusal.slug,
                                 ProblemType(refusal.slug, refusal.http, refusal.title))
        entry.upstream.append((code, statuses.messages.get(code, "")))
    for refusal in (*statuses.not_found.values(), statuses.unknown):
        found.setdefault(refusal.slug, ProblemType(refusal.slug, refusal.http, refusal.title))
    return found


def _page(title: str, body: str) -> HTMLResponse:
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP})


def routes(statuses: StatusTable) -> list[Route]:
    types = catalogue(statuses)

    async def index(request: Request) -> Response:
        rows = "".join(f'<li><a href="{PROBLEM_BASE}{t.slug}">{escape(t.slug)}</a> '
                       f"({t.status}): {escape(t.title)}</li>"
                       for t in sorted(types.values(), key=lambda t: (t.status, t.slug)))
        return _page("Problem types", f"<h1>Problem types</h1><ul>{rows}</ul>")

    async def one(request: Request) -> Response:
        entry = types.get(request.path_params["slug"])
        if entry is None:
            raise RouteNotFound(f"no problem type {request.path_params['slug'][:60]!r}")
        body = (f"<h1>{escape(entry.title)}</h1><p>HTTP status <b>{entry.status}</b>; "
                f"problem type <code>{PROBLEM_BASE}{escape(entry.slug)}</code>.</p>")
        if entry.upstream:
            codes = "".join(f"<li><code>{code}</code>: {escape(text)}</li>"
                            for code, text in entry.upstream)
            body += ("<p>Sent when SMS Leads answers with one of these statuses (its own words; "
                     "the problem carries them as <code>upstream_status</code> and "
                     f"<code>upstream_message</code>):</p><ul>{codes}</ul>")
        body += f'<p><a href="{PROBLEM_BASE.rstrip("/")}">All problem types</a></p>'
        return _page(entry.title, body)

    return [Route(PROBLEM_BASE.rstrip("/"), index, methods=["GET"]),
            Route(PROBLEM_BASE + "{slug}", one, methods=["GET"])]
