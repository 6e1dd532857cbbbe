"""HTTP-FLV out (/live/<token>.flv on flv_port and on the main port): ffprobe, our own tag reader, flv.js."""

from __future__ import annotations

import http.client
import json
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.browser import launch, new_page
from tools.harness.camera import GstCamera, free_port
from tools.harness.gateway import Gateway
from workers.rtmp import amf0


@pytest.fixture(scope="module")
def flv_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A server with the demo source and HTTP-FLV on a free port."""
    port = free_port()
    gw = Gateway(tmp_path_factory.mktemp("flv"), env={"H5GATE_FLV_PORT": str(port)}).start()
    gw.flv_port = port  # type: ignore[attr-defined]
    try:
        gw.wait_online("demo", timeout=30)
        yield gw
    finally:
        gw.stop()


@dataclass
class Tag:
    kind: int
    ms: int
    body: bytes


@dataclass
class FlvRead:
    status: int
    content_type: str
    flags: int = 0
    tags: list[Tag] = field(default_factory=list)


def read_flv(port: int, path: str, seconds: float) -> FlvRead:
    """GET an FLV stream for some seconds and split it into tags, checking every PreviousTagSize."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("GET", path)
    resp = conn.getresponse()
    got = FlvRead(resp.status, resp.getheader("content-type") or "")
    if resp.status != 200:
        conn.close()
        return got
    buf = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        chunk = resp.read1(65536)
        if not chunk:
            break
        buf += chunk
    conn.close()
    assert buf[:3] == b"FLV" and buf[3] == 1 and struct.unpack(">I", buf[5:9])[0] == 9
    got.flags = buf[4]
    assert struct.unpack(">I", buf[9:13])[0] == 0
    pos = 13
    while pos + 11 <= len(buf):
        kind = buf[pos]
        size = int.from_bytes(buf[pos + 1 : pos + 4], "big")
        ms = int.from_bytes(buf[pos + 4 : pos + 7], "big") | buf[pos + 7] << 24
        if pos + 11 + size + 4 > len(buf):
            break
        body = buf[pos + 11 : pos + 11 + size]
        assert struct.unpack(">I", buf[pos + 11 + size : pos + 15 + size])[0] == 11 + size
        got.tags.append(Tag(kind, ms, body))
        pos += 15 + size
    return got


def session_path(gw: Gateway, token: str) -> str:
    return f"/live/{token}.flv?session={gw.session}"


@pytest.mark.parametrize("which", ["flv_port", "main_port"])
def test_ffprobe_reads_and_decodes(flv_gw: Gateway, which: str) -> None:
    port = flv_gw.flv_port if which == "flv_port" else flv_gw.port  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}{session_path(flv_gw, 'demo')}"
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-read_intervals", "%+4", "-count_frames", "-show_streams", "-of", "json", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    streams = {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}
    video, audio = streams["video"], streams["audio"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 640, 360)
    assert audio["codec_name"] == "aac" and int(audio["sample_rate"]) > 0
    assert int(video["nb_read_frames"]) >= 75, video["nb_read_frames"]  # about 4 s at 25 fps, all decoded
    assert int(audio["nb_read_frames"]) >= 100


def test_tags_keyframe_first_and_in_order(flv_gw: Gateway) -> None:
    got = read_flv(flv_gw.flv_port, session_path(flv_gw, "demo"), 3.0)  # type: ignore[attr-defined]
    assert got.status == 200 and got.content_type == "video/x-flv"
    assert got.flags == 5  # audio and video
    script, vseq, aseq, *media = got.tags
    assert script.kind == 18 and amf0.decode(script.body)[0] == "onMetaData"
    meta = amf0.decode(script.body)[1]
    assert (meta["width"], meta["height"], meta["videocodecid"], meta["audiocodecid"]) == (640, 360, 7, 10)
    assert vseq.kind == 9 and vseq.body[:2] == b"\x17\x00" and vseq.body[5] == 1  # AVC sequence header: avcC
    assert aseq.kind == 8 and aseq.body[:2] == b"\xaf\x00" and len(aseq.body) >= 4  # AudioSpecificConfig
    video = [t for t in media if t.kind == 9]
    audio = [t for t in media if t.kind == 8]
    assert video[0].body[:2] == b"\x17\x01" and video[0].ms == 0  # a keyframe at once, at time zero
    assert all(t.body[1] == 1 for t in video) and all(t.body[:2] == b"\xaf\x01" for t in audio)
    for track in (video, audio):
        assert all(b.ms >= a.ms for a, b in zip(track, track[1:], strict=False))
    steps = [b.ms - a.ms for a, b in zip(video, video[1:], strict=False)]
    assert all(30 <= s <= 50 for s in steps), steps  # 25 fps
    assert len(video) >= 60  # the GOP cache at once, then live
    # each video sample is length-prefixed NAL units that fill it exactly
    for t in video[:10]:
        data, pos = t.body[5:], 0
        while pos < len(data):
            pos += 4 + int.from_bytes(data[pos : pos + 4], "big")
        assert pos == len(data)


def test_session_and_token_checked(flv_gw: Gateway) -> None:
    for port in (flv_gw.port, flv_gw.flv_port):  # type: ignore[attr-defined]
        assert read_flv(port, "/live/demo.flv", 1).status == 401
        assert read_flv(port, "/live/demo.flv?session=00000000-0000-0000-0000-000000000000", 1).status == 401
        assert read_flv(port, session_path(flv_gw, "nosuch"), 1).status == 404
    # the session also works as the console's cookie
    conn = http.client.HTTPConnection("127.0.0.1", flv_gw.port, timeout=10)
    conn.request("GET", "/live/demo.flv", headers={"Cookie": f"h5gate_session={flv_gw.session}"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read(3) == b"FLV"
    conn.close()


def test_hevc_source_is_refused_clearly(flv_gw: Gateway, camera: GstCamera) -> None:
    flv_gw.ok("AddSrcRTSP", token="flv265", name="H.265", url=camera.url("h265"))
    try:
        flv_gw.wait_online("flv265", timeout=30)
        status, _, body = flv_gw.request(session_path(flv_gw, "flv265"))
        answer = json.loads(body)
        assert status == 415 and not answer["bStatus"] and "H.264" in answer["strCode"], answer
    finally:
        flv_gw.ok("DelSrc", token="flv265")


def test_flvjs_plays_in_chromium(flv_gw: Gateway) -> None:
    """flv.js (the vendored file) plays the stream from flv_port in Chromium, from a page on the main port."""
    url = f"http://127.0.0.1:{flv_gw.flv_port}{session_path(flv_gw, 'demo')}"  # type: ignore[attr-defined]
    for browser in launch(["--autoplay-policy=no-user-gesture-required"]):
        for page in new_page(browser):
            page.goto(f"{flv_gw.base}/login")
            page.add_script_tag(url="/static/vendor/flv.min.js")
            page.evaluate(
                """url => {
                    const video = document.createElement('video');
                    video.muted = true;
                    video.id = 'flv';
                    document.body.appendChild(video);
                    window.flvErrors = [];
                    const player = flvjs.createPlayer({type: 'flv', isLive: true, url: url});
                    player.on(flvjs.Events.ERROR, (kind, detail) => window.flvErrors.push(kind + ': ' + detail));
                    player.attachMediaElement(video);
                    player.load();
                    video.play();
                    window.flvPlayer = player;
                }""",
                url,
            )
            assert page.evaluate("flvjs.isSupported()")
            page.wait_for_function("document.getElementById('flv').currentTime > 0.5", timeout=20000)
            first = page.evaluate("document.getElementById('flv').currentTime")
            time.sleep(2)
            state = page.evaluate(
                """() => { const v = document.getElementById('flv');
                    return {t: v.currentTime, w: v.videoWidth, h: v.videoHeight, errors: window.flvErrors}; }"""
            )
            assert state["t"] >= first + 1.5, (first, state)  # it plays on, in real time
            assert (state["w"], state["h"]) == (640, 360) and state["errors"] == []
            assert page.page_errors == []  # type: ignore[attr-defined]
