#!/usr/bin/env python3
"""How far behind the source an HLS viewer plays: hls.js in Debian's Chromium against a gateway of its own.

Two figures per run, sampled once a second for `--seconds` after playback has started:
- `wall`: now minus the wall-clock time of the frame on screen, from the playlist's EXT-X-PROGRAM-DATE-TIME
  (h5gate stamps each segment with the time its first frame reached the hub), so it is the latency the
  gateway and player add after the hub. Only playlists that carry PROGRAM-DATE-TIME give it.
- `edge`: hls.js's own `latency` (distance behind the live edge it computes from the playlist). It does not
  count how old the newest listed segment already was when the playlist was loaded (up to a segment).

    /work/main/.venv/bin/python tools/hls_latency.py --hlsver v2 [--repo DIR] [--seconds 20]

It plays with the console's player, h5splayer.js (H5sPlayerHls), as the checkout given by --repo has it:
since LL-HLS that is hls.js in lowLatencyMode for v2 and two segments behind for v1; before, two segments
behind for both.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("H5GATE_CHROMIUM", "/usr/bin/chromium")

PROBE = """() => {
    const h = window.player._hls, v = document.getElementById('v');
    if (!h || v.paused || v.readyState < 2) return null;
    return {wall: h.playingDate ? (Date.now() - h.playingDate.getTime()) / 1000 : null, edge: h.latency,
            stalls: window.stalls};
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def login(base: str) -> str:
    for _ in range(150):
        try:
            url = f"{base}/api/v1/Login?" + urllib.parse.urlencode({"user": "admin", "password": "12345"})
            with urllib.request.urlopen(url, timeout=5) as resp:
                return str(json.loads(resp.read())["strSession"])
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gateway did not come up")


def measure(base: str, session: str, hlsver: str, seconds: float) -> dict[str, object]:
    """Play with the console's own player (h5splayer.js H5sPlayerHls with the vendored hls.js)."""
    conf = {"videoid": "v", "protocol": "http:", "host": base.split("//")[1], "rootpath": "/"}
    conf.update({"token": "demo", "hlsver": hlsver, "session": session, "streamprofile": "main"})
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        page = browser.new_page()
        page.goto(base + "/login")
        page.evaluate("() => { document.body.innerHTML = '<video id=\"v\" muted playsinline></video>'; }")
        page.add_script_tag(url="/static/vendor/hls.min.js")
        page.add_script_tag(url="/static/h5splayer.js")
        page.evaluate(
            f"""() => {{
                window.stalls = 0;
                document.getElementById('v').addEventListener('waiting', () => {{ window.stalls += 1; }});
                window.player = new H5sPlayerHls({json.dumps(conf)});
                window.player.connect();
            }}"""
        )
        started = time.monotonic()
        while page.evaluate(PROBE) is None:
            if time.monotonic() - started > 30:
                raise RuntimeError("hls.js did not start playing within 30 s")
            page.wait_for_timeout(200)
        first_frame = time.monotonic() - started
        ll = page.evaluate("() => window.player._hls.lowLatencyMode")
        page.wait_for_timeout(3000)  # past the start-up
        samples = []
        for _ in range(int(seconds)):
            samples.append(page.evaluate(PROBE))
            page.wait_for_timeout(1000)
        browser.close()
    good = [s for s in samples if s]
    walls = sorted(s["wall"] for s in good if s["wall"] is not None)
    edges = sorted(s["edge"] for s in good)
    return {
        "hlsver": hlsver,
        "low_latency": bool(ll),
        "start_s": round(first_frame, 2),
        "wall_p50": round(statistics.median(walls), 3) if walls else None,
        "wall_max": round(walls[-1], 3) if walls else None,
        "edge_p50": round(statistics.median(edges), 3) if edges else None,
        "stalls": good[-1]["stalls"] if good else None,
        "samples": len(good),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(ROOT), help="h5gate checkout to run (default: this one)")
    parser.add_argument("--hlsver", default="v2", choices=["v1", "v2"])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="h5gate-hlslat-") as tmp:
        cmd = [sys.executable, "-m", "supervisor.cli", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--data-dir", str(Path(tmp) / "data"), "--log-level", "WARNING"]
        env = {**os.environ, "H5GATE_ONVIF_DISCOVERY_TARGET": "127.0.0.1:9"}
        with open(Path(tmp) / "server.log", "wb") as log:
            server = subprocess.Popen(cmd, cwd=args.repo, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                session = login(base)
                time.sleep(8.0)  # the demo source runs and (old design) has written a few segments
                print(json.dumps(measure(base, session, args.hlsver, args.seconds)))
            finally:
                server.send_signal(signal.SIGTERM)
                try:
                    server.wait(20)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
