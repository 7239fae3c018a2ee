from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=ZoneInfo("Asia/Jerusalem"))
BASIC = "Basic " + base64.b64encode(b"demo:demo-token").decode()


class Recorder:
    """A stand-in upstream for tests of the translation: answers with fixed XML, records
    every request it got."""

    def __init__(self, answer: bytes | Callable[[httpx.Request], httpx.Response] = b"") -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if callable(self.answer):
            return self.answer(request)
        return httpx.Response(200, content=self.answer,
                              headers={"Content-Type": "application/xml; charset=utf-8"})

    @property
    def envelope(self) -> str:
        """The last envelope without its XML declaration."""
        body = self.requests[-1].content.decode("utf-8")
        return body.split("?>", 1)[1].strip() if body.startswith("<?xml") else body


def deref(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow local $refs ("#/components/...") in the OpenAPI document."""
    while "$ref" in node:
        target: Any = spec
        for token in node["$ref"][2:].split("/"):
            target = target[token.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


# Figures a test wants in the run's closing summary (e.g. how many cases schemathesis made),
# printed by pytest_terminal_summary below, so tests/run and CI show them without -s.
FIGURES = pytest.StashKey[list[str]]()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> list[str]:
    return request.config.stash.setdefault(FIGURES, [])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
