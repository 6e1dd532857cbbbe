"""Debian's Chromium through Playwright's sync API, for every test that involves a page or a player.

Playwright's own browser download is not reachable here; the system Chromium is required (CI installs it),
so a missing browser is an error, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = os.environ.get("H5GATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(extra_args: list[str] | None = None) -> Iterator[Browser]:
    """A headless Chromium for the duration of the generator (use it as a fixture body)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + (extra_args or []), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, *, width: int = 1280, height: int = 800, accept_dialogs: bool = False) -> Iterator[Page]:
    """A page in a fresh context; `page.page_errors` collects uncaught exceptions and unhandled rejections."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if accept_dialogs:
        page.on("dialog", lambda dialog: dialog.accept())
    page.page_errors = errors  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Any, name: str, *, full_page: bool = False) -> None:
    """Keep a screenshot when H5GATE_SCREENSHOTS names a folder (to look at what the tests saw)."""
    target = os.environ.get("H5GATE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / name), full_page=full_page)
