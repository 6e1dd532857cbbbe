"""The fMP4 HLS packager on streams whose timing we choose (fragments built by workers/mp4mux.py, as the hub
gets them from our RTSP client): irregular GOPs, audio-only sources, a restart whose times go back, and the
preload hint always naming a part that comes or a segment that ends without it."""

from __future__ import annotations

import re
import time

from workers.fmp4 import parse_fragment, parse_init, read_traf
from workers.hls import FragmentedHls
from workers.hub import Fragment, StreamHub
from workers.mp4mux import AUDIO_TRACK, VIDEO_TRACK, AudioSpec, VideoSpec, fragment, init_segment

AVCC = bytes([1, 0x64, 0x00, 0x1F, 0xFF, 0xE0, 0x00])
FRAME = 3600  # 25 fps at 90 kHz


def packager(target: float = 2.0, part: float = 0.2) -> FragmentedHls:
    return FragmentedHls("test", target, segment_num=4, part_target=part)


def video_hub() -> StreamHub:
    hub = StreamHub("test", ring_seconds=60)
    hub.set_init(init_segment(VideoSpec(b"avc1", AVCC, 640, 360), AudioSpec(bytes([0x11, 0x90]), 48000, 2)))
    return hub


def feed_video(hub: StreamHub, hls: FragmentedHls, keyframes: set[int], frames: int, start: int = 0) -> None:
    """`frames` video frames from decode time `start`, with AAC frames (1024 samples) in between."""
    audio_t = start * 48000 // 90000
    for i in range(frames):
        t = start + i * FRAME
        frag = hub.publish(fragment(i, VIDEO_TRACK, t, FRAME, b"v" * 100, i in keyframes))
        assert frag is not None
        hls.push(frag, hub.inits[frag.gen])
        while audio_t * 90000 // 48000 < t + FRAME:
            afrag = hub.publish(fragment(i, AUDIO_TRACK, audio_t, 1024, b"a" * 20, True))
            assert afrag is not None
            hls.push(afrag, hub.inits[afrag.gen])
            audio_t += 1024


def extinfs(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"#EXTINF:([\d.]+),", text)]


def test_segments_are_cut_at_the_first_keyframe_after_the_target() -> None:
    hub, hls = video_hub(), packager()
    # keyframes at 0 s, 3 s, 4 s (too soon after 3 s: no cut), 7 s, 8 s, 10 s
    feed_video(hub, hls, {0, 75, 100, 175, 200, 250}, 260)
    text = hls.playlist()
    assert extinfs(text) == [3.0, 4.0, 3.0]  # [0,3) [3,7) [7,10): the keyframe at 8 s is 1 s in
    assert "#EXT-X-TARGETDURATION:4" in text  # never shorter than a listed segment
    # the keyframe at 4 s, inside the second segment, starts a part a player can begin with
    assert [round(p.duration * 25) for p in hls.segments[1].parts if p.independent] == [5, 5]
    for seg in hls.segments:
        assert seg.parts[0].independent and seg.data.startswith(seg.parts[0].data)
        assert all(0 < p.duration <= 0.2 + 1e-6 for p in seg.parts)
        assert abs(sum(p.duration for p in seg.parts) - seg.duration) < 1e-6


def test_audio_only_stream_is_cut_by_time() -> None:
    """(The hub waits for a video keyframe today, so fragments are made here as it would make them.)"""
    init = parse_init(init_segment(None, AudioSpec(bytes([0x11, 0x90]), 48000, 2)))
    hls = packager()
    for i in range(48000 * 7 // 1024):
        data = fragment(i, AUDIO_TRACK, i * 1024, 1024, b"a" * 20, True)
        hls.push(Fragment(i, 1, data, parse_fragment(data), 48000, False, time.monotonic()), init)
    durations = extinfs(hls.playlist())
    assert len(durations) == 3 and all(2.0 <= d < 2.03 for d in durations), durations
    assert all(0 < p.duration <= 0.2 + 1e-6 for s in hls.segments for p in s.parts)


def test_a_restart_going_back_in_time_continues_the_timeline_after_a_discontinuity() -> None:
    hub, hls = video_hub(), packager()
    feed_video(hub, hls, {0, 50, 100}, 120)
    end = 120 * FRAME
    assert hub.init is not None
    hub.set_init(hub.init.data)  # the source's ffmpeg restarted: times from 0 again
    feed_video(hub, hls, {0, 50, 100}, 120)
    text = hls.playlist()
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1 and text.count("#EXT-X-MAP:") == 2, text
    gen2 = [s for s in hls.segments if s.gen == 2]
    first = read_traf(gen2[0].parts[0].data)
    assert first.track_id == VIDEO_TRACK and first.tfdt == end and first.samples[0].sync
    # audio of the new run is shifted by the same amount: nothing lands before the new run's start
    times = []
    data = gen2[0].data
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == b"moof":
            traf = read_traf(data[pos:])
            if traf.track_id == AUDIO_TRACK:
                times.append(traf.tfdt * 90000 // 48000)
        pos += size
    assert times and min(times) >= end - 1024 * 90000 // 48000


def test_the_preload_hint_names_a_part_that_comes_or_its_segment_ends() -> None:
    hub, hls = video_hub(), packager()
    keyframes = {0, 50, 100, 150}
    hints = []
    for i in range(160):
        hints.append(hls.next_part())
        t = i * FRAME
        frag = hub.publish(fragment(i, VIDEO_TRACK, t, FRAME, b"v" * 100, i in keyframes))
        assert frag is not None
        hls.push(frag, hub.inits[frag.gen])
    for msn, index in hints:
        seg = hls.find(msn)
        assert seg is not None, (msn, index)
        assert index < len(seg.parts) or seg.complete, (msn, index)
    assert hls.has(1, 3) and hls.has(2, None) and not hls.has(hls.next_msn + 1, 0)
