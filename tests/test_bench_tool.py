"""tools/bench must keep working: a quick run against the real test camera and a real gateway.

The benchmark is what users run against their own cameras; without a test it would rot silently the
first time the WS protocol or the REST API changes. The figures are checked for sanity, not for speed
(the CI machine is shared), except that a handful of viewers must keep up with 25 fps.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tools" / "bench"


def _load_bench() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("h5gate_bench", str(BENCH))
    spec = importlib.util.spec_from_loader("h5gate_bench", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["h5gate_bench"] = module  # dataclasses look their module up while the file executes
    loader.exec_module(module)
    return module


def _number(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def test_slice_hash_ignores_framing_and_parameter_sets() -> None:
    """An Annex B access unit and its MP4 sample hash alike, whatever SPS/PPS/AUD/SEI ride along."""
    bench = _load_bench()
    sps, pps, aud, sei = b"\x67\x42\xc0\x1f\xaa", b"\x68\xce\x3c\x80", b"\x09\xf0", b"\x06\x05\x01\x80"
    idr, slice_ = b"\x65\x88\x84\x00\x21", b"\x41\x9a\x02\x04"
    annexb = b"".join(b"\x00\x00\x00\x01" + n for n in (aud, sps, pps, sei, idr)) + b"\x00"
    sample = b"".join(len(n).to_bytes(4, "big") + n for n in (idr,))
    a = bench.slice_hash(bench.annexb_nals(annexb), False)
    b = bench.slice_hash(bench.length_nals(sample, 0, len(sample)), False)
    assert a is not None and a == b
    other = bench.slice_hash(bench.annexb_nals(b"\x00\x00\x01" + slice_), False)
    assert other not in (None, a)
    assert bench.slice_hash(bench.annexb_nals(b"\x00\x00\x01" + sps), False) is None


def test_quick_run_reports_sane_figures() -> None:
    """`tools/bench --quick --json` as a user runs it (executable, venv on PATH): every figure present."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [str(BENCH), "--quick", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=150
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)

    assert report["deflate"]["offered"] is True
    assert report["deflate"]["accepted"] is False, report["deflate"]
    assert report["stream"]["codec"].startswith("avc1.")

    ff = report["first_frame"]
    assert ff["connects"] == 5
    for key in ("open", "mime", "init", "frame"):
        for stat in ("p50", "p95", "max"):
            assert _number(ff[key][stat], 0.01, 5000), (key, stat, ff[key])
    assert ff["mime"]["p50"] <= ff["init"]["p50"] <= ff["frame"]["p50"]

    lat = report["latency"]
    assert lat["match_rate"] > 0.5, lat
    assert lat["matched"] >= 50, lat
    assert _number(lat["rtsp_fps"], 20, 30), lat
    for stat in ("p50_ms", "p95_ms", "max_ms"):
        assert _number(lat[stat], -100, 3000), (stat, lat)
    wire = lat["wire"]
    assert "error" not in wire, wire
    assert wire["match_rate"] > 0.5, wire
    # our RTSP client hands a frame on at its marker bit: at most one frame interval (40 ms) behind the wire
    assert _number(wire["p50_ms"], -5, 40), wire
    assert _number(wire["pyav_holdback_p50_ms"], -100, 1000), wire

    res = report["resources"]
    assert res["measured"] is True
    assert _number(res["supervisor"]["cpu_cores"], 0, os.cpu_count() or 1), res
    assert _number(res["supervisor"]["rss_mb"], 10, 4000), res
    assert res["ffmpeg"] == [], res  # an H.264 + AAC camera needs no ffmpeg on the own RTSP path

    fanout = {run["viewers"]: run for run in report["fanout"]}
    assert sorted(fanout) == [1, 20]
    for n, run in fanout.items():
        run = {k: v for k, v in run.items() if k != "close_reasons"} | {"why": run["close_reasons"]}
        assert run["connected"] == n, run
        assert run["kept_up"] == n, json.dumps(run)
        assert run["slow_disconnects"] == 0, run
        assert _number(run["skips"], 0, 10_000), run
        assert _number(run["server_cpu_cores"], 0, os.cpu_count() or 1), run
        assert _number(run["source_frames"], 80, 160), run  # 5 s of 25 fps
        assert _number(run["mbit_per_s"], 0.01, 10_000), run
    assert fanout[20]["mbit_per_s"] > fanout[1]["mbit_per_s"]
    assert all(isinstance(v, bool) for v in report["targets"].values())
