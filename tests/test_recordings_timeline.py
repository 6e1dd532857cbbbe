"""The recordings page's timeline in a real Chromium: zoom keeps the middle of what is shown (the "10 min"
button used to jump to 00:00-00:10), dragging moves the window without starting playback, and a span
marked on it exports to one MP4 that downloads."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import launch, new_page, screenshot
from tests.test_records import wait_closed
from tools.harness.gateway import Gateway


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from new_page(browser, width=1366, height=900)


def state(page: Page) -> dict:
    return page.evaluate(
        "() => ({start: H5gateRecordings.windowStart, zoom: H5gateRecordings.zoom, day: H5gateRecordings.dayStart,"
        " centre: H5gateRecordings.windowStart + H5gateRecordings.zoom * 500, player: !!H5gateRecordings.player})"
    )


def x_of(page: Page, ms: float) -> float:
    box = page.locator("#timeline").bounding_box()
    assert box
    s = state(page)
    return box["x"] + (ms - s["start"]) / (s["zoom"] * 1000) * box["width"]


def test_timeline_zooms_around_the_middle_drags_and_exports(page: Page, gateway: Gateway) -> None:
    gw, tag = gateway, uuid.uuid4().hex[:6]
    t0 = time.time()
    rec = gw.ok("Record", token="demo", duration=8, filename=f"tl{tag}")
    found = wait_closed(gw, "demo", t0, rec["strPath"], timeout=30)
    start_ms, end_ms = found["nStartTimeMs"], found["nEndTimeMs"]

    page.goto(gw.base + "/healthz")
    page.evaluate(
        "(s) => { localStorage.setItem('h5gate_session', s); localStorage.setItem('h5gate_user', 'admin'); }",
        gw.session,
    )
    page.goto(gw.base + "/console/recordings?token=demo")
    page.wait_for_function("() => H5gateRecordings.records.length > 0 && H5gateRecordings.zoom === 600")
    s = state(page)
    middle = s["centre"]
    if not (s["day"] + 3_600_000 < middle < s["day"] + 82_800_000):
        pytest.fail("run this test away from midnight: the window is clamped to the day there")

    # zoom out and in again: the middle stays where it was; never back to midnight
    page.click("[data-zoom='3600']")
    s = state(page)
    assert (s["zoom"], abs(s["centre"] - middle) < 1000) == (3600, True), (s, middle)
    page.click("[data-zoom='600']")
    s = state(page)
    assert s["zoom"] == 600 and abs(s["centre"] - middle) < 1000 and s["start"] > s["day"], (s, middle)
    page.click("[data-zoom='60']")
    assert abs(state(page)["centre"] - middle) < 1000
    page.click("[data-zoom='600']")

    # drag a quarter of the width to the left: the window moves 2.5 min later, nothing starts playing
    box = page.locator("#timeline").bounding_box()
    assert box
    y = box["y"] + box["height"] / 2
    before = state(page)["start"]
    page.mouse.move(box["x"] + box["width"] * 0.6, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.35, y, steps=10)
    page.mouse.up()
    s = state(page)
    assert abs(s["start"] - before - 150_000) < 3000, s["start"] - before
    assert not s["player"] and page.locator("#hint").is_visible()
    # and back, with the recording in view again
    page.mouse.move(box["x"] + box["width"] * 0.35, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=10)
    page.mouse.up()
    assert abs(state(page)["start"] - before) < 3000

    # mark 5 s of the recording with "Select" on, export, download
    page.click("#select-mode")
    a, b = start_ms + 1500, start_ms + 6500
    page.mouse.move(x_of(page, a), y)
    page.mouse.down()
    page.mouse.move(x_of(page, b), y, steps=10)
    page.mouse.up()
    assert not state(page)["player"]  # a selection is no click
    sel = page.evaluate("() => H5gateRecordings.selection")
    assert abs(sel[0] - a) < 2000 and abs(sel[1] - b) < 2000 and sel[1] <= end_ms + 1000, (sel, a, b)
    assert page.input_value("#export-from") and page.locator("#selection").is_visible()
    screenshot(page, "recordings-select.png")
    page.click("#export")
    link = page.locator("#export-link")
    link.wait_for(state="visible", timeout=30_000)
    href = link.get_attribute("href")
    got = page.evaluate(
        "async (u) => { const r = await fetch(u); return [r.status, r.headers.get('content-type'),"
        " (await r.arrayBuffer()).byteLength]; }",
        href,
    )
    assert got[0] == 200 and got[1] == "video/mp4" and got[2] > 10_000, got

    # typed times: a span that ends before it starts is refused in the page
    page.fill("#export-from", "12:00:10")
    page.fill("#export-to", "12:00:05")
    page.click("#export")
    assert page.inner_text("#export-message").startswith("choose a span")
    assert page.page_errors == []
