"""Every problem type the proxy sends resolves to a page that explains it."""

from __future__ import annotations

import re

import httpx
from starlette.testclient import TestClient

from proxy.app import create_app, load_spec
from proxy.errors import PROBLEM_BASE, ProblemError
from proxy.mapping import load_table
from proxy.problems import catalogue
from tests.conftest import Recorder


def _client() -> TestClient:
    return TestClient(create_app(transport=httpx.MockTransport(Recorder(b""))))


def test_every_type_in_the_status_table_and_the_error_tree_resolves():
    statuses = load_table().statuses
    slugs = {r.slug for c, r in statuses.codes.items() if c not in statuses.success}
    slugs |= {cls.slug for cls in _all(ProblemError) if "slug" in vars(cls)}
    with _client() as client:
        index = client.get("/problems").text
        for slug in slugs:
            page = client.get(f"/problems/{slug}")
            assert page.status_code == 200, slug
            assert page.headers["content-type"].startswith("text/html")
            assert f'href="/problems/{slug}"' in index


def test_an_upstream_type_names_its_codes_and_the_upstreams_words():
    with _client() as client:
        page = client.get("/problems/insufficient-credit").text
    assert "HTTP status <b>402</b>" in page
    assert re.search(r"<code>4</code>: Not enough credit, Purchase Now\.", page)


def test_the_type_of_a_real_problem_resolves():
    answer = b"<balance><status>977</status><message>x</message></balance>"
    app = create_app(transport=httpx.MockTransport(Recorder(answer)))
    with TestClient(app) as client:
        problem = client.get("/v1/balance", auth=("demo", "demo-token")).json()
        page = client.get(problem["type"])
    assert page.status_code == 200 and problem["title"] in page.text


def test_an_unknown_type_is_a_404_problem():
    with _client() as client:
        response = client.get("/problems/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def _all(cls: type) -> list[type]:
    return [cls] + [sub for direct in cls.__subclasses__() for sub in _all(direct)]


def test_the_spec_lists_every_problem_type_and_no_other():
    """Problem.type is an enum in openapi.yaml, so typed clients can switch over it: it is
    exactly the proxy's catalogue (its error classes and the status table)."""
    spec = load_spec()
    listed = spec["components"]["schemas"]["ProblemType"]["enum"]
    known = {PROBLEM_BASE + slug for slug in catalogue(load_table().statuses)}
    assert len(listed) == len(set(listed))
    assert set(listed) == known
