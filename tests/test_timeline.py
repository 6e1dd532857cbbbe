"""The owned timeline: unit tests on synthetic timestamp sequences, and the byte patch on real ffmpeg output.

The real-parts tests (a camera whose RTP timestamps the fault proxy rewrites in flight, WS viewers,
recordings, Search and Chromium) are in tests/test_timeline_live.py.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from workers.ffmpeg import PIPE_MOVFLAGS
from workers.fmp4 import Splitter, parse_fragment, parse_init, read_traf, retime_fragment
from workers.timeline import SourceTimeline

V = 90_000  # video clock
A = 16_000  # audio clock (AAC at 16 kHz: 1024 samples a frame)
FRAME = V // 25
AFRAME = 1024


def feed(
    tl: SourceTimeline,
    samples: list[tuple[str, int, float]],
    wrap: int | None = 32,
    scale: dict[str, int] | None = None,
) -> dict[str, list[tuple[int, float]]]:
    """Map (kind, input ts, arrival) in order; returns per kind the (output, arrival) pairs."""
    scale = scale or {"video": V, "audio": A}
    out: dict[str, list[tuple[int, float]]] = {}
    for kind, ts, arrival in samples:
        track = tl.track(kind, scale[kind], wrap_bits=wrap)
        out.setdefault(kind, []).append((track.map(ts % (1 << 32) if wrap else ts, arrival), arrival))
    return out


def video_run(start_ts: int, start_t: float, n: int, *, first: int = 0) -> list[tuple[str, int, float]]:
    return [("video", start_ts + (first + i) * FRAME, start_t + (first + i) / 25) for i in range(n)]


def assert_paced(outs: list[tuple[int, float]], interval: int, tolerance: float = 0.5) -> None:
    """Decode times never go back and every step is the frame interval within the tolerance."""
    steps = [b[0] - a[0] for a, b in zip(outs, outs[1:], strict=False)]
    bad = [(i, s) for i, s in enumerate(steps) if not (1 - tolerance) * interval <= s <= (1 + tolerance) * interval]
    assert not bad, f"steps off the frame interval {interval}: {bad[:10]}"


def test_clean_source_passes_through_untouched() -> None:
    tl = SourceTimeline("t", common_clock=False)
    out = feed(tl, video_run(123_456, 100.0, 500))["video"]
    assert out[0][0] == 0
    assert [o for o, _ in out] == [i * FRAME for i in range(500)]
    assert tl.resets == 0


def test_jump_back_ten_seconds_re_anchors_once(caplog: pytest.LogCaptureFixture) -> None:
    tl = SourceTimeline("cam", common_clock=False)
    samples = video_run(0, 0.0, 100) + video_run(-10 * V, 0.0, 200, first=100)  # same pace, clock 10 s back
    with caplog.at_level(logging.INFO, "h5gate.timeline"):
        out = feed(tl, samples)["video"]
    assert_paced(out, FRAME)
    assert tl.resets == 1
    resets = [r.getMessage() for r in caplog.records if "timeline reset:" in r.getMessage()]
    assert len(resets) == 1 and "cam: timeline reset: video jumped back 9.960s" in resets[0]


def test_ffmpeg_plus_one_tick_clamping() -> None:
    """After a jump back ffmpeg writes previous+1 tick until the camera's clock catches up (10 s here)."""
    tl = SourceTimeline("t", common_clock=True)
    samples = video_run(0, 0.0, 100)
    clamp = [("video", 99 * FRAME + k, 4.0 + (k - 1) / 25) for k in range(1, 251)]  # 250 frames of +1
    resumed = [("video", 99 * FRAME + 3_000 + i * FRAME, 14.0 + i / 25) for i in range(100)]
    out = feed(tl, samples + clamp + resumed, wrap=None)["video"]
    assert_paced(out, FRAME)
    assert tl.resets == 1
    assert out[-1][0] - out[0][0] == pytest.approx((out[-1][1] - out[0][1]) * V, abs=FRAME)


def test_jump_forward_an_hour() -> None:
    tl = SourceTimeline("t", common_clock=False)
    samples = video_run(0, 0.0, 100) + video_run(3600 * V, 0.0, 100, first=100)
    out = feed(tl, samples)["video"]
    assert_paced(out, FRAME)
    assert tl.resets == 1
    assert out[-1][0] < 10 * V


def test_forward_step_within_wall_clock_is_a_real_gap() -> None:
    """A camera that stopped sending for 3 s and goes on with true timestamps: no reset, the gap stays."""
    tl = SourceTimeline("t", common_clock=False)
    samples = video_run(0, 0.0, 50) + video_run(0, 0.0, 50, first=125)
    out = feed(tl, samples)["video"]
    assert tl.resets == 0
    assert out[50][0] - out[49][0] == 76 * FRAME


def test_rtp_wrap_is_seamless() -> None:
    tl = SourceTimeline("t", common_clock=False)
    start = (1 << 32) - 2 * V  # wraps after 2 s
    out = feed(tl, video_run(start, 0.0, 200))["video"]
    assert [o for o, _ in out] == [i * FRAME for i in range(200)]
    assert tl.resets == 0


def test_arrival_jitter_alone_changes_nothing() -> None:
    tl = SourceTimeline("t", common_clock=False)
    jitter = [0.0, 0.015, -0.01, 0.03, 0.0, 0.2, -0.02]
    samples = [("video", i * FRAME, i / 25 + jitter[i % len(jitter)]) for i in range(300)]
    out = feed(tl, samples)["video"]
    assert [o for o, _ in out] == [i * FRAME for i in range(300)]
    assert tl.resets == 0


def test_timestamp_jitter_is_followed() -> None:
    """Camera timestamps jittered by up to ±8 ms per frame: followed as they are, no resets."""
    tl = SourceTimeline("t", common_clock=False)
    jit = [0, 720, -360, 540, -720, 180]
    samples = [("video", i * FRAME + jit[i % len(jit)], i / 25) for i in range(300)]
    out = feed(tl, samples)["video"]
    assert tl.resets == 0
    assert_paced(out, FRAME)


def interleaved(t0: float, t1: float, v0: int, a0: int) -> list[tuple[str, int, float]]:
    """Video at 25 fps and AAC audio at 16 kHz (15.6 frames/s) arriving in [t0, t1), in arrival order.

    Sample k of a track arrives at k intervals after 0 and carries the input time base + k intervals.
    """
    items = [("video", v0 + k * FRAME, k / 25) for k in range(round(t0 * 25), round(t1 * 25))]
    items += [("audio", a0 + j * AFRAME, j * AFRAME / A) for j in range(int(t0 * A / AFRAME), int(t1 * A / AFRAME))]
    return sorted(items, key=lambda x: x[2])


def av_offset(out: dict[str, list[tuple[int, float]]], at: float) -> float:
    """Output time minus arrival time of video and of audio near `at`: their difference is the A/V skew."""
    v = min(out["video"], key=lambda x: abs(x[1] - at))
    a = min(out["audio"], key=lambda x: abs(x[1] - at))
    return (v[0] / V - v[1]) - (a[0] / A - a[1])


def test_audio_and_video_jump_separately_and_stay_aligned() -> None:
    tl = SourceTimeline("t", common_clock=False)
    samples = interleaved(0, 4, 1000, 5000)  # 4 s clean
    samples += interleaved(4, 8, 1000, 5000 - 10 * A)  # audio jumps back 10 s
    samples += interleaved(8, 12, 1000 + 3600 * V, 5000 - 10 * A)  # video jumps forward an hour
    samples += interleaved(12, 16, 1000 - 20 * V, 5000 + 7 * A)  # both jump (a camera reboot)
    out = feed(tl, samples)
    assert_paced(out["video"], FRAME)
    assert_paced(out["audio"], AFRAME)
    skew0 = av_offset(out, 2.0)
    for at in (6.0, 10.0, 14.0, 15.9):
        assert abs(av_offset(out, at) - skew0) < 0.045, f"A/V skew grew at {at}s"
    assert tl.resets == 3


def test_new_run_continues_after_the_previous_one() -> None:
    """A restart of the source (new ffmpeg run) starts its times at 0 again; outputs go on, gap kept."""
    tl = SourceTimeline("t", common_clock=True)
    first = feed(tl, interleaved(0, 4, 0, 0), wrap=None)
    tl.new_run()
    restart = [(kind, ts - (6 * V if kind == "video" else 6 * A), t) for kind, ts, t in interleaved(6, 10, 0, 0)]
    second = feed(tl, restart, wrap=None)  # 2 s outage, then ffmpeg starts at 0 again
    for kind, interval, scale in (("video", FRAME, V), ("audio", AFRAME, A)):
        gap = second[kind][0][0] - first[kind][-1][0]
        assert gap / scale == pytest.approx(2.0 + interval / scale, abs=0.05)
        assert_paced(second[kind], interval)
    assert tl.resets == 0
    # the run's tracks keep ffmpeg's own alignment (one offset for the run)
    v_in, a_in = next(x for x in restart if x[0] == "video")[1], next(x for x in restart if x[0] == "audio")[1]
    out_skew = second["video"][0][0] / V - second["audio"][0][0] / A
    assert out_skew == pytest.approx(v_in / V - a_in / A, abs=0.001)


def test_durations_made_plausible() -> None:
    tl = SourceTimeline("t", common_clock=True)
    v = tl.track("video", V)
    feed(tl, video_run(0, 0.0, 50), wrap=None)
    assert v.duration(FRAME) == FRAME
    assert v.duration(2 * FRAME) == 2 * FRAME  # a dropped frame is real
    assert v.duration(1) == FRAME  # ffmpeg's clamp
    assert v.duration(3600 * V) == FRAME  # a jump forward
    assert v.duration(0) == FRAME


@pytest.fixture(scope="module")
def pipe_bytes() -> bytes:
    demo = Path(__file__).resolve().parents[1] / "media" / "demo.mp4"
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", str(demo), "-t", "2", "-map", "0:v:0", "-c", "copy"]
    cmd += ["-f", "mp4", "-movflags", PIPE_MOVFLAGS, "pipe:1"]
    return subprocess.run(cmd, check=True, capture_output=True).stdout


def test_retime_fragment_patches_tfdt_and_durations(pipe_bytes: bytes) -> None:
    parts = Splitter().feed(pipe_bytes)
    init = parse_init(parts[0][1])
    assert init.video is not None
    data = parts[3][1]
    info = parse_fragment(data)
    same, same_info = retime_fragment(data, info, info.tfdt, lambda d: d)
    assert same is data and same_info is info  # nothing moved: no copy
    new, new_info = retime_fragment(data, info, 7 * 3600 * init.video.timescale, lambda d: 1234)
    assert len(new) == len(data)
    parsed = parse_fragment(new)
    assert parsed.tfdt == new_info.tfdt == 7 * 3600 * init.video.timescale
    assert [s.duration for s in read_traf(new).samples] == [1234] * info.samples
    assert parsed.duration == new_info.duration == 1234 * info.samples
    assert new[info.tfdt_pos + info.tfdt_size :] == data[info.tfdt_pos + info.tfdt_size :] or info.dur_pos >= 0
