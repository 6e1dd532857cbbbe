"""Issue #11 finding 4, with a real server recording the demo clip: an Operator cannot fill the disk.

Snapshots and exported clips are rate-limited per user and kept under quotas; a recording cannot be pushed
further than record_max_seconds ahead; an Administrator's ManualRecordStop ends any recording of a source,
PathRecord's included (ManualRecordStop&all=true), and it stays stopped after a restart.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.test_records import iso_time
from tools.harness.camera import wait_until
from tools.harness.gateway import ROOT, Gateway

RATE = 8  # snapshots (and exports) per user and minute
SNAPSHOT_QUOTA_MB = 0.05
ARCHIVE_QUOTA_MB = 0.01
MAX_SECONDS = 120


def passwd(data_dir: Path, user: str, password: str, role: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "supervisor.cli", "--data-dir", str(data_dir), "passwd", user, "--role", role]
    subprocess.run(args, input=password + "\n", text=True, cwd=ROOT, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data = tmp_path_factory.mktemp("storage") / "gw"
    env = {
        "H5GATE_WEBRTC": "false",
        "H5GATE_MEDIA_RATE_PER_MINUTE": str(RATE),
        "H5GATE_SNAPSHOT_QUOTA_MB": str(SNAPSHOT_QUOTA_MB),
        "H5GATE_ARCHIVE_QUOTA_MB": str(ARCHIVE_QUOTA_MB),
        "H5GATE_RECORD_MAX_SECONDS": str(MAX_SECONDS),
    }
    gateway = Gateway(data, env=env).start()  # with the demo source
    try:
        gateway.wait_online("demo", timeout=30)
        passwd(data, "oper", "oper-pw-1", "Operator")  # after the first start, which adds the demo source
        time.sleep(1)
        yield gateway
    finally:
        gateway.stop()


def operator(gw: Gateway) -> str:
    status, body = gw.get("Login", session=None, user="oper", password="oper-pw-1")
    assert status == 200, body
    return str(body["strSession"])


def files(root: Path, pattern: str) -> list[Path]:
    return [p for p in root.glob(pattern) if p.is_file()]


def stop_ats(gw: Gateway) -> list[tuple[str, float | None]]:
    conn = sqlite3.connect(gw.data_dir / "h5gate.db", timeout=10)
    try:
        return conn.execute("SELECT origin, stop_at FROM record_sessions WHERE token = 'demo'").fetchall()
    finally:
        conn.close()


def test_snapshots_are_rate_limited_and_kept_under_their_quota(gw: Gateway) -> None:
    session = operator(gw)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: gw.get("Snapshot", session=session, token="demo"), range(60)))
    done = [body for status, body in answers if status == 200]
    refused = [body for status, body in answers if status == 429]
    assert 1 <= len(done) <= RATE, [a for a in answers if a[0] not in (200, 429)]
    assert len(done) + len(refused) == 60
    assert all(b["bStatus"] is False and "a minute" in b["strCode"] for b in refused)
    shots = files(gw.data_dir / "mediastore" / "snapshot", "**/*.jpg")
    sizes = [p.stat().st_size for p in shots]
    assert shots and sum(sizes) <= SNAPSHOT_QUOTA_MB * 2**20 + max(sizes), (len(shots), sum(sizes))
    newest = done[-1]["strPath"]  # the picture a caller was just given is never the one deleted for room
    assert gw.request(f"{newest}?session={session}")[0] == 200 or len(done) > 1
    # another user has a share of his own
    assert gw.get("Snapshot", token="demo")[0] == 200


def test_a_recording_cannot_be_pushed_past_the_cap(gw: Gateway) -> None:
    args = {"token": "demo", "start1": "2020-1-2", "start2": "3-4-5", "filename": "capped"}
    first = gw.ok("PathRecord", duration=100, **args)
    assert first["strCode"] == "Record successfully"
    for _ in range(20):
        answer = gw.ok("PathRecord", duration=100, **args)
    assert "at most" in answer["strCode"]
    latest = max(stop for origin, stop in stop_ats(gw) if origin == "PathRecord" and stop is not None)
    assert latest - time.time() <= MAX_SECONDS + 1
    status, body = gw.get("PathRecord", duration=MAX_SECONDS + 1, alwayscreate="true", **args)
    assert status == 400 and "at most" in body["strCode"]
    status, body = gw.get("Record", token="demo", duration=MAX_SECONDS * 10)
    assert status == 400
    # a manual recording without a duration ends by itself at the cap (out of retention's reach while it runs)
    gw.ok("ManualRecordStart", token="demo")
    manual = [stop for origin, stop in stop_ats(gw) if origin == "ManualRecordStart"]
    assert manual and manual[0] is not None and manual[0] - time.time() <= MAX_SECONDS + 1


def test_an_administrator_stops_any_recording_for_good(gw: Gateway) -> None:
    args = {"token": "demo", "start1": "2020-1-2", "start2": "3-4-6", "filename": "stopme"}
    gw.ok("PathRecord", duration=100, **args)
    # a plain ManualRecordStop leaves PathRecord's recording alone (it ends at its own time) ...
    gw.ok("ManualRecordStop", session=operator(gw), token="demo")
    assert any(origin == "PathRecord" for origin, _ in stop_ats(gw))
    # ... and so does an Administrator's plain one; with all=true an Operator is refused ...
    gw.ok("ManualRecordStop", token="demo")
    assert any(origin == "PathRecord" for origin, _ in stop_ats(gw))
    status, body = gw.get("ManualRecordStop", session=operator(gw), token="demo", all="true")
    assert status == 403, body
    # ... and an Administrator ends it, and every other
    stopped = gw.ok("ManualRecordStop", token="demo", all="true")
    assert stopped["strCode"] == "Record stop successfully"
    assert stop_ats(gw) == []
    status = gw.ok("GetRecordStatus", token="demo")["src"][0]
    assert not [r for r in status["recording"] if r["strOrigin"] != "continuous"]
    gw.stop()
    gw.start()
    gw.wait_online("demo", timeout=30)
    time.sleep(1)
    status = gw.ok("GetRecordStatus", token="demo")["src"][0]
    assert status["bRecording"] is False and status["recording"] == []
    assert stop_ats(gw) == []


def test_exports_are_rate_limited_and_kept_under_their_quota(gw: Gateway) -> None:
    session = operator(gw)
    begin = time.time()
    gw.ok("Record", token="demo", duration=4)
    assert wait_until(lambda: time.time() > begin + 6, 10, 0.5)
    names = []
    for _ in range(3):
        job = gw.ok("ExportClip", session=session, token="demo", start=iso_time(begin), end=iso_time(begin + 3))
        names.append(job["strFileName"])

        def done(name: str = job["strFileName"]) -> bool:
            return bool(gw.ok("GetArchiveStatus", token="demo", filename=name)["nPercentage"] == 100)

        assert wait_until(done, 30, 0.3)
    clips = files(gw.data_dir / "mediastore" / "archive", "*/*.mp4")
    # each clip is over the (tiny) quota: only the newest, which its caller has yet to fetch, is kept
    assert [p.stem for p in clips] == [names[-1]]
    status, body = 0, {}
    for _ in range(RATE + 4):  # 3 are taken; at most 2 clips are written at once, also answered 429
        span = {"start": iso_time(begin), "end": iso_time(begin + 1)}
        status, body = gw.get("ExportClip", session=session, token="demo", **span)
        assert status in (200, 429), body
        if status == 429 and "a minute" in body["strCode"]:
            break
        time.sleep(0.2)
    assert status == 429 and "a minute" in body["strCode"], body
