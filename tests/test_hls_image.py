"""HLS made on demand from the hub (read back by ffmpeg), and GetImage as real JPEGs from the hub."""

from __future__ import annotations

import io
import re
import subprocess
import time

import av
import pytest

from tools.harness.camera import FaultProxy, GstCamera
from tools.harness.gateway import Gateway


def decode_jpeg(data: bytes) -> tuple[int, int]:
    with av.open(io.BytesIO(data), format="image2pipe") as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


@pytest.mark.parametrize("version,segment", [("v1", ".ts"), ("v2", ".m4s")])
def test_hls_plays_in_ffmpeg(gateway: Gateway, version: str, segment: str) -> None:
    path = f"/hls/{version}/demo/hls.m3u8?session={gateway.session}"
    deadline = time.monotonic() + 15
    text = ""
    while time.monotonic() < deadline:
        status, headers, body = gateway.request(path)
        text = body.decode()
        if status == 200 and text.count("#EXTINF") >= 2:
            break
        time.sleep(0.5)
    assert headers["content-type"].startswith("application/vnd.apple.mpegurl")
    assert "#EXT-X-TARGETDURATION:2" in text
    segments = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert segments and all(s.endswith(f"{segment}?session={gateway.session}") for s in segments)
    if version == "v2":
        assert re.search(rf'#EXT-X-MAP:URI="init-[0-9a-f]{{12,}}-\d+\.mp4\?session={gateway.session}"', text), text
    out = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            gateway.base + path,
            "-t",
            "4",
            "-map",
            "0:v:0",
            "-f",
            "framemd5",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    frames = [line for line in out.stdout.splitlines() if line and not line.startswith("#")]
    assert len(frames) >= 95  # 4 s at 25 fps, decoded from the segments


def test_hls_deletes_old_segments(gateway: Gateway) -> None:
    """v1: only the playlist's TS segments (and one or two being written or just dropped) stay on disk;
    v2 is made in memory and writes nothing."""
    path = f"/hls/v1/demo/hls.m3u8?session={gateway.session}"
    deadline = time.monotonic() + 30
    sequences: list[int] = []
    while time.monotonic() < deadline and (len(sequences) < 2 or sequences[-1] - sequences[0] < 4):
        text = gateway.request(path)[2].decode()
        sequences.append(
            int(next((ln.split(":")[1] for ln in text.splitlines() if ln.startswith("#EXT-X-MEDIA-SEQUENCE:")), "0"))
        )
        gateway.request(f"/hls/v2/demo/hls.m3u8?session={gateway.session}")
        time.sleep(1)
    assert sequences[-1] - sequences[0] >= 4, f"the playlist did not roll over: {sequences}"
    segments = list((gateway.data_dir / "hls" / "v1" / "demo").rglob("*.ts"))
    assert 1 <= len(segments) <= 7, sorted(p.name for p in segments)
    assert not list((gateway.data_dir / "hls").glob("v2/**/*.*"))
    assert "failed to delete old segment" not in gateway.log()


def test_hls_needs_a_session_and_stays_in_its_folder(gateway: Gateway) -> None:
    assert gateway.request("/hls/v1/demo/hls.m3u8")[0] == 401
    session = f"?session={gateway.session}"
    for bad in (
        "/hls/v3/demo/hls.m3u8",
        "/hls/v1/demo/..%2f..%2fh5gate.db",
        "/hls/v1/..%2fv2/hls.m3u8",
        "/hls/v1/demo/hls.sh",
        "/hls/v1/demo/.hidden.ts",
        "/hls/v1/demo/hls1.m4s",
        "/hls/v2/demo/seg-zzzzzz-1.m4s",
        "/hls/v2/demo/part-abcdef-1.m4s",
        "/hls/v2/demo/hls.m3u8?_HLS_msn=-1",
        "/hls/v2/demo/hls.m3u8?_HLS_part=1",
    ):
        status, _, body = gateway.request(bad + (session if "?" not in bad else "&" + session[1:]))
        assert status in (400, 404), bad
        assert b"SQLite" not in body and b'"bStatus":false' in body.replace(b" ", b""), body
    assert gateway.request("/hls/v1/nope/hls.m3u8" + session)[0] == 404
    status, _, _ = gateway.request("/hls/v1/demo/hls.m3u8", headers={"Cookie": f"h5gate_session={gateway.session}"})
    assert status == 200


def test_get_image_is_a_jpeg_of_the_stream(gateway: Gateway) -> None:
    status, headers, body = gateway.request(f"/api/v1/GetImage?token=demo&session={gateway.session}")
    assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert "x-h5gate-image" not in headers
    assert decode_jpeg(body) == (640, 360)
    # a page of posters costs one decode per source: answers within the cache time are the same image
    again = gateway.request(f"/api/v1/GetImage?token=demo&session={gateway.session}&update=2")[2]
    assert again == body
    assert gateway.get("GetImage", token="nope")[0] == 404


def test_get_image_from_camera_opens_no_new_connection(gateway: Gateway, camera: GstCamera) -> None:
    with FaultProxy.for_camera(camera) as proxy:
        gateway.ok("AddSrcRTSP", token="imgcam", name="Img", url=proxy.url("h264"), rtsptype="tcp")
        try:
            gateway.wait_online("imgcam")
            accepted = proxy.status()["accepted"]
            for i in range(3):
                status, _, body = gateway.request(f"/api/v1/GetImage?token=imgcam&session={gateway.session}&r={i}")
                assert status == 200 and decode_jpeg(body) == (640, 360)
                time.sleep(1.1)
            assert proxy.status()["accepted"] == accepted  # the picture came from the hub
        finally:
            gateway.ok("DelSrc", token="imgcam")


def test_get_image_of_offline_source_is_the_placeholder(gateway: Gateway) -> None:
    gateway.ok("AddSrcRTSP", token="imgdead", name="x", url="rtsp://127.0.0.1:9/none")
    try:
        status, headers, body = gateway.request(f"/api/v1/GetImage?token=imgdead&session={gateway.session}")
        assert status == 200 and headers["x-h5gate-image"] == "placeholder" and decode_jpeg(body)[0] > 0
    finally:
        gateway.ok("DelSrc", token="imgdead")
