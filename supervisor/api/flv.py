"""HTTP-FLV out, for the flv.js players many H5Stream pages use: /live/<token>.flv on the main port and on
flv_port (8090), both behind the session (?session=, `Authorization: token`, or the console's cookie).

Each client holds the stream as a WebSocket viewer does (an on-demand source starts for it) and reads the
hub through its own cursor from the newest keyframe on, so the first picture comes at once. A client that
falls behind the ring is moved to the newest keyframe; one whose socket takes no bytes for send_timeout
is dropped, so a stalled player holds no memory and slows no one.

The flv_port listener is a second uvicorn server in the same event loop, serving only this route; its
failure to listen is logged and the rest of h5gate runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from supervisor.api.common import TOKEN_RE, ApiError, Chapter, fail, require_user, services
from supervisor.registry import Stream
from supervisor.services import Services
from workers import flv
from workers.hub import Cursor, HubClosed

log = logging.getLogger("h5gate.flv")

READY_TIMEOUT = 10.0  # seconds a request waits for an offline source before it is answered 503


class FlvStream(Response):
    """The streaming answer of one HTTP-FLV client (its own ASGI call, so each send can have a deadline)."""

    def __init__(self, stream: Stream, writer: flv.FlvWriter, cursor: Cursor, send_timeout: float) -> None:
        super().__init__(media_type="video/x-flv")
        self.stream = stream
        self.writer = writer
        self.cursor = cursor
        self.send_timeout = send_timeout
        self.name = stream.hub.name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client") or ("?", 0)
        peer = f"{client[0]}:{client[1]}"
        log.info("%s: FLV client %s connected", self.name, peer)
        why = "client left"
        sender = asyncio.create_task(self._pump(send))
        leaving = asyncio.create_task(_disconnected(receive))
        try:
            done, _ = await asyncio.wait({sender, leaving}, return_when=asyncio.FIRST_COMPLETED)
            if sender in done:
                error = sender.exception()
                if isinstance(error, TimeoutError):
                    why = f"client took no data for {self.send_timeout:.0f}s: dropped"
                elif isinstance(error, HubClosed):
                    why = "source deleted"
                elif error is not None and not isinstance(error, OSError):
                    why = f"error: {error}"
                    log.error("%s: FLV stream failed", self.name, exc_info=error)
        finally:
            for task in (sender, leaving):
                task.cancel()
            await asyncio.gather(sender, leaving, return_exceptions=True)
            self.stream.release()
            log.info("%s: FLV client %s ended: %s (%d skips)", self.name, peer, why, self.cursor.skips)

    async def _pump(self, send: Send) -> None:
        headers = [
            (b"content-type", b"video/x-flv"),
            (b"cache-control", b"no-store"),
            (b"access-control-allow-origin", b"*"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body: AsyncIterator[bytes] = flv.live(self.stream.hub, self.writer, self.cursor)
        async for chunk in body:
            await asyncio.wait_for(
                send({"type": "http.response.body", "body": chunk, "more_body": True}), self.send_timeout
            )


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def live_flv(request: Request) -> Response:
    """GET /live/<token>.flv"""
    try:
        user = await require_user(request)
    except ApiError as e:
        return fail(e.code, e.status)
    token = request.path_params["token"]
    svc = services(request)
    visible = TOKEN_RE.match(token) and svc.auth.sees(user, token)  # a camera not of the user's role is absent
    runtime = svc.registry.get(token) if visible else None
    if runtime is None:
        return fail(f"no such source: {token[:64]}", 404)
    profile = request.query_params.get("profile", "main") or "main"
    stream = runtime.stream(profile)
    if stream is None:
        return fail(f"unknown profile: {profile[:64]}", 404)
    hub = stream.acquire()
    try:
        try:
            ready = await hub.wait_ready(READY_TIMEOUT)
        except HubClosed:
            ready = False
        latest = hub.latest_keyframe() if ready else None
        if latest is None:
            why = stream.process.state.last_error or "no data yet"
            stream.release()
            return fail(f"source offline: {why}", 503)
        init, frag = latest
        writer = flv.FlvWriter(init, frag.gen)
    except flv.Unplayable as e:
        stream.release()
        return fail(str(e), 415)
    except BaseException:
        stream.release()
        raise
    return FlvStream(stream, writer, Cursor(hub, svc.settings.slow_viewer_seconds), svc.settings.send_timeout)


routes = [Route("/live/{token}.flv", live_flv)]


class _SideServer(uvicorn.Server):
    """uvicorn in the main server's loop: the main server owns the signals, so this one installs none."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class FlvListener:
    """The flv_port server and the task that runs it."""

    def __init__(self, server: _SideServer, task: asyncio.Task[None]) -> None:
        self.server = server
        self.task = task

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.gather(self.task, return_exceptions=True)


async def start(svc: Services) -> None:
    settings = svc.settings
    if not settings.flv_port:
        log.info("HTTP-FLV port off (flv_port = 0); /live/<token>.flv stays on the main port")
        return
    app = Starlette(
        routes=list(routes),
        middleware=[Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET"])],
    )
    app.state.services = svc
    try:
        v6 = ":" in settings.host
        family = socket.AF_INET6 if v6 else socket.AF_INET
        dual = v6 and settings.host in ("::", "[::]") and socket.has_dualstack_ipv6()
        address = (settings.host.strip("[]"), settings.flv_port)
        sock = socket.create_server(address, family=family, backlog=256, dualstack_ipv6=dual)
    except OSError as e:
        log.error("HTTP-FLV cannot listen on %s:%d: %s", settings.host, settings.flv_port, e.strerror or e)
        return
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning", timeout_graceful_shutdown=1)
    server = _SideServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="flv server")
    svc.flv = FlvListener(server, task)
    log.info("HTTP-FLV listening on %s:%d", settings.host, settings.flv_port)


async def stop(svc: Services) -> None:
    if svc.flv is not None:
        await svc.flv.stop()
        svc.flv = None


chapter = Chapter("flv", routes, start=start, stop=stop)
