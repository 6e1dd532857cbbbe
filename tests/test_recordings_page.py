"""The /recordings page in a real Chromium: timeline, playback through h5splayer.js (pause, seek, speed),
download and the snapshots gallery, against recordings of the session's demo source.

Screenshots go to $H5GATE_SCREENSHOTS (if set) and to the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from playwright import sync_api

from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_records import wait_closed
from tools.harness.gateway import Gateway


def playhead(page) -> float:
    return page.evaluate("() => H5gateRecordings.playhead") / 1000


def video_time(page) -> float:
    return page.evaluate("() => document.getElementById('pb-video').currentTime")


def test_recordings_page_plays_pauses_seeks_and_speeds(gateway: Gateway, tmp_path: Path) -> None:
    gw, tag = gateway, uuid.uuid4().hex[:6]
    time.sleep(5)  # pre-record material in the demo hub
    t0 = time.time()
    rec = gw.ok("Record", token="demo", duration=7, filename=f"page{tag}")
    gw.ok("Snapshot", token="demo")
    found = wait_closed(gw, "demo", t0, rec["strPath"], timeout=25)
    start = found["nStartTimeMs"] / 1000

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(gw.base + "/console/login")
            page.evaluate(
                f"() => {{ localStorage.setItem('h5gate_session', '{gw.session}');"
                " localStorage.setItem('h5gate_user', 'admin'); }"
            )
            page.goto(gw.base + "/console/recordings?token=demo")
            page.wait_for_function("() => H5gateRecordings.records.length > 0", timeout=10_000)
            assert page.locator("#timeline .span").count() >= 1
            page.wait_for_function(
                "() => document.querySelector('#shots img') && document.querySelector('#shots img').naturalWidth > 0",
                timeout=10_000,
            )

            row = page.locator(f"#spans tr:has(a[href*='page{tag}.mp4'])")
            row.click()
            page.wait_for_function("() => document.getElementById('pb-video').currentTime > 1.5", timeout=15_000)
            assert start - 1 <= playhead(page) <= start + 6
            assert page.is_visible("#download") and page.inner_text("#clock") != "--:--:--"

            page.click("#play")  # pause
            page.wait_for_timeout(400)
            paused_at = video_time(page)
            page.wait_for_timeout(1200)
            assert video_time(page) == paused_at and page.inner_text("#play") == "Play"
            page.click("#play")  # resume
            page.wait_for_function(
                f"() => document.getElementById('pb-video').currentTime > {paused_at + 0.5}", timeout=10_000
            )

            page.select_option("#speed", "4")
            before, wall = playhead(page), time.monotonic()
            page.wait_for_timeout(2500)
            assert playhead(page) - before >= 1.8 * (time.monotonic() - wall - 1), (before, playhead(page))

            page.select_option("#speed", "1")
            box = page.locator("#timeline").bounding_box()
            x = page.evaluate(
                f"() => ({start * 1000 + 500} - H5gateRecordings.windowStart) / (H5gateRecordings.zoom * 1000)"
            )
            page.mouse.click(box["x"] + x * box["width"], box["y"] + box["height"] / 2)  # seek to the start
            page.wait_for_function(f"() => H5gateRecordings.playhead / 1000 < {start + 2.5}", timeout=10_000)
            page.wait_for_timeout(1500)
            assert page.evaluate("() => !document.getElementById('pb-video').paused")
            shot = tmp_path / "recordings.png"
            page.screenshot(path=str(shot))
            if os.environ.get("H5GATE_SCREENSHOTS"):
                Path(os.environ["H5GATE_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, Path(os.environ["H5GATE_SCREENSHOTS"]) / "recordings.png")

            href = page.get_attribute(f"#spans a[href*='page{tag}.mp4']", "href")
            got = page.evaluate(
                "async (url) => { const r = await fetch(url); return [r.status,"
                " r.headers.get('content-type'), (await r.arrayBuffer()).byteLength]; }",
                href,
            )
            assert got[0] == 200 and got[1] == "video/mp4" and got[2] == found["nSize"]
            assert not errors, errors
        finally:
            browser.close()
