"""h5saudapi: a source's audio alone, as the vendor's PCM and as audio-only fMP4, from a real camera's 440 Hz tone."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator

import av
import pytest
import websockets

from tests.browser import launch, new_page
from tests.tone import dominant, rms, samples_s16le
from tools.harness.camera import GstCamera
from tools.harness.gateway import Gateway
from workers.fmp4 import boxes, parse_fragment, parse_init

TONE = 440  # tools/gst_camera.py: audiotestsrc freq=440 behind every audio mount


@pytest.fixture(scope="module")
def tone_source(gateway: Gateway, camera: GstCamera) -> Iterator[str]:
    gateway.ok("AddSrcRTSP", token="aud440", name="Tone", url=camera.url("h264"), audio="true")
    try:
        gateway.wait_online("aud440")
        yield "aud440"
    finally:
        gateway.ok("DelSrc", token="aud440")


def aud_url(gw: Gateway, token: str, session: str | None = None, **params: str) -> str:
    return gw.ws_url(token, session, **params).replace("/h5swsapi?", "/h5saudapi?")


async def _collect(
    url: str, seconds: float, times: list[float] | None = None
) -> tuple[list[bytes], float, tuple[int | None, str]]:
    got: list[bytes] = []
    started = 0.0
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await ws.send("keepalive")  # what H5sPlayerAudio sends every second
            try:
                msg = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            except websockets.ConnectionClosed:
                break
            if isinstance(msg, bytes):
                if not got:
                    started = time.monotonic()
                got.append(msg)
                if times is not None:
                    times.append(time.monotonic())
        return got, started, (ws.close_code, ws.close_reason or "")


def collect(
    url: str, seconds: float, times: list[float] | None = None
) -> tuple[list[bytes], float, tuple[int | None, str]]:
    return asyncio.run(_collect(url, seconds, times))


async def _closed(url: str) -> tuple[int | None, str]:
    async with websockets.connect(url, compression=None) as ws:
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason or ""


def test_vendor_pcm_is_the_tone_in_real_time(gateway: Gateway, tone_source: str) -> None:
    """Binary messages of s16le mono 8 kHz PCM (what H5sPlayerAudio plays), in real time, holding 440 Hz."""
    t0 = time.monotonic()
    times: list[float] = []
    messages, started, close = collect(aud_url(gateway, tone_source), 5.0, times)
    assert messages and close[0] in (None, 1000), close
    assert started - t0 < 2.0, "the first audio comes from the live edge at once"
    pcm = b"".join(messages)
    assert all(len(m) % 2 == 0 for m in messages)
    samples = samples_s16le(pcm)
    counts = [len(m) // 2 for m in messages]
    # what came at once is the live edge, not the GOP cache (the test camera's GOP is 1 s)
    burst = sum(n for n, t in zip(counts, times, strict=True) if t - started < 0.2)
    assert burst < 8000 * 0.8, burst
    # then 8000 samples a second: no loss, no doubling (measured after the first second, over 3 s or more)
    later = [(t, sum(counts[: i + 1])) for i, t in enumerate(times) if t - started >= 1.0]
    (t1, n1), (t2, n2) = later[0], later[-1]
    assert t2 - t1 > 3.0 and 0.9 * 8000 <= (n2 - n1) / (t2 - t1) <= 1.1 * 8000, (n2 - n1, t2 - t1)
    block = samples[4000:12000]
    assert rms(block) > 1000, "the tone is audible, not silence"
    assert abs(dominant(block, 8000) - TONE) <= 10


def test_fmp4_audio_only_init_and_fragments(gateway: Gateway, tone_source: str) -> None:
    messages, _, close = collect(aud_url(gateway, tone_source, format="fmp4"), 3.0)
    assert close[0] in (None, 1000), close
    assert messages[0] == b'audio/mp4; codecs="mp4a.40.2"'
    init = parse_init(messages[1])
    assert [(t.handler, t.codec, t.timescale) for t in init.tracks.values()] == [("soun", "mp4a.40.2", 48000)]
    frags = []
    for msg in messages[2:]:
        kinds = [k for k, *_ in boxes(msg)]
        assert kinds == [b"moof", b"mdat"], kinds  # one fragment a message, audio only
        frags.append(parse_fragment(msg))
    assert len(frags) > 80  # 3 s of AAC at 48 kHz is about 140 frames
    assert all(f.track_id == 2 and f.samples == 1 for f in frags)
    # 1024 samples a frame; the source's owned timeline (workers/timeline.py) may round a frame by a tick
    assert all(abs(f.duration - 1024) <= 1 for f in frags), [f.duration for f in frags]
    assert frags[0].tfdt == 0, "the listener's timeline starts at zero"
    steps = [b.tfdt - a.tfdt - a.duration for a, b in zip(frags, frags[1:], strict=False)]
    assert all(abs(step) <= 1 for step in steps), ("no gap, no overlap", steps)
    # the bytes are a playable MP4: init + fragments decode to the tone
    with av.open(io.BytesIO(b"".join(messages[1:])), format="mp4") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        frames = [f for frame in container.decode(audio=0) for f in resampler.resample(frame)]
        pcm = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)
    samples = samples_s16le(pcm)
    assert len(samples) > 8000 * 2
    assert abs(dominant(samples[4000:12000], 8000) - TONE) <= 10


def test_refusals(gateway: Gateway, camera: GstCamera, tone_source: str) -> None:
    assert asyncio.run(_closed(aud_url(gateway, tone_source, session="nope")))[0] == 4401
    assert asyncio.run(_closed(aud_url(gateway, "no_such")))[0] == 4404
    assert asyncio.run(_closed(aud_url(gateway, tone_source, format="wav"))) == (4400, "format must be pcm or fmp4")
    assert asyncio.run(_closed(aud_url(gateway, tone_source, profile="zzz")))[0] == 4404
    gateway.ok("AddSrcRTSP", token="audnone", name="Mute", url=camera.url("h264_noaudio"))
    try:
        gateway.wait_online("audnone")
        assert asyncio.run(_closed(aud_url(gateway, "audnone"))) == (4415, "the source has no audio")
    finally:
        gateway.ok("DelSrc", token="audnone")


def test_chromium_mse_plays_the_audio(gateway: Gateway, tone_source: str) -> None:
    """An <audio> element fed by MSE from format=fmp4: Chromium accepts the MIME and init, and plays on."""
    url = aud_url(gateway, tone_source, format="fmp4")
    for browser in launch(["--autoplay-policy=no-user-gesture-required"]):
        for page in new_page(browser):
            page.goto(f"{gateway.base}/login")
            page.evaluate(
                """url => {
                    const audio = document.createElement('audio');
                    audio.id = 'listen';
                    document.body.appendChild(audio);
                    window.audErrors = [];
                    const ms = new MediaSource();
                    audio.src = URL.createObjectURL(ms);
                    const queue = [];
                    let sb = null;
                    const pump = () => { if (sb && !sb.updating && queue.length) sb.appendBuffer(queue.shift()); };
                    ms.addEventListener('sourceopen', () => {
                        const ws = new WebSocket(url);
                        ws.binaryType = 'arraybuffer';
                        let mime = null;
                        ws.onmessage = ev => {
                            if (mime === null) {
                                mime = new TextDecoder().decode(ev.data);
                                window.audMime = mime;
                                if (!MediaSource.isTypeSupported(mime)) window.audErrors.push('unsupported ' + mime);
                                sb = ms.addSourceBuffer(mime);
                                sb.addEventListener('updateend', pump);
                                sb.addEventListener('error', () => window.audErrors.push('sourcebuffer error'));
                                return;
                            }
                            queue.push(ev.data);
                            pump();
                        };
                    });
                    audio.addEventListener('error', () => window.audErrors.push('media error'));
                    audio.play().catch(e => window.audErrors.push('play: ' + e));
                }""",
                url,
            )
            page.wait_for_function("document.getElementById('listen').currentTime > 0.5", timeout=20000)
            first = page.evaluate("document.getElementById('listen').currentTime")
            time.sleep(2)
            state = page.evaluate(
                """() => ({t: document.getElementById('listen').currentTime, mime: window.audMime,
                          errors: window.audErrors})"""
            )
            assert state["t"] >= first + 1.5, (first, state)
            assert state["mime"] == 'audio/mp4; codecs="mp4a.40.2"' and state["errors"] == [], state
            assert page.page_errors == []  # type: ignore[attr-defined]
