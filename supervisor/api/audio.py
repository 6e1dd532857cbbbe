"""Audio listen (h5saudapi): a source's audio alone, for the vendor player's listen button or an MSE page.

`h5saudapi?token&session[&profile][&format=pcm|fmp4]`. The default form is what the vendor's
`H5sPlayerAudio` plays: binary messages of signed 16-bit little-endian mono PCM at 8000 Hz, each played
the moment it arrives. `format=fmp4` is for MSE: the MIME string (`audio/mp4; codecs="mp4a.40.2"`) as the
first binary message, an init segment holding only the audio track, then the audio fragments with a
timeline that starts at zero. Both start at the live edge (the GOP cache is history for a listener: the
vendor player would play all of it at once) and are fed from the hub, never from a new camera connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor.api.common import (
    CLOSE_BAD_REQUEST,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED,
    Chapter,
    services,
    session_of,
)
from supervisor.api.streams import _read_commands, _reject, open_live
from workers.audio_listen import AudioOnly, PcmDecoder, audio_track
from workers.hub import HubClosed, StreamHub

log = logging.getLogger("h5gate.audio")

FORMATS = ("pcm", "fmp4")


async def h5saudapi(ws: WebSocket) -> None:
    svc = services(ws)
    user = svc.auth.viewer(session_of(ws))
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
            with contextlib.suppress(TimeoutError, RuntimeError, ConnectionError):
                await asyncio.wait_for(ws.close(code=code, reason=reason[:120]), 2.0)
    except (WebSocketDisconnect, RuntimeError, ConnectionError):
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


routes = [WebSocketRoute("/api/v1/h5saudapi", h5saudapi)]
chapter = Chapter("audio", routes)
