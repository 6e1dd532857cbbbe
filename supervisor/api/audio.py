"""Audio listen (h5saudapi) and talk-back (h5saudbackapi): the vendor player's listen and microphone buttons.

`h5saudapi?token&session[&profile][&format=pcm|fmp4]`. The default form is what the vendor's
`H5sPlayerAudio` plays: binary messages of signed 16-bit little-endian mono PCM at 8000 Hz, each played
the moment it arrives. `format=fmp4` is for MSE: the MIME string (`audio/mp4; codecs="mp4a.40.2"`) as the
first binary message, an init segment holding only the audio track, then the audio fragments with a
timeline that starts at zero. Both start at the live edge (the GOP cache is history for a listener: the
vendor player would play all of it at once) and are fed from the hub, never from a new camera connection.

`h5saudbackapi?token&session[&samplerate=48000]` takes what the vendor's `H5sPlayerAudBack` sends: binary
messages of signed 16-bit mono PCM at `samplerate` (text messages are keep-alives), and plays them on the
camera's speaker through its ONVIF audio back-channel (workers/talkback.py): one RTSP session per talker,
opened when the socket opens, one talker per camera at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor import errors
from supervisor.api.common import (
    CLOSE_BAD_REQUEST,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN,
    CLOSE_UNSUPPORTED,
    TOKEN_RE,
    Chapter,
    services,
    session_of,
)
from supervisor.api.streams import _read_commands, _reject, open_live
from workers.audio_listen import AudioOnly, PcmDecoder, audio_track
from workers.credentials import strip_credentials, with_credentials
from workers.hub import HubClosed, StreamHub
from workers.rtsp.client import RtspError
from workers.talkback import Talkback

log = logging.getLogger("h5gate.audio")

FORMATS = ("pcm", "fmp4")


async def h5saudapi(ws: WebSocket) -> None:
    svc = services(ws)
    user = await svc.auth.viewer(session_of(ws))
    if user is None:
        return await _reject(ws, CLOSE_UNAUTHORIZED, "session is missing, invalid or expired")
    form = (ws.query_params.get("format") or "pcm").lower()
    if form not in FORMATS:
        return await _reject(ws, CLOSE_BAD_REQUEST, "format must be pcm or fmp4")
    stream = await open_live(ws, user)
    if stream is None:
        return
    hub = stream.hub
    client = ws.client.host if ws.client else "?"
    reader: asyncio.Task[None] | None = None
    sender: asyncio.Task[tuple[int, str]] | None = None
    try:
        if hub.init is None or audio_track(hub.init) is None:
            await ws.close(code=CLOSE_UNSUPPORTED, reason="the source has no audio")
            return
        log.info("%s: listener %s connected (%s)", hub.name, client, form)
        reader = asyncio.create_task(_read_commands(ws))
        sender = asyncio.create_task(_send_audio(ws, hub, form == "fmp4"))
        done, _ = await asyncio.wait({reader, sender}, return_when=asyncio.FIRST_COMPLETED)
        if sender in done and not sender.cancelled() and sender.exception() is None:
            code, reason = sender.result()
            with contextlib.suppress(TimeoutError, RuntimeError, OSError):
                await asyncio.wait_for(ws.close(code=code, reason=reason[:120]), 2.0)
    except (WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
        pass
    finally:
        tasks = [t for t in (reader, sender) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stream.release()
        if tasks:
            log.info("%s: listener %s left", hub.name, client)


async def _send_audio(ws: WebSocket, hub: StreamHub, fmp4: bool) -> tuple[int, str]:
    """Audio fragments from the live edge on; returns the close code and reason when the stream ends."""
    cursor = hub.cursor()
    cursor.seq = hub.next_seq  # the live edge: a listener wants now, not the cached GOP
    gen = None
    audio: AudioOnly | None = None
    decoder: PcmDecoder | None = None
    sent_mime = False
    shift_us = end_us = 0
    fresh = False  # a new run whose first audio fragment sets the shift
    try:
        while True:
            frag = await cursor.next()
            if frag is None or frag.video:
                continue
            if frag.gen != gen:
                init = hub.inits.get(frag.gen)
                if init is None:
                    continue
                gen = frag.gen
                try:
                    audio = AudioOnly(init)
                    if fmp4:
                        head = audio.init_segment()
                        if not sent_mime:
                            await ws.send_bytes(audio.mime.encode("ascii"))
                            sent_mime = True
                        await ws.send_bytes(head)
                    else:
                        decoder = PcmDecoder(audio)
                except ValueError as e:
                    return CLOSE_UNSUPPORTED, str(e)
                fresh = True
            assert audio is not None
            if not fmp4:
                assert decoder is not None
                pcm = decoder.decode(frag.data)
                if pcm:
                    await ws.send_bytes(pcm)
                continue
            start_us = int(frag.dts * 1_000_000)
            if fresh:
                shift_us, fresh = start_us - end_us, False
            data = audio.fragment(frag.rebased(shift_us), frag.info)
            end_us = max(end_us, int(frag.end * 1_000_000) - shift_us)
            await ws.send_bytes(data)
    except HubClosed:
        return 1000, "source deleted"


CLOSE_BUSY = 4409  # another talker has the camera's speaker
CLOSE_DEVICE = 4502  # the camera refused or dropped the back-channel
MAX_TALK_MESSAGE = 192_000  # bytes: one second at 96 kHz; the vendor player sends 2 kB (1024 samples)
_talking: set[str] = set()  # tokens whose speaker is in use (one server per process)


async def _talk_url(ws: WebSocket, token: str) -> str:
    """The camera's RTSP URL with its credentials, for an RTSP or ONVIF source; ValueError if it has none."""
    svc = services(ws)
    runtime = svc.registry.get(token)
    assert runtime is not None
    cfg = runtime.config
    resolvers = svc.registry.url_resolvers
    if cfg.kind == "H5_STREAM":
        url = with_credentials(cfg.url, cfg.user, cfg.password)
    elif cfg.kind in resolvers:
        url = await resolvers[cfg.kind](cfg, "main")
    else:
        url = ""
    if not url.lower().startswith("rtsp://"):
        raise ValueError("talk-back needs an RTSP or ONVIF camera source")
    return url


async def h5saudbackapi(ws: WebSocket) -> None:
    svc = services(ws)
    user = await svc.auth.check(session_of(ws))  # a real login: anonymous viewers do not speak through cameras
    if user is None:
        return await _reject(ws, CLOSE_UNAUTHORIZED, "session is missing, invalid or expired")
    token = ws.query_params.get("token", "")
    if not (TOKEN_RE.match(token) and svc.auth.sees(user, token) and svc.registry.get(token) is not None):
        return await _reject(ws, CLOSE_UNKNOWN, f"unknown token: {token[:64]}")
    rate_text = ws.query_params.get("samplerate") or "48000"
    if not rate_text.isdigit() or not 8000 <= int(rate_text) <= 192000:
        return await _reject(ws, CLOSE_BAD_REQUEST, "samplerate must be a whole number from 8000 to 192000")
    try:
        url = await _talk_url(ws, token)
    except (ValueError, errors.DomainError) as e:
        return await _reject(ws, CLOSE_UNSUPPORTED, str(e))
    if token in _talking:
        return await _reject(ws, CLOSE_BUSY, "another user is talking through this camera")
    _talking.add(token)
    talk = Talkback(url, int(rate_text), timeout=svc.settings.rtsp_timeout)
    client = ws.client.host if ws.client else "?"
    try:
        try:
            await talk.open()
        except RtspError as e:
            log.info("%s: talk-back from %s refused: %s", token, client, e)
            return await _reject(ws, CLOSE_DEVICE, f"camera: {e}")
        await ws.accept()
        log.info("%s: talk-back from %s to %s (%s)", token, client, strip_credentials(url), talk.encoding)
        code, reason = await _talk(ws, talk)
        if code:
            with contextlib.suppress(TimeoutError, RuntimeError, OSError):
                await asyncio.wait_for(ws.close(code=code, reason=reason), 2.0)
    except (WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
        pass
    finally:
        _talking.discard(token)
        await talk.close()
        log.info("%s: talk-back from %s ended (%d packets sent, %d dropped)", token, client, talk.packets, talk.dropped)


async def _talk(ws: WebSocket, talk: Talkback) -> tuple[int, str]:
    """Browser PCM to the camera until either side ends; the close code and reason for the browser (0: none)."""
    assert talk.client is not None
    camera_gone = talk.client.closed
    while True:
        receive: asyncio.Future[Any] = asyncio.ensure_future(ws.receive())
        waiters: set[asyncio.Future[Any]] = {receive, camera_gone}
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if receive not in done:
            receive.cancel()
            return CLOSE_DEVICE, f"camera: {camera_gone.result()}"[:120]
        message = receive.result()
        if message["type"] == "websocket.disconnect":
            return 0, ""
        data = message.get("bytes")
        if data is None:
            continue  # "keepalive" or any other text
        if len(data) > MAX_TALK_MESSAGE:
            return CLOSE_BAD_REQUEST, "audio message too large"
        talk.feed(data)


routes = [
    WebSocketRoute("/api/v1/h5saudapi", h5saudapi),
    WebSocketRoute("/api/v1/h5saudbackapi", h5saudbackapi),
]
chapter = Chapter("audio", routes)
