"""h5srtcpushapi: Chromium publishes its (fake) camera over WebRTC into a push source; a WebSocket viewer of
that source gets the init segment, a keyframe and the frames that follow. All inside a private network
namespace whose only address is 127.0.0.1 (see tests/test_webrtc.py)."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import websockets
from playwright.sync_api import Page

from tests.browser import launch, new_page
from tests.wsclient import watch_sync
from tools.harness.camera import wait_until
from tools.harness.gateway import Gateway
from tools.harness.webrtc_viewer import private_network

PUSH_ARGS = [
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]

# What the vendor's H5sRTCPush does: getUserMedia, socket, "open", on "iceserver" offer H.264, take the answer.
PUBLISH = """url => new Promise((resolve, reject) => {
    window.push = {state: 'starting', messages: [], closed: null};
    navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: true}).then(stream => {
        const ws = new WebSocket(url);
        window.push.ws = ws;
        let pc = null;
        ws.onopen = () => ws.send(JSON.stringify({type: 'open'}));
        ws.onclose = ev => { window.push.closed = ev.code + ' ' + ev.reason; };
        ws.onmessage = async ev => {
            const msg = JSON.parse(ev.data);
            window.push.messages.push(msg.type);
            if (msg.type === 'iceserver') {
                pc = new RTCPeerConnection({iceServers: msg.iceServers});
                window.push.pc = pc;
                pc.onicecandidate = e => {
                    if (e.candidate) {
                        const c = JSON.parse(JSON.stringify(e.candidate));
                        c.type = 'remoteice';
                        ws.send(JSON.stringify(c));
                    }
                };
                pc.onconnectionstatechange = () => { window.push.state = pc.connectionState; };
                stream.getTracks().forEach(t => pc.addTrack(t, stream));
                const h264 = RTCRtpSender.getCapabilities('video').codecs.filter(c => c.mimeType === 'video/H264');
                pc.getTransceivers().find(t => t.sender.track === stream.getVideoTracks()[0]).setCodecPreferences(h264);
                const offer = await pc.createOffer();
                await pc.setLocalDescription(offer);
                ws.send(JSON.stringify(offer));
            } else if (msg.type === 'answer') {
                await pc.setRemoteDescription(new RTCSessionDescription(msg));
                resolve('answered');
            }
        };
    }).catch(e => reject(String(e)));
})"""


@pytest.fixture(scope="module")
def netns() -> Iterator[None]:
    with private_network():
        yield


@pytest.fixture(scope="module")
def gw(netns: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("push-gw"), extra_args=["--no-demo"]).start()
    try:
        assert wait_until(lambda: gateway.ok("h5srtcapi/Status")["bServiceRunning"], 20), gateway.log()[-3000:]
        gateway.ok("AddRTMPPush", name="Browser", token="browser1", audio="false")
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def page(netns: None) -> Iterator[Page]:
    for browser in launch(PUSH_ARGS):
        yield from new_page(browser)


def push_url(gw: Gateway, token: str, session: str | None = None, **params: str) -> str:
    query = {"token": token, "type": "media", "audio": "true", "session": session or gw.session, **params}
    return f"{gw.ws_base}/api/v1/h5srtcpushapi?{urllib.parse.urlencode(query)}"


def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Playwright's sync API holds this thread's event loop: asyncio clients run in a thread of their own
    (which a new thread starts in this thread's network namespace)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def closed(url: str) -> tuple[int | None, str]:
    return in_thread(lambda: closed(url))


async def _closed(url: str) -> tuple[int | None, str]:
    async with websockets.connect(url, compression=None) as ws:
        await ws.send('{"type":"open"}')
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except (websockets.ConnectionClosed, TimeoutError):
            pass
        return ws.close_code, ws.close_reason or ""


def test_browser_publishes_and_a_viewer_gets_init_keyframe_and_frames(gw: Gateway, page: Page) -> None:
    page.goto(f"{gw.base}/login")  # a page of the gateway's origin: 127.0.0.1 is a secure context
    assert page.evaluate(PUBLISH, push_url(gw, "browser1")) == "answered"
    page.wait_for_function("window.push.state === 'connected'", timeout=20000)
    src = gw.wait_online("browser1", timeout=20)
    assert src["nType"] == "H5_RTMP_PUSH"
    got = in_thread(watch_sync, gw.ws_url("browser1"), frames=40, seconds=20)
    assert got.mime.startswith('video/mp4; codecs="avc1.42'), got.mime  # the browser's Constrained Baseline
    init = got.inits[0]
    assert init.video is not None and (init.video.width, init.video.height) == (640, 480)
    video = got.video()
    assert len(video) >= 40 and video[0].keyframe
    assert video[0].tfdt == 0 and all(i == 0 for i, _, _ in got.fragments), "one run, starting at zero"
    assert all(b.tfdt > a.tfdt for a, b in zip(video, video[1:], strict=False)), "decode times go forward"
    # the frames come at the browser's pace (up to 30 fps; its encoder lowers the rate on a busy machine)
    span = (video[-1].tfdt - video[0].tfdt) / init.video.timescale
    assert 40 / 30 - 0.1 < span < 15.0, span
    overlaps = [a.tfdt + a.duration - b.tfdt for a, b in zip(video, video[1:], strict=False)]
    print("largest overlap of a frame's duration into the next (ticks):", max(overlaps))
    # a second publisher while the first is live is refused, and says by whom
    code, reason = closed(push_url(gw, "browser1"))
    assert code == 4409 and reason.startswith("already published by webrtc"), (code, reason)
    state = page.evaluate("({closed: window.push.closed, messages: window.push.messages})")
    assert state["closed"] is None and state["messages"][:2] == ["iceserver", "answer"], state
    assert page.page_errors == []  # type: ignore[attr-defined]
    # the browser stops: the source goes offline
    page.evaluate("window.push.pc.close(); window.push.ws.close()")
    gw.wait_online("browser1", online=False, timeout=20)


def test_refusals(gw: Gateway) -> None:
    assert closed(push_url(gw, "browser1", session="nope"))[0] == 4401
    assert closed(push_url(gw, "nosuch"))[0] == 4404
    log = gw.log()
    assert "browser publisher" in log
