"""h5saudbackapi: browser PCM reaches a real ONVIF back-channel (GStreamer's ONVIF RTSP server) as G.711
that decodes to the tone that was sent, from a WebSocket client and from a Chromium page's WebAudio."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.browser import launch, new_page
from tests.tone import dominant, rms
from tools.harness.camera import GstCamera, wait_until
from tools.harness.gateway import Gateway
from workers import g711


@pytest.fixture(scope="module")
def speaker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GstCamera, Path]]:
    """A camera with an ONVIF audio back-channel that records what its speaker gets."""
    folder = tmp_path_factory.mktemp("speaker")
    with GstCamera(backchannel_dir=str(folder)) as cam:
        yield cam, folder


@pytest.fixture(scope="module")
def talk_source(gateway: Gateway, speaker: tuple[GstCamera, Path]) -> Iterator[str]:
    cam, _ = speaker
    gateway.ok("AddSrcRTSP", token="talk", name="Door", url=cam.url("backchannel"), audio="false")
    gateway.ok("AddSrcRTSP", token="talka", name="Gate", url=cam.url("backchannel_pcma"), audio="false")
    try:
        yield "talk"
    finally:
        gateway.ok("DelSrc", token="talk")
        gateway.ok("DelSrc", token="talka")


def back_url(gw: Gateway, token: str, session: str | None = None, **params: str) -> str:
    return gw.ws_url(token, session, **params).replace("/h5swsapi?", "/h5saudbackapi?")


def sine(freq: float, rate: int, start: int, count: int, amplitude: float = 0.4) -> bytes:
    """Int16 PCM the way H5sPlayerAudBack makes it (float x 32767)."""
    return struct.pack(
        f"<{count}h",
        *(int(32767 * amplitude * math.sin(2 * math.pi * freq * (start + i) / rate)) for i in range(count)),
    )


async def _talk(url: str, freq: float, rate: int, seconds: float) -> tuple[int | None, str]:
    async with websockets.connect(url, compression=None) as ws:
        t0 = time.monotonic()
        sent = 0
        while sent < rate * seconds:
            await ws.send(sine(freq, rate, sent, 1024))  # 1024 samples a message, as the vendor player
            sent += 1024
            await asyncio.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        await ws.send("keepalive")
        await asyncio.sleep(0.3)
    return ws.close_code, ws.close_reason or ""


async def _closed(url: str, hold: float = 10.0) -> tuple[int | None, str]:
    async with websockets.connect(url, compression=None) as ws:
        try:
            await asyncio.wait_for(ws.recv(), hold)
        except (websockets.ConnectionClosed, TimeoutError):
            pass
        return ws.close_code, ws.close_reason or ""


def recorded(folder: Path, name: str, encoding: str, after: int = 0) -> list[int]:
    data = (folder / name).read_bytes()[after:]
    return g711.decode(data, encoding)


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def test_ws_client_tone_arrives_as_pcmu(gateway: Gateway, talk_source: str, speaker: tuple[GstCamera, Path]) -> None:
    _, folder = speaker
    before = size(folder / "backchannel.ulaw")
    code, reason = asyncio.run(_talk(back_url(gateway, talk_source, samplerate="48000"), 1000, 48000, 3.0))
    assert code in (1000, None), (code, reason)
    assert wait_until(lambda: size(folder / "backchannel.ulaw") - before >= 8000 * 2.5, 5)
    samples = recorded(folder, "backchannel.ulaw", "PCMU", before)
    # 3 s at 8 kHz (the resampler holds back a few ms): nothing lost, nothing doubled
    assert 8000 * 2.9 <= len(samples) <= 8000 * 3.05, len(samples)
    block = samples[4000:12000]
    assert rms(block) > 0.3 * 32767 * 0.4, "the tone arrives at its level"
    assert abs(dominant(block, 8000) - 1000) <= 10
    log = gateway.log()
    assert "talk: talk-back from 127.0.0.1 to rtsp://127.0.0.1" in log and "(PCMU)" in log


def test_44100_input_is_resampled(gateway: Gateway, talk_source: str, speaker: tuple[GstCamera, Path]) -> None:
    """A browser whose AudioContext runs at 44.1 kHz says so; the pitch at the camera is still right."""
    _, folder = speaker
    before = size(folder / "backchannel.ulaw")
    asyncio.run(_talk(back_url(gateway, talk_source, samplerate="44100"), 600, 44100, 2.0))
    assert wait_until(lambda: size(folder / "backchannel.ulaw") - before >= 8000 * 1.8, 5)
    samples = recorded(folder, "backchannel.ulaw", "PCMU", before)
    assert abs(dominant(samples[2000:10000], 8000) - 600) <= 10


def test_chromium_page_microphone_tone_arrives_as_pcma(
    gateway: Gateway, talk_source: str, speaker: tuple[GstCamera, Path]
) -> None:
    """A page does what H5sPlayerAudBack does (WebAudio, ScriptProcessor of 1024, float x 32767 as Int16)
    with an OscillatorNode as its microphone; the A-law back-channel records the same 700 Hz."""
    _, folder = speaker
    before = size(folder / "backchannel_pcma.alaw")
    url = back_url(gateway, "talka", samplerate="48000")
    for browser in launch(["--autoplay-policy=no-user-gesture-required"]):
        for page in new_page(browser):
            page.goto(f"{gateway.base}/login")
            page.evaluate(
                """url => {
                    const ctx = new AudioContext({sampleRate: 48000});
                    const osc = new OscillatorNode(ctx, {type: 'sine', frequency: 700});
                    const gain = new GainNode(ctx, {gain: 0.4});
                    const proc = ctx.createScriptProcessor(1024, 1, 1);
                    const ws = new WebSocket(url);
                    ws.binaryType = 'arraybuffer';
                    window.talk = {sent: 0, open: false, closed: null, rate: ctx.sampleRate};
                    ws.onopen = () => { window.talk.open = true; };
                    ws.onclose = ev => { window.talk.closed = ev.code + ' ' + ev.reason; };
                    proc.onaudioprocess = ev => {
                        const input = ev.inputBuffer.getChannelData(0);
                        const out = new Int16Array(input.length);
                        for (let i = 0; i < input.length; i++) out[i] = 32767 * Math.min(1, input[i]);
                        if (window.talk.open && ws.readyState === 1) { ws.send(out); window.talk.sent++; }
                    };
                    osc.connect(gain).connect(proc).connect(ctx.destination);
                    osc.start();
                    ctx.resume();
                    window.talkStop = () => { proc.disconnect(); ws.close(); };
                }""",
                url,
            )
            page.wait_for_function("window.talk.sent >= 140", timeout=20000)  # 3 s of 1024-sample frames
            state = page.evaluate("window.talk")
            page.evaluate("window.talkStop()")
            assert state["rate"] == 48000 and state["closed"] is None, state
            assert page.page_errors == []  # type: ignore[attr-defined]
    assert wait_until(lambda: size(folder / "backchannel_pcma.alaw") - before >= 8000 * 2.5, 5)
    samples = recorded(folder, "backchannel_pcma.alaw", "PCMA", before)
    block = samples[4000:12000]
    assert rms(block) > 0.3 * 32767 * 0.4
    assert abs(dominant(block, 8000) - 700) <= 10


def test_refusals(gateway: Gateway, camera: GstCamera, talk_source: str) -> None:
    assert asyncio.run(_closed(back_url(gateway, talk_source, session="nope")))[0] == 4401
    assert asyncio.run(_closed(back_url(gateway, "no_such")))[0] == 4404
    bad_rate = asyncio.run(_closed(back_url(gateway, talk_source, samplerate="48k")))
    assert bad_rate == (4400, "samplerate must be a whole number from 8000 to 192000")
    assert asyncio.run(_closed(back_url(gateway, "demo"))) == (4415, "talk-back needs an RTSP or ONVIF camera source")
    # a camera without the ONVIF back-channel: the plain GStreamer server answers 551 to the Require header
    gateway.ok("AddSrcRTSP", token="nospeaker", name="Plain", url=camera.url("h264"), audio="false")
    try:
        code, reason = asyncio.run(_closed(back_url(gateway, "nospeaker")))
        assert (code, reason) == (4502, "camera: the camera has no ONVIF audio back-channel (551 Option not supported)")
    finally:
        gateway.ok("DelSrc", token="nospeaker")

    async def two_talkers() -> tuple[int | None, str]:
        async with websockets.connect(back_url(gateway, talk_source), compression=None) as first:
            await first.send(sine(440, 48000, 0, 1024))
            second = await _closed(back_url(gateway, talk_source), hold=5)
            await first.send(sine(440, 48000, 1024, 1024))
            assert first.close_code is None  # the first talker is not disturbed
            return second

    assert asyncio.run(two_talkers()) == (4409, "another user is talking through this camera")
    # once the first has gone (the server notices its close a moment later), the speaker is free again
    deadline = time.monotonic() + 5
    while True:
        try:
            assert asyncio.run(_talk(back_url(gateway, talk_source), 440, 48000, 0.3))[0] in (1000, None)
            break
        except websockets.ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 4409 and time.monotonic() < deadline, e
            time.sleep(0.2)
