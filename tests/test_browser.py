"""Real-browser tests: the console pages and h5splayer.js against the running gateway.

Uses Playwright's sync API with the system Chromium (/usr/bin/chromium; Playwright's own browser
download is not used). The `gateway` fixture (tests/conftest.py) runs the real server with the
looping demo source `demo` and gives `.base`, `.session` and `.port`.
Set H5GATE_SCREENSHOTS=<dir> to keep screenshots of the pages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import launch, new_page, screenshot


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from new_page(browser, height=800)


def blank_video_page(page, gateway, *, hls: bool = False) -> None:
    """A page on the gateway's origin with one <video id=v> and our player script loaded."""
    page.goto(gateway.base + "/console/login")
    page.evaluate(
        """() => {
            document.body.innerHTML = '<video id="v" muted playsinline width="640" height="360"></video>';
            document.body.className = '';
        }"""
    )
    if hls:
        page.add_script_tag(url="/console/static/vendor/hls.min.js")
    page.add_script_tag(url="/console/static/h5splayer.js")


def player_conf(gateway) -> str:
    """The JS conf object literal for the demo source, as the vendor's pages build it."""
    return (
        "{videoid: 'v', protocol: window.location.protocol, host: window.location.host, rootpath: '/',"
        f" token: 'demo', hlsver: 'v1', session: '{gateway.session}', streamprofile: 'main',"
        " consolelog: 'true'}"
    )


def wait_advance(page, seconds: float, deadline_s: float) -> tuple[float, float]:
    """Wait until video#v's currentTime has moved forward by `seconds` from the first value it
    took once playback started; returns (first, last). Fails after deadline_s."""
    start = time.monotonic()
    first = None
    last = 0.0
    while time.monotonic() - start < deadline_s:
        cur = page.evaluate("() => document.getElementById('v').currentTime")
        playing = page.evaluate(
            "() => { const v = document.getElementById('v'); return !v.paused && v.readyState >= 2; }"
        )
        if first is None and playing:
            first = cur
        last = cur
        if first is not None and cur - first >= seconds:
            return first, cur
        page.wait_for_timeout(250)
    pytest.fail(
        f"currentTime did not advance {seconds} s within {deadline_s} s "
        f"(first playing at {first}, last {last}); page errors: {list(page.page_errors)}"
    )


# --------------------------------------------------------------------------- (a) login + console


def test_login_form_then_console_shows_demo(page, gateway):
    page.goto(gateway.base + "/console/login")
    page.fill("input[name=user]", "admin")
    page.fill("input[name=password]", "12345")
    page.click("button[type=submit]")
    page.wait_for_url(gateway.base + "/console/", timeout=10_000)
    session = page.evaluate("() => localStorage.getItem('h5gate_session')")
    assert session
    tile = page.locator(".tile[data-token=demo]")
    tile.wait_for(state="visible", timeout=10_000)
    assert "demo" in tile.inner_text()
    # the tile really plays (through H5sPlayerCreate -> H5sPlayerWS in Chromium)
    page.wait_for_function(
        "() => { const v = document.querySelector('.tile[data-token=demo] video');"
        " return v && v.currentTime > 1 && !v.paused; }",
        timeout=15_000,
    )
    page.wait_for_timeout(1500)  # let the stats line and the online dot settle for the screenshot
    screenshot(page, "console.png")
    assert "v" in page.locator(".version").inner_text()

    # log out: back to /login, and the server no longer knows the session
    page.click("#logout")
    page.wait_for_url(gateway.base + "/console/login", timeout=10_000)
    assert page.evaluate("() => localStorage.getItem('h5gate_session')") is None
    status, _ = gateway.get("GetSrc", session=session)
    assert status == 401
    assert page.page_errors == []


def test_login_wrong_password_shows_error(page, gateway):
    page.goto(gateway.base + "/console/login")
    page.fill("input[name=user]", "admin")
    page.fill("input[name=password]", "definitely-wrong")
    page.click("button[type=submit]")
    msg = page.locator("#login-message")
    page.wait_for_function("() => document.getElementById('login-message').textContent.length > 0", timeout=10_000)
    assert msg.inner_text().strip()
    assert page.url.rstrip("/").endswith("/login")
    assert page.page_errors == []


def test_console_without_session_goes_to_login(page, gateway):
    page.goto(gateway.base + "/console/recordings?token=demo")
    page.wait_for_url(gateway.base + "/console/login?next=%2Fconsole%2Frecordings%3Ftoken%3Ddemo", timeout=10_000)
    # signing in goes back to the page that sent us (and only to a console page)
    page.fill("input[name=user]", "admin")
    page.fill("input[name=password]", "12345")
    page.click("button[type=submit]")
    page.wait_for_url(gateway.base + "/console/recordings?token=demo", timeout=10_000)
    page.goto(gateway.base + "/console/login?next=https://example.org/")
    page.wait_for_url(gateway.base + "/console/", timeout=10_000)  # already signed in: straight on, never off-site


def login_console(page, gateway) -> None:
    """Open the console with the fixture's session (as the login page would leave it)."""
    page.goto(gateway.base + "/healthz")  # any page of the origin: the login page would move on
    page.evaluate(
        "(s) => { localStorage.setItem('h5gate_session', s); localStorage.setItem('h5gate_user', 'admin'); }",
        gateway.session,
    )
    page.goto(gateway.base + "/console/")
    page.locator(".tile[data-token=demo]").wait_for(state="visible", timeout=10_000)


def test_console_add_and_delete_source(page, gateway):
    """An RTSP source added on the sources page appears as a tile; its delete button removes it."""
    login_console(page, gateway)
    page.click("#add-camera-link")
    page.wait_for_url(gateway.base + "/console/addcamera", timeout=10_000)
    form = page.locator("#stream-form")
    assert form.is_visible()  # RTSP is the first tab: no hunting for the form
    form.locator("input[name=name]").fill("Browser test camera")
    form.locator("input[name=token]").fill("browsertest1")
    form.locator("input[name=url]").fill("rtsp://127.0.0.1:9/nothing-here")
    form.locator("input[name=user]").fill("u")
    form.locator("input[name=password]").fill("p")
    form.locator("button[type=submit]").click()
    page.wait_for_url(gateway.base + "/console/", timeout=10_000)
    tile = page.locator(".tile[data-token=browsertest1]")
    tile.wait_for(state="visible", timeout=10_000)
    assert "Browser test camera" in tile.inner_text()
    src = gateway.source("browsertest1")
    assert (src["nType"], src["strUrl"], src["strUser"]) == ("H5_STREAM", "rtsp://127.0.0.1:9/nothing-here", "u")

    # a token the server refuses: its strCode is shown under the form
    page.goto(gateway.base + "/console/addcamera")
    page.evaluate("() => document.querySelector('#stream-form input[name=token]').removeAttribute('pattern')")
    form.locator("input[name=name]").fill("bad")
    form.locator("input[name=token]").fill("bad token!")
    form.locator("input[name=url]").fill("rtsp://127.0.0.1:9/x")
    form.locator("button[type=submit]").click()
    page.wait_for_function("() => document.getElementById('stream-message').textContent.length > 0", timeout=10_000)
    assert "invalid token" in page.locator("#stream-message").inner_text()

    login_console(page, gateway)
    tile.wait_for(state="visible", timeout=10_000)
    page.on("dialog", lambda d: d.accept())
    tile.locator("button.danger").click()
    tile.wait_for(state="detached", timeout=10_000)
    status, body = gateway.get("GetSrc", token="browsertest1")
    assert status != 200 or not body.get("src"), body
    assert page.page_errors == []


def test_console_switches_tile_to_hls_and_back(page, gateway):
    login_console(page, gateway)
    tile = page.locator(".tile[data-token=demo]")
    info = ".tile[data-token=demo] .tile-info"
    page.wait_for_function(
        f"() => document.querySelector('{info}').textContent.startsWith('WS · playing')", timeout=15_000
    )
    tile.locator("button.seg", has_text="HLS").click()
    page.wait_for_function(
        f"() => document.querySelector('{info}').textContent.startsWith('HLS · playing')", timeout=30_000
    )
    t0 = page.evaluate("() => document.querySelector('.tile[data-token=demo] video').currentTime")
    page.wait_for_function(
        f"() => document.querySelector('.tile[data-token=demo] video').currentTime > {t0} + 1", timeout=15_000
    )
    tile.locator("button.seg", has_text="WS").click()
    page.wait_for_function(
        f"() => document.querySelector('{info}').textContent.startsWith('WS · playing')", timeout=15_000
    )
    assert page.page_errors == []


# --------------------------------------------------------------------------- (b) H5sPlayerWS


def test_ws_player_plays_demo_with_low_latency(page, gateway):
    blank_video_page(page, gateway)
    page.evaluate(f"() => {{ window.player = new H5sPlayerWS({player_conf(gateway)}); window.player.connect(); }}")
    connected = time.monotonic()
    wait_advance(page, 2.0, 15.0)
    # the player may skip part of the cached GOP to reach the live edge, so frames are counted
    # over the same 15 s window rather than at the moment currentTime has moved 2 s
    remaining_ms = max(1000, int((15.0 - (time.monotonic() - connected)) * 1000))
    page.wait_for_function(
        "() => document.getElementById('v').getVideoPlaybackQuality().totalVideoFrames > 30", timeout=remaining_ms
    )

    # latency, at least 5 s after connecting: sample for a second, every sample must be small
    page.wait_for_timeout(max(0, int((5.0 - (time.monotonic() - connected)) * 1000)))
    samples = []
    for _ in range(5):
        samples.append(page.evaluate("() => window.player.stats()"))
        page.wait_for_timeout(250)
    latencies = [s["latency"] for s in samples]
    assert max(latencies) < 1.5, samples
    last = samples[-1]
    assert last["state"] == "playing", last
    assert last["mime"].startswith("video/mp4"), last
    assert last["framesDecoded"] > 30, last
    assert page.page_errors == []

    page.evaluate("() => window.player.disconnect()")
    assert page.evaluate("() => window.player.stats().state") == "closed"


def test_ws_player_url_and_keepalive(page, gateway):
    """The socket URL carries token/profile/session and the player sends H5_KEEPALIVE every second."""
    blank_video_page(page, gateway)
    sockets = []
    sent = []

    def on_ws(ws):
        sockets.append(ws.url)
        ws.on("framesent", lambda payload: sent.append(payload))

    page.on("websocket", on_ws)
    page.evaluate(f"() => {{ window.player = new H5sPlayerWS({player_conf(gateway)}); window.player.connect(); }}")
    page.wait_for_timeout(3500)
    page.evaluate("() => window.player.disconnect()")
    assert sockets, "no WebSocket opened"
    url = sockets[0]
    assert "/api/v1/h5swsapi?token=demo&profile=main&session=" + gateway.session in url
    keepalives = [p for p in sent if p == '{"cmd":"H5_KEEPALIVE"}']
    assert len(keepalives) >= 2, sent
    assert page.page_errors == []


def test_player_create_picks_ws_rtc_or_hls(page, gateway):
    blank_video_page(page, gateway, hls=True)
    kinds = page.evaluate(
        f"""() => {{
            const conf = {player_conf(gateway)};
            const a = H5sPlayerCreate(conf);
            const saved = window.MediaSource, savedPc = window.RTCPeerConnection;
            window.MediaSource = undefined;  // as on iOS Safari: no MSE, but WebRTC
            const b = H5sPlayerCreate(conf);
            window.RTCPeerConnection = undefined;  // neither: HLS is what is left
            const c = H5sPlayerCreate(conf);
            window.MediaSource = saved;
            window.RTCPeerConnection = savedPc;
            return [a instanceof H5sPlayerWS, b instanceof H5sPlayerRTC, c instanceof H5sPlayerHls,
                    ...[a, b, c].map(p => typeof p.connect + typeof p.disconnect)];
        }}"""
    )
    assert kinds == [True, True, True] + ["functionfunction"] * 3
    assert page.page_errors == []


def test_ws_player_reconnects_after_the_socket_closes(page, gateway):
    """An unexpected close brings a new socket and a new MediaSource after about a second."""
    blank_video_page(page, gateway)
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.evaluate(f"() => {{ window.player = new H5sPlayerWS({player_conf(gateway)}); window.player.connect(); }}")
    wait_advance(page, 1.0, 15.0)
    src_before = page.evaluate("() => document.getElementById('v').src")
    page.evaluate("() => window.player._ws.close()")  # as if the server had gone away
    page.wait_for_function("() => window.player.stats().reconnects === 1", timeout=5_000)
    wait_advance(page, 1.0, 15.0)
    stats = page.evaluate("() => window.player.stats()")
    assert stats["state"] == "playing", stats
    assert page.evaluate("() => document.getElementById('v').src") != src_before
    assert "update=2" in page.evaluate("() => document.getElementById('v').poster")
    assert len(sockets) == 2, sockets
    page.evaluate("() => window.player.disconnect()")
    page.wait_for_timeout(1500)
    assert len(sockets) == 2, "disconnect() must stop for good"
    assert page.page_errors == []


PLAYBACK_WITH_FAKE_SOCKET = """
(session) => new Promise((resolve) => {
    const sockets = [];
    class FakeSocket {
        constructor(url) {
            this.url = url; this.sent = []; this.readyState = 0; sockets.push(this);
            setTimeout(() => { this.readyState = 1; this.onopen && this.onopen(); }, 10);
        }
        send(data) { this.sent.push(data); }
        close() { this.readyState = 3; }
    }
    FakeSocket.OPEN = 1;
    window.WebSocket = FakeSocket;
    const got = [];
    const player = new H5sPlayerWS({
        videoid: 'v', protocol: 'http:', host: window.location.host, rootpath: '/', token: 'cam 1',
        session: session, streamprofile: 'sub',
        pbconf: {begintime: '2019-03-23T120101+08', endtime: '2019-03-23T150101+08', autoplay: 'true',
                 serverpb: 'true', callback: (data, userdata) => got.push([data, userdata]), userdata: 'u1'}
    });
    player.connect();
    const wait = () => {
        const ws = sockets[0];
        if (!ws || ws.readyState !== 1) { setTimeout(wait, 20); return; }
        setTimeout(() => {
            player.pause(); player.resume(); player.seek(12); player.speed(2);
            ws.onmessage({data: '{"type":"H5S_EVENT_PB_TIME","pbTime":{"strTime":"x"}}'});
            const result = {url: ws.url, sent: ws.sent.slice(), callback: got, state: player.stats().state};
            player.disconnect();
            resolve(result);
        }, 50);
    };
    wait();
})
"""


def test_ws_player_playback_mode_url_and_commands(page, gateway):
    blank_video_page(page, gateway)
    r = page.evaluate(PLAYBACK_WITH_FAKE_SOCKET, gateway.session)
    host = gateway.base.split("//", 1)[1]
    assert r["url"] == (
        f"ws://{host}/api/v1/h5swsapi?token=cam%201&playback=true&profile=sub&serverpb=true"
        "&begintime=2019-03-23T120101%2B08&endtime=2019-03-23T150101%2B08&filename=fake"
        f"&session={gateway.session}"
    )
    assert r["sent"][0] == '{"cmd":"H5_START"}', r["sent"]
    commands = [x for x in r["sent"] if x != '{"cmd":"H5_KEEPALIVE"}']
    assert commands == [
        '{"cmd":"H5_START"}',
        '{"cmd":"H5_PAUSE"}',
        '{"cmd":"H5_RESUME"}',
        '{"cmd":"H5_SEEK","nSeekTime":12}',
        '{"cmd":"H5_SPEED","nSpeed":2}',
    ], r["sent"]
    assert r["callback"] == [['{"type":"H5S_EVENT_PB_TIME","pbTime":{"strTime":"x"}}', "u1"]]
    assert page.page_errors == []


# --------------------------------------------------------------------------- (c) H5sPlayerHls


def test_hls_player_plays_demo(page, gateway):
    blank_video_page(page, gateway, hls=True)
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    assert page.evaluate("() => Hls.isSupported()")
    page.evaluate(f"() => {{ window.player = new H5sPlayerHls({player_conf(gateway)}); window.player.connect(); }}")
    wait_advance(page, 2.0, 30.0)
    stats = page.evaluate("() => window.player.stats()")
    assert stats["state"] == "playing", stats
    assert any("/api/v1/h5swscmnapi?token=demo&session=" in u for u in sockets), sockets
    page.evaluate("() => window.player.disconnect()")
    assert page.page_errors == []


def test_hls_player_plays_v2_low_latency(page, gateway):
    """v2 is LL-HLS: hls.js loads parts and plays about a part-hold-back behind the source, which the
    playlist's EXT-X-PROGRAM-DATE-TIME (when each segment's first frame reached the hub) lets us measure."""
    blank_video_page(page, gateway, hls=True)
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    conf = player_conf(gateway).replace("hlsver: 'v1'", "hlsver: 'v2'")
    page.evaluate(f"() => {{ window.player = new H5sPlayerHls({conf}); window.player.connect(); }}")
    wait_advance(page, 4.0, 30.0)
    latencies = []
    for _ in range(8):
        latencies.append(page.evaluate("() => (Date.now() - window.player._hls.playingDate.getTime()) / 1000"))
        page.wait_for_timeout(250)
    latencies.sort()
    assert page.evaluate("() => window.player._hls.lowLatencyMode") is True
    parts = [u for u in requests if "/hls/v2/demo/part-" in u]
    assert len(parts) >= 5, requests[-10:]
    assert any("_HLS_msn=" in u for u in requests), "no blocking playlist reload"
    assert all(f"session={gateway.session}" in u for u in parts)
    assert 0.0 < latencies[len(latencies) // 2] < 2.0, latencies
    page.evaluate("() => window.player.disconnect()")
    assert page.page_errors == []


# --------------------------------------------------------------------------- (d) vendor-style player

VENDOR_STYLE_PLAYER = """
(session) => {
    const video = document.getElementById('v');
    const ms = new MediaSource();
    video.src = URL.createObjectURL(ms);
    window.vendorLog = [];
    ms.addEventListener('sourceopen', () => {
        const proto = window.location.protocol === 'https:' ? 'wss://' : 'ws://';
        const ws = new WebSocket(proto + window.location.host +
            '/api/v1/h5swsapi?token=demo&profile=main&session=' + session);
        ws.binaryType = 'arraybuffer';
        let sb = null;
        const queue = [];
        const pump = () => {
            if (sb && !sb.updating && queue.length) {
                try { sb.appendBuffer(queue.shift()); }
                catch (e) { window.vendorLog.push('append: ' + e.name); ws.close(); }
            }
        };
        ws.onmessage = (e) => {
            if (typeof e.data === 'string') { return; }
            if (sb === null) {
                const mime = String.fromCharCode.apply(null, new Uint8Array(e.data));
                window.vendorLog.push('mime: ' + mime);
                sb = ms.addSourceBuffer(mime);
                sb.addEventListener('updateend', pump);
                return;
            }
            queue.push(e.data);
            pump();
        };
        ws.onopen = () => {
            setInterval(() => { if (ws.readyState === 1) ws.send('{"cmd":"H5_KEEPALIVE"}'); }, 1000);
        };
        ws.onclose = () => window.vendorLog.push('closed');
        window.vendorWs = ws;
    });
    video.play().catch((e) => window.vendorLog.push('play: ' + e.name));
}
"""


def test_vendor_style_player_plays_from_near_zero(page, gateway):
    """A fresh viewer's stream must play in a stock SourceBuffer that never seeks: its timestamps
    start near zero and the first fragment is a keyframe."""
    blank_video_page(page, gateway)
    page.evaluate(VENDOR_STYLE_PLAYER, gateway.session)
    try:
        wait_advance(page, 2.0, 15.0)
    except BaseException:
        info = page.evaluate(
            "() => { const v = document.getElementById('v'); const b = v.buffered; const r = [];"
            " for (let i = 0; i < b.length; i++) r.push([b.start(i), b.end(i)]);"
            " return {log: window.vendorLog, buffered: r, currentTime: v.currentTime,"
            " readyState: v.readyState, error: v.error && v.error.message}; }"
        )
        print("vendor-style player state:", info)
        raise
    log = page.evaluate("() => window.vendorLog")
    assert log and log[0].startswith("mime: video/mp4"), log
    assert not [x for x in log if x.startswith("append")], log
    page.evaluate("() => window.vendorWs.close()")
    assert page.page_errors == []


def test_playback_refused_by_the_server_is_not_retried(page, gateway):
    """A playback range with no recording is refused (4xxx close): the player stops instead of retrying."""
    blank_video_page(page, gateway)
    conf = player_conf(gateway)[:-1] + (
        ", pbconf: {begintime: '2001-01-01T000000+00',"
        " endtime: '2001-01-01T001000+00', serverpb: 'true', autoplay: 'true'}}"
    )
    page.evaluate(f"() => {{ window.p = new H5sPlayerWS({conf}); window.p.connect(); }}")
    page.wait_for_function("() => window.p.stats().state === 'stopped'", timeout=10_000)
    page.wait_for_timeout(3000)
    stats = page.evaluate("() => window.p.stats()")
    assert stats["state"] == "stopped" and stats["reconnects"] == 0 and stats["error"]
