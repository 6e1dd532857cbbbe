#!/usr/bin/env python3
"""A VMS-like pull of RTSP re-served streams: N sources, one ffmpeg client each, for a minute.

What a VMS or NVR does with h5gate's RTSP re-serve (issue #12): pull every camera at once and keep
pulling. The tool starts the GStreamer test camera, an h5gate with `rtsp_port` set and N sources on the
camera's /h264 mount (one camera connection each: N streams, as N cameras would be), then runs N
`ffmpeg -c copy -f framemd5` clients, one per source, for `--seconds`, and reports per client: frames
received against the nominal rate over `--seconds` of stream time, its continuity (frames got / frames
a 25 fps stream holds between its first and last timestamp: 1.0 is no gap), and whether it kept live
pace (the pull's wall time); and the server's CPU over the pull (the server process alone, and its
children: the sources' ffmpeg or transcoders).

    .venv/bin/python tools/bench_rtsp_serve.py                       # 16 streams, 60 s, TCP
    .venv/bin/python tools/bench_rtsp_serve.py --transport udp --json /tmp/rtsp.json
    .venv/bin/python tools/bench_rtsp_serve.py --sources 4 --seconds 10   # a quick check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.harness.camera import GstCamera, free_port  # noqa: E402
from tools.harness.gateway import Gateway  # noqa: E402


def pull(url: str, transport: str, seconds: float) -> dict[str, Any]:
    """One client: the MD5 of every video frame it got, and how long the pull took."""
    t0 = time.monotonic()
    cmd = [
        "ffmpeg", "-hide_banner", "-nostats", "-rtsp_transport", transport, "-timeout", "10000000",
        "-i", url, "-map", "0:v", "-c", "copy", "-t", str(seconds), "-f", "framemd5", "-",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    pts: list[float] = []
    scale = 90000.0
    for line in r.stdout.splitlines():
        if line.startswith("#tb 0:"):
            num, _, den = line.split(":", 1)[1].strip().partition("/")
            scale = float(den) / float(num)
        elif line and line[0] != "#":
            pts.append(int(line.split(",")[2]) / scale)
    return {"pts": pts, "took": time.monotonic() - t0, "code": r.returncode, "stderr": r.stderr[-500:]}


def continuity(pts: list[float], fps: int) -> float:
    """Frames got / frames a stream at `fps` holds between the first and the last one (1.0: no gap)."""
    if len(pts) < 2:
        return 0.0
    span = round((max(pts) - min(pts)) * fps) + 1
    return min(1.0, len(set(pts)) / span)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-rtsp-") as tmp,
        GstCamera(width=args.width, height=args.height, fps=args.fps, gop=args.gop, bitrate=args.bitrate) as cam,
    ):
        gw = Gateway(Path(tmp) / "gw", extra_args=["--no-demo"], rtsp_port=free_port()).start()
        try:
            tokens = [f"cam{i:02d}" for i in range(args.sources)]
            for token in tokens:
                gw.ok("AddSrcRTSP", name=token, token=token, url=cam.url("h264"), user="", password="", audio="true")
            for token in tokens:
                gw.wait_online(token, timeout=60)
            time.sleep(args.warmup)
            assert gw.proc is not None
            server = psutil.Process(gw.proc.pid)
            children = server.children(recursive=True)
            before = server.cpu_times()
            child_before = sum(sum(c.cpu_times()[:2]) for c in children if c.is_running())
            load_before = psutil.getloadavg()[0]
            t0 = time.monotonic()
            urls = [f"rtsp://admin:12345@127.0.0.1:{gw.rtsp_port}/live/{t}" for t in tokens]
            with ThreadPoolExecutor(len(urls)) as pool:
                results = list(pool.map(lambda u: pull(u, args.transport, args.seconds), urls))
            wall = time.monotonic() - t0
            after = server.cpu_times()
            child_after = sum(sum(c.cpu_times()[:2]) for c in children if c.is_running())
            server_cores = (after.user + after.system - before.user - before.system) / wall
            children_cores = (child_after - child_before) / wall
        finally:
            gw.stop()
    clients = []
    for token, r in zip(tokens, results, strict=True):
        nominal = args.seconds * args.fps
        clients.append(
            {
                "token": token,
                "frames": len(r["pts"]),
                "of_nominal": round(len(r["pts"]) / nominal, 3),
                "continuity": round(continuity(r["pts"], args.fps), 3),
                "took_s": round(r["took"], 1),
                "exit": r["code"],
            }
        )
    ok = [c for c in clients if c["of_nominal"] >= 0.95 and c["continuity"] >= 0.95 and c["exit"] == 0]
    return {
        "sources": args.sources,
        "seconds": args.seconds,
        "transport": args.transport,
        "camera": f"{args.width}x{args.height} {args.fps} fps, GOP {args.gop}, {args.bitrate} kbit/s + AAC",
        "load_average_at_start": round(load_before, 1),
        "wall_s": round(wall, 1),
        "server_cpu_cores": round(server_cores, 3),
        "children_cpu_cores": round(children_cores, 3),
        "clients_at_95_percent": f"{len(ok)}/{len(clients)}",
        "min_of_nominal": min(c["of_nominal"] for c in clients),
        "min_continuity": min(c["continuity"] for c in clients),
        "clients": clients,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--transport", choices=("tcp", "udp"), default="tcp")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--gop", type=int, default=50)
    p.add_argument("--bitrate", type=int, default=1000)
    p.add_argument("--warmup", type=float, default=5.0, help="seconds between all sources online and the pull")
    p.add_argument("--json", help="write the report here too")
    args = p.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
