"""The sandbox console in a real headless Chromium (Debian's, driven by Playwright): the
README's first session appears on it step by step, a reply and a STOP made on it reach the
API, one action is made with the keyboard only, axe-core finds no serious accessibility
violation, and the README's screenshot (docs/sandbox-console.png) is taken here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from tests.clients.support import npm_install
from tests.processes import ROOT, running
from tests.test_docs_browser import ARGS, CHROMIUM

SCREENSHOT = ROOT / "docs" / "sandbox-console.png"
AXE = Path(__file__).resolve().parent / "axe"
# A fixed clock and seed: the same ids, times and outcomes on every run, so the screenshot
# comes out the same (README, "The sandbox").
SANDBOX = {"SANDBOX_CLOCK": "2026-11-25T22:14:00+02:00", "SANDBOX_SEED": "7"}
WINDOW = {"from": "2026-11-25T00:00:00+02:00", "to": "2026-11-25T23:59:00+02:00"}
FIRST = "+972501234567"
SECOND = "+972527654321"
REPLY = "תודה! מתי זה מגיע?"


def _serious(page: Page, axe: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now. evaluate() runs in
    the page without an inline <script>, which the page's policy would refuse."""
    page.evaluate(axe)
    found = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in found["violations"] if v["impact"] in ("serious", "critical")]


def _tab_to(page: Page, key: str, limit: int = 40) -> None:
    """Tab until the element with ``data-key`` ``key`` has the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.key") == key:
            return
    raise AssertionError(f"{key!r} is not reached with Tab")


def _phone(page: Page, number: str) -> Locator:
    return page.get_by_role("article", name=number)


def test_the_console_shows_the_first_session_and_plays_the_recipients(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run tests/run (as root it installs it)")
    axe = (npm_install(AXE) / "axe-core" / "axe.min.js").read_text("utf-8")
    problems: list[str] = []
    requested: list[str] = []
    with running(tmp_path, ["--sandbox"], env=SANDBOX) as server, sync_playwright() as playwright:
        api = httpx.Client(base_url=server.base, auth=("demo", "demo-token"), timeout=10)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1360, "height": 900}, reduced_motion="reduce")
        page.set_default_timeout(10_000)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("request", lambda request: requested.append(request.url))
        try:
            page.goto(server.base + "/sandbox")
            expect(page.locator("#connection")).to_have_text("Live")
            expect(page.locator("#now")).to_have_text("Wed, 25 Nov 2026, 22:14:00")
            credits = page.locator(".account .amount")

            # README, "A first session": the balance, then the send...
            assert api.get("/v1/balance").json() == {"credits": 1000}
            expect(credits).to_have_text("1,000")
            sent = api.post("/v1/messages", json={
                "sender": "DemoAPI", "text": "Your order has shipped",
                "recipients": [{"phone": FIRST, "external_id": "order-17"},
                               {"phone": "052-765-4321"}]})
            assert sent.status_code == 202
            campaign_id = sent.json()["campaign_id"]
            # ...appears at once on both phones, pending, and in the campaigns, charged
            for number in (FIRST, SECOND):
                expect(_phone(page, number).locator(".to-phone .text")).to_have_text(
                    "Your order has shipped")
                expect(_phone(page, number).locator(".status")).to_have_text(
                    "Sent, no report yet")
            expect(_phone(page, FIRST).locator(".tag")).to_have_text("order-17")
            campaign = page.locator(".campaign").filter(has_text=f"Campaign {campaign_id}")
            expect(campaign.locator(".badge")).to_have_text("Sent")
            expect(campaign.locator(".facts")).to_contain_text("Credits2")
            expect(credits).to_have_text("998")
            assert api.get("/v1/balance").json() == {"credits": 998}

            # The second recipient's delivery expires (a click)...
            _phone(page, SECOND).get_by_role("button", name=re.compile("^Expire")).click()
            expect(_phone(page, SECOND).locator(".status")).to_contain_text(
                "Expired after retries 22:14:00 · status 2")
            # ...and the clock moves on 2 seconds with the keyboard only: the first one's
            # report comes in ("a couple of seconds later").
            page.locator("h1").click()  # no focus, only where Tab starts from
            _tab_to(page, "advance 2")
            page.keyboard.press("Enter")
            expect(page.locator("#now")).to_have_text("Wed, 25 Nov 2026, 22:14:02")
            expect(_phone(page, FIRST).locator(".status")).to_have_text("Delivered 22:14:02")
            expect(campaign.locator(".badge")).to_have_text("Reported")
            reports = api.get("/v1/reports/dlr", params={"external_id": "order-17", **WINDOW})
            assert reports.json()["data"] == [{
                "external_id": "order-17", "campaign_id": campaign_id, "state": "delivered",
                "status_code": 102, "description": "Delivered", "description_he": "הגיע ליעד",
                "reported_at": "2026-11-25T22:14:00+02:00"}]

            # The README's refused send changes nothing on the phones.
            refused = api.post("/v1/messages", json={
                "sender": "DemoAPI", "recipients": [{"phone": "12345"}], "text": "hi"})
            assert refused.status_code == 422
            expect(page.locator(".campaign")).to_have_count(1)

            # The first recipient replies in Hebrew, typed and sent with the keyboard only...
            _phone(page, FIRST).get_by_role("heading").click()
            _tab_to(page, f"reply {FIRST}")
            page.keyboard.type(REPLY)
            page.keyboard.press("Enter")
            bubble = _phone(page, FIRST).locator(".from-phone .text")
            expect(bubble).to_have_text(REPLY)
            assert bubble.evaluate("e => getComputedStyle(e).direction") == "rtl"
            # ...and the application sees it through the API.
            incoming = api.get("/v1/incoming-messages", params=WINDOW).json()["data"]
            assert incoming[-1] == {"sender": FIRST, "recipient": "+972500000000",
                                    "text": REPLY, "received_at": "2026-11-25T22:14:00+02:00"}

            # The second recipient sends STOP: an incoming message, and the blacklist.
            _phone(page, SECOND).get_by_role("button", name=f"Send STOP from {SECOND}").click()
            expect(_phone(page, SECOND).locator(".badge")).to_have_text("Opted out")
            expect(_phone(page, SECOND).locator(".from-phone .text")).to_have_text("STOP")
            expect(page.locator("#blacklist li").first).to_contain_text(SECOND)
            blacklist = api.get("/v1/blacklist", params=WINDOW).json()["data"]
            assert {"phone": SECOND, "added_at": "2026-11-25T22:14:00+02:00"} in blacklist
            assert api.get("/v1/incoming-messages", params=WINDOW).json()["data"][-1][
                "text"] == "STOP"

            assert _serious(page, axe) == []
            page.evaluate("document.activeElement.blur()")
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled",
                            caret="hide")

            # Reset, through a dialog that the keyboard can leave.
            page.get_by_role("button", name="Reset demo…").click()
            dialog = page.get_by_role("dialog", name="Reset demo?")
            expect(dialog).to_be_visible()
            assert _serious(page, axe) == []
            page.keyboard.press("Escape")
            expect(dialog).to_be_hidden()
            expect(credits).to_have_text("998")
            page.get_by_role("button", name="Reset demo…").click()
            dialog.get_by_role("button", name="Reset").click()
            expect(credits).to_have_text("1,000")
            expect(page.locator(".campaign")).to_have_count(0)
            expect(_phone(page, FIRST)).to_have_count(0)
            assert api.get("/v1/balance").json() == {"credits": 1000}

            assert problems == []
            assert all(url.startswith(server.base + "/") for url in requested), requested
        except Exception as exc:
            shot = tmp_path / "console.png"
            page.screenshot(path=str(shot), full_page=True)
            raise AssertionError(f"{exc}\nscreenshot: {shot}\nbrowser console: {problems}") \
                from exc
        finally:
            browser.close()
            api.close()
