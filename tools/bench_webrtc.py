"""Benchmark WebRTC fan-out: N viewers of one source, the sidecar's CPU per viewer, memory, first frame.

    sudo .venv/bin/python tools/bench_webrtc.py --viewers 10 --seconds 20

Needs root: it runs in a private network namespace with only `lo` (nothing leaves the machine, and the
only ICE address is 127.0.0.1). It makes an H.264 + AAC clip with ffmpeg, starts a real gateway with it
as a looping file source, then connects aiortc viewers that do not decode (tools/harness/webrtc_viewer.py), so
the machine's CPU goes to the server side. Figures, from psutil on the sidecar (and the supervisor):
  - idle: sidecar with no viewer;   one: one viewer (with audio: includes the shared Opus encoder);
  - N viewers: total and per viewer, and the marginal cost of each viewer after the first;
  - memory (RSS) of the sidecar; time to first frame (WS connect -> first complete H.264 frame), for
    the first viewer and for each later one, joining (one at a time) a source the others watch.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.harness.camera import wait_until  # noqa: E402
from tools.harness.gateway import Gateway  # noqa: E402
from tools.harness.webrtc_viewer import RtcViewer, private_network  # noqa: E402


def make_clip(path: Path, size: str, fps: int, gop: int, seconds: int) -> None:
    subprocess.run(
        ["/usr/bin/ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "superfast", "-bf", "0", "-g", str(gop), "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", str(path)],
        check=True)  # fmt: skip


def udp_receive_drops() -> int:
    """Datagrams the kernel dropped for full receive buffers, in this namespace (i.e. at the viewers)."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))["RcvbufErrors"])


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


async def measure(procs: dict[str, psutil.Process], seconds: float) -> dict[str, float]:
    """Cores used by each process over `seconds` of wall time."""
    before = {k: cpu_seconds(p) for k, p in procs.items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - started
    return {k: (cpu_seconds(p) - before[k]) / wall for k, p in procs.items()}


async def bench(gw: Gateway, viewers: int, seconds: float, audio: bool) -> None:
    assert gw.proc is not None
    supervisor = psutil.Process(gw.proc.pid)
    sidecar = next(c for c in supervisor.children() if "workers.webrtc" in " ".join(c.cmdline()))
    procs = {"sidecar": sidecar, "supervisor": supervisor}
    query = {"token": "bench", "profile": "main", "session": gw.session}
    if not audio:
        query["audio"] = "false"
    url = f"{gw.ws_base}/api/v1/h5srtcapi?{urllib.parse.urlencode(query)}"

    idle = await measure(procs, min(seconds, 5))
    first = RtcViewer(url)
    await first.start()
    await first.wait_frames(10, timeout=15)
    await asyncio.sleep(2)
    count = len(first.video)
    one = await measure(procs, seconds)
    one_fps = (len(first.video) - count) / seconds
    rest = []
    for _ in range(viewers - 1):  # one at a time: each joins a source the others are already watching
        viewer = RtcViewer(url)
        await viewer.start()
        await viewer.wait_frames(1, timeout=15)
        rest.append(viewer)
        await asyncio.sleep(0.5)
    everyone = [first, *rest]
    await asyncio.sleep(2)
    counts = [len(v.video) for v in everyone]
    drops = udp_receive_drops()
    many = await measure(procs, seconds)
    drops = udp_receive_drops() - drops
    fps = [(len(v.video) - c) / seconds for v, c in zip(everyone, counts, strict=True)]
    rss = sidecar.memory_info().rss / 2**20
    status = gw.ok("h5srtcapi/Status")
    for viewer in everyone:
        await viewer.close()

    ttff = sorted(v.first_frame * 1000 for v in rest) or [first.first_frame * 1000]
    per_viewer = many["sidecar"] / viewers
    marginal = (many["sidecar"] - one["sidecar"]) / max(1, viewers - 1)
    print(
        f"viewers: {viewers} ({'video + Opus audio' if audio else 'video only'}), "
        f"Status nConnectCount {status['nConnectCount']}, nConnected {status['nConnected']}"
    )
    print(
        f"complete frames received per second: 1 viewer {one_fps:.1f}; {viewers} viewers: min {min(fps):.1f}, "
        f"median {statistics.median(fps):.1f} (packets dropped at the viewers' sockets: {drops})"
    )
    print(
        f"sidecar CPU: idle {idle['sidecar']:.3f} cores, 1 viewer {one['sidecar']:.3f}, "
        f"{viewers} viewers {many['sidecar']:.3f}"
    )
    print(
        f"sidecar CPU per viewer: {per_viewer * 100:.1f}% of a core (marginal, after the first: {marginal * 100:.1f}%)"
    )
    print(f"supervisor CPU: idle {idle['supervisor']:.3f} cores, {viewers} viewers {many['supervisor']:.3f}")
    print(f"sidecar memory: {rss:.0f} MiB RSS with {viewers} viewers")
    print(
        f"time to first frame: first viewer {first.first_frame * 1000:.0f} ms; others: median "
        f"{statistics.median(ttff):.0f} ms, max {max(ttff):.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each measurement window")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=50, help="frames between keyframes")
    parser.add_argument("--no-audio", action="store_true", help="viewers ask for video only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, private_network():
        folder = Path(tmp)
        make_clip(folder / "bench.mp4", args.size, args.fps, args.gop, 30)
        gw = Gateway(
            folder / "gw", extra_args=["--no-demo", "--log-level", "WARNING"], env={"H5GATE_MEDIA_ROOTS": str(folder)}
        ).start()
        try:
            gw.ok("AddSrcFile", name="Bench", token="bench", url=str(folder / "bench.mp4"))
            gw.wait_online("bench", timeout=30)
            if not wait_until(lambda: gw.ok("h5srtcapi/Status")["bServiceRunning"], 20):
                raise SystemExit("the WebRTC sidecar did not start")
            print(f"source: {args.size} at {args.fps} fps, H.264 (no B-frames) + AAC, GOP {args.gop} frames")
            asyncio.run(bench(gw, args.viewers, args.seconds, not args.no_audio))
        finally:
            gw.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
