"""Benchmark recording: what continuous recording costs per source while viewers watch, and Search time.

    .venv/bin/python tools/bench_record.py --sources 8 --viewers 20 --seconds 20

Starts a real gateway with N looping file sources (the demo clip, copied, no transcoding) and V WebSocket
viewers spread over them. It measures the server process (psutil: CPU, bytes written) for a while with
recording off, then with continuous recording on for every source; the difference divided by N is the
cost of recording one source. As that difference is small against the noise of a shared machine, it
also replays one recorded file through a hub in-process, with and without a Recorder on it, and reports
the recorder's CPU per fragment, which does not depend on what else the machine does. Then it fills the
index with rows for 30 days x 16 sources of 5-minute
files (as retention would keep them) and times Search over HTTP: one source and one day (288 files, the
console's query), one hour, and 30 days.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import psutil
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.harness.gateway import Gateway  # noqa: E402
from workers.hub import StreamHub  # noqa: E402
from workers.playback import read_entries  # noqa: E402
from workers.recorder import RecFile, Recorder, index_file  # noqa: E402

FILE_SECONDS = 300


async def viewer(url: str, stop: asyncio.Event, counts: list[int]) -> None:
    """A WS viewer that reads and drops what it gets (the browser's part costs the server nothing)."""
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.recv(), 1.0)
            except TimeoutError:
                continue
            counts[0] += len(msg)


def usage(proc: psutil.Process) -> tuple[float, int, int]:
    """(CPU seconds, bytes handed to write(), bytes sent to storage) of the server process."""
    t, io = proc.cpu_times(), proc.io_counters()
    return t.user + t.system, io.write_chars, io.write_bytes


async def measure(proc: psutil.Process, seconds: float) -> dict[str, float]:
    cpu0, chars0, bytes0 = usage(proc)
    wall0 = time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, chars1, bytes1 = usage(proc)
    wall = time.monotonic() - wall0
    return {"cpu": 100 * (cpu1 - cpu0) / wall, "write": (chars1 - chars0) / wall, "disk": (bytes1 - bytes0) / wall}


class _Stream:
    def __init__(self, hub: StreamHub) -> None:
        self.hub = hub

    def acquire(self) -> StreamHub:
        return self.hub

    def release(self) -> None:
        pass


class _Sink:
    def __init__(self) -> None:
        self.written = 0

    async def file_opened(self, recorder: Recorder, f: RecFile) -> None:
        pass

    async def file_closed(self, recorder: Recorder, f: RecFile) -> None:
        self.written += f.size

    async def write_failed(self, recorder: Recorder, error: OSError) -> None:
        raise error


async def recorder_cpu(clip: Path, out: Path) -> tuple[float, int, float]:
    """(CPU microseconds per fragment, fragments, media seconds) of a Recorder alone, writer thread included:
    the file's fragments go through a hub as fast as it takes them, once without and once with a recorder."""
    index = index_file(clip)
    blobs = read_entries(clip, index.entries)
    sink = _Sink()

    async def replay(record: bool) -> float:
        hub = StreamHub("bench", ring_seconds=1e9, max_bytes=1 << 31)
        hub.set_init(index.init.data)
        recorder = Recorder(
            "bench",
            "H5_REC_SCHEDULE",
            _Stream(hub),
            out,
            lambda start: f"record/b/{start}",
            sink,
            file_seconds=FILE_SECONDS,
        )
        cpu = time.process_time()
        if record:
            recorder.start()
        for blob in blobs:
            hub.publish(blob)
            await asyncio.sleep(0)  # the recorder takes each fragment as a live one
        if record:
            await asyncio.sleep(0.2)  # idle time, not counted: the recorder takes the last fragments
            await recorder.stop()
        return time.process_time() - cpu

    base = min([await replay(False) for _ in range(3)])
    with_recorder = min([await replay(True) for _ in range(3)])
    assert sink.written > 0.9 * 3 * index.valid_end, "the recorder did not write the whole clip"
    return (with_recorder - base) / len(blobs) * 1e6, len(blobs), index.duration


def fill_index(db: Path, sources: int, days: int) -> int:
    """Rows as 30 days of continuous recording of `sources` sources in 5-minute files would leave."""
    now = time.time()
    first = now - days * 86400 + 3600  # inside the retention period
    rows = []
    for s in range(sources):
        token = f"bench{s:02d}"
        for n in range(int((now - first) // FILE_SECONDS)):
            start = first + n * FILE_SECONDS
            t = datetime.fromtimestamp(start, UTC)
            path = f"record/{token}/{t.year}-{t.month}-{t.day}TZ0/{t.hour}-{t.minute}-{t.second}/{int(start)}.mp4"
            rows.append((token, "H5_REC_SCHEDULE", path, start, start + FILE_SECONDS, 37_500_000))
    with sqlite3.connect(db, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO recordings (token, kind, path, start_ts, end_ts, size, open) VALUES (?, ?, ?, ?, ?, ?, 0)",
            rows,
        )
    return len(rows)


def time_search(gw: Gateway, token: str, start: float, end: float, runs: int) -> tuple[float, float, int]:
    """(median ms, p95 ms, files) of Search over HTTP."""
    query = urllib.parse.urlencode(
        {
            "token": token,
            "type": "record",
            "session": gw.session,
            "start": datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H%M%S+00"),
            "end": datetime.fromtimestamp(end, UTC).isoformat(),
        }
    )
    times, count = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        status, _, body = gw.request(f"/api/v1/Search?{query}")
        times.append((time.perf_counter() - t0) * 1000)
        assert status == 200, body[:200]
        count = body.count(b'"strPath"')
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], count


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="bench_record_"))
    gw = Gateway(data, extra_args=["--no-demo"]).start()
    try:
        tokens = [f"rec{i}" for i in range(args.sources)]
        for token in tokens:
            gw.ok("AddSrcFile", token=token, name=token, url="demo.mp4")
        for token in tokens:
            gw.wait_online(token, timeout=30)
        assert gw.proc is not None
        proc = psutil.Process(gw.proc.pid)
        stop, received = asyncio.Event(), [0]
        viewers = [
            asyncio.create_task(viewer(gw.ws_url(tokens[i % len(tokens)]), stop, received)) for i in range(args.viewers)
        ]
        await asyncio.sleep(3)
        print(
            f"{args.sources} file sources (demo clip, about 0.7 Mbit/s each), {args.viewers} WS viewers; "
            f"{args.rounds} rounds of {args.seconds:.0f} s without and {args.seconds:.0f} s with recording",
            flush=True,
        )
        idle, rec = [], []
        for _ in range(args.rounds):  # alternate, so load from elsewhere on the machine hits both alike
            idle.append(await measure(proc, args.seconds))
            for token in tokens:
                gw.ok("SetRecord", token=token, enable="true")
            await asyncio.sleep(2)
            rec.append(await measure(proc, args.seconds))
            for token in tokens:
                gw.ok("SetRecord", token=token, enable="false")
            await asyncio.sleep(2)
        stop.set()
        await asyncio.gather(*viewers, return_exceptions=True)
        files = gw.ok("GetStorageInfo")["src"]
        n = args.sources
        print(f"\n{'server process':<34}{'viewers only':>14}{'+ recording':>14}{'per recorded source':>22}")
        for key, label, scale in (
            ("cpu", "CPU (% of one core)", 1),
            ("write", "write() incl. sockets (KB/s)", 1024),
            ("disk", "written to storage (KB/s)", 1024),
        ):
            a, b = (statistics.mean(m[key] for m in runs) / scale for runs in (idle, rec))
            spread = statistics.pstdev([m[key] / scale for m in rec]) / n
            print(f"{label:<34}{a:>14.1f}{b:>14.1f}{(b - a) / n:>15.2f} +/- {spread:.2f}")
        print(
            f"recorded: {sum(s['nRecordByte'] for s in files) / 2**20:.1f} MB in "
            f"{sum(s['nRecordFiles'] for s in files)} files; viewers received {received[0] / 2**20:.0f} MB"
        )
        clip = max((data / "mediastore" / "record").rglob("*.mp4"), key=lambda p: p.stat().st_size)
        micros, count, media = await recorder_cpu(clip, data / "replay")
        rate = count / media
        print(
            f"recorder alone (in-process replay of {count} fragments, {media:.0f} s): {micros:.0f} us CPU per "
            f"fragment; at this clip's {rate:.0f} fragments/s that is {micros * rate / 1e4:.2f} % of one core "
            "per source"
        )

        rows = fill_index(data / "h5gate.db", args.index_sources, args.index_days)
        now = time.time()
        day = now - 86400 * (args.index_days // 2)
        day -= day % 86400
        print(
            f"\nSearch over an index of {rows} files ({args.index_days} days x {args.index_sources} sources, "
            f"{FILE_SECONDS // 60}-minute files), {args.runs} calls each, over HTTP:"
        )
        for label, start, end in (
            ("one source, one day", day, day + 86400),
            ("one source, one hour", day + 43200, day + 46800),
            ("one source, 30 days", now - 86400 * args.index_days, now),
        ):
            median, p95, count = time_search(gw, "bench07", start, end, args.runs)
            print(f"  {label:<24}{count:>6} files   median {median:6.1f} ms   p95 {p95:6.1f} ms")
    finally:
        gw.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--index-days", type=int, default=30)
    parser.add_argument("--index-sources", type=int, default=16)
    parser.add_argument("--runs", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
