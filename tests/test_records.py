"""Recording, snapshots and Search (manual §5.5) against the real server, real ffmpeg and a real camera.

What must hold: paths exactly as the manual gives them; recordings come from the hub (no second camera
connection); files are fragmented MP4 that survive a SIGKILL and are never listed longer than they are;
continuous files have no gap and no overlap; a full disk stops recording cleanly while live viewing goes
on and retention frees space; request values never escape the media store.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.wsclient import watch
from tools.harness.camera import FaultProxy, GstCamera, wait_until
from tools.harness.gateway import Gateway

FFPROBE = shutil.which("ffprobe") or "/usr/bin/ffprobe"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
KINDS = {"H5_REC_MANUAL", "H5_REC_SCHEDULE", "H5_REC_ALARM"}


def manual_time(ts: float) -> str:
    """The manual's compact form, 2018-03-07T120101+00."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H%M%S+00")


def iso_time(ts: float) -> str:
    """Date.toISOString()'s form."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def records(gw: Gateway, token: str, since: float, **extra: Any) -> list[dict[str, Any]]:
    return gw.ok(
        "Search", token=token, type="record", start=manual_time(since - 60), end=iso_time(time.time() + 60), **extra
    )["record"]


def store_path(gw: Gateway, str_path: str) -> Path:
    return gw.data_dir / "mediastore" / str_path.removeprefix("/mediastore/")


def video_seconds(path: Path) -> tuple[float, bool]:
    """(decoded video length, first frame is a keyframe) as ffprobe reads the whole file."""
    out = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=key_frame,pts_time,duration_time",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    rows = [r.rstrip(",").split(",") for r in out if r]
    last = rows[-1]
    return float(last[1]) + float(last[2] if len(last) > 2 and last[2] != "N/A" else 0.04), rows[0][0] == "1"


def decode_errors(path: Path) -> str:
    done = subprocess.run(
        [FFMPEG, "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stderr.strip() if done.returncode == 0 else f"rc={done.returncode} {done.stderr}"


def wait_closed(gw: Gateway, token: str, since: float, path: str, timeout: float = 20.0) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def closed() -> bool:
        nonlocal found
        found = next((r for r in records(gw, token, since) if r["strPath"] == path), {})
        return bool(found) and not found["bRecording"]

    assert wait_until(closed, timeout, 0.3), (path, found)
    return found


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def own_gateway(tmp_path: Path, **env: str) -> Gateway:
    return Gateway(
        tmp_path / "gw", extra_args=["--no-demo"], env={f"H5GATE_{k.upper()}": v for k, v in env.items()}
    ).start()


def test_record_calls_paths_search_and_download(gateway: Gateway) -> None:
    """Record, PathRecord (extend, alwayscreate), Manual*, Snapshot, PathSnapshot, Search, download."""
    gw, tag = gateway, uuid.uuid4().hex[:6]
    time.sleep(4)  # the demo hub holds some seconds to pre-record from (it may have only just started)
    t0 = time.time()
    first = gw.ok(
        "PathRecord", token="demo", start1="2018-03-29", start2="20-03-09", tz="8", duration=2, filename=f"p{tag}"
    )
    assert first["bStatus"] and first["strPath"] == f"/mediastore/record/demo/2018-3-29TZ8/20-3-9/p{tag}.mp4"
    again = gw.ok(
        "PathRecord", token="demo", start1="2018-03-29", start2="20-03-09", tz="8", duration=2, filename=f"p{tag}"
    )
    assert again["strCode"] == "Record extended" and again["strPath"] == first["strPath"]
    other = gw.ok(
        "PathRecord",
        token="demo",
        start1="2018-03-29",
        start2="20-03-09",
        tz="8",
        duration=1,
        filename=f"p{tag}",
        alwayscreate="true",
    )
    assert other["strPath"] == f"/mediastore/record/demo/2018-3-29TZ8/20-3-9/p{tag}_1.mp4"

    called = time.time()
    rec = gw.ok("Record", token="demo", duration=2, filename=f"r{tag}")
    assert re.match(
        rf"^/mediastore/record/demo/\d{{4}}-[1-9]\d?-[1-9]\d?TZ-?[\d.]+/"
        rf"(0|[1-9]\d?)-(0|[1-9]\d?)-(0|[1-9]\d?)/r{tag}\.mp4$",
        rec["strPath"],
    ), rec
    manual = gw.ok("ManualRecordStart", token="demo")
    shot = gw.ok("PathSnapshot", token="demo", start1="2018-3-29", start2="1-2-3", tz="-8", filename=f"s{tag}")
    assert shot["strPath"] == f"/mediastore/snapshot/demo/2018-3-29TZ-8/1-2-3/s{tag}.jpg"
    auto_shot = gw.ok("Snapshot", token="demo")
    time.sleep(1.5)
    stopped = gw.ok("ManualRecordStop", token="demo")
    assert manual["strPath"] in stopped["strPath"]

    found = wait_closed(gw, "demo", t0, first["strPath"])
    wait_closed(gw, "demo", t0, rec["strPath"])
    listed = {r["strPath"]: r for r in records(gw, "demo", t0)}
    for path in (first["strPath"], other["strPath"], rec["strPath"], manual["strPath"]):
        r = listed[path]
        assert ISO_RE.match(r["strStartTime"]) and ISO_RE.match(r["strEndTime"]), r
        assert r["strToken"] == "demo" and r["nType"] in KINDS and r["strDuration"].isdigit()
        seconds, keyframe_first = video_seconds(store_path(gw, path))
        assert keyframe_first
        assert (r["nEndTimeMs"] - r["nStartTimeMs"]) / 1000 <= seconds + 0.05, (r, seconds)
    assert t0 + 3.3 <= found["nEndTimeMs"] / 1000 <= t0 + 6, (t0, found)  # 2 s, extended by 2 s
    assert listed[rec["strPath"]]["nStartTimeMs"] / 1000 < called - 1.5  # pre-record reached back

    status, headers, body = gw.request(f"{rec['strPath']}?session={gw.session}")
    assert status == 200 and body[4:8] == b"ftyp" and lower(headers)["content-type"] == "video/mp4"
    status, headers, body = gw.request(
        rec["strPath"], headers={"Authorization": f"token {gw.session}", "Range": "bytes=100-199"}
    )
    assert status == 206 and len(body) == 100 and lower(headers)["content-range"].startswith("bytes 100-199/")
    assert gw.request(rec["strPath"])[0] == 401

    shots = gw.ok("Search", token="demo", type="snapshot", start=iso_time(t0 - 5), end=iso_time(time.time() + 5))
    paths = [s["strPath"] for s in shots["record"]]
    assert shot["strPath"] in paths and auto_shot["strPath"] in paths
    status, headers, body = gw.request(f"{shot['strPath']}?session={gw.session}")
    assert status == 200 and body[:2] == b"\xff\xd8" and lower(headers)["content-type"] == "image/jpeg"


BAD_CALLS = [
    ("PathRecord", {"filename": "../x"}),
    ("PathRecord", {"filename": "a/b"}),
    ("PathRecord", {"filename": ".hidden"}),
    ("PathRecord", {"filename": ""}),
    ("PathRecord", {"start1": "../../etc"}),
    ("PathRecord", {"start1": "2018-13-40"}),
    ("PathRecord", {"start2": "25-0-0"}),
    ("PathRecord", {"start2": "1-2"}),
    ("PathRecord", {"tz": "8/.."}),
    ("PathRecord", {"tz": "99"}),
    ("PathRecord", {"token": "../demo"}),
    ("PathRecord", {"token": "nosuch"}),
    ("PathRecord", {"duration": "-1"}),
    ("PathRecord", {"duration": "abc"}),
    ("PathRecord", {"duration": "1e9"}),
    ("Record", {"token": ".."}),
    ("Record", {"filename": "../../h5gate"}),
    ("Record", {"duration": ""}),
    ("PathSnapshot", {"filename": "/etc/passwd"}),
    ("PathSnapshot", {"start1": "..%2f.."}),
    ("Snapshot", {"filename": "..\\..\\x"}),
    ("Search", {"type": "video"}),
    ("Search", {"start": "yesterday"}),
    ("Search", {"start": "2018-03-07T120101+08", "end": "2018-03-06T120101+08"}),
    ("Search", {"token": "a/../b"}),
    ("SetRecord", {"enable": "maybe"}),
    ("SetRecordConf", {"recordinday": "0"}),
    ("SetRecordSchedule", {"schedule": "someday 25:00-26:00"}),
    ("Archive", {"start1": "2018-3-29"}),
    ("ExportClip", {"start": "2018-03-07T120101+08", "end": "2018-03-07T110101+08"}),
    ("GetArchiveStatus", {"filename": "../../h5gate.db"}),
]


@pytest.mark.parametrize(("call", "change"), BAD_CALLS, ids=[f"{c}-{'-'.join(p)}" for c, p in BAD_CALLS])
def test_bad_values_are_refused(gateway: Gateway, call: str, change: dict[str, str]) -> None:
    params = {
        "token": "demo",
        "start1": "2018-3-29",
        "start2": "1-2-3",
        "tz": "8",
        "duration": "2",
        "filename": "ok",
        **change,
    }
    status, body = gateway.get(call, **params)
    assert 400 <= status < 500 and body["bStatus"] is False and body["strCode"], (status, body)
    assert not list(gateway.data_dir.glob("**/x.mp4")) and not (gateway.data_dir / "h5gate.mp4").exists()


@pytest.mark.parametrize(
    "path",
    [
        "/mediastore/record/../../h5gate.db",
        "/mediastore/%2e%2e/h5gate.db",
        "/mediastore/record/%2e%2e/%2e%2e/h5gate.db",
        "/mediastore/hls/x.mp4",
        "/mediastore/record/demo/nothing.mp4",
        "/mediastore/record/demo",
    ],
)
def test_media_store_paths_stay_inside(gateway: Gateway, path: str) -> None:
    status, _, body = gateway.request(f"{path}?session={gateway.session}")
    assert status in (400, 404) and b"SQLite" not in body


def test_no_session_no_recording(gateway: Gateway) -> None:
    for call in ("Record", "Search", "ManualRecordStart", "Snapshot", "GetStorageInfo"):
        status, body = gateway.get(call, session=None, token="demo", duration=1)
        assert status == 401 and body["bStatus"] is False


def test_weekly_schedule_drives_continuous_recording(gateway: Gateway) -> None:
    def origins() -> list[str]:
        return [r["strOrigin"] for r in gateway.ok("GetRecordStatus", token="demo")["src"][0]["recording"]]

    assert gateway.ok("SetRecordSchedule", token="demo", schedule="mon-sun 00:00-24:00")["bStatus"]
    try:
        assert wait_until(lambda: "continuous" in origins(), 5, 0.2)
        assert gateway.ok("GetRecordStatus", token="demo")["src"][0]["strSchedule"] == "mon-sun 00:00-24:00"
        assert gateway.source("demo")["bRec"] is False  # the schedule, not bRec, turned it on
    finally:
        gateway.ok("SetRecordSchedule", token="demo", schedule="")
    assert wait_until(lambda: "continuous" not in origins(), 5, 0.2)


def test_continuous_from_the_hub_without_gap_or_overlap(camera: GstCamera, tmp_path: Path) -> None:
    """One camera connection for live + recording; 2 s files cut at keyframes, end to end."""
    with FaultProxy.for_camera(camera) as proxy:
        gw = own_gateway(tmp_path, record_file_seconds="2")
        try:
            gw.ok("AddSrcRTSP", token="cam", name="cam", url=proxy.url("h264"))
            gw.wait_online("cam", timeout=20)
            time.sleep(1.0)
            accepted = proxy.status()["accepted"]
            t0 = time.time()
            gw.ok("SetRecord", token="cam", enable="true")
            gw.ok("Record", token="cam", duration=2)
            assert wait_until(
                lambda: (
                    sum(not r["bRecording"] and r["nType"] == "H5_REC_SCHEDULE" for r in records(gw, "cam", t0)) >= 4
                ),
                25,
                0.5,
            )
            gw.ok("SetRecord", token="cam", enable="false")
            assert proxy.status()["accepted"] == accepted, (accepted, proxy.status())
            assert gw.ok("GetRecordStatus", token="cam")["src"][0]["bRec"] is False
            files = [r for r in records(gw, "cam", t0) if r["nType"] == "H5_REC_SCHEDULE"]
        finally:
            gw.stop()
    assert len(files) >= 4
    for a, b in zip(files, files[1:], strict=False):
        assert a["nEndTimeMs"] == b["nStartTimeMs"], (a, b)
    for r in files:
        seconds, keyframe_first = video_seconds(store_path(gw, r["strPath"]))
        listed = (r["nEndTimeMs"] - r["nStartTimeMs"]) / 1000
        assert keyframe_first and listed <= seconds + 0.05 and abs(seconds - listed) < 0.15, (r, seconds)
        if r is not files[-1]:
            assert 1.9 <= listed <= 3.1, r


def test_sigkill_mid_recording(tmp_path: Path) -> None:
    """The file plays to its last fragment, is indexed at its real length, and the recording goes on in a
    new file until its stored stop job ends it at the time first asked for."""
    gw = own_gateway(tmp_path)
    try:
        gw.ok("AddSrcFile", token="f", name="f", url="demo.mp4")
        gw.wait_online("f")
        t0 = time.time()
        # Long enough that the stop time is still ahead after the kill, the decode checks and the restart,
        # even on a loaded machine: the recording must resume and then end at the time first asked for.
        started = gw.ok("Record", token="f", duration=40, filename="crash")
        stop_at = time.time() + 40
        path = store_path(gw, started["strPath"])

        def growing() -> bool:
            live = [r for r in records(gw, "f", t0) if r["strPath"] == started["strPath"]]
            return bool(live) and live[0]["bRecording"] and live[0]["nEndTimeMs"] - live[0]["nStartTimeMs"] > 3000

        assert wait_until(growing, 20, 0.3)
        live = next(r for r in records(gw, "f", t0) if r["strPath"] == started["strPath"])
        assert (live["nEndTimeMs"] - live["nStartTimeMs"]) / 1000 <= video_seconds(path)[0] + 0.05
        gw.stop(signal.SIGKILL)
        assert decode_errors(path) == ""
        seconds, _ = video_seconds(path)
        gw.start()
        after = {r["strPath"]: r for r in records(gw, "f", t0)}
        r = after[started["strPath"]]
        listed = (r["nEndTimeMs"] - r["nStartTimeMs"]) / 1000
        assert not r["bRecording"] and seconds - 0.5 <= listed <= seconds + 0.05, (r, seconds)
        resumed = started["strPath"].replace("crash.mp4", "crash_1.mp4")
        assert wait_until(lambda: resumed in {x["strPath"] for x in records(gw, "f", t0)}, 20, 0.3)
        last = wait_closed(gw, "f", t0, resumed, timeout=60)
        assert stop_at - 1 <= last["nEndTimeMs"] / 1000 <= stop_at + 1.5, (stop_at, last)
        assert "closed after a crash" in gw.log() and "Record recording resumed after a restart" in gw.log()
    finally:
        gw.stop()


@pytest.fixture
def small_store(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs as the media store (the tests run as root, as .ci/run does)."""
    store = tmp_path / "gw" / "mediastore"
    store.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(store)], capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the disk-full tests need root): {done.stderr.decode().strip()}")
    try:
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def test_full_disk_stops_recording_live_goes_on_retention_frees(small_store: Path, tmp_path: Path) -> None:
    gw = own_gateway(tmp_path, record_file_seconds="2", pre_record_seconds="0")
    try:
        gw.ok("AddSrcFile", token="f", name="f", url="demo.mp4")
        gw.wait_online("f")
        t0 = time.time()
        gw.ok("SetRecord", token="f", enable="true")
        assert wait_until(lambda: sum(not r["bRecording"] for r in records(gw, "f", t0)) >= 6, 30, 0.5)
        closed = [r for r in records(gw, "f", t0) if not r["bRecording"]]
        quota = sum(r["nSize"] for r in closed[2:]) + 1  # the two oldest files do not fit
        gw.ok("SetRecordQuota", token="f", quota=str(quota / 2**20))
        assert wait_until(lambda: "f over its" in gw.log(), 10, 0.2)
        before = records(gw, "f", t0)
        assert before[0]["strPath"] == closed[2]["strPath"] and not store_path(gw, closed[0]["strPath"]).exists()
        gw.ok("SetRecordQuota", token="f", quota="0")
        filler = small_store / "filler.bin"
        free = shutil.disk_usage(small_store).free
        with open(filler, "wb") as fh:
            fh.write(b"\0" * (free - 64 * 1024))

        def state() -> str:
            return gw.ok("GetRecordStatus", token="f")["src"][0]["strStatus"]

        assert wait_until(lambda: state() == "disk full", 15, 0.3), state()
        assert "f: recording stopped, disk full" in gw.log()
        got = asyncio.run(watch(gw.ws_url("f"), frames=25, seconds=15))
        assert len(got.video()) >= 25, "live viewing stopped with the disk full"
        # The failed write ran retention at once: the disk is over nDiskAutoDelPercent (92 %), so the
        # oldest recordings go, and the recorder resumes once there is room again.
        assert wait_until(lambda: "deleted (disk over 92%)" in gw.log(), 15, 0.3)
        assert wait_until(lambda: state() == "recording", 15, 0.3), state()
        after = records(gw, "f", t0)
        assert after[0]["nStartTimeMs"] > before[0]["nStartTimeMs"]  # the oldest went
        assert after[-1]["nStartTimeMs"] > before[-1]["nStartTimeMs"]  # recording goes on
        assert not store_path(gw, before[0]["strPath"]).exists()
        info = gw.ok("GetStorageInfo")
        assert info["nDiskAutoDelPercent"] == 92 and info["src"][0]["nRecordByte"] > 0
        assert gw.ok("GetRunInfo")["nRunTimeSec"] >= 0 and "Traceback" not in gw.log()
    finally:
        gw.stop()
