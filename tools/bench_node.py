#!/usr/bin/env python3
"""What one node holds: N cameras, each recorded and watched by V WebSocket viewers, measured together.

tools/bench measures one source's viewers and tools/bench_sources.py one more unwatched source; this puts
the pieces together as a node in production runs them: N RTSP sources (each its own camera connection to
the GStreamer test camera, as N cameras would be), continuous recording on for all, V viewers per source in
a separate process. For each N it reports the server's CPU (supervisor + all children), PSS, the viewers
that kept up (>= 95 % of the frames the camera sent in the window), hub skips, and the machine's load,
since the camera's encoder and the viewers share the same cores.

    .venv/bin/python tools/bench_node.py --sources 8,16,32 --viewers 2 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.machinery
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import websockets  # noqa: E402

from tools.harness.camera import GstCamera  # noqa: E402
from tools.harness.gateway import Gateway  # noqa: E402
from workers.fmp4 import boxes, parse_init  # noqa: E402

FPS = 25
KEEP_UP = 0.95
# tools/bench's raw RTP-over-TCP client counts the frames the camera really sent (a loaded camera drops some)
_bench = importlib.machinery.SourceFileLoader("h5gate_bench", str(ROOT / "tools" / "bench")).load_module()


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for proc in tree(pid):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def pss_mb(pid: int) -> float:
    total = 0
    for proc in tree(pid):
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            pass
    return total / 1024 / 1024


# -- the viewer process -------------------------------------------------------------------------------------
async def _view(url: str, start: float, end: float, counts: list[int], i: int) -> None:
    """Count video moof+mdat pairs that arrive between start and end (CLOCK_MONOTONIC is system-wide)."""
    try:
        async with websockets.connect(url, max_size=None, max_queue=None, compression=None, proxy=None) as ws:
            video = -1
            async for msg in ws:
                if isinstance(msg, str) or msg[4:8] not in (b"ftyp", b"moof"):
                    continue
                if msg[4:8] == b"ftyp":
                    init = parse_init(msg)
                    video = init.video.track_id if init.video else -1
                    continue
                now = time.monotonic()
                if now >= end:
                    return
                if now < start:
                    continue
                for kind, pos, _head, _ in boxes(msg):
                    if kind == b"moof":  # tfhd's track id: moof > mfhd (16) > traf (8) > tfhd (12 + id)
                        if int.from_bytes(msg[pos + 8 + 16 + 8 + 12 : pos + 8 + 16 + 8 + 16], "big") == video:
                            counts[i] += 1
    except (OSError, websockets.ConnectionClosed):
        return


async def _viewers(urls: list[str], start: float, end: float) -> list[int]:
    counts = [0] * len(urls)
    tasks = []
    for i, url in enumerate(urls):
        tasks.append(asyncio.create_task(_view(url, start, end, counts, i)))
        if i % 20 == 19:
            await asyncio.sleep(0.2)
    await asyncio.wait(tasks, timeout=end - time.monotonic() + 10)
    return counts


def viewer_main(args: argparse.Namespace) -> int:
    urls = json.loads(Path(args.urls).read_text())
    counts = asyncio.run(_viewers(urls, args.start, args.end))
    print(json.dumps(counts))
    return 0


# -- the run ------------------------------------------------------------------------------------------------
def skips_now(gw: Gateway) -> int | None:
    """h5swsapi/Status's skip count; None if no answer within 60 s (a saturated server: that is a finding)."""
    started = time.monotonic()
    try:
        status, _, body = gw.request(f"/api/v1/h5swsapi/Status?session={gw.session}", timeout=60)
    except TimeoutError:
        print("[bench_node] Status did not answer within 60 s", file=sys.stderr)
        return None
    waited = time.monotonic() - started
    if waited > 2:
        print(f"[bench_node] Status took {waited:.1f}s", file=sys.stderr)
    assert status == 200, body
    return int(json.loads(body)["nSkips"])


def run_step(
    gw: Gateway, n: int, viewers: int, seconds: float, settle: float, tmp: Path, clock: object
) -> dict[str, object]:
    assert gw.proc is not None
    pid = gw.proc.pid
    have = {s["strToken"] for s in gw.ok("GetSrc")["src"]}
    for i in range(n):
        if f"s{i}" not in have:
            raise RuntimeError(f"source s{i} missing")
    urls = [gw.ws_url(f"s{i}") for i in range(n) for _ in range(viewers)]
    url_file = tmp / f"urls{n}.json"
    url_file.write_text(json.dumps(urls))
    skips0 = skips_now(gw)  # before the viewers connect: a late answer must not eat the window
    start = time.monotonic() + settle
    end = start + seconds
    child = subprocess.Popen(
        [sys.executable, __file__, "--viewer", "--urls", str(url_file), "--start", str(start), "--end", str(end)],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(max(0.0, start - time.monotonic()))
    load0 = os.getloadavg()[0]
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    pss = [pss_mb(pid)]
    while time.monotonic() < end:
        pss.append(pss_mb(pid))
        time.sleep(1.0)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    skips1 = skips_now(gw)
    skips = skips1 - skips0 if skips0 is not None and skips1 is not None else None
    out, _ = child.communicate(timeout=seconds + 60)
    counts: list[int] = json.loads(out)
    sent = _bench.source_frames(clock, start, end, 0.0)
    expected = sent if sent is not None else seconds * FPS
    kept = sum(c >= KEEP_UP * expected for c in counts)
    counts.sort()
    return {
        "sources": n,
        "viewers": len(urls),
        "server_cores": round(cpu, 3),
        "pss_mb": round(sorted(pss)[len(pss) // 2], 1),
        "kept_up": kept,
        "frames_min_med": (counts[0], counts[len(counts) // 2]),
        "frames_camera_sent": int(expected),
        "skips": skips,
        "load_at_start": round(load0, 1),
        "load_at_end": round(os.getloadavg()[0], 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", default="8,16,32", help="comma-separated source counts, measured in this order")
    p.add_argument("--viewers", type=int, default=2, help="WS viewers per source")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--settle", type=float, default=6.0)
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--cameras", type=int, default=1, help="GStreamer cameras the sources are spread over")
    p.add_argument("--viewer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--urls", help=argparse.SUPPRESS)
    p.add_argument("--start", type=float, help=argparse.SUPPRESS)
    p.add_argument("--end", type=float, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.viewer:
        return viewer_main(a)
    steps = [int(x) for x in a.sources.split(",")]
    rows = []
    cams = [GstCamera(width=1280, height=720, fps=FPS, gop=50, bitrate=2000) for _ in range(a.cameras)]
    cam = cams[0]
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as t:
        for c in cams:
            stack.enter_context(c)
        tmp = Path(t)
        gw = Gateway(tmp / "gw", extra_args=["--no-demo"]).start()
        try:
            assert gw.proc is not None
            time.sleep(10)  # start-up work (the WebRTC sidecar, imports) is not the idle cost
            idle_cpu0 = cpu_seconds(gw.proc.pid)
            time.sleep(10)
            idle = (cpu_seconds(gw.proc.pid) - idle_cpu0) / 10
            idle_pss = pss_mb(gw.proc.pid)
            clock = _bench.RtpClock(cam.url("h264"), False)
            clock.start()
            added = 0
            for n in steps:
                for i in range(added, n):
                    url = cams[i % len(cams)].url("h264")  # one test camera serves ~32 sessions at most
                    gw.ok("AddSrcRTSP", token=f"s{i}", name=f"s{i}", url=url)
                    if not a.no_record:
                        gw.ok("SetRecord", token=f"s{i}", enable="true")
                for i in range(added, n):
                    gw.wait_online(f"s{i}", timeout=60)
                added = n
                print(f"[bench_node] {n} sources online; measuring {n * a.viewers} viewers ...", file=sys.stderr)
                rows.append(run_step(gw, n, a.viewers, a.seconds, a.settle, tmp, clock))
                print(json.dumps(rows[-1]), file=sys.stderr)
        finally:
            clock.stopping.set()
            gw.stop()
    print(
        json.dumps(
            {
                "cpu_count": os.cpu_count(),
                "record": not a.no_record,
                "cameras": a.cameras,
                "server_cores_idle": round(idle, 3),
                "server_pss_mb_idle": round(idle_pss, 1),
                "steps": rows,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
