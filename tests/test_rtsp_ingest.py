"""The zero-lookahead live path against the real GStreamer camera: our RTSP client (auth, transports,
errors), whole frames from a camera that slices them, and what a WS viewer and GetImage get from it."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
import websockets

from tools.harness.camera import GstCamera, SilentServer, free_port
from tools.harness.gateway import Gateway
from workers.fmp4 import boxes, parse_init, read_traf
from workers.hub import StreamHub
from workers.rtp.bits import BitReader
from workers.rtsp.client import RtspError
from workers.rtsp_source import RtspIngest, Unsupported

PASSWORD = "p@ss:w/rd%?#1"


@pytest.fixture(scope="module", params=["digest", "basic"])
def auth_camera(request: pytest.FixtureRequest) -> Iterator[GstCamera]:
    with GstCamera(user="cam", password=PASSWORD, auth=request.param) as cam:
        yield cam


async def ingest_for(url: str, seconds: float, frames: int = 0, **kw: object) -> tuple[StreamHub, RtspIngest]:
    """Run the ingest until `frames` video frames are in the hub (or `seconds` pass); raise its error."""
    hub = StreamHub("test", ring_seconds=60)
    ingest = RtspIngest("test", url, hub, **kw)  # type: ignore[arg-type]
    task = asyncio.create_task(ingest.run())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not task.done():
        if frames and sum(f.video for f in hub.ring) >= frames:
            break
        await asyncio.sleep(0.1)
    if task.done():
        task.result()  # raises the run's error
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return hub, ingest


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_auth_and_transports_deliver_frames_at_their_interval(auth_camera: GstCamera, transport: str) -> None:
    hub, ingest = asyncio.run(ingest_for(auth_camera.url("h264"), 20.0, 60, transport=transport))
    assert hub.init is not None and hub.init.mime.startswith('video/mp4; codecs="avc1.42')
    assert hub.init.mime.endswith(', mp4a.40.2"')
    video = [f for f in hub.ring if f.video]
    audio = [f for f in hub.ring if not f.video]
    assert video[0].keyframe and len(video) >= 60, len(video)
    steps = [b.info.tfdt - a.info.tfdt for a, b in zip(video, video[1:], strict=False)]
    # 25 fps at 90 kHz, learned from the stream: the interval seen last, or the smoothed one where that
    # step spans a frame the camera (loaded encoder) or the network lost
    durations = [f.info.duration for f in video[1:]]
    assert all(2700 <= d <= 4500 for d in durations), durations
    assert sum(d == 3600 for d in durations) >= 0.9 * len(durations), durations
    assert sorted(steps)[len(steps) // 2] == 3600 and min(steps) >= 3600 - 1
    # AAC 48 kHz, 1024 samples a frame: audio covers what video covers (the camera sends both all along)
    video_span = video[-1].end - video[0].dts
    assert len(audio) * 1024 / 48000 >= 0.8 * video_span, (len(audio), video_span)
    assert all(b.info.tfdt - a.info.tfdt == 1024 for a, b in zip(audio, audio[1:], strict=False))
    # audio and video start in step: the camera's RTP-Info puts both on one clock
    assert ingest.client is not None and len(ingest.client.rtp_info) == 2
    assert abs(audio[0].dts - video[0].dts) < 0.2
    assert ingest.client is not None and ingest.client.transport_kind == transport


def test_errors_are_worded_for_getsrc(auth_camera: GstCamera, camera: GstCamera) -> None:
    def error(url: str, **kw: object) -> str:
        with pytest.raises(RtspError) as e:
            asyncio.run(ingest_for(url, 15.0, timeout=2.0, **kw))
        return str(e.value)

    wrong = auth_camera.url("h264").replace("p%40ss", "nope")
    assert error(wrong) == "authentication failed (401 Unauthorized)"
    assert error(auth_camera.url("h264", credentials=False)) == "authentication failed (401 Unauthorized)"
    assert error(f"rtsp://127.0.0.1:{free_port()}/x") == "connection refused"
    assert error(camera.url("no_such_mount")) == "stream not found (404 Not Found)"
    with SilentServer() as silent:
        start = time.monotonic()
        assert "timed out" in error(silent.url("h264"))
        assert time.monotonic() - start < 5


def test_codecs_it_does_not_carry_go_to_ffmpeg(camera: GstCamera) -> None:
    with pytest.raises(Unsupported) as e:
        asyncio.run(ingest_for(camera.url("mjpeg"), 10.0))
    assert e.value.video == "mjpeg"


def slices(sample: bytes) -> list[tuple[int, int]]:
    """(NAL type, first_mb_in_slice) of each slice NAL in a length-prefixed sample."""
    out = []
    pos = 0
    while pos + 4 <= len(sample):
        size = int.from_bytes(sample[pos : pos + 4], "big")
        nal = sample[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if nal and (nal[0] & 0x1F) in (1, 5):
            out.append((nal[0] & 0x1F, BitReader(nal[1:8]).ue()))
    assert pos == len(sample), "sample is not a whole run of length-prefixed NAL units"
    return out


async def ws_samples(url: str, frames: int) -> tuple[bytes, list[bytes]]:
    """The init and the video samples a WS viewer receives, from the raw messages."""
    init = b""
    samples: list[bytes] = []
    video_track = 0
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.recv()  # MIME
        while len(samples) < frames:
            msg = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(msg, bytes)
            if msg[4:8] == b"ftyp":
                init = msg
                info = parse_init(init)
                assert info.video is not None
                video_track = info.video.track_id
                continue
            moof = 0
            for kind, pos, _, size in boxes(msg):
                if kind == b"moof":
                    moof = pos
                elif kind == b"mdat":
                    piece = msg[moof : pos + size]
                    traf = read_traf(piece)
                    if traf.track_id == video_track:
                        for s in traf.samples:
                            samples.append(piece[s.offset : s.offset + s.size])
    return init, samples


def test_sliced_camera_every_sample_is_one_whole_frame(gateway: Gateway, camera: GstCamera) -> None:
    gateway.ok("AddSrcRTSP", token="sliced", name="Sliced", url=camera.url("h264_sliced"))
    try:
        gateway.wait_online("sliced")
        init, samples = asyncio.run(ws_samples(gateway.ws_url("sliced"), 60))
        keyframes = 0
        for sample in samples:
            got = slices(sample)
            firsts = [mb for _, mb in got]
            # 4 slices (x264 slices=4), starting at macroblock 0 and going down the picture: one frame, all of it
            assert len(got) == 4 and firsts[0] == 0 and firsts == sorted(set(firsts)), got
            assert len({t for t, _ in got}) == 1  # all IDR or all non-IDR slices: never two frames
            keyframes += got[0][0] == 5
        assert keyframes >= 1
        # the stream decodes to whole pictures, like the camera's own
        data = init + b"".join(_mp4_fragment(i, s) for i, s in enumerate(samples))
        with av.open(io.BytesIO(data), "r", format="mp4") as container:
            pictures = [_small(f) for f in container.decode(video=0)]
        assert len(pictures) == len(samples)
        assert max(_green_share(p) for p in pictures) < 0.01
        status, _, jpeg = gateway.request(f"/api/v1/GetImage?token=sliced&session={gateway.session}")
        assert status == 200 and jpeg[:2] == b"\xff\xd8"
        image = _decode_jpeg(jpeg)
        direct = _direct_decode(camera.url("h264_sliced"))
        assert _green_share(image) < 0.01 and _green_share(direct) < 0.01
        # a different moment of the moving test pattern, but the same picture: both halves match closely
        half = len(image) // 2
        for part in (slice(0, half), slice(half, None)):
            diffs = [abs(a - b) for a, b in zip(image[part], direct[part], strict=True)]
            assert sum(diffs) / len(diffs) < 12
    finally:
        gateway.ok("DelSrc", token="sliced")


def _mp4_fragment(i: int, sample: bytes) -> bytes:
    from workers.mp4mux import fragment

    return fragment(i + 1, 1, i * 3600, 3600, sample, i == 0)


SMALL = (160, 90)


def _small(frame: av.VideoFrame) -> bytes:
    """The picture at 160x90 as packed RGB: enough to see a green half, cheap to compare in Python."""
    rgb = frame.reformat(width=SMALL[0], height=SMALL[1], format="rgb24")
    plane = rgb.planes[0]
    row = SMALL[0] * 3
    raw = bytes(plane)
    return b"".join(raw[y * plane.line_size : y * plane.line_size + row] for y in range(SMALL[1]))


def _green_share(rgb: bytes) -> float:
    """Share of strongly green pixels: what a decoder shows where half a keyframe is missing."""
    green = sum(1 for i in range(0, len(rgb), 3) if rgb[i + 1] > rgb[i] + 60 and rgb[i + 1] > rgb[i + 2] + 60)
    return green / (len(rgb) // 3)


def _decode_jpeg(data: bytes) -> bytes:
    with av.open(io.BytesIO(data), "r") as container:
        return _small(next(container.decode(video=0)))


def _direct_decode(url: str) -> bytes:
    """A picture straight from the camera, through GStreamer's own depayloader and decoder.

    Not PyAV: ffmpeg's H.264 parser splits this camera's keyframes in two (the defect this path fixes),
    so its "direct" picture is green over the top. GStreamer groups by RTP timestamp, as we do.
    """
    size = SMALL[0] * SMALL[1] * 3
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "frames.rgb"
        cmd = [
            "gst-launch-1.0", "-q", "rtspsrc", f"location={url}", "protocols=tcp", "latency=0",
            "!", "rtph264depay", "!", "avdec_h264", "!", "videoconvert", "!", "videoscale",
            "!", f"video/x-raw,format=RGB,width={SMALL[0]},height={SMALL[1]}",
            "!", "filesink", f"location={out}",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 30 * size):
                time.sleep(0.1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        data = out.read_bytes()
    assert len(data) >= 30 * size, "GStreamer decoded too little of the camera"
    frames = len(data) // size
    return data[(frames - 1) * size : frames * size]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_hls_of_an_own_client_camera_plays(gateway: Gateway, camera: GstCamera, version: str) -> None:
    """No ffmpeg reads this camera: HLS is cut from the hub, and plays (video and audio) in ffmpeg."""
    token = f"hls{version}"
    gateway.ok("AddSrcRTSP", token=token, name="HLS", url=camera.url("h264"))
    try:
        gateway.wait_online(token)
        path = f"/hls/{version}/{token}/hls.m3u8?session={gateway.session}"
        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            status, _, body = gateway.request(path)
            text = body.decode(errors="replace")
            if status == 200 and text.count("#EXTINF") >= 2:
                break
            time.sleep(0.5)
        assert text.count("#EXTINF") >= 2, text
        out = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", gateway.base + path]
            + ["-t", "3", "-f", "framemd5", "-"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        rows = [line.split(",") for line in out.stdout.splitlines() if line and not line.startswith("#")]
        assert sum(r[0].strip() == "0" for r in rows) >= 60  # video frames of 3 s at 25 fps
        assert sum(r[0].strip() == "1" for r in rows) >= 50  # AAC frames (48 kHz: 47 a second)
    finally:
        gateway.ok("DelSrc", token=token)
