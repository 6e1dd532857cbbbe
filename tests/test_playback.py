"""Playback over the live player's WebSocket (H5Stream §5) and clip export, against recorded files.

One server records the looping demo clip in 2 s files for a few seconds; playback must then run across
those files as one stream with a continuous timeline, paced by the clock, and obey H5_START, H5_PAUSE,
H5_RESUME, H5_SEEK (nSeekTime and the older nTime) and H5_SPEED, reporting H5S_EVENT_PB_TIME.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.test_records import decode_errors, iso_time, manual_time, own_gateway, records
from tools.harness.camera import wait_until
from tools.harness.gateway import Gateway
from workers.fmp4 import parse_fragment, parse_init

FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, list[dict[str, Any]]]]:
    gw = own_gateway(tmp_path_factory.mktemp("pb"), record_file_seconds="2", pre_record_seconds="0")
    try:
        gw.ok("AddSrcFile", token="f", name="f", url="demo.mp4")
        gw.wait_online("f")
        t0 = time.time()
        gw.ok("SetRecord", token="f", enable="true")
        assert wait_until(lambda: sum(not r["bRecording"] for r in records(gw, "f", t0)) >= 4, 30, 0.5)
        gw.ok("SetRecord", token="f", enable="false")
        assert wait_until(lambda: not any(r["bRecording"] for r in records(gw, "f", t0)), 10, 0.3)
        yield gw, records(gw, "f", t0)
    finally:
        gw.stop()


class Client:
    """The player's side of a playback socket: what came, with the output timeline checked as it comes."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.init: Any = None
        self.mime = ""
        self.media: list[bytes] = []
        self.times: list[float] = []  # recorded time of each H5S_EVENT_PB_TIME
        self.ended = False
        self.video_end = 0.0  # output timeline reached by video
        self.jumps: list[tuple[float, float]] = []

    async def read(self, seconds: float) -> int:
        """Read for a while; returns the number of media fragments that came."""
        count, deadline = 0, time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(self.ws.recv(), left)
            except TimeoutError:
                break
            if isinstance(msg, str):
                event = json.loads(msg)
                if event["type"] == "H5S_EVENT_PB_TIME":
                    self.times.append(datetime.fromisoformat(event["pbTime"]["strTime"]).timestamp())
                elif event["type"] == "H5S_EVENT_PB_END":
                    self.ended = True
            elif not self.mime:
                self.mime = msg.decode("ascii")
            elif self.init is None:
                self.init = parse_init(msg)
                self.media.append(msg)
            else:
                self.media.append(msg)
                count += 1
                info = parse_fragment(msg)
                track = self.init.tracks[info.track_id]
                if track.handler == "vide":
                    start = info.tfdt / track.timescale
                    if abs(start - self.video_end) > 0.05 and self.video_end:
                        self.jumps.append((self.video_end, start))
                    self.video_end = start + info.duration / track.timescale
        return count

    async def send(self, **cmd: Any) -> None:
        await self.ws.send(json.dumps(cmd))


def playback_url(gw: Gateway, **params: str) -> str:
    query = {"token": "f", "playback": "true", "serverpb": "true", "filename": "fake", "session": gw.session, **params}
    return f"{gw.ws_base}/api/v1/h5swsapi?{urllib.parse.urlencode(query)}"


def test_playback_commands_across_files(recorded: tuple[Gateway, list[dict[str, Any]]], tmp_path: Path) -> None:
    gw, files = recorded
    begin, end = files[0]["nStartTimeMs"] / 1000, files[-1]["nEndTimeMs"] / 1000
    assert end - begin >= 7.5

    async def run() -> Client:
        url = playback_url(gw, begintime=manual_time(begin), endtime=iso_time(end + 1))
        async with websockets.connect(url, max_size=None, compression=None) as ws:
            c = Client(ws)
            assert await c.read(1.0) == 0 and c.mime.startswith("video/mp4") and c.init is not None
            await c.send(cmd="H5_START")
            t0 = time.monotonic()
            await c.read(3.0)
            elapsed = time.monotonic() - t0
            assert 0.6 <= c.video_end - elapsed <= 1.8, (c.video_end, elapsed)  # 1x, about 1 s ahead
            assert c.times and c.times[-1] >= begin + 0.5  # whole seconds, every second
            assert c.video_end > 2.5  # crossed from the first 2 s file into the next

            await c.send(cmd="H5_PAUSE")
            await c.read(0.3)
            assert await c.read(1.5) == 0
            await c.send(cmd="H5_RESUME", nSpeed="1.0", nTime="0")
            assert await c.read(1.0) > 0

            await c.send(cmd="H5_SEEK", nSeekTime=0)
            await c.read(2.5)
            assert min(c.times[-3:]) <= begin + 1.5, c.times[-3:]

            await c.send(cmd="H5_SPEED", nSpeed=4)
            first = len(c.times)
            await c.read(2.5)
            during = c.times[first:]
            assert during[-1] - during[0] >= 5, during  # about 4 s of recording per second

            await c.send(cmd="H5_SEEK", nSpeed="1.0", nTime=str(int(end - begin) - 3))  # the older form
            await c.read(3.0)
            assert c.ended and c.times[-1] >= end - 1.0  # strTime has whole seconds
            assert not c.jumps, c.jumps
            return c

    client = asyncio.run(run())
    out = tmp_path / "played.mp4"
    out.write_bytes(b"".join(client.media))
    counted = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_frames,nb_read_packets",
            "-of",
            "csv=p=0",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    frames, packets = (int(v) for v in counted.stdout.strip().strip(",").split(","))
    assert frames == packets and counted.stderr == "", counted  # every frame sent decodes


def test_single_file_and_refusals(recorded: tuple[Gateway, list[dict[str, Any]]]) -> None:
    gw, files = recorded

    async def close_code(url: str) -> tuple[int, str, int]:
        """(close code, reason, media messages): 0 as code when media flowed and we hung up."""
        got, code, reason = 0, 0, ""
        try:
            async with websockets.connect(url, max_size=None, close_timeout=2) as ws:
                try:
                    await ws.send(json.dumps({"cmd": "H5_START"}))
                    async for msg in ws:
                        got += isinstance(msg, bytes)
                        if got > 20:
                            break
                except websockets.ConnectionClosed:
                    pass
                code, reason = ws.close_code or 0, ws.close_reason or ""
        except websockets.ConnectionClosed:
            pass
        return (0 if got > 20 else code), reason, got

    begin, end = iso_time(files[0]["nStartTimeMs"] / 1000), iso_time(files[-1]["nEndTimeMs"] / 1000)
    assert asyncio.run(close_code(playback_url(gw, begintime="0", endtime="0", filename=files[1]["strPath"])))[2] > 20
    code, reason, _ = asyncio.run(close_code(playback_url(gw, serverpb="false", begintime=begin, endtime=end)))
    assert code == 4415 and "serverpb" in reason
    code, _, _ = asyncio.run(
        close_code(playback_url(gw, begintime="2001-01-01T000000+00", endtime="2001-01-01T010000+00"))
    )
    assert code == 4404
    code, reason, _ = asyncio.run(close_code(playback_url(gw, begintime="soon", endtime=end)))
    assert code == 4400 and "begintime" in reason
    code, _, _ = asyncio.run(close_code(playback_url(gw, token="../f", begintime=begin, endtime=end)))
    assert code == 4404
    code, _, _ = asyncio.run(close_code(playback_url(gw, session="nope", begintime=begin, endtime=end)))
    assert code == 4401


def test_export_clip_and_archive(recorded: tuple[Gateway, list[dict[str, Any]]], tmp_path: Path) -> None:
    gw, files = recorded
    begin = files[0]["nStartTimeMs"] / 1000 + 1.0
    end = files[2]["nEndTimeMs"] / 1000 - 0.5
    job = gw.ok("ExportClip", token="f", start=iso_time(begin), end=iso_time(end))
    started = datetime.fromtimestamp(begin)
    archive = gw.ok(
        "Archive",
        token="f",
        start1=f"{started.year}-{started.month}-{started.day}",
        start2=f"{started.hour}-{started.minute}-{started.second}",
        duration=3,
        speed=4,
    )
    for answer, seconds in ((job, end - begin), (archive, 3.0)):
        status: dict[str, Any] = {}

        def done(answer: dict[str, Any] = answer) -> bool:
            nonlocal status
            status = gw.ok("GetArchiveStatus", token="f", filename=answer["strFileName"])
            return status["nPercentage"] == 100

        assert wait_until(done, 20, 0.3), status
        assert status["strUrl"] == answer["strUrl"]
        code, _, body = gw.request(f"{answer['strUrl']}?session={gw.session}")
        assert code == 200
        clip = tmp_path / f"{answer['strFileName']}.mp4"
        clip.write_bytes(body)
        assert decode_errors(clip) == ""
        length = float(
            subprocess.run(
                [
                    FFPROBE,
                    "-v",
                    "error",
                    "-select_streams",
                    "v:0",
                    "-show_entries",
                    "format=duration",
                    "-of",
                    "csv=p=0",
                    str(clip),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        # starts on the keyframe at or before the start (the demo has one every 2 s)
        assert seconds - 0.1 <= length <= seconds + 2.2, (length, seconds)
    status, body = gw.get("GetArchiveStatus", token="f", filename="nosuch")
    assert status == 404 and body["bStatus"] is False
