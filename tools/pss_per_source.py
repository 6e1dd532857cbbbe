#!/usr/bin/env python3
"""What one more source costs in memory: PSS of the whole server (supervisor + every child) per source.

PSS (proportional set size) charges each shared page to the processes that share it, so summing it over
the server and its children counts the shared ffmpeg/Python libraries once, unlike RSS. The tool starts a
gateway of its own (no demo source) in a temporary data directory, measures it idle, adds N file sources of
media/demo.mp4 with AddSrcFile, waits until they are online and have settled, measures again, and prints
the difference divided by N. It also reports whether anything was written under the data directory while
nobody watched (HLS is made on demand, so nothing should be).

    /work/main/.venv/bin/python tools/pss_per_source.py --sources 8 [--repo DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(base: str, api: str, /, **params: str) -> dict[str, object]:
    url = f"{base}/api/v1/{api}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def tree_pss(pid: int) -> tuple[float, int]:
    """Summed PSS in MiB of a process and all its descendants, and how many processes that was."""
    parts = pss_by_kind(pid)
    return sum(v for v, _ in parts.values()), sum(n for _, n in parts.values())


def pss_by_kind(pid: int) -> dict[str, tuple[float, int]]:
    """PSS in MiB and process count of the server itself, its source ffmpegs and any other children."""
    root = psutil.Process(pid)
    out: dict[str, tuple[float, int]] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            pss = proc.memory_full_info().pss / (1024 * 1024)
            kind = "server" if proc.pid == pid else "ffmpeg" if "ffmpeg" in proc.name() else "other"
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total, count = out.get(kind, (0.0, 0))
        out[kind] = (total + pss, count + 1)
    return out


def files_under(path: Path) -> dict[str, tuple[int, float]]:
    found = {}
    for dirpath, _, names in os.walk(path):
        for name in names:
            full = Path(dirpath) / name
            try:
                st = full.stat()
            except FileNotFoundError:
                continue
            found[str(full.relative_to(path))] = (st.st_size, st.st_mtime)
    return found


def settle_pss(pid: int, seconds: float) -> float:
    """The median of a few samples over `seconds`: one sample can catch a GOP's worth of buffers."""
    samples = []
    deadline = time.monotonic() + seconds
    while True:
        samples.append(tree_pss(pid)[0])
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    samples.sort()
    return samples[len(samples) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=8, help="file sources to add (default 8)")
    parser.add_argument("--repo", default=str(ROOT), help="h5gate checkout to run (default: this one)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to let sources settle before measuring")
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="h5gate-pss-") as tmp:
        data = Path(tmp) / "data"
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
        cmd = [sys.executable, "-m", "supervisor.cli", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--data-dir", str(data), "--no-demo", "--log-level", "WARNING"]
        env = {**os.environ, "H5GATE_ONVIF_DISCOVERY_TARGET": "127.0.0.1:9"}
        server = subprocess.Popen(cmd, cwd=args.repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            session = ""
            for _ in range(150):
                try:
                    session = str(call(base, "Login", user="admin", password="12345")["strSession"])
                    break
                except OSError:
                    time.sleep(0.2)
            time.sleep(5.0)  # the WebRTC sidecar and the first imports settle
            idle = settle_pss(server.pid, 5.0)
            idle_server = pss_by_kind(server.pid)["server"][0]
            demo = str(Path(args.repo) / "media" / "demo.mp4")
            for i in range(args.sources):
                call(base, "AddSrcFile", session=session, token=f"pss{i}", name=f"pss{i}", url=demo)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                srcs = call(base, "GetSrc", session=session)["src"]
                if all(s["bOnline"] for s in srcs):  # type: ignore[union-attr,index]
                    break
                time.sleep(0.5)
            time.sleep(args.settle)
            before = files_under(data)
            loaded = settle_pss(server.pid, 10.0)
            after = files_under(data)
            _, procs = tree_pss(server.pid)
            kinds = pss_by_kind(server.pid)
            written = sorted(k for k in after if before.get(k) != after[k] and not k.startswith("h5gate.db"))
            per = (loaded - idle) / args.sources
            print(f"server idle: {idle:.1f} MiB PSS")
            print(f"with {args.sources} file sources: {loaded:.1f} MiB PSS over {procs} processes")
            print(f"per source: {per:.2f} MiB PSS")
            ff, n = kinds.get("ffmpeg", (0.0, 0))
            print(f"  of which its ffmpeg: {ff / max(1, n):.2f} MiB PSS (mean of {n})")
            print(f"  and the server process: {(kinds['server'][0] - idle_server) / args.sources:.2f} MiB PSS")
            print(f"files written under the data dir in 10 s with nobody watching: {len(written)} {written[:5]}")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
