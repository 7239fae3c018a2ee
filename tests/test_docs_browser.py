"""/docs in a real headless Chromium (Debian's, driven by Playwright; tests/run installs it):
every operation is listed, nothing is loaded from elsewhere, and "Try it out" works."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from proxy.docs import load_spec
from tests.processes import running

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
METHODS = {"get", "put", "post", "delete", "patch"}


def _spec_operations() -> dict[str, tuple[str, str]]:
    return {op["operationId"]: (method.upper(), path)
            for path, item in load_spec()["paths"].items()
            for method, op in item.items() if method in METHODS}


def _listed(page: Page) -> dict[str, tuple[str, str]]:
    """operationId -> (method, path) as the page shows them."""
    return {
        summary.locator(".opblock-summary-operation-id").inner_text().strip(): (
            summary.locator(".opblock-summary-method").inner_text().strip(),
            summary.locator(".opblock-summary-path").get_attribute("data-path") or "")
        for summary in page.locator(".opblock-summary").all()
    }


def _authorize(page: Page, username: str, password: str) -> None:
    page.locator(".auth-wrapper .authorize").click()
    dialog = page.locator(".modal-ux")
    basic = dialog.locator(".auth-container").filter(
        has=page.locator("h4 code", has_text=re.compile(r"^basicAuth$")))
    basic.locator("#auth-basic-username").fill(username)
    basic.locator("#auth-basic-password").fill(password)
    basic.get_by_role("button", name="Apply credentials").click()
    basic.get_by_role("button", name="Remove authorization").wait_for()  # took the credentials
    dialog.locator(".close-modal").click()


def _try_balance(page: Page) -> tuple[str, str, str]:
    """Expand GET /v1/balance, Try it out, Execute: the request URL, status and body shown."""
    block = page.locator(".opblock").filter(
        has=page.locator(".opblock-summary-operation-id", has_text="getBalance"))
    block.locator(".opblock-summary-control").click()
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    live = block.locator(".live-responses-table .response")
    live.wait_for()
    url = block.locator(".request-url pre").inner_text().strip()
    status = live.locator(".response-col_status").inner_text().strip()
    body = live.locator(".response-col_description pre").first.inner_text()
    return url, status, body


def test_docs_list_every_operation_and_try_it_out_calls_the_same_origin(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run tests/run (as root it installs it)")
    problems: list[str] = []
    requested: list[str] = []
    with running(tmp_path, ["--sandbox"]) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("request", lambda request: requested.append(request.url))
        try:
            page.goto(server.base + "/docs")
            page.locator(".opblock").first.wait_for()
            assert _listed(page) == _spec_operations()

            _authorize(page, "demo", "demo-token")
            url, status, body = _try_balance(page)
            assert url == server.base + "/v1/balance"
            assert status == "200"
            assert json.loads(body) == {"credits": 1000}
            assert problems == []
            assert all(url.startswith(server.base + "/") for url in requested), requested
        except Exception as exc:
            shot = tmp_path / "docs.png"
            page.screenshot(path=str(shot), full_page=True)
            raise AssertionError(f"{exc}\nscreenshot: {shot}\nbrowser console: {problems}") \
                from exc
        finally:
            browser.close()
    calls = [line for line in server.log_lines() if line.get("route") == "/v1/balance"]
    assert [(c["status"], c["upstream_command"]) for c in calls] == [(200, "balance")]
