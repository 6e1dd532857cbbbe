"""Prove the test cameras and the fault proxy behave like real cameras, using real ffmpeg.

Every other RTSP test trusts these tools, so here they are checked on decoded frames
and codecs, not on exit codes alone.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from tests.rtp_client import RtspReader
from tools.harness.camera import FaultProxy, GstCamera, SilentServer, wait_until

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
MIN_FRAMES = 30  # 2 s at 25 fps is 50; 30 leaves room for the wait for a keyframe


@pytest.fixture(scope="module")
def camera() -> Iterator[GstCamera]:
    with GstCamera() as cam:
        yield cam


@pytest.fixture
def proxy(camera: GstCamera) -> Iterator[FaultProxy]:
    with FaultProxy.for_camera(camera) as p:
        yield p


def ffmpeg_capture(
    url: str, out: Path, *, transport: str = "tcp", seconds: float = 2, timeout_us: int = 5_000_000
) -> subprocess.CompletedProcess[str]:
    """Record `seconds` of the stream with stream copy, as the gateway's ingest would."""
    fmt = "mov" if out.suffix == ".mov" else "mp4"
    cmd = [
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error",
        "-rtsp_transport", transport, "-timeout", str(timeout_us), "-i", url,
        "-t", str(seconds), "-c", "copy", "-f", fmt, "-y", str(out),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


class RunningFfmpeg:
    """ffmpeg reading until its input ends; tracks frames via -progress to know it is live."""

    def __init__(self, url: str, out: Path, timeout_us: int) -> None:
        cmd = [
            FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1",
            "-rtsp_transport", "tcp", "-timeout", str(timeout_us), "-i", url,
            "-c", "copy", "-f", "mp4", "-y", str(out),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.frames = 0
        threading.Thread(target=self._progress, daemon=True).start()

    def _progress(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("frame="):
                self.frames = int(line.split("=", 1)[1])

    def wait_exit(self, timeout: float) -> float | None:
        """Seconds until exit, or None if still running after `timeout` (then it is killed)."""
        t0 = time.monotonic()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def frame_hash(frame: av.VideoFrame) -> str:
    """Hash of the visible picture only: row padding (linesize > width) is not image data."""
    frame = frame.reformat(format="yuv420p")
    h = hashlib.sha1()
    for plane in frame.planes:
        data, stride, width = bytes(plane), plane.line_size, plane.width
        for row in range(plane.height):
            h.update(data[row * stride : row * stride + width])
    return h.hexdigest()


def video_hashes(path: Path) -> tuple[str, list[str]]:
    """Codec name and per-frame hash of every decoded video frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, [frame_hash(f) for f in container.decode(stream)]


def audio_summary(path: Path) -> tuple[list[str], int]:
    """Audio codec names and the number of non-empty audio packets."""
    with av.open(str(path)) as container:
        names = [s.codec_context.name for s in container.streams.audio]
        if not names:
            return names, 0
        packets = sum(1 for p in container.demux(container.streams.audio[0]) if p.size)
        return names, packets


def assert_live_video(path: Path, codec: str, min_frames: int = MIN_FRAMES) -> None:
    name, hashes = video_hashes(path)
    assert name == codec
    assert len(hashes) >= min_frames, f"only {len(hashes)} frames"
    same = [i for i in range(1, len(hashes)) if hashes[i] == hashes[i - 1]]
    assert not same, f"frames identical to their predecessor at {same[:10]}"


@pytest.mark.parametrize(
    ("mount", "transport", "vcodec", "acodec", "suffix"),
    [
        ("h264", "tcp", "h264", "aac", ".mp4"),
        ("h264", "udp", "h264", "aac", ".mp4"),
        # mp4 has no tag for G.711, so those recordings go into mov
        ("h264_pcma", "tcp", "h264", "pcm_alaw", ".mov"),
        ("h264_pcmu", "tcp", "h264", "pcm_mulaw", ".mov"),
        ("h264_noaudio", "tcp", "h264", None, ".mp4"),
        ("h265", "tcp", "hevc", "aac", ".mp4"),
        ("mjpeg", "tcp", "mjpeg", None, ".mp4"),
    ],
)
def test_mount_streams_live_media(
    camera: GstCamera,
    tmp_path: Path,
    mount: str,
    transport: str,
    vcodec: str,
    acodec: str | None,
    suffix: str,
) -> None:
    out = tmp_path / f"{mount}{suffix}"
    res = ffmpeg_capture(camera.url(mount), out, transport=transport)
    assert res.returncode == 0, res.stderr
    assert_live_video(out, vcodec)
    names, packets = audio_summary(out)
    if acodec is None:
        assert names == []
    else:
        assert names == [acodec]
        assert packets >= 10, f"only {packets} audio packets"


@pytest.mark.parametrize("auth", ["digest", "basic"])
def test_auth_rejects_wrong_password_and_accepts_right_one(tmp_path: Path, auth: str) -> None:
    with GstCamera(user="admin", password="p@ss:w/rd", auth=auth) as cam:
        wrong = cam.url("h264_noaudio").replace("p%40ss%3Aw%2Frd", "nope")
        assert "nope" in wrong
        res = ffmpeg_capture(wrong, tmp_path / "wrong.mp4", seconds=1)
        assert res.returncode != 0
        assert "401" in res.stderr
        res = ffmpeg_capture(cam.url("h264_noaudio", credentials=False), tmp_path / "anon.mp4", seconds=1)
        assert res.returncode != 0
        assert "401" in res.stderr
        res = ffmpeg_capture(cam.url("h264_noaudio"), tmp_path / "right.mp4")
        assert res.returncode == 0, res.stderr
        assert_live_video(tmp_path / "right.mp4", "h264")


def basic(proxy: FaultProxy) -> dict[str, object]:
    status = proxy.status()
    return {k: status[k] for k in ("mode", "connections", "accepted")}


def test_proxy_normal_forwards_media(proxy: FaultProxy, tmp_path: Path) -> None:
    assert basic(proxy) == {"mode": "normal", "connections": 0, "accepted": 0}
    res = ffmpeg_capture(proxy.url("h264"), tmp_path / "p.mp4")
    assert res.returncode == 0, res.stderr
    assert_live_video(tmp_path / "p.mp4", "h264")
    assert audio_summary(tmp_path / "p.mp4")[0] == ["aac"]
    assert proxy.status()["accepted"] == 1


def test_proxy_freeze_makes_ffmpeg_time_out(proxy: FaultProxy, tmp_path: Path) -> None:
    ff = RunningFfmpeg(proxy.url("h264_noaudio"), tmp_path / "f.mp4", timeout_us=2_000_000)
    try:
        assert wait_until(lambda: ff.frames >= 10, 10), "no media through proxy"
        proxy.set_mode("freeze")
        status = proxy.status()
        assert status["mode"] == "freeze"
        assert status["connections"] == 1  # silent, not closed
        frames_at_freeze = ff.frames
        elapsed = ff.wait_exit(8)
        assert elapsed is not None, "ffmpeg did not give up on a frozen camera"
        assert 1.0 <= elapsed <= 6.0, elapsed  # its own 2 s timeout, not a closed socket
        assert ff.frames <= frames_at_freeze + 5  # nothing but in-flight data arrived
    finally:
        ff.kill()


def test_proxy_drop_ends_running_input_then_serves_again(proxy: FaultProxy, tmp_path: Path) -> None:
    ff = RunningFfmpeg(proxy.url("h264_noaudio"), tmp_path / "d.mp4", timeout_us=5_000_000)
    try:
        assert wait_until(lambda: ff.frames >= 10, 10), "no media through proxy"
        assert proxy.status()["connections"] == 1
        proxy.set_mode("drop")
        elapsed = ff.wait_exit(4)
        assert elapsed is not None, "ffmpeg kept running after the camera dropped"
        assert elapsed < 3.0  # EOF, well before the 5 s read timeout
    finally:
        ff.kill()
    assert basic(proxy) == {"mode": "normal", "connections": 0, "accepted": 1}
    assert_live_video(tmp_path / "d.mp4", "h264", min_frames=10)
    res = ffmpeg_capture(proxy.url("h264_noaudio"), tmp_path / "again.mp4", seconds=1)
    assert res.returncode == 0, res.stderr
    assert_live_video(tmp_path / "again.mp4", "h264", min_frames=15)


def test_proxy_refuse_fails_new_connections_fast(proxy: FaultProxy, tmp_path: Path) -> None:
    proxy.set_mode("refuse")
    t0 = time.monotonic()
    res = ffmpeg_capture(proxy.url("h264"), tmp_path / "r.mp4", seconds=1, timeout_us=5_000_000)
    elapsed = time.monotonic() - t0
    assert res.returncode != 0
    assert elapsed < 2.0, elapsed
    assert not (tmp_path / "r.mp4").exists() or (tmp_path / "r.mp4").stat().st_size == 0
    assert basic(proxy) == {"mode": "refuse", "connections": 0, "accepted": 1}


def test_silent_server_trips_ffmpeg_timeout(tmp_path: Path) -> None:
    with SilentServer() as silent:
        t0 = time.monotonic()
        res = ffmpeg_capture(silent.url("h264"), tmp_path / "s.mp4", seconds=1, timeout_us=1_000_000)
        elapsed = time.monotonic() - t0
    assert res.returncode != 0
    assert 0.8 <= elapsed <= 4.0, elapsed


def steps(ts: list[int]) -> list[int]:
    """Signed 32-bit differences between consecutive RTP timestamps."""
    return [((b - a + (1 << 31)) & 0xFFFFFFFF) - (1 << 31) for a, b in zip(ts, ts[1:], strict=False)]


def test_proxy_rewrites_rtp_timestamps_per_channel(proxy: FaultProxy) -> None:
    """jump_back / jump_forward on one channel move only its timestamps (and its sender reports)."""
    reader = RtspReader(proxy.url("h264")).start()
    try:
        cap = reader.read_for(1.5)
        assert cap.kinds == {0: "video", 2: "audio"} and cap.rates[0] == 90000
        rate_a = cap.rates[2]
        v0, a0 = len(cap.timestamps(0)), len([p for p in cap.packets if p.channel == 2])
        assert v0 >= 25 and a0 >= 20
        proxy.set_mode("jump_back", channel=0)
        reader.read_for(1.5)
        proxy.set_mode("jump_forward", channel=2)
        reader.read_for(1.5)
    finally:
        reader.close()
    video = steps(cap.timestamps(0))
    audio = steps([p.timestamp for p in cap.packets if p.channel == 2])
    frame = 90000 // 25
    back = [s for s in video if s < 0]
    assert len(back) == 1 and abs(back[0] - (-10 * 90000 + frame)) <= frame, back
    assert all(0 < s <= 3 * frame for s in video if s >= 0)
    forward = [s for s in audio if s > rate_a]
    assert len(forward) == 1, forward
    assert abs(forward[0] - 3600 * rate_a) <= rate_a // 10
    assert all(0 <= s <= rate_a // 10 for s in audio if s != forward[0])
    status = proxy.status()
    assert status["shift"] == {"0": -10.0, "2": 3600.0} and status["rewritten"] > 0
    # sender reports moved with their stream: each lies within 2 s of that stream's packets around it
    for ch, sr in cap.sender_reports:
        nearest = min(abs(steps([p.timestamp, sr])[0]) for p in cap.packets if p.channel == ch)
        assert nearest <= 2 * cap.rates[ch], (ch, sr, nearest)


def test_proxy_wrap_and_jitter(proxy: FaultProxy) -> None:
    proxy.set_mode("wrap")  # connections made from now on start 3 s before the 32-bit wrap
    proxy.set_mode("jitter", channel=0)
    reader = RtspReader(proxy.url("h264_noaudio")).start()
    try:
        cap = reader.read_for(5.0)
    finally:
        reader.close()
    ts = cap.timestamps(0)
    assert ts[0] >= (1 << 32) - 3 * 90000 - 90000 // 5, ts[0]  # starts just before the wrap
    assert any(b < a for a, b in zip(ts, ts[1:], strict=False)), "never wrapped"
    video = steps(ts)
    frame = 90000 // 25
    assert all(frame - 2 * 720 <= s <= frame + 2 * 720 for s in video), video  # ±8 ms either side, no jump
    assert len(set(video)) > 5, "no jitter"
    frame_ts: set[int] = set()
    for p in cap.packets:  # every packet of a frame carries the frame's one timestamp
        frame_ts.add(p.timestamp)
        if p.marker:
            assert len(frame_ts) == 1, frame_ts
            frame_ts = set()
    proxy.set_mode("normal")
    assert proxy.status()["jitter"] == {}
