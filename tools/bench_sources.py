#!/usr/bin/env python3
"""What one more RTSP source costs the whole server: PSS and CPU, with our RTSP client or with ffmpeg.

Starts the GStreamer test camera and an h5gate of its own (temp data dir, --no-demo) with
H5GATE_RTSP_CLIENT=<client>, measures the server and all its children with no source, then with N sources
of the same camera mount (each its own camera connection, as N cameras would be), nobody watching.
PSS (proportional set size) counts shared pages once across processes, so N ffmpeg processes are not
charged N times for one libavcodec.

    .venv/bin/python tools/bench_sources.py --client own --sources 4 [--mount h264]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tools.harness.camera import GstCamera  # noqa: E402
from tools.harness.gateway import Gateway  # noqa: E402


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def pss_mb(pid: int) -> float:
    total = 0
    for proc in tree(pid):
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:
            pass
    return total / 1024 / 1024


def cpu_cores(pid: int, seconds: float) -> float:
    def used() -> float:
        total = 0.0
        for proc in tree(pid):
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    start, t0 = used(), time.monotonic()
    time.sleep(seconds)
    return (used() - start) / (time.monotonic() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--client", choices=("own", "ffmpeg"), default="own")
    p.add_argument("--sources", type=int, default=4)
    p.add_argument("--mount", default="h264")
    p.add_argument("--settle", type=float, default=8.0)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    with GstCamera(width=1280, height=720, fps=25, gop=50, bitrate=2000) as cam, tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(Path(tmp) / "gw", extra_args=["--no-demo"], env={"H5GATE_RTSP_CLIENT": a.client}).start()
        try:
            assert gw.proc is not None
            pid = gw.proc.pid
            time.sleep(a.settle)
            base_pss, base_cpu = pss_mb(pid), cpu_cores(pid, a.seconds)
            for i in range(a.sources):
                gw.ok("AddSrcRTSP", token=f"s{i}", name=f"s{i}", url=cam.url(a.mount))
            for i in range(a.sources):
                gw.wait_online(f"s{i}", timeout=40)
            time.sleep(a.settle)
            pss, cpu = pss_mb(pid), cpu_cores(pid, a.seconds)
            report = {
                "client": a.client,
                "mount": a.mount,
                "sources": a.sources,
                "processes": len(tree(pid)),
                "pss_mb_no_source": round(base_pss, 1),
                "pss_mb_with_sources": round(pss, 1),
                "pss_mb_per_source": round((pss - base_pss) / a.sources, 1),
                "cpu_cores_no_source": round(base_cpu, 3),
                "cpu_cores_per_source": round((cpu - base_cpu) / a.sources, 3),
            }
            print(json.dumps(report, indent=2))
        finally:
            gw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
