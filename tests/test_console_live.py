"""The live page in a real Chromium: layouts 1/4/9/16 with pages, tiles dragged into a new order, per-tile
full screen, and the tile buttons (snapshot, record, sound) checked against what the server then holds.
Login across tabs and reloads, phone widths, light and dark themes and the favicon are checked here too.

Set H5GATE_SCREENSHOTS=<dir> to keep screenshots of what the tests saw.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import launch, new_page, screenshot
from tests.test_records import FFMPEG, iso_time
from tools.harness.gateway import Gateway, free_port

DEMO = Path(__file__).resolve().parents[1] / "media" / "demo.mp4"

GRID_TILES = "() => Array.from(document.querySelectorAll('#grid .tile')).map(t => t.dataset.token)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from new_page(browser, width=1366, height=768, accept_dialogs=True)


@pytest.fixture
def five_more(gateway: Gateway) -> Iterator[list[str]]:
    """Five more (unreachable, on-demand) sources: six in all, more than one page of four."""
    tokens = [f"lay{i}" for i in range(5)]
    for t in tokens:
        gateway.ok("AddSrcRTSP", token=t, name=f"Layout {t}", url=f"rtsp://127.0.0.1:9/{t}", connecttype="ondemand")
    yield tokens
    for t in tokens:
        gateway.get("DelSrc", token=t)


def sign_in(page: Page, gw: Gateway, path: str = "/console/") -> None:
    """Open a console page with the gateway's admin session stored as the login page leaves it."""
    page.goto(gw.base + "/healthz")  # any page of the origin: the login page would move on
    page.evaluate(
        "(s) => { localStorage.setItem('h5gate_session', s); localStorage.setItem('h5gate_user', 'admin'); }",
        gw.session,
    )
    page.goto(gw.base + path)


def tile_width(page: Page, token: str) -> float:
    box = page.locator(f".tile[data-token={token}]").bounding_box()
    assert box is not None
    return box["width"]


def wait_tiles(page: Page, count: int) -> list[str]:
    page.wait_for_function(f"() => document.querySelectorAll('#grid .tile').length === {count}", timeout=10_000)
    return page.evaluate(GRID_TILES)


def test_layouts_pages_and_drag_to_reorder(page: Page, gateway: Gateway, five_more: list[str]) -> None:
    sign_in(page, gateway)
    shown = wait_tiles(page, 4)  # four at a time unless chosen otherwise
    assert shown[0] == "demo" and page.locator("#pager").is_visible()
    assert page.inner_text("#page-label") == "1 / 2"
    w4 = tile_width(page, "demo")
    screenshot(page, "live-4.png")

    page.click("[data-layout-button='9']")
    assert len(wait_tiles(page, 6)) == 6 and page.locator("#pager").is_hidden()
    assert page.locator("#grid .tile-empty").count() == 3  # the empty places of the 3 x 3 grid
    w9 = tile_width(page, "demo")
    assert w9 < 0.8 * w4, (w4, w9)
    page.click("[data-layout-button='16']")
    wait_tiles(page, 6)
    assert page.locator("#grid .tile-empty").count() == 10
    assert tile_width(page, "demo") < 0.85 * w9
    page.click("[data-layout-button='1']")
    assert wait_tiles(page, 1) == ["demo"]
    w1 = tile_width(page, "demo")
    assert w1 > 1.5 * w4, (w1, w4)
    assert page.inner_text("#page-label") == "1 / 6"
    page.click("#page-next")
    page.wait_for_function("() => document.querySelector('#grid .tile').dataset.token !== 'demo'", timeout=5_000)
    assert page.get_attribute("[data-layout-button='1']", "aria-pressed") == "true"

    # the layout is remembered; drag the first tile's head onto the third: the two swap, and it sticks
    page.reload()
    wait_tiles(page, 1)
    page.click("[data-layout-button='9']")
    before = wait_tiles(page, 6)
    first = page.locator(f".tile[data-token={before[0]}] .tile-head .grip").bounding_box()
    third = page.locator(f".tile[data-token={before[2]}] .tile-name").bounding_box()
    assert first and third
    page.mouse.move(first["x"] + 5, first["y"] + 5)
    page.mouse.down()
    page.mouse.move(third["x"] + 10, third["y"] + 5, steps=8)
    assert page.locator(f".tile[data-token={before[2]}].drop-target").count() == 1
    page.mouse.up()
    swapped = [before[2], before[1], before[0], *before[3:]]
    page.wait_for_function(f"() => ({GRID_TILES})().join() === {','.join(swapped)!r}", timeout=5_000)
    page.reload()
    assert wait_tiles(page, 6) == swapped
    assert page.page_errors == []


def test_tile_fullscreen_sound_snapshot_and_record(page: Page, gateway: Gateway) -> None:
    gw = gateway
    sign_in(page, gw)
    tile = page.locator(".tile[data-token=demo]")
    page.wait_for_function(
        "() => { const v = document.querySelector('.tile[data-token=demo] video');"
        " return v && v.currentTime > 0.5 && !v.paused; }",
        timeout=20_000,
    )
    # full screen: the tile's picture (with its badges), and back with a double click
    tile.locator(".act-full").click()
    page.wait_for_function(
        "() => document.fullscreenElement === document.querySelector('.tile[data-token=demo] .tile-video')",
        timeout=5_000,
    )
    box = page.evaluate("() => document.fullscreenElement.getBoundingClientRect().width")
    assert box == page.viewport_size["width"]
    tile.locator("video").dblclick()
    page.wait_for_function("() => document.fullscreenElement === null", timeout=5_000)

    # sound: off at first and shown so; the button turns it on (and says so), clicking the picture does not
    video = "document.querySelector('.tile[data-token=demo] video')"
    audio = tile.locator(".act-audio")
    assert gw.source("demo")["strAudioCodec"], "the demo clip has sound"
    assert page.evaluate(f"{video}.muted") and audio.get_attribute("aria-pressed") == "false"
    assert tile.locator(".mute-badge").is_visible()
    tile.locator("video").click()
    assert page.evaluate(f"{video}.muted")
    audio.click()
    assert not page.evaluate(f"{video}.muted") and audio.get_attribute("aria-pressed") == "true"
    assert audio.get_attribute("title") == "sound is on: turn it off" and tile.locator(".mute-badge").is_hidden()
    audio.click()
    assert page.evaluate(f"{video}.muted") and tile.locator(".mute-badge").is_visible()

    # snapshot: a new JPEG in Search
    def snapshots() -> list[dict]:
        return gw.ok("Search", token="demo", type="snapshot", start=iso_time(t0 - 5), end=iso_time(time.time() + 60))[
            "record"
        ]

    t0 = time.time()
    assert snapshots() == []
    tile.locator(".act-snap").click()
    page.wait_for_function("() => document.getElementById('notice').textContent === 'Snapshot of demo saved'")
    found = snapshots()
    assert len(found) == 1 and found[0]["strPath"].endswith(".jpg")

    # record: ManualRecordStart, the REC badge; again: ManualRecordStop, a file in Search
    def manual() -> list[dict]:
        status = gw.ok("GetRecordStatus", token="demo")["src"][0]
        return [r for r in status["recording"] if r["strOrigin"] == "ManualRecordStart"]

    rec = tile.locator(".act-rec")
    assert manual() == [] and rec.get_attribute("aria-pressed") == "false"
    rec.click()
    page.wait_for_function(
        "() => document.querySelector('.tile[data-token=demo] .act-rec').getAttribute('aria-pressed') === 'true'",
        timeout=10_000,
    )
    assert len(manual()) == 1 and tile.locator(".rec-badge").is_visible()
    screenshot(page, "live-recording.png")
    time.sleep(2)
    rec.click()
    page.wait_for_function(
        "() => document.querySelector('.tile[data-token=demo] .act-rec').getAttribute('aria-pressed') === 'false'",
        timeout=10_000,
    )
    assert manual() == [] and tile.locator(".rec-badge").is_hidden()
    files = gw.ok("Search", token="demo", type="record", start=iso_time(t0 - 60), end=iso_time(time.time() + 60))
    assert any(r["nType"] == "H5_REC_MANUAL" for r in files["record"]), files
    assert page.page_errors == []


def test_login_survives_new_tabs_and_reloads_and_works_at_360_px(browser: Browser, gateway: Gateway) -> None:
    context = browser.new_context(viewport={"width": 360, "height": 740})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(gateway.base + "/console/")
        page.wait_for_url(gateway.base + "/console/login?next=%2Fconsole%2F", timeout=10_000)
        user = page.locator("input[name=user]")
        assert user.is_visible() and page.locator("input[name=password]").is_visible()
        box = user.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 360
        screenshot(page, "login-360.png")
        user.fill("admin")
        page.fill("input[name=password]", "12345")
        page.click("button[type=submit]")
        page.wait_for_url(gateway.base + "/console/", timeout=10_000)
        page.locator(".tile[data-token=demo]").wait_for(state="visible", timeout=10_000)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 360  # nothing sticks out
        screenshot(page, "live-360.png")

        # a second tab, a reload: still signed in, no login page
        second = context.new_page()
        second.goto(gateway.base + "/console/recordings")
        second.wait_for_function("() => H5gateRecordings.token === 'demo'", timeout=10_000)
        assert second.url == gateway.base + "/console/recordings"
        assert second.inner_text("#whoami") == "admin"
        page.reload()
        page.locator(".tile[data-token=demo]").wait_for(state="visible", timeout=10_000)
        # a tab opened on the login page while signed in goes straight on
        third = context.new_page()
        third.goto(gateway.base + "/console/login")
        third.wait_for_url(gateway.base + "/console/", timeout=10_000)

        # the server forgets the session (as after a restart without persistent sessions): a 401 sends
        # every page to the login, and only then
        session = page.evaluate("() => localStorage.getItem('h5gate_session')")
        assert gateway.ok("Logout", session=session)["bStatus"]
        second.reload()
        second.wait_for_url(gateway.base + "/console/login?next=%2Fconsole%2Frecordings", timeout=10_000)
        assert second.evaluate("() => localStorage.getItem('h5gate_session')") is None
        assert errors == []
    finally:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_theme_follows_prefers_color_scheme(browser: Browser, gateway: Gateway, scheme: str) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, color_scheme=scheme)
    try:
        page = context.new_page()
        page.goto(gateway.base + "/console/login")
        rgb = page.evaluate(
            "() => getComputedStyle(document.body).backgroundColor.match(/\\d+/g).slice(0, 3).map(Number)"
        )
        text = page.evaluate("() => getComputedStyle(document.body).color.match(/\\d+/g).slice(0, 3).map(Number)")
        light = sum(rgb) / 3 > 200 and sum(text) / 3 < 80
        dark = sum(rgb) / 3 < 40 and sum(text) / 3 > 200
        assert light if scheme == "light" else dark, (scheme, rgb, text)
        assert page.evaluate("() => getComputedStyle(document.documentElement).colorScheme") == scheme
    finally:
        context.close()


def test_favicon(page: Page, gateway: Gateway) -> None:
    status, headers, body = gateway.request("/favicon.ico")
    assert status == 200 and headers["content-type"] == "image/x-icon" and body[:4] == b"\0\0\1\0"
    page.goto(gateway.base + "/console/login")
    href = page.evaluate("() => document.querySelector('link[rel=icon]').href")
    got = page.evaluate(
        "async (u) => { const r = await fetch(u); return [r.status, r.headers.get('content-type')]; }", href
    )
    assert got == [200, "image/svg+xml"]


def test_sources_page_edits_every_kind(page: Page, gateway: Gateway) -> None:
    """Edit from the list: the kind's form filled from GetSrc, token locked, Save -> UpdateSrc<Kind> -> GetSrc."""
    gw = gateway
    gw.ok("AddSrcRTSP", token="edit1", name="Gate", url="rtmp://127.0.0.1:9/live/gate", user="u", password="pw",
          connecttype="ondemand")  # fmt: skip
    gw.ok("AddSrcFile", token="edit2", name="Clip", url="demo.mp4", connecttype="ondemand")
    try:
        sign_in(page, gw, "/console/addcamera")
        row = page.locator("#source-rows tr[data-token=edit1]")
        row.wait_for(state="visible", timeout=10_000)
        assert "RTMP" in row.inner_text()
        row.locator("button.edit").click()
        form = page.locator("#stream-form")
        assert form.locator("input[name=token]").input_value() == "edit1"
        assert form.locator("input[name=token]").get_attribute("readonly") is not None
        assert form.locator("input[name=url]").input_value() == "rtmp://127.0.0.1:9/live/gate"
        assert form.locator("input[name=password]").input_value() == ""  # never shown; empty keeps it
        assert page.locator("[data-kind=file]").is_disabled()
        screenshot(page, "sources-edit.png", full_page=True)
        form.locator("input[name=name]").fill("Back gate")
        form.locator("input[name=url]").fill("rtsp://127.0.0.1:9/back")
        page.select_option("#stream-form select[name=rtsptype]", "H5_RTSP_TCP")
        form.locator("button[type=submit]").click()
        page.wait_for_function("() => document.getElementById('notice').textContent === 'Source \"Back gate\" saved'")
        src = gw.source("edit1")
        assert (src["strName"], src["strUrl"], src["strUser"], src["nRTSPType"]) == (
            "Back gate",
            "rtsp://127.0.0.1:9/back",
            "u",
            "H5_RTSP_TCP",
        )
        assert page.locator("#form-title").inner_text() == "Add a source"  # back to adding
        page.locator("#source-rows tr[data-token=edit1]", has_text="Back gate").wait_for(timeout=5_000)

        # a file source, opened from its tile's edit link on the live page
        page.goto(gw.base + "/console/")
        page.click("[data-layout-button='16']")
        page.locator(".tile[data-token=edit2] .act-edit").click()
        page.wait_for_url(gw.base + "/console/addcamera?edit=edit2", timeout=10_000)
        file_form = page.locator("#file-form")
        file_form.wait_for(state="visible", timeout=10_000)
        assert file_form.locator("input[name=name]").input_value() == "Clip"
        file_form.locator("input[name=url]").fill("/etc/passwd")
        file_form.locator("button[type=submit]").click()
        page.wait_for_function("() => document.getElementById('file-message').textContent.length > 0")
        assert page.inner_text("#file-message") == "file is outside the configured media roots"
        file_form.locator("input[name=url]").fill("demo.mp4")
        file_form.locator("input[name=name]").fill("Lobby loop")
        page.uncheck("#file-form input[name=audio]")
        file_form.locator("button[type=submit]").click()
        page.wait_for_function("() => document.getElementById('notice').textContent.endsWith('saved')")
        src = gw.source("edit2")
        assert (src["strName"], src["bEnableAudio"], src["nType"]) == ("Lobby loop", False, "H5_FILE")
        assert page.page_errors == []
    finally:
        gw.get("DelSrc", token="edit1")
        gw.get("DelSrc", token="edit2")


def test_sources_page_adds_an_rtmp_push_source(page: Page, tmp_path: Path) -> None:
    """RTMP push: the page shows the publish URL (with its key) that AddRTMPPush answered; ffmpeg publishing
    the demo clip to exactly that URL brings the source online."""
    gw = Gateway(tmp_path / "gw", extra_args=["--no-demo"], env={"H5GATE_RTMP_PORT": str(free_port())}).start()
    publisher = None
    try:
        sign_in(page, gw, "/console/addcamera?kind=push")
        form = page.locator("#push-form")
        form.locator("input[name=name]").fill("Studio encoder")
        form.locator("input[name=token]").fill("studio")
        form.locator("button[type=submit]").click()
        page.locator("#push-result").wait_for(state="visible", timeout=10_000)
        url = page.input_value("#push-url")
        src = gw.source("studio")
        assert src["nType"] == "H5_RTMP_PUSH" and src["strName"] == "Studio encoder"
        assert url == src["strUrl"] and url.startswith("rtmp://127.0.0.1:") and "/live/studio?key=" in url
        row = page.locator("#source-rows tr[data-token=studio]")
        row.wait_for(timeout=5_000)
        assert "RTMP push" in row.inner_text() and row.locator("button.edit").is_disabled()
        screenshot(page, "sources-push.png", full_page=True)
        publisher = subprocess.Popen(
            [FFMPEG, "-nostdin", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(DEMO), "-c", "copy",
             "-f", "flv", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        gw.wait_online("studio", timeout=30)
        assert page.page_errors == []
    finally:
        if publisher is not None:
            publisher.kill()
            publisher.wait()
        gw.stop()
