"""The output timeline h5gate owns: decode times that never go back and advance by the real frame interval.

Cameras break their own timestamps: a reboot, an NTP step, a network hiccup, or (Debian's GStreamer RTSP
server) another client joining the mount restarts the RTP clock; 32-bit RTP timestamps wrap every 13.25 h
at 90 kHz; and ffmpeg's `-c copy` answers a jump back by clamping every decode time to "previous + 1 tick"
until the camera's new clock catches up. Every consumer downstream (WS viewers, WebRTC, HLS, recordings,
playback, pre-record) needs one timeline that only moves forward at the pace of real frames, so the
timestamps that come in are only *advice*: while they behave, the output follows their steps exactly
(A/V sync and frame pacing are the camera's); when a step is impossible, the track is re-anchored on the
arrival time, and follows the camera again once its steps are plausible for a few samples.

API (one `SourceTimeline` per source profile, i.e. per hub; it lives as long as the source, across runs)::

    timeline = SourceTimeline("cam1", common_clock=False)  # False: raw RTP, each track has its own clock
    video = timeline.track("video", 90_000, wrap_bits=32)  # once per track; again after a restart is fine
    audio = timeline.track("audio", 16_000, wrap_bits=32)
    dts = video.map(rtp_timestamp, time.monotonic())       # ONE call per sample, in decode order
    dur = video.duration(sample_duration)                  # a sample duration made safe (see below)
    timeline.new_run()       # the source restarted (new RTSP session, new ffmpeg): input times start over
    timeline.resets          # re-anchorings so far (GetSrc nTimelineResets)

- `map()` takes the sample's input timestamp in the track's timescale (raw 32-bit RTP timestamps with
  `wrap_bits=32`; 64-bit decode times with `wrap_bits=None`) and the `time.monotonic()` at which the
  sample's last byte arrived; it returns the output decode time in the same timescale. Outputs of a track
  are strictly increasing, across `new_run()` too.
- `common_clock=True` says the tracks' input times share one clock (ffmpeg's output, or RTP after RTCP
  sender-report mapping): a run's tracks are then shifted by one common offset, keeping the source's A/V
  sync. With `False` (raw RTP: each track starts at a random value) each track is placed by arrival time.
- `duration()` returns the given sample duration when it is plausible, else the track's frame interval:
  a duration computed from a broken next timestamp (1 tick after ffmpeg clamps, an hour after a jump)
  would otherwise stretch or shrink that frame in every player and recording.
- A re-anchor logs `<name>: timeline reset: <why>` once per event (tracks that break within 2 s of each
  other are one event, e.g. a camera reboot) and counts it in `resets`.

After a re-anchor each track keeps the lag between arrival and output time that it had before the break,
so audio and video re-anchored separately stay as aligned as they were: drift cannot build up.
"""

from __future__ import annotations

import logging
from collections import deque

log = logging.getLogger("h5gate.timeline")

MAX_AHEAD = 2.0  # seconds an input step may run ahead of the arrival clock before it is a jump forward
MIN_STEP = 0.2  # an input step below this fraction of the frame interval is ffmpeg's clamping (or a jump back)
MAX_DURATION = 2.0  # seconds beyond the frame interval a sample's duration may reach (a real pause)
FLOOR = 0.6  # while re-anchored, the smallest output step as a fraction of the frame interval
PAUSE = 1.0  # seconds without a sample that count as a real pause while re-anchored
SETTLE = 3  # a run's first samples: an odd step there is start-up noise, fixed without counting a reset
RECOVER = 4  # plausible steps in a row after which a re-anchored track follows its input again
LAG_WINDOW = 64  # samples whose arrival lag tells where to re-anchor (the minimum: delays are one-sided)
MERGE_SECONDS = 2.0  # tracks that break within this long of each other count as one reset


class TrackTimeline:
    """One track's mapping from input timestamps to output decode times; see the module docstring."""

    def __init__(self, source: SourceTimeline, kind: str, timescale: int, wrap_bits: int | None) -> None:
        self.source = source
        self.kind = kind
        self.timescale = timescale
        self.wrap_bits = wrap_bits
        self.interval = timescale / (25 if kind == "video" else 50)  # ticks per sample; learned below
        self.last_out: int | None = None  # newest output decode time
        self.in_run = False  # has this track had a sample in the current run?
        self.wall = False  # re-anchored: output follows arrival time, not the input
        self.offset = 0  # output = input + offset while following the input
        self.lag = 0.0  # seconds between arrival and output time used while re-anchored
        self._good = 0  # plausible input steps in a row while re-anchored
        self._raw: int | None = None  # previous raw input (for unwrapping)
        self._in = 0  # previous unwrapped input
        self._arrival = 0.0
        self._lags: deque[float] = deque(maxlen=LAG_WINDOW)
        self._run_samples = 0  # samples of this track in the current run

    # -- the API ------------------------------------------------------------------------------------------
    def map(self, ts: int, arrival: float) -> int:
        """The output decode time of one sample with input timestamp `ts` that arrived at `arrival`."""
        inp = self._unwrap(ts)
        src = self.source
        if self.last_out is None or not self.in_run:
            out = self._first(inp, arrival)
        else:
            step_in = inp - self._in
            step_wall = (arrival - self._arrival) * self.timescale
            plausible = (
                step_in > max(1.0, self.interval * MIN_STEP) and step_in <= step_wall + MAX_AHEAD * self.timescale
            )
            if not self.wall:
                if plausible:
                    out = inp + self.offset
                    self._learn(step_in)
                else:
                    # Continue one frame on (or after the real pause, if the arrival gap says so), and
                    # keep that relation to arrival time: this track's lag behind the clock stays as it was.
                    pause = step_wall > PAUSE * self.timescale
                    out = self.last_out + round(step_wall if pause else self.interval)
                    self.lag = arrival - src.origin - out / self.timescale
                    self.wall, self._good = True, 0
                    if self._run_samples >= SETTLE:
                        src._reset(self._why(step_in, step_wall), arrival)
                    else:  # ffmpeg's first packets of a run often repeat a decode time: start-up, not a break
                        log.debug("%s: timeline: %s settled at start", src.name, self._why(step_in, step_wall))
            else:
                out = self._wall_out(arrival)
                self._good = self._good + 1 if plausible else 0
                if self._good >= RECOVER:
                    self.wall = False
                    self.offset = out - inp
                    log.info("%s: timeline: %s follows the source's times again", src.name, self.kind)
        if not self.wall:
            self._lags.append(arrival - src.origin - out / self.timescale)
        self._in, self._arrival, self.last_out = inp, arrival, out
        self._run_samples += 1
        return out

    def duration(self, duration: int) -> int:
        """`duration` if it is plausible for one sample of this track, else the track's frame interval."""
        low = max(1.0, self.interval * MIN_STEP)
        high = self.interval * 1.5 + MAX_DURATION * self.timescale
        if low < duration <= high:
            return duration
        return max(1, round(self.interval))

    # -- internals ----------------------------------------------------------------------------------------
    def _unwrap(self, ts: int) -> int:
        """RTP timestamps are 32-bit and wrap: extend them by the signed difference to the previous one."""
        if self.wrap_bits is None or self._raw is None:  # no wrap, or the first sample of a run
            self._raw = ts
            return ts
        mask = (1 << self.wrap_bits) - 1
        diff = (ts - self._raw) & mask
        if diff >= 1 << (self.wrap_bits - 1):
            diff -= 1 << self.wrap_bits
        self._raw = ts
        return self._in + diff

    def _first(self, inp: int, arrival: float) -> int:
        """The first sample of a run: one offset for the run's tracks (common clock) or the arrival time."""
        src = self.source
        if src.origin_unset:
            # The source's very first sample: output = input (ffmpeg starts near 0), and arrival time is
            # measured from here on, so later re-anchors land on the same scale.
            src.origin = arrival - inp / self.timescale if src.common_clock else arrival
            src.origin_unset = False
            out = inp if src.common_clock else 0
        elif src.common_clock and src.run_base is not None:
            out = round((inp / self.timescale + src.run_base) * self.timescale)
        else:
            lag = self._lag_estimate() if self._lags else src.default_lag()
            out = round((arrival - src.origin - lag) * self.timescale)
        if self.last_out is not None:
            out = max(out, self.last_out + max(1, round(self.interval)))  # never back, across runs too
        out = max(out, 0)
        if src.common_clock and src.run_base is None:
            src.run_base = out / self.timescale - inp / self.timescale
        self.offset = out - inp
        self.in_run, self.wall, self._good, self._run_samples = True, False, 0, 0
        return out

    def _wall_out(self, arrival: float) -> int:
        """Output time from arrival time, but at least FLOOR of a frame after the previous one.

        Arrival times jitter and come in bursts (a loaded host, a stall upstream): steps are kept within
        FLOOR..2-FLOOR frames, so the output converges on the arrival clock at a pace players and
        recordings tolerate (±50 %), and leaves no hole in a browser's buffer (Chromium stops at a gap of
        a few frames). Only a real pause (no sample for PAUSE seconds) makes a longer step. The interval
        is not learned from these steps: the clamp would feed back into itself.
        """
        assert self.last_out is not None
        target = round((arrival - self.source.origin - self.lag) * self.timescale)
        step = target - self.last_out
        if arrival - self._arrival > PAUSE:
            return max(target, self.last_out + round(self.interval))  # a real pause: the output pauses as long
        low, high = self.interval * FLOOR, self.interval * (2 - FLOOR)
        return self.last_out + max(1, round(min(max(step, low), high)))

    def _learn(self, step: float) -> None:
        """Follow the frame interval slowly; a single odd step (a dropped frame) moves it little."""
        if step > 0:
            self.interval += (min(step, self.interval * 4) - self.interval) / 16

    def _lag_estimate(self) -> float:
        """The smallest recent lag: delays only add, so the minimum is the pipeline's steady lag."""
        return min(self._lags) if self._lags else self.source.default_lag()

    def _why(self, step_in: int, step_wall: float) -> str:
        ts = self.timescale
        if step_in <= 0:
            what = f"jumped back {-step_in / ts:.3f}s"
        elif step_in <= max(1.0, self.interval * MIN_STEP):
            what = f"advanced only {step_in} ticks (clamped; {self.interval / ts * 1000:.0f} ms expected)"
        else:
            what = f"jumped forward {step_in / ts:.3f}s in {step_wall / ts:.3f}s of wall time"
        return f"{self.kind} {what}; re-anchored on arrival time"

    def rescale(self, timescale: int) -> None:
        """A new run may use another timescale (e.g. after switching to transcoding): keep the position."""
        if timescale == self.timescale:
            return
        ratio = timescale / self.timescale
        if self.last_out is not None:
            self.last_out = round(self.last_out * ratio)
        self.interval *= ratio
        self.timescale = timescale


class SourceTimeline:
    """The timelines of one source's tracks, the run boundaries and the reset counter."""

    def __init__(self, name: str, *, common_clock: bool) -> None:
        self.name = name
        self.common_clock = common_clock
        self.resets = 0
        self.tracks: dict[str, TrackTimeline] = {}
        self.origin = 0.0  # monotonic arrival time that corresponds to output time 0
        self.origin_unset = True
        self.run_base: float | None = None  # common clock: output seconds - input seconds in this run
        self._last_reset = -1e9

    def track(self, kind: str, timescale: int, *, wrap_bits: int | None = None) -> TrackTimeline:
        """The timeline of a track ("video", "audio"); the same object across runs of the source."""
        tl = self.tracks.get(kind)
        if tl is None:
            tl = self.tracks[kind] = TrackTimeline(self, kind, timescale, wrap_bits)
        else:
            tl.rescale(timescale)
            tl.wrap_bits = wrap_bits
        return tl

    def new_run(self) -> None:
        """The source restarted: its input times start over; outputs continue after the previous run's."""
        self.run_base = None
        for tl in self.tracks.values():
            tl.in_run = False
            tl.wall = False
            tl._raw = None

    def default_lag(self) -> float:
        """A track with no lag history of its own takes another track's, so it lands beside it."""
        for tl in self.tracks.values():
            if tl._lags:
                return min(tl._lags)
        return 0.0

    def _reset(self, why: str, now: float) -> None:
        merged = 0 <= now - self._last_reset < MERGE_SECONDS
        self._last_reset = now
        if merged:
            log.info("%s: timeline: %s too (same event)", self.name, why)
            return
        self.resets += 1
        log.warning("%s: timeline reset: %s", self.name, why)
