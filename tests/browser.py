"""A page in Debian's headless chromium, driven by Playwright (never a downloaded browser):
what the page logged as errors and every URL it asked for are kept, and a failure comes with
a screenshot."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags chromium tries Google's hosts at every start.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@dataclass
class Watched:
    page: Page
    problems: list[str] = field(default_factory=list)  # console errors and uncaught ones
    requested: list[str] = field(default_factory=list)

    def only_from(self, origin: str) -> bool:
        """Nothing was loaded from elsewhere (no CDN, no font service)."""
        return all(url.startswith(origin + "/") for url in self.requested)


@contextmanager
def browsing(shots: Path, name: str, timeout_ms: int = 15_000, **page: Any) -> Iterator[Watched]:
    """A fresh page; on any failure in the block, ``shots/<name>.png`` and the console's
    errors join the assertion."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run tests/run (as root it installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        watched = Watched(browser.new_page(**page))
        watched.page.set_default_timeout(timeout_ms)
        watched.page.on("console", lambda m: watched.problems.append(m.text)
                        if m.type == "error" else None)
        watched.page.on("pageerror", lambda error: watched.problems.append(str(error)))
        watched.page.on("request", lambda request: watched.requested.append(request.url))
        try:
            yield watched
        except Exception as exc:
            shot = shots / f"{name}.png"
            watched.page.screenshot(path=str(shot), full_page=True)
            raise AssertionError(f"{exc}\nscreenshot: {shot}\nbrowser console: "
                                 f"{watched.problems}") from exc
        finally:
            browser.close()
