"""The event socket the consoles keep open on every page: ws[s]://host/api/v1/h5seventapi?session=<s>.

The client sends {"type":"keepalive"} every second; the server sends one JSON text frame per event (see
supervisor/events.py), only for the cameras the user's role may see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from supervisor.api.common import CLOSE_UNAUTHORIZED, CLOSE_UNSUPPORTED, Chapter, services, session_of
from supervisor.api.streams import _reject
from supervisor.events import EventBus
from supervisor.services import Services


async def h5seventapi(ws: WebSocket) -> None:
    svc = services(ws)
    user = await svc.auth.check(session_of(ws))
    if user is None:
        return await _reject(ws, CLOSE_UNAUTHORIZED, "session is missing, invalid or expired")
    bus = svc.events
    if bus is None:
        return await _reject(ws, CLOSE_UNSUPPORTED, "events are not available")
    sub = bus.subscribe(lambda token: svc.auth.sees(user, token))
    await ws.accept()

    async def drain() -> None:  # keepalives; returns when the client goes
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    reader = asyncio.create_task(drain())
    try:
        while not reader.done():
            getter = asyncio.create_task(sub.queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            await ws.send_text(json.dumps(getter.result()))
    except (WebSocketDisconnect, RuntimeError, OSError):  # OSError: uvicorn's ClientDisconnected
        pass
    finally:
        bus.unsubscribe(sub)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader


async def start(svc: Services) -> None:
    bus = svc.events = EventBus()
    if svc.recordings is not None:
        svc.recordings.notify = bus.publish
    bus.watch_sources(lambda: {t: r.online for t, r in svc.registry.sources.items()})


async def stop(svc: Services) -> None:
    if svc.events is not None:
        await svc.events.close()


routes = [WebSocketRoute("/api/v1/h5seventapi", h5seventapi)]
chapter = Chapter("events", routes, start=start, stop=stop)
