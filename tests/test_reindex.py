"""The recordings index is rebuilt from the files when the database is lost, and on demand (ReindexRecords).

Real server, real ffmpeg: record, lose h5gate.db, start again, and Search must answer as before.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from supervisor.recordings.reindex import Unparsable, parse_path
from tests.test_records import iso_time, own_gateway, records, store_path, wait_closed
from tools.harness.camera import wait_until
from tools.harness.gateway import Gateway

JUNK = b"this is not an MP4 file" * 10


def snapshots(gw: Gateway, token: str, since: float) -> list[dict[str, Any]]:
    return gw.ok("Search", token=token, type="snapshot", start=iso_time(since - 60), end=iso_time(time.time() + 60))[
        "record"
    ]


def test_paths_tell_token_time_and_type() -> None:
    at = datetime.fromisoformat("2018-03-29T20:03:09+08:00").timestamp()
    p = parse_path("record/cam-1/2018-3-29TZ8/20-3-9/p.mp4")
    assert (p.token, p.base, p.stem, p.suffix, p.server_named) == ("cam-1", at, "p", 0, False)
    assert parse_path("record/c/2018-3-29TZ5.5/20-3-9/p_2.mp4").base == at + 2.5 * 3600
    assert parse_path("record/c/2018-3-29TZ-3.5/20-3-9/p_2.mp4").suffix == 2
    continuous = parse_path(f"record/c/2018-3-29TZ8/20-3-9/{int(at)}.mp4")
    assert continuous.server_named and continuous.base == at
    assert not parse_path(f"record/c/2018-3-29TZ8/20-3-9/{int(at)}_1.mp4").server_named
    assert not parse_path(f"record/c/2018-3-29TZ8/20-3-9/{int(at) + 3600}.mp4").server_named  # not its folder
    assert parse_path(f"snapshot/c/2018-3-29TZ8/20-3-9/{int(at) * 1000 + 646}.jpg").base == at + 0.646
    for bad in (
        "record/c/x.mp4",
        "record/c/2018-13-40TZ8/1-2-3/a.mp4",
        "record/c/2018-3-29TZ99/1-2-3/a.mp4",
        "record/c/2018-3-29/1-2-3/a.mp4",
        "record/c/2018-3-29TZ8/1-2/a.mp4",
        "archive/c/a/b/c.mp4",
        "record/../2018-3-29TZ8/1-2-3/a.mp4",
        "record/c/2018-3-29TZ8/1-2-3/.a.mp4",
    ):
        with pytest.raises(Unparsable):
            parse_path(bad)


def test_index_rebuilt_from_the_files(tmp_path: Path) -> None:
    gw = own_gateway(tmp_path, record_file_seconds="2")
    try:
        gw.ok("AddSrcFile", token="f", name="f", url="demo.mp4")
        gw.wait_online("f")
        t0 = time.time()
        clip = gw.ok("Record", token="f", duration=2, filename="clip")  # H5_REC_MANUAL
        gw.ok("SetRecord", token="f", enable="true")  # continuous, 2 s files: H5_REC_SCHEDULE
        shot = gw.ok("Snapshot", token="f")
        wait_closed(gw, "f", t0, clip["strPath"])
        assert wait_until(
            lambda: sum(not r["bRecording"] and r["nType"] == "H5_REC_SCHEDULE" for r in records(gw, "f", t0)) >= 2,
            20,
            0.3,
        )
        gw.ok("SetRecord", token="f", enable="false")
        assert wait_until(lambda: not any(r["bRecording"] for r in records(gw, "f", t0)), 10, 0.3)
        before = {r["strPath"]: r for r in records(gw, "f", t0)}
        shots_before = snapshots(gw, "f", t0)
        assert len(before) >= 3 and [s["strPath"] for s in shots_before] == [shot["strPath"]]
        gw.stop()

        clip_file = store_path(gw, clip["strPath"])
        junk = [clip_file.parent / "x.mp4", store_path(gw, "/mediastore/record/f/x.mp4")]
        for path in junk:
            path.write_bytes(JUNK)
        for name in ("h5gate.db", "h5gate.db-wal", "h5gate.db-shm"):
            (gw.data_dir / name).unlink(missing_ok=True)
        logged = len(gw.log())
        gw.start()

        assert wait_until(lambda: "index rebuilt from the media store" in gw.log()[logged:], 15, 0.2), gw.log()
        after = {r["strPath"]: r for r in records(gw, "f", t0)}
        assert set(after) == set(before), (sorted(after), sorted(before))
        for path, was in before.items():
            now = after[path]
            assert (now["strToken"], now["nType"], now["bRecording"]) == (was["strToken"], was["nType"], False)
            assert abs(now["nStartTimeMs"] - was["nStartTimeMs"]) <= 500, (now, was)
            assert abs((now["nEndTimeMs"] - now["nStartTimeMs"]) - (was["nEndTimeMs"] - was["nStartTimeMs"])) <= 500, (
                now,
                was,
            )
            assert now["nSize"] == was["nSize"], (now, was)
        shots_after = snapshots(gw, "f", t0)
        assert [s["strPath"] for s in shots_after] == [shot["strPath"]]
        assert abs(shots_after[0]["nStartTimeMs"] - shots_before[0]["nStartTimeMs"]) <= 500
        text = gw.log()[logged:]
        for path in junk:  # logged once each, kept on disk, not indexed
            rel = path.relative_to(gw.data_dir / "mediastore").as_posix()
            assert text.count(f"reindex: {rel} skipped") == 1, text
            assert path.read_bytes() == JUNK

        files = len(before) + 1
        first = gw.ok("ReindexRecords")
        assert first["bStatus"] and (first["nFiles"], first["nAdded"], first["nRemoved"]) == (files, 0, 0), first
        assert first["nSkipped"] == 2
        copy = clip_file.with_name("copy.mp4")
        shutil.copy2(clip_file, copy)  # a file put there by hand, mtime kept
        added = gw.ok("ReindexRecords")
        assert (added["nFiles"], added["nAdded"]) == (files + 1, 1), added
        again = gw.ok("ReindexRecords")
        assert (again["nFiles"], again["nAdded"], again["nRemoved"]) == (files + 1, 0, 0), again
        listed = records(gw, "f", t0)
        assert len(listed) == len(before) + 1 and len({r["strPath"] for r in listed}) == len(listed)
        copied = next(r for r in listed if r["strPath"].endswith("/copy.mp4"))
        assert abs(copied["nEndTimeMs"] - after[clip["strPath"]]["nEndTimeMs"]) <= 500, copied
        copy.unlink()
        gone = gw.ok("ReindexRecords")
        assert (gone["nFiles"], gone["nAdded"], gone["nRemoved"]) == (files, 0, 1), gone
        assert len(records(gw, "f", t0)) == len(before) and len(snapshots(gw, "f", t0)) == 1
        assert gw.get("ReindexRecords", session=None)[0] == 401
        assert all(p.exists() for p in junk) and "Traceback" not in gw.log()
    finally:
        gw.stop()
