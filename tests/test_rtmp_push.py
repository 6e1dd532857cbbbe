"""RTMP push-in: ffmpeg publishes the demo clip with `-f flv` to an H5_RTMP_PUSH source of a real server."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.test_flv import FlvRead, read_flv
from tests.wsclient import Received, check_playable, watch, watch_sync
from tools.harness.camera import free_port
from tools.harness.gateway import ROOT, Gateway
from workers import push_source
from workers.hub import StreamHub
from workers.push_source import PushInput

DEMO = ROOT / "media" / "demo.mp4"


class Ports:
    def __init__(self) -> None:
        self.rtmp = free_port()
        self.flv = free_port()


@pytest.fixture(scope="module")
def push_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A server with RTMP and HTTP-FLV on free ports, and a Viewer user made before it starts."""
    data = tmp_path_factory.mktemp("push")
    data.joinpath("gw").mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor.cli",
            "passwd",
            "watcher",
            "--role",
            "Viewer",
            "--data-dir",
            str(data / "gw"),
        ],
        input=b"watch1234\n",
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    ports = Ports()
    env = {
        "H5GATE_RTMP_PORT": str(ports.rtmp),
        "H5GATE_FLV_PORT": str(ports.flv),
        "H5GATE_STALL_TIMEOUT": "3",
        "H5GATE_SEND_TIMEOUT": "3",
    }
    gw = Gateway(data / "gw", extra_args=["--no-demo"], env=env).start()
    gw.ports = ports  # type: ignore[attr-defined]
    try:
        yield gw
    finally:
        gw.stop()


def publish(url: str, *extra: str, loop: bool = True, realtime: bool = True) -> subprocess.Popen[bytes]:
    """ffmpeg pushing the demo clip in real time, as an encoder would."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error"]
        + (["-re"] if realtime else [])
        + (["-stream_loop", "-1"] if loop else [])
        + ["-i", str(DEMO), *(extra or ("-c", "copy")), "-f", "flv", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def refused(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> str:
    """The publisher's error output once it gave up; fails if it is still publishing."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise AssertionError("the publisher was not refused") from None
    assert proc.returncode != 0
    return err.decode(errors="replace")


def wait_log(gw: Gateway, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = gw.log()
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"not logged: {text!r}")


def wait_line(gw: Gateway, *parts: str, timeout: float = 10.0) -> str:
    """A log line that holds every one of `parts`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in gw.log().splitlines():
            if all(p in line for p in parts):
                return line
        time.sleep(0.2)
    raise AssertionError(f"no log line with {parts!r}")


def add_push(gw: Gateway, token: str, **extra: str) -> str:
    answer = gw.ok("AddRTMPPush", token=token, name=f"Push {token}", **extra)
    url = answer["strUrl"]
    port = gw.ports.rtmp  # type: ignore[attr-defined]
    assert url.startswith(f"rtmp://127.0.0.1:{port}/live/{token}?key=") and len(url.split("key=")[1]) == 32
    return str(url)


def frames_in(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries"]
        + ["stream=nb_read_frames,codec_name", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    stream = json.loads(out.stdout)["streams"][0]
    assert stream["codec_name"] == "h264"
    return int(stream["nb_read_frames"])


def test_publish_view_record_snapshot_stop_resume(push_gw: Gateway) -> None:
    gw = push_gw
    url = add_push(gw, "push1")
    src = gw.source("push1")
    assert src["nType"] == "H5_RTMP_PUSH" and src["strUrl"] == url and not src["bOnline"]
    assert src["strPasswd"] == "*****" and "waiting for an encoder" in src["strLastError"]
    encoder = publish(url)
    try:
        src = gw.wait_online("push1", timeout=15)
        assert (src["strVideoCodec"], src["strAudioCodec"], src["strTransport"]) == ("h264", "aac", "rtmp")

        # a WebSocket viewer: codec string, init, a keyframe first, tracks continuous
        got = watch_sync(gw.ws_url("push1"), frames=40)
        assert got.mime == 'video/mp4; codecs="avc1.4d401e, mp4a.40.2"'
        assert (got.inits[0].video.width, got.inits[0].video.height) == (640, 360)
        check_playable(got)
        video = got.video()
        steps = [b.tfdt - a.tfdt for a, b in zip(video, video[1:], strict=False)]
        assert all(3000 <= s <= 4200 for s in steps), steps  # 25 fps on a 90 kHz clock, from RTMP milliseconds

        # a snapshot from the pushed stream (a real JPEG, not the "connecting" picture)
        status, headers, body = gw.request(f"/api/v1/GetImage?token=push1&session={gw.session}")
        assert status == 200 and body[:2] == b"\xff\xd8" and "x-h5gate-image" not in headers
        shot = gw.ok("Snapshot", token="push1")
        assert shot["strPath"].endswith(".jpg")
        assert (gw.data_dir / "mediastore" / shot["strPath"].removeprefix("/mediastore/")).read_bytes()[
            :2
        ] == b"\xff\xd8"

        # a recording of it
        rec = gw.ok("ManualRecordStart", token="push1")
        time.sleep(3)
        gw.ok("ManualRecordStop", token="push1")
        path = gw.data_dir / "mediastore" / rec["strPath"].removeprefix("/mediastore/")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not path.exists():
            time.sleep(0.2)
        assert frames_in(path) >= 50  # 3 s at 25 fps plus pre-record
    finally:
        stop(encoder)

    src = gw.wait_online("push1", online=False, timeout=10)
    assert src["strLastError"] in ("encoder stopped publishing", "encoder closed the connection"), src
    wait_line(gw, "push1: RTMP publisher 127.0.0.1", "ended: encoder")

    # resume: the same URL and key work again, the source comes back online with the timeline going forward
    encoder = publish(url)
    try:
        src = gw.wait_online("push1", timeout=15)
        assert src["nRestarts"] == 1
        got = watch_sync(gw.ws_url("push1"), frames=30)
        check_playable(got)
    finally:
        stop(encoder)


def test_viewer_resumes_across_a_publish_gap(push_gw: Gateway) -> None:
    """A viewer that stays connected while the encoder stops and starts gets a new init, and decode times
    that keep going forward (the encoder's own clock starts again at zero)."""
    gw = push_gw
    url = add_push(gw, "push2", audio="false")
    encoder = publish(url)
    try:
        gw.wait_online("push2", timeout=15)

        async def run() -> Received:
            task = asyncio.create_task(watch(gw.ws_url("push2"), stop_after=14))
            await asyncio.sleep(4)
            await asyncio.to_thread(stop, encoder)
            await asyncio.sleep(2)
            again = await asyncio.to_thread(publish, url)
            try:
                return await task
            finally:
                await asyncio.to_thread(stop, again)

        got = asyncio.run(run())
    finally:
        stop(encoder)
    assert got.mime == 'video/mp4; codecs="avc1.4d401e"'  # audio=false: video only
    runs = {i for i, _, _ in got.fragments}
    assert runs == {0, 1}, runs  # the second publish came as a new init
    video = [f for i, f, _ in got.fragments]
    assert all(b.tfdt > a.tfdt for a, b in zip(video, video[1:], strict=False))
    second_run = [f for i, f, _ in got.fragments if i == 1]
    assert second_run[0].keyframe and len(second_run) >= 50


def flv_tags(seconds: float) -> list[tuple[int, int, bytes]]:
    """(type, timestamp ms, body) of the demo clip's first seconds as ffmpeg writes them for RTMP."""
    data = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-t", str(seconds), "-i", str(DEMO), "-c", "copy"]
        + ["-f", "flv", "-"],
        capture_output=True,
        check=True,
    ).stdout
    tags, pos = [], 13
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ms = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        tags.append((data[pos], ms, data[pos + 11 : pos + 11 + size]))
        pos += 15 + size
    return tags


def test_timeline_goes_forward_across_publishes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two publishes of the same clip (the encoder's clock at zero both times) 2 s apart: one timeline in
    the hub, the second run after the real pause, audio beside video, AAC frames back to back."""
    now = [1000.0]
    monkeypatch.setattr(push_source.time, "monotonic", lambda: now[0])
    hub = StreamHub("t/main")
    source = PushInput("t/main", hub)
    source.start()
    tags = flv_tags(2.0)
    runs = []
    for start in (1000.0, 1004.0):  # the clip is 2 s long: 2 s of pause between the publishes
        session = source.begin("127.0.0.1:1", lambda: None)
        for kind, ms, body in tags:
            now[0] = start + ms / 1000
            if kind == 9:
                session.on_video(ms, body)
            elif kind == 8:
                session.on_audio(ms, body)
        session.end("encoder stopped publishing")
        runs.append([f for f in hub.ring if f.gen == hub.gen])
    assert source.timeline.resets == 0 and not source.state.online
    assert hub.gen == 2 and runs[0][0].gen == 1
    for run in runs:
        video = [f for f in run if f.video]
        audio = [f for f in run if not f.video]
        assert video[0].keyframe and len(video) >= 45 and len(audio) >= 80
        assert all(b.info.tfdt - a.info.tfdt == 3600 for a, b in zip(video, video[1:], strict=False))
        assert all(b.info.tfdt - a.info.tfdt == 1024 for a, b in zip(audio, audio[1:], strict=False))
        assert abs(audio[0].dts - video[0].dts) < 0.1  # the clip's own A/V offset, kept
    gap = runs[1][0].dts - runs[0][-1].dts
    assert 2.0 <= gap <= 2.2, gap  # the real pause: not back at zero, not glued on


def test_bad_publishers_are_refused_and_logged(push_gw: Gateway) -> None:
    gw = push_gw
    url = add_push(gw, "push3")
    base, _, key = url.partition("?key=")
    wrong = publish(f"{base}?key={'0' * 32}", loop=False)
    assert "error" in refused(wrong).lower()
    wait_line(gw, "push3: RTMP publish from 127.0.0.1", "refused: wrong key")
    nokey = publish(base, loop=False)
    refused(nokey)
    wait_line(gw, "push3: RTMP publish from 127.0.0.1", "refused: no key")
    port = gw.ports.rtmp  # type: ignore[attr-defined]
    unknown = publish(f"rtmp://127.0.0.1:{port}/live/nosuch?key={key}", loop=False)
    refused(unknown)
    wait_line(gw, "nosuch: RTMP publish from 127.0.0.1", "refused: unknown token: nosuch")
    other_app = publish(f"rtmp://127.0.0.1:{port}/vod/push3?key={key}", loop=False)
    refused(other_app)
    wait_log(gw, "refused: unknown application 'vod'")
    # a file source's token is no push target, whatever key comes with it
    gw.ok("AddSrcFile", token="file1", name="File", url="demo.mp4")
    try:
        refused(publish(f"rtmp://127.0.0.1:{port}/live/file1?key={key}", loop=False))
        wait_log(gw, "refused: unknown token: file1")
    finally:
        gw.ok("DelSrc", token="file1")
    assert key not in gw.log(), "the publish key was written to the log"
    assert not gw.source("push3")["bOnline"]

    first = publish(url)
    try:
        gw.wait_online("push3", timeout=15)
        second = publish(url, loop=False)
        refused(second)
        wait_line(gw, "push3: RTMP publish from 127.0.0.1", "refused: already published by 127.0.0.1:")
        time.sleep(1)
        assert first.poll() is None and gw.source("push3")["bOnline"], "the first publisher was disturbed"
        # deleting the source ends its publisher
        gw.ok("DelSrc", token="push3")
        first.wait(10)
        assert first.returncode is not None
        wait_line(gw, "push3: RTMP publisher 127.0.0.1", "ended: source stopped")
    finally:
        stop(first)


def test_b_frames_keep_their_composition_offsets(push_gw: Gateway) -> None:
    """An encoder with B-frames: decode order in, composition offsets carried into the fMP4 and the FLV out."""
    gw = push_gw
    url = add_push(gw, "pushb")
    encoder = publish(url, "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-g", "50", "-c:a", "copy")
    try:
        gw.wait_online("pushb", timeout=20)
        got = watch_sync(gw.ws_url("pushb"), frames=50)
        check_playable(got)
        port = gw.ports.flv  # type: ignore[attr-defined]
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-read_intervals", "%+3", "-select_streams", "v:0", "-show_packets"]
            + ["-show_entries", "packet=pts,dts", "-of", "json"]
            + [f"http://127.0.0.1:{port}/live/pushb.flv?session={gw.session}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        packets = json.loads(out.stdout)["packets"]
        assert len(packets) >= 50, out.stderr
        dts = [p["dts"] for p in packets]
        pts = [p["pts"] for p in packets]
        assert dts == sorted(dts) and len(set(pts)) == len(pts)
        assert sum(1 for p in packets if p["pts"] > p["dts"]) >= len(packets) // 2  # offsets carried through
        assert pts != sorted(pts)  # B-frames: presented in another order than decoded
    finally:
        stop(encoder)


def test_key_on_the_server_url_and_broken_clients(push_gw: Gateway) -> None:
    """OBS keeps server URL and stream key apart: the key may ride on the app/tcUrl. Garbage, a wrong
    RTMP version and a publisher that goes silent are each dropped, logged, and break nothing."""
    gw = push_gw
    url = add_push(gw, "pushk")
    port = gw.ports.rtmp  # type: ignore[attr-defined]
    key = url.split("key=")[1]
    for payload, logged in (
        (b"\x06" + bytes(1536), "RTMP version 6"),
        (b"\x03" + bytes(1536) + bytes(1536) + b"\xff" * 64, ""),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(payload)
            s.settimeout(15)
            try:
                while s.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
        if logged:
            wait_log(gw, logged)
    encoder = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(DEMO)]
        + ["-c", "copy", "-f", "flv", "-rtmp_app", f"live?key={key}", "-rtmp_playpath", "pushk"]
        + [f"rtmp://127.0.0.1:{port}/live?key={key}/pushk"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        gw.wait_online("pushk", timeout=15)
    finally:
        stop(encoder)
    gw.wait_online("pushk", online=False, timeout=10)

    # a publisher that stops sending without closing: dropped after stall_timeout (3 s here)
    clip = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-t", "2", "-i", str(DEMO), "-c", "copy", "-f", "flv", "-"],
        capture_output=True,
        check=True,
    ).stdout
    silent = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "flv", "-i", "pipe:0", "-c", "copy", "-f", "flv", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert silent.stdin is not None
        silent.stdin.write(clip)
        silent.stdin.flush()
        gw.wait_online("pushk", timeout=15)
        src = gw.wait_online("pushk", online=False, timeout=15)
        wait_line(gw, "pushk: RTMP publisher 127.0.0.1", "ended: no data from encoder for 3s (stalled)")
        assert src["strLastError"] in ("no data from encoder for 3s (stalled)", "encoder stopped publishing"), src
    finally:
        if silent.stdin is not None:
            silent.stdin.close()
        stop(silent)
    # after all that, the source takes a proper publisher again
    encoder = publish(url)
    try:
        assert gw.wait_online("pushk", timeout=15)["bOnline"]
    finally:
        stop(encoder)


def test_flv_client_that_stops_reading_is_dropped(push_gw: Gateway) -> None:
    """An HTTP-FLV client that takes no bytes is disconnected after send_timeout (3 s here); others go on."""
    gw = push_gw
    url = add_push(gw, "pushs")
    encoder = publish(url, "-c", "copy", realtime=False)  # as fast as it can: buffers fill in a moment
    port = gw.ports.flv  # type: ignore[attr-defined]
    try:
        gw.wait_online("pushs", timeout=15)
        with socket.socket() as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.connect(("127.0.0.1", port))
            stuck.sendall(f"GET /live/pushs.flv?session={gw.session} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            wait_log(gw, "pushs/main: FLV client 127.0.0.1", timeout=10)
            wait_line(gw, "pushs/main: FLV client 127.0.0.1", "client took no data for 3s: dropped", timeout=30)
        status, _, body = gw.request(f"/api/v1/GetImage?token=pushs&session={gw.session}")
        assert status == 200 and body[:2] == b"\xff\xd8"  # the source and the server carry on
    finally:
        stop(encoder)


def test_flv_client_stays_across_a_publish_gap(push_gw: Gateway) -> None:
    """An HTTP-FLV client of a push source keeps its stream while the encoder stops and starts again: one
    stream, timestamps going forward with no hole and no jump back (the encoder's clock restarts at 0)."""
    gw = push_gw
    url = add_push(gw, "pushg", audio="false")
    encoder = publish(url)
    try:
        gw.wait_online("pushg", timeout=15)
        reading: dict[str, FlvRead] = {}
        port = gw.ports.flv  # type: ignore[attr-defined]
        thread = threading.Thread(
            target=lambda: reading.update(got=read_flv(port, f"/live/pushg.flv?session={gw.session}", 14.0))
        )
        thread.start()
        time.sleep(4)
        stop(encoder)
        time.sleep(2)
        encoder = publish(url)
        thread.join(30)
    finally:
        stop(encoder)
    got = reading["got"]
    assert got.status == 200 and got.flags == 1  # video only (audio=false)
    video = [t for t in got.tags if t.kind == 9 and t.body[1] == 1]
    stamps = [t.ms for t in video]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert len(video) >= 150, len(video)  # ~4 s before the gap and ~6 s after, at 25 fps
    assert all(0 < s <= 100 for s in steps), steps  # no gap and no jump back for the player


def test_codecs_it_cannot_carry(push_gw: Gateway) -> None:
    """Sorenson H.263 video is refused in words; MP3 audio is left out while the H.264 goes on."""
    gw = push_gw
    url = add_push(gw, "pushc")
    encoder = publish(url, "-c:v", "flv", "-c:a", "copy")
    try:
        deadline = time.monotonic() + 15
        src = gw.source("pushc")
        while time.monotonic() < deadline and src["strVideoCodec"] != "h263":
            time.sleep(0.3)
            src = gw.source("pushc")
        assert src["strVideoCodec"] == "h263" and src["strLastError"] == "video is h263: publish H.264", src
        time.sleep(1)
        assert not gw.source("pushc")["bOnline"]
    finally:
        stop(encoder)
    wait_line(gw, "pushc/main: video is h263: only H.264 is taken")
    encoder = publish(url, "-c:v", "copy", "-c:a", "libmp3lame", "-ar", "44100")
    try:
        src = gw.wait_online("pushc", timeout=15)
        assert (src["strVideoCodec"], src["strAudioCodec"]) == ("h264", "mp3"), src
        got = watch_sync(gw.ws_url("pushc"), frames=25)
        assert got.mime == 'video/mp4; codecs="avc1.4d401e"'
        check_playable(got)
        wait_line(gw, "pushc/main: audio is mp3: only AAC is taken")
    finally:
        stop(encoder)


def test_publish_url_shown_to_administrators_only(push_gw: Gateway) -> None:
    gw = push_gw
    url = add_push(gw, "push4")
    status, body = gw.get("Login", session=None, user="watcher", password="watch1234")
    assert status == 200 and body["bStatus"], body
    viewer = body["strSession"]
    src = gw.ok("GetSrc", token="push4", session=viewer)["src"][0]
    assert src["strUrl"] == url.split("?")[0] and "key" not in json.dumps(src)
    assert gw.get("AddRTMPPush", session=viewer, token="push5", name="x")[0] == 403
    assert gw.get("AddRTMPPush", token="push4", name="again")[0] == 409
    assert gw.get("AddRTMPPush", token="bad/token", name="x")[0] == 400
    assert gw.get("AddRTMPPush", token="push6", name="x", audio="maybe")[0] == 400
    assert gw.get("AddRTMPPush", name="x")[0] == 400


def test_ports_closed_when_off(tmp_path: Path) -> None:
    """rtmp_port = 0 and flv_port = 0: the server listens on its main port only."""
    gw = Gateway(tmp_path / "gw", extra_args=["--no-demo"], env={"H5GATE_RTMP_PORT": "0", "H5GATE_FLV_PORT": "0"})
    gw.start()
    try:
        assert gw.proc is not None
        listening = {
            c.laddr.port for c in psutil.Process(gw.proc.pid).net_connections(kind="tcp") if c.status == "LISTEN"
        }
        assert listening == {gw.port}, listening
        assert "RTMP push-in off (rtmp_port = 0)" in gw.log()
        answer = gw.ok("AddRTMPPush", token="p0", name="Off")
        assert answer["strUrl"] == "" and gw.source("p0")["strUrl"] == ""
        # the main port still serves HTTP-FLV
        status, _, _ = gw.request(f"/live/p0.flv?{urllib.parse.urlencode({'session': 'nope'})}")
        assert status == 401
    finally:
        gw.stop()
