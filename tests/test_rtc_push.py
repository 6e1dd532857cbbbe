"""h5srtcpushapi: Chromium publishes its (fake) camera over WebRTC into a push source, which then works as
any source does: GetSrc online, WebSocket viewers (init, keyframe, frames back to back), snapshots of the
fake camera's picture, recordings; the browser stops and it goes offline. Refusals answer as the API does.
The browser parts run inside a private network namespace whose only address is 127.0.0.1 (see
tests/test_webrtc.py). A browser's frame rate varies: the unit test below feeds one and checks durations."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import pytest
import websockets
from playwright.sync_api import Page

from tests.browser import launch, new_page
from tests.wsclient import watch_sync
from tools.harness.camera import wait_until
from tools.harness.gateway import ROOT, Gateway
from tools.harness.webrtc_viewer import private_network
from workers.fmp4 import FragInfo, boxes, parse_fragment
from workers.hub import Fragment, StreamHub
from workers.mp4mux import AUDIO_TRACK
from workers.push_source import HOLD_MIN, PushInput
from workers.webrtc.push import KEYFRAME_EVERY, H264ToFlv, RtpClock
from workers.webrtc.push_audio import AAC_CONFIG

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
        window.push.stream = stream;
        const ws = new WebSocket(url);
        window.push.ws = ws;
        let pc = null;
        ws.onopen = () => ws.send(JSON.stringify({type: 'open'}));
        ws.onclose = ev => { window.push.closed = ev.code + ' ' + ev.reason; reject(window.push.closed); };
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
                window.push.keepalive = setInterval(() => ws.send('{"type":"keepalive"}'), 1000);
            } else if (msg.type === 'answer') {
                await pc.setRemoteDescription(new RTCSessionDescription(msg));
                resolve('answered');
            }
        };
    }).catch(e => reject(String(e)));
})"""

# The fake camera's picture as the browser has it: mean R, G, B of each cell of a 4 x 4 grid.
LOCAL_PICTURE = """() => new Promise(resolve => {
    const video = document.createElement('video');
    video.muted = true;
    video.srcObject = window.push.stream;
    video.onplaying = () => setTimeout(() => {
        const canvas = document.createElement('canvas');
        canvas.width = 640; canvas.height = 480;
        const ctx = canvas.getContext('2d');
        ctx.drawImage(video, 0, 0, 640, 480);
        const px = ctx.getImageData(0, 0, 640, 480).data;
        const cells = [];
        for (let gy = 0; gy < 4; gy++) for (let gx = 0; gx < 4; gx++) {
            const sum = [0, 0, 0];
            for (let y = gy * 120; y < gy * 120 + 120; y++) for (let x = gx * 160; x < gx * 160 + 160; x++) {
                const i = (y * 640 + x) * 4;
                sum[0] += px[i]; sum[1] += px[i + 1]; sum[2] += px[i + 2];
            }
            cells.push(sum.map(v => v / (160 * 120)));
        }
        resolve(cells);
    }, 300);
    video.play();
})"""


@pytest.fixture(scope="module")
def netns() -> Iterator[None]:
    with private_network():
        yield


@pytest.fixture(scope="module")
def gw(netns: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A server with a push source and a Viewer user (made before it starts)."""
    data = tmp_path_factory.mktemp("rtcpush") / "gw"
    data.mkdir()
    subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "passwd", "watcher", "--role", "Viewer", "--data-dir", str(data)],
        input=b"watch1234\n",
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    gateway = Gateway(data, extra_args=["--no-demo"]).start()
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
    query = {"token": token, "type": "media", "audio": "true", **params}
    if session != "":
        query["session"] = session or gw.session
    return f"{gw.ws_base}/api/v1/h5srtcpushapi?{urllib.parse.urlencode(query)}"


def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Playwright's sync API holds this thread's event loop: asyncio clients run in a thread of their own
    (which a new thread starts in this thread's network namespace)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def refused(url: str, origin: str | None = None) -> tuple[int | None, str, list[dict[str, Any]]]:
    """Open a publisher socket as H5sRTCPush does; (close code, reason, JSON messages) once the server closes."""
    return in_thread(lambda: asyncio.run(_refused(url, origin)))


async def _refused(url: str, origin: str | None) -> tuple[int | None, str, list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    async with websockets.connect(url, compression=None, origin=origin) as ws:  # type: ignore[arg-type]
        with contextlib.suppress(websockets.ConnectionClosed):  # a quick refusal may close before this
            await ws.send('{"type":"open"}')
        try:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or "", messages


def check_refusal(got: tuple[int | None, str, list[dict[str, Any]]], code: int, reason: str) -> None:
    close_code, close_reason, messages = got
    assert close_code == code and reason in close_reason, got
    assert messages == [{"type": "error", "bStatus": False, "strCode": close_reason}], got


def cells_of(jpeg: bytes) -> tuple[tuple[int, int], list[list[float]]]:
    """A JPEG's size and the mean R, G, B of each cell of a 4 x 4 grid (as LOCAL_PICTURE computes them)."""
    with av.open(io.BytesIO(jpeg), mode="r") as container:
        frame = next(container.decode(video=0))
    width, height = frame.width, frame.height
    rgb = bytes(frame.to_rgb().planes[0])
    stride = len(rgb) // height
    cw, ch = width // 4, height // 4
    cells = []
    for gy in range(4):
        for gx in range(4):
            sums = [0, 0, 0]
            for y in range(gy * ch, gy * ch + ch):
                row = rgb[y * stride + gx * cw * 3 : y * stride + (gx * cw + cw) * 3]
                for c in range(3):
                    sums[c] += sum(row[c::3])
            cells.append([s / (cw * ch) for s in sums])
    return (width, height), cells


def file_fragments(data: bytes) -> list[FragInfo]:
    """The moof+mdat pairs of a recording, read as the hub wrote them (ffprobe shows no durations for them)."""
    out: list[FragInfo] = []
    moof = -1
    for kind, pos, _, size in boxes(data):
        if kind == b"moof":
            moof = pos
        elif kind == b"mdat" and moof >= 0:
            out.append(parse_fragment(data[moof : pos + size]))
    return out


def test_browser_push_is_a_source_until_it_stops(gw: Gateway, page: Page) -> None:
    assert not gw.source("browser1")["bOnline"]
    page.goto(f"{gw.base}/login")  # a page of the gateway's origin: 127.0.0.1 is a secure context
    assert page.evaluate(PUBLISH, push_url(gw, "browser1")) == "answered"
    page.wait_for_function("window.push.state === 'connected'", timeout=20000)
    src = gw.wait_online("browser1", timeout=20)
    assert (src["nType"], src["strVideoCodec"]) == ("H5_RTMP_PUSH", "h264"), src

    # a WebSocket viewer: codec string, init, a keyframe first, then frames back to back
    got = in_thread(lambda: watch_sync(gw.ws_url("browser1"), frames=120, seconds=30))
    assert got.mime.startswith('video/mp4; codecs="avc1.42'), got.mime  # the browser's Constrained Baseline
    init = got.inits[0]
    assert init.video is not None and (init.video.width, init.video.height) == (640, 480)
    video = got.video()
    assert len(video) >= 120 and video[0].keyframe and video[0].tfdt == 0, len(video)
    assert all(i == 0 for i, _, _ in got.fragments), "one run"
    pairs = list(zip(video, video[1:], strict=False))
    assert all(b.tfdt > a.tfdt for a, b in pairs), "decode times go forward"
    holes = [(a.tfdt, a.duration, b.tfdt) for a, b in pairs if a.tfdt + a.duration != b.tfdt]
    assert not holes, f"frames overlap or leave holes: {holes[:5]}"  # each lasts until the next begins
    durations = sorted({f.duration for f in video})
    print(f"{len(video)} frames, durations (90 kHz ticks): {durations[:12]}{' ...' if len(durations) > 12 else ''}")
    span = (video[-1].tfdt - video[0].tfdt) / init.video.timescale
    assert 120 / 30 - 0.2 < span < 30.0, span  # at the browser's pace (up to 30 fps; slower on a busy machine)
    # keyframes keep coming (the sidecar asks every KEYFRAME_EVERY s), so a new viewer's GOP stays short
    keys = [f.tfdt / init.video.timescale for f in video if f.keyframe]
    gaps = [b - a for a, b in zip(keys, keys[1:], strict=False)]
    assert len(keys) >= 2 and max(gaps) < KEYFRAME_EVERY + 1.5, keys

    # a snapshot is the fake camera's picture, as the browser itself has it
    local = page.evaluate(LOCAL_PICTURE)
    status, headers, body = gw.request(f"/api/v1/GetImage?token=browser1&session={gw.session}")
    assert status == 200 and body[:2] == b"\xff\xd8" and "x-h5gate-image" not in headers, headers
    size, cells = cells_of(body)
    assert size == (640, 480)
    # cell by cell: the fake camera's animation moves between the cached keyframe and the browser's frame now
    diffs = sorted(max(abs(a - b) for a, b in zip(c, r, strict=True)) for c, r in zip(cells, local, strict=True))
    print(f"snapshot vs the browser's own picture: cell differences (of 255) {[round(d) for d in diffs]}")
    assert diffs[11] < 20 and diffs[-1] < 128, (cells, local)  # most cells alike, none the opposite

    shot = gw.ok("Snapshot", token="browser1")
    path = gw.data_dir / "mediastore" / shot["strPath"].removeprefix("/mediastore/")
    assert path.suffix == ".jpg" and cells_of(path.read_bytes())[0] == (640, 480)

    # a recording of it: H.264 frames back to back
    rec = gw.ok("ManualRecordStart", token="browser1")
    time.sleep(3)
    gw.ok("ManualRecordStop", token="browser1")
    path = gw.data_dir / "mediastore" / rec["strPath"].removeprefix("/mediastore/")
    assert wait_until(path.exists, 10), path
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries"]
        + ["stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 640, 480), stream
    frames = file_fragments(path.read_bytes())
    assert int(stream["nb_read_frames"]) == len(frames) >= 30, stream  # 3 s at the browser's pace, and pre-record
    assert frames[0].keyframe and frames[0].tfdt == 0
    assert all(a.tfdt + a.duration == b.tfdt for a, b in zip(frames, frames[1:], strict=False)), "back to back"

    # a second publisher while the first is live is refused, and says by whom
    check_refusal(refused(push_url(gw, "browser1")), 4409, "already published by webrtc 127.0.0.1")
    state = page.evaluate("({closed: window.push.closed, messages: window.push.messages})")
    assert state["closed"] is None and state["messages"][:2] == ["iceserver", "answer"], state
    assert page.page_errors == []  # type: ignore[attr-defined,unused-ignore]
    assert gw.source("browser1")["bOnline"]

    # the browser stops: the source goes offline, and a publisher may come again
    page.evaluate("clearInterval(window.push.keepalive); window.push.pc.close(); window.push.ws.close()")
    src = gw.wait_online("browser1", online=False, timeout=20)
    assert src["strLastError"] == "browser publisher left", src
    assert wait_until(lambda: "browser1: browser publisher 127.0.0.1 closed" in gw.log(), 10)
    assert "Traceback" not in gw.log()


def test_browser_audio_arrives_as_aac(gw: Gateway, page: Page) -> None:
    """The browser's Opus becomes AAC beside the video: one init with both tracks, AAC frames back to back
    and in step with the video, and the fake microphone's beeps audible through the audio listen socket."""
    gw.ok("AddRTMPPush", name="With sound", token="browsera", audio="true")
    page.goto(f"{gw.base}/login")
    assert page.evaluate(PUBLISH, push_url(gw, "browsera")) == "answered"
    page.wait_for_function("window.push.state === 'connected'", timeout=20000)
    src = gw.wait_online("browsera", timeout=20)
    assert (src["strVideoCodec"], src["strAudioCodec"]) == ("h264", "aac"), src
    got = in_thread(lambda: watch_sync(gw.ws_url("browsera"), frames=90, seconds=30))
    assert got.mime.startswith('video/mp4; codecs="avc1.42') and got.mime.endswith(', mp4a.40.2"'), got.mime
    assert len(got.inits) == 1 and all(i == 0 for i, _, _ in got.fragments), "one init, with both tracks"
    init = got.inits[0]
    audio = [f for _, f, _ in got.fragments if init.tracks[f.track_id].handler == "soun"]
    video = got.video()
    assert init.tracks[audio[0].track_id].timescale == 48000 and all(f.duration == 1024 for f in audio)
    assert all(a.tfdt + 1024 == b.tfdt for a, b in zip(audio, audio[1:], strict=False)), "AAC back to back"
    assert all(a.tfdt + a.duration == b.tfdt for a, b in zip(video, video[1:], strict=False))
    assert init.video is not None
    video_end = (video[-1].tfdt + video[-1].duration) / init.video.timescale
    audio_end = (audio[-1].tfdt + 1024) / 48000
    print(f"{len(audio)} AAC frames; audio ends {audio_end - video_end:+.3f} s from the video")
    assert abs(audio_end - video_end) < 0.5, (audio_end, video_end)  # sent together: in step
    # what the audio says: the fake microphone beeps (PCM from the audio listen socket, 8 kHz mono)
    pcm = in_thread(lambda: asyncio.run(_listen(gw, "browsera", 3.0)))
    samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm) - 1, 2)]
    loud = sum(1 for v in samples if abs(v) > 2000)
    print(f"{len(samples)} PCM samples, {loud} loud, peak {max(map(abs, samples))}")
    assert len(samples) >= 8000 * 2 and loud > 100, (len(samples), loud)
    page.evaluate("clearInterval(window.push.keepalive); window.push.pc.close(); window.push.ws.close()")
    gw.wait_online("browsera", online=False, timeout=20)
    assert wait_until(lambda: "AAC frames)" in gw.log(), 10)


async def _listen(gw: Gateway, token: str, seconds: float) -> bytes:
    query = urllib.parse.urlencode({"token": token, "session": gw.session, "format": "pcm"})
    pcm = bytearray()
    deadline = time.monotonic() + seconds
    async with websockets.connect(f"{gw.ws_base}/api/v1/h5saudapi?{query}", compression=None) as ws:
        while time.monotonic() < deadline:
            try:
                message = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
            except TimeoutError:
                break
            if isinstance(message, bytes):
                pcm += message
    return bytes(pcm)


def test_refusals(gw: Gateway) -> None:
    gw.ok("AddRTMPPush", name="Other", token="browser2", audio="false")
    status, body = gw.get("Login", session=None, user="watcher", password="watch1234")
    assert status == 200 and body["bStatus"], body
    viewer = body["strSession"]
    check_refusal(refused(push_url(gw, "browser2", session="")), 4401, "session is missing")
    check_refusal(refused(push_url(gw, "browser2", session="nope")), 4401, "session is missing, invalid or expired")
    check_refusal(refused(push_url(gw, "browser2", session=viewer)), 4401, "needs an Operator or Administrator")
    check_refusal(refused(push_url(gw, "nosuch")), 4404, "unknown token: nosuch")
    check_refusal(refused(push_url(gw, "../etc")), 4404, "unknown token")
    check_refusal(refused(push_url(gw, "browser2", type="file")), 4400, "type must be media or sharing")
    check_refusal(refused(push_url(gw, "browser2", audio="maybe")), 4400, "invalid value for audio")
    check_refusal(refused(push_url(gw, "browser2"), "http://evil.example"), 4401, "another site's page")
    # an offer that is not SDP: an error message, and the socket closes
    code, reason, messages = in_thread(lambda: asyncio.run(_bad_offer(push_url(gw, "browser2"))))
    assert code == 4400 and messages[0]["type"] == "iceserver", (code, reason, messages)
    assert {"type": "error", "bStatus": False, "strCode": "offer without a valid SDP"} in messages, messages
    assert not gw.source("browser2")["bOnline"]
    assert wait_until(lambda: "browser2: browser publisher 127.0.0.1 refused: type must be" in gw.log(), 5)
    assert "Traceback" not in gw.log()


async def _bad_offer(url: str) -> tuple[int | None, str, list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    async with websockets.connect(url, compression=None) as ws:
        await ws.send('{"type":"open"}')
        try:
            while True:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                if messages[-1]["type"] == "iceserver":
                    await ws.send('{"type":"offer","sdp":"not sdp"}')
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or "", messages


# -- a browser's variable frame rate, without a browser ----------------------------------------------------


def access_units(count: int) -> list[bytes]:
    """`count` H.264 access units (Annex B, a keyframe every 6), as the sidecar hands them on."""
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=30"]
        + ["-frames:v", str(count), "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline"]
        + ["-x264-params", "aud=1:keyint=6", "-f", "h264", "-"],
        capture_output=True,
        check=True,
    ).stdout
    units = [b"\x00\x00\x00\x01\x09" + u for u in out.split(b"\x00\x00\x00\x01\x09") if u]
    assert len(units) == count
    return units


def contiguous(frames: list[Fragment]) -> bool:
    return all(a.info.tfdt + a.info.duration == b.info.tfdt for a, b in zip(frames, frames[1:], strict=False))


def test_variable_frame_rate_gets_exact_durations() -> None:
    in_thread(lambda: asyncio.run(_variable_frame_rate()))  # Playwright may hold this thread's loop


async def _variable_frame_rate() -> None:
    hub = StreamHub("vfr/main")
    source = PushInput("vfr/main", hub, audio=False)
    source.start()
    units = access_units(14)
    steps = [33, 67, 20, 40, 100, 33, 34, 66, 15, 50]  # ms between frames, as a busy browser sends them
    session = source.begin("webrtc test", lambda: None, exact_durations=True)
    flv = H264ToFlv()
    clock = RtpClock()
    rtp = 0xFFFFFFFF - 4 * 90 * 33  # the browser's RTP clock wraps in the middle of it
    for i, unit in enumerate(units[:11]):
        if i:
            rtp = (rtp + steps[i - 1] * 90) & 0xFFFFFFFF
            await asyncio.sleep(steps[i - 1] / 1000)
        for tag in flv.feed(unit):
            session.on_video(clock.ms(rtp), tag)

    def video() -> list[Fragment]:
        return [f for f in hub.ring if f.video]

    # each frame lasts until the next begins: the next frame's step, not the previous one's
    assert [f.info.duration for f in video()] == [s * 90 for s in steps], [f.info.duration for f in video()]
    assert contiguous(video()) and video()[0].keyframe and video()[6].keyframe
    assert source.online and session.late == 0

    # the newest frame's successor is late (a still screen): it goes out alone, lasting as long as it waited
    await asyncio.sleep(HOLD_MIN + 0.3)
    assert len(video()) == 11 and session.late == 1
    assert HOLD_MIN * 90000 <= video()[-1].info.duration <= (HOLD_MIN + 0.25) * 90000, video()[-1].info.duration
    # the next frames go on from where it ended; the last one, whose successor never comes, gets the interval
    for unit, step in zip(units[11:14], (600, 33, 33), strict=True):
        rtp = (rtp + step * 90) & 0xFFFFFFFF
        for tag in flv.feed(unit):
            session.on_video(clock.ms(rtp), tag)
        await asyncio.sleep(0.033)
    session.end("browser publisher left")
    first_run = video()
    assert len(first_run) == 14 and contiguous(first_run) and not source.online
    assert first_run[-2].info.duration == 33 * 90 and 2700 <= first_run[-1].info.duration <= 6000

    # a new publish (its clock back at zero) starts after the previous one's last frame ended
    session = source.begin("webrtc test", lambda: None, exact_durations=True)
    flv, clock = H264ToFlv(), RtpClock()
    for tag in flv.feed(units[0]):
        session.on_video(clock.ms(1234), tag)
    session.end("browser publisher left")
    second = [f for f in hub.ring if f.video and f.gen == hub.gen]
    assert len(second) == 1 and second[0].info.tfdt >= first_run[-1].info.tfdt + first_run[-1].info.duration


def test_video_put_early_comes_back_beside_the_audio() -> None:
    in_thread(lambda: asyncio.run(_back_beside_audio()))


async def _back_beside_audio() -> None:
    """With audio, a late frame's shift (video early against the timeline) is taken back a little per frame."""
    hub = StreamHub("av/main")
    source = PushInput("av/main", hub, audio=True)
    source.start()
    session = source.begin("webrtc test", lambda: None, exact_durations=True)
    session.on_audio(0, b"\xaf\x00" + AAC_CONFIG)
    units = access_units(30)
    flv = H264ToFlv()
    ms = 0
    for i, unit in enumerate(units):
        step = 700 if i == 5 else 40  # frame 4 waits for its successor past HOLD_MIN: it goes out alone
        if i:
            ms += step
            await asyncio.sleep(step / 1000)
        for tag in flv.feed(unit):
            session.on_video(ms, tag)
    assert AUDIO_TRACK in hub.init.tracks if hub.init else False
    video = [f for f in hub.ring if f.video]
    assert session.late == 1 and len(video) == 29 and contiguous(video)
    late = [f.info.duration for f in video[4:6]]
    assert HOLD_MIN * 90000 <= late[0] < 700 * 90, late  # it lasted as long as it waited, not the whole gap
    stretched = [f.info.duration for f in video[6:]]
    assert all(40 * 90 <= d <= 45 * 90 for d in stretched), stretched  # at most an eighth longer
    assert stretched[0] == 45 * 90 and session.shift < (700 - HOLD_MIN * 1000) * 90 - 20 * 5 * 90, session.shift
    session.end("gone")
