"""The console's ONVIF parts in a real browser: the add-camera page, the PTZ pad and the presets list.

A real gateway, tools/virtual_onvif.py (discovery by unicast to its loopback responder, nothing here
multicasts) and the GStreamer RTSP camera behind it, which wants the same credentials, so a tile only
plays if the gateway injected them. Chromium is the system one, as in tests/test_browser.py.
Set H5GATE_SCREENSHOTS=<dir> to keep screenshots of both pages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import launch, new_page
from tests.browser import screenshot as keep_screenshot
from tests.onvif_helpers import VirtualOnvif
from tools.harness.camera import GstCamera, wait_until
from tools.harness.gateway import Gateway

USER, PASSWORD = "operator", "p@ss:w/rd%?#1"  # URL syntax in the password must survive the page's query


@pytest.fixture(scope="module")
def rtsp_cam() -> Iterator[GstCamera]:
    with GstCamera(user=USER, password=PASSWORD, width=320, height=180, fps=15, gop=15, bitrate=300) as cam:
        yield cam


@pytest.fixture(scope="module")
def vcam(rtsp_cam: GstCamera) -> Iterator[VirtualOnvif]:
    with VirtualOnvif(
        "--name",
        "Lobby PTZ",
        "--rtsp-url-sub",
        rtsp_cam.url("h264_noaudio", credentials=False),
        rtsp_url=rtsp_cam.url("h264", credentials=False),
        user=USER,
        password=PASSWORD,
    ) as cam:
        yield cam


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, vcam: VirtualOnvif) -> Iterator[Gateway]:
    env = {"H5GATE_ONVIF_DISCOVERY_TARGET": vcam.discovery, "H5GATE_ONVIF_TIMEOUT": "4"}
    gateway = Gateway(tmp_path_factory.mktemp("console-onvif"), extra_args=["--no-demo"], env=env).start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def ptz_src(gw: Gateway, vcam: VirtualOnvif) -> str:
    gw.ok(
        "AddSrcONVIF", token="ptz_cam", name="PTZ camera", user=USER, password=PASSWORD, ip="127.0.0.1", port=vcam.port
    )
    return "ptz_cam"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from new_page(browser, height=900, accept_dialogs=True)


def screenshot(page: Page, name: str) -> None:
    keep_screenshot(page, name, full_page=True)


def open_as_admin(page, gw: Gateway, path: str) -> None:
    """Open a console page with the gateway's admin session, as the login page would leave it."""
    page.goto(gw.base + "/healthz")  # any page of the origin: the login page would move on
    page.evaluate(
        "(s) => { localStorage.setItem('h5gate_session', s); localStorage.setItem('h5gate_user', 'admin'); }",
        gw.session,
    )
    page.goto(gw.base + path)


def wait_playing(page, token: str, timeout: float = 30.0) -> None:
    page.wait_for_function(
        "(t) => { const v = document.querySelector(`.tile[data-token=${t}] video`);"
        " return v && v.currentTime > 0.5 && !v.paused; }",
        arg=token,
        timeout=timeout * 1000,
    )


def position(cam: VirtualOnvif) -> tuple[float, float, float]:
    ptz = cam.status()["ptz"]
    return ptz["pan"], ptz["tilt"], ptz["zoom"]


def hold(page, button, seconds: float) -> None:
    button.hover()
    page.mouse.down()
    time.sleep(seconds)
    page.mouse.up()


# -- (a) the add-camera page -------------------------------------------------------------------------------
def test_add_camera_page_searches_probes_and_adds(page, gw: Gateway, vcam: VirtualOnvif) -> None:
    open_as_admin(page, gw, "/console/")
    page.locator("#empty").wait_for(state="visible", timeout=10_000)
    page.click("#add-camera-link")
    page.wait_for_url(gw.base + "/console/addcamera", timeout=10_000)
    page.click("[data-kind=onvif]")  # the sources page adds every kind; ONVIF is one tab

    page.select_option("#search-timeout", "1")
    page.click("#search")
    row = page.locator(f"#device-rows tr[data-port='{vcam.port}']")
    row.wait_for(state="visible", timeout=10_000)
    assert "Lobby PTZ" in row.inner_text() and "H5G-Virtual-PTZ" in row.inner_text()
    assert "Found 1 device" in page.locator("#search-status").inner_text()
    row.get_by_role("button", name="Use").click()
    form = page.locator("#probe-form")
    assert form.locator("input[name=ip]").input_value() == "127.0.0.1"
    assert form.locator("input[name=port]").input_value() == str(vcam.port)
    assert form.locator("input[name=onvifaddr]").input_value() == "/onvif/device_service"

    # wrong password: the server's strCode, and nothing to add
    form.locator("input[name=user]").fill(USER)
    form.locator("input[name=password]").fill("wrong-" + PASSWORD)
    page.click("#probe")
    message = page.locator("#probe-message")
    page.wait_for_function("() => document.getElementById('probe-message').textContent.length > 0", timeout=10_000)
    assert message.inner_text() == "login failed: wrong user name or password"
    assert page.locator("#profiles-card").is_hidden() and page.locator("#add-card").is_hidden()
    screenshot(page, "addcamera-error.png")

    # the right one: its profiles
    form.locator("input[name=password]").fill(PASSWORD)
    page.click("#probe")
    page.locator("#profile-rows tr").nth(1).wait_for(state="visible", timeout=10_000)
    rows = page.locator("#profile-rows tr")
    assert rows.count() == 2
    main = page.locator("#profile-rows tr[data-profile=main]").inner_text()
    assert "H264" in main and "1920 × 1080" in main and "4096 kbit/s" in main and "/h264" in main
    assert "640 × 360" in page.locator("#profile-rows tr[data-profile=sub]").inner_text()
    assert message.inner_text() == "Connected: 2 profiles."
    add = page.locator("#onvif-add-form")
    assert add.locator("input[name=name]").input_value() == "Lobby PTZ"  # suggested from the search
    assert add.locator("input[name=token]").input_value() == "lobby_ptz"
    page.check("#profile-manual")
    page.select_option("#profile-main", "main")
    page.select_option("#profile-sub", "sub")
    screenshot(page, "addcamera.png")

    add.locator("input[name=token]").fill("lobby")
    page.click("#add-camera")
    tile = page.locator(".tile[data-token=lobby]")
    tile.wait_for(state="visible", timeout=15_000)
    assert page.url == gw.base + "/console/"
    assert 'Camera "Lobby PTZ" added' in page.locator("#notice").inner_text()
    src = gw.source("lobby")
    assert src["nType"] == "H5_ONVIF" and src["strName"] == "Lobby PTZ"
    assert (src["strSrcIpAddress"], src["strSrcPort"]) == ("127.0.0.1", str(vcam.port))
    assert (src["strOnvifProfileMain"], src["strOnvifProfileSub"], src["bOnvifProfileAuto"]) == ("main", "sub", False)
    assert tile.locator(".ptz").is_visible()
    wait_playing(page, "lobby")  # the camera wants the credentials: playing means they were injected
    assert page.page_errors == []


def test_add_camera_page_shows_the_server_error(page, gw: Gateway, vcam: VirtualOnvif) -> None:
    """A token already in use: AddSrcONVIF's strCode is shown and the page stays."""
    gw.ok("AddSrcRTSP", token="taken", url="rtsp://127.0.0.1:9/none", connecttype="H5_ONDEMAND")
    try:
        open_as_admin(page, gw, "/console/addcamera?kind=onvif")
        form = page.locator("#probe-form")
        form.locator("input[name=ip]").fill("127.0.0.1")
        form.locator("input[name=port]").fill(str(vcam.port))
        form.locator("input[name=user]").fill(USER)
        form.locator("input[name=password]").fill(PASSWORD)
        page.click("#probe")
        page.locator("#add-card").wait_for(state="visible", timeout=10_000)
        assert page.locator("#onvif-add-form input[name=token]").input_value() == "onvif_127.0.0.1"
        page.fill("#onvif-add-form input[name=token]", "taken")
        page.click("#add-camera")
        page.wait_for_function(
            "() => document.getElementById('onvif-add-message').textContent.length > 0", timeout=10_000
        )
        assert page.locator("#onvif-add-message").inner_text() == "token already exists: taken"
        assert page.url == gw.base + "/console/addcamera?kind=onvif"
        # editing the connection invalidates the profiles shown
        form.locator("input[name=port]").fill("1")
        assert page.locator("#profiles-card").is_hidden()
        assert page.page_errors == []
    finally:
        gw.ok("DelSrc", token="taken")


# -- (b) the PTZ pad and presets -----------------------------------------------------------------------------
def test_ptz_pad_hold_moves_release_stops(page, gw: Gateway, vcam: VirtualOnvif, ptz_src: str) -> None:
    open_as_admin(page, gw, "/console/")
    tile = page.locator(f".tile[data-token={ptz_src}]")
    tile.locator(".ptz").wait_for(state="visible", timeout=10_000)
    assert tile.locator(".ptz-speed-value").inner_text() == "0.5"

    before = position(vcam)
    tile.locator("button[data-action=left]").hover()
    page.mouse.down()
    try:
        assert wait_until(lambda: vcam.status()["ptz"]["moving"], 5), "the press sent no move"
        assert vcam.status()["ptz"]["velocity"]["pan"] == pytest.approx(-0.5)  # the slider's default
        assert "pressed" in (tile.locator("button[data-action=left]").get_attribute("class") or "")
        time.sleep(0.5)  # 0.5 x 0.5 units/s
    finally:
        page.mouse.up()
    assert wait_until(lambda: not vcam.status()["ptz"]["moving"], 5), "the release sent no stop"
    after = position(vcam)
    assert after[0] < before[0] - 0.05, (before, after)
    assert after[1:] == before[1:]
    time.sleep(0.3)
    assert position(vcam) == after  # stopped means stopped

    # the slider sets the speed of the next move; zoom is press-and-hold as well
    page.evaluate(
        "(t) => { const r = document.querySelector(`.tile[data-token=${t}] .ptz-speed-input`);"
        " r.value = '1'; r.dispatchEvent(new Event('input')); }",
        ptz_src,
    )
    assert tile.locator(".ptz-speed-value").inner_text() == "1.0"
    tile.locator("button[data-action=zoomin]").hover()
    page.mouse.down()
    try:
        assert wait_until(lambda: vcam.status()["ptz"]["moving"], 5)
        assert vcam.status()["ptz"]["velocity"]["zoom"] == pytest.approx(1.0)
    finally:
        page.mouse.up()
    assert wait_until(lambda: not vcam.status()["ptz"]["moving"], 5)

    # focus holds too (imaging service), iris steps once per click
    focus = vcam.status()["imaging"]["focus"]
    hold(page, tile.locator("button[data-action=focusin]"), 0.3)
    assert wait_until(lambda: not vcam.status()["imaging"]["focus_moving"], 5)
    assert vcam.status()["imaging"]["focus"] > focus + 0.05
    iris = vcam.status()["imaging"]["iris"]
    tile.locator("button[data-action=irisout]").click()
    assert wait_until(lambda: vcam.status()["imaging"]["iris"] < iris - 1, 5)
    assert tile.locator(".ptz-message").inner_text() == ""
    assert page.page_errors == []


def test_presets_save_go_delete_and_errors(page, gw: Gateway, vcam: VirtualOnvif, ptz_src: str) -> None:
    open_as_admin(page, gw, "/console/")
    tile = page.locator(f".tile[data-token={ptz_src}]")
    presets = tile.locator(".preset-list")
    presets.locator("li").first.wait_for(state="visible", timeout=10_000)

    home = position(vcam)
    tile.locator(".preset-add input").fill("Front door")
    tile.get_by_role("button", name="Save preset").click()
    item = presets.locator(".preset", has_text="Front door")
    item.wait_for(state="visible", timeout=10_000)
    token = item.get_attribute("data-preset")
    assert {"token": token, "name": "Front door"}.items() <= next(
        p for p in vcam.status()["presets"] if p["token"] == token
    ).items()
    assert tile.locator(".preset-add input").input_value() == ""

    hold(page, tile.locator("button[data-action=upright]"), 0.4)
    assert wait_until(lambda: not vcam.status()["ptz"]["moving"], 5)
    assert position(vcam) != pytest.approx(home, abs=1e-3)
    item.locator(".preset-go").click()
    assert wait_until(lambda: position(vcam) == pytest.approx(home, abs=1e-3), 5), (home, position(vcam))

    wait_playing(page, ptz_src)
    screenshot(page, "console-ptz.png")

    item.locator(".preset-del").click()  # confirm() is accepted by the fixture
    item.wait_for(state="detached", timeout=10_000)
    assert [p for p in vcam.status()["presets"] if p["token"] == token] == []
    assert presets.inner_text() == "No presets yet"

    # a preset that vanished from the device behind the page's back: the server's strCode is shown
    tile.locator(".preset-add input").fill("Gate")
    tile.get_by_role("button", name="Save preset").click()
    gate = presets.locator(".preset", has_text="Gate")
    gate.wait_for(state="visible", timeout=10_000)
    gw.ok("DelPreset", token=ptz_src, presettoken=gate.get_attribute("data-preset"))
    gate.locator(".preset-go").click()
    message = tile.locator(".ptz-message")
    page.wait_for_function(
        "(t) => document.querySelector(`.tile[data-token=${t}] .ptz-message`).textContent.length > 0",
        arg=ptz_src,
        timeout=10_000,
    )
    assert message.inner_text().startswith("the device refused: No such preset")
    tile.get_by_role("button", name="Reload").click()
    gate.wait_for(state="detached", timeout=10_000)
    assert page.page_errors == []
