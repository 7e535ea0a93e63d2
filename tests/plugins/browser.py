"""pytest fixtures: the system's headless Chromium driven by Playwright (sync API), no download."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Request,
    ViewportSize,
    sync_playwright,
)

from tests.plugins.missing import missing_part

BROWSER_ENV = "BATCHBRIDGE_TEST_BROWSER"
"""Path of a Chromium binary to use instead of the ones scripts/system-deps.sh installs."""

# Debian's packages: chromium-headless-shell (installed by scripts/system-deps.sh), or a
# full chromium. Playwright's own browser builds are never used: their download fails here.
CANDIDATES = ("chromium-headless-shell", "chromium")

# A closed network: without the background-networking flags Chromium keeps trying Google's
# hosts (updates, sync, safe browsing) and this machine refuses them many at a time. As
# root Chromium refuses to start without --no-sandbox; the tests only visit 127.0.0.1.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# The README's screenshots are taken at this size; a step waits at most this long.
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
TIMEOUT_MS = 15_000


def find_browser() -> Path:
    """The Chromium binary to drive: $BATCHBRIDGE_TEST_BROWSER, else Debian's on PATH."""
    configured = os.environ.get(BROWSER_ENV)
    if configured:
        return Path(configured)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    missing_part(
        "no headless Chromium: install Debian's chromium-headless-shell "
        f"(scripts/system-deps.sh) or set ${BROWSER_ENV}"
    )


class Tab:
    """One browser context and its page, recording every URL requested and every title shown.

    The PHI scan reads `urls` and `titles`: neither may ever carry a patient value, revealed
    pages included (ids only in URLs, no values in titles).
    """

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.urls: list[str] = []
        self.titles: list[str] = []
        context.on("request", self._requested)
        self.page: Page = context.new_page()
        self.page.on("load", lambda page: self.titles.append(page.title()))

    def another(self) -> Tab:
        """Another person's tab in the same browser: a new context, so no shared cookies."""
        browser = self.context.browser
        assert browser is not None
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        return Tab(context)

    def _requested(self, request: Request) -> None:
        self.urls.append(request.url)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session; each test opens its own context (`tab`)."""
    executable = find_browser()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=LAUNCH_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    """A fresh context (no cookies) and page, sized for the README's screenshots."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield Tab(context)
    finally:
        context.close()
