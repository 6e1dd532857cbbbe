"""The edge's side of the link: connect out to the centre, keep the link up, serve what the centre asks.

One task runs while cloud is enabled: connect (ws:// or wss:// to the centre's LINK_PATH), say hello with
the centre user's name and MD5 password (checked there exactly as Login checks them, lockout included),
then read. A keepalive goes every `keepalive` seconds; a centre silent for three of them is taken as gone.
A link that drops, a refused hello or a centre that cannot be reached is tried again with backoff (1 s
doubling to 30 s; a refused hello waits the longest, so a wrong password does not lock the user out).

The centre's calls and channels run in-process against this server's own app (local.py) with a session
of one of its Administrators, made when the link comes up; the source list is sent on connect and
whenever it changes (checked every second), so the centre's listing follows within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from supervisor.cloud import local
from supervisor.cloud.calls import CHANGES_SOURCES, FILES, FORWARDED, SOCKETS
from supervisor.cloud.link import Channel, Link
from supervisor.cloud.protocol import ProtocolError, Reply, control, parse_control
from supervisor.cloud.settings import CloudConf

if TYPE_CHECKING:
    from supervisor.services import Services

log = logging.getLogger("h5gate.cloud")

BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0
HELLO_TIMEOUT = 10.0
SOURCES_EVERY = 1.0
CLOUD_KIND = "H5_CLOUD"


class Refused(Exception):
    """The centre refused the hello (wrong user or password, a user without the Administrator role ...)."""


def _answer(status: int, code: str) -> Reply:
    return Reply(status, "application/json", json.dumps({"bStatus": False, "strCode": code}).encode())


class EdgeClient:
    def __init__(self, services: Services, conf: CloudConf) -> None:
        self.svc = services
        self.conf = conf
        self.online = False
        self.last_error = ""
        self.connects = 0
        self._task: asyncio.Task[None] | None = None
        self._session = ""
        self._sent_sources: list[dict[str, Any]] | None = None
        self._link: Link | None = None

    # -- control ------------------------------------------------------------------------------------
    def start(self) -> None:
        why = self.conf.usable
        if why:
            self.last_error = why
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.online = False
        if self._session:
            await self.svc.auth.logout(self._session)
            self._session = ""

    async def configure(self, conf: CloudConf) -> None:
        """New registration values (SetCloudInfo): the link is made afresh with them."""
        await self.stop()
        self.conf = conf
        self.last_error = ""
        self.start()

    # -- the link ------------------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = BACKOFF_MIN
        while True:
            started = time.monotonic()
            try:
                await self._connect_once()
                self.last_error = "link closed by the centre"
            except Refused as e:
                self.last_error = f"refused by the centre: {e}"
                delay = BACKOFF_MAX
            except (OSError, TimeoutError, ProtocolError, websockets.WebSocketException) as e:
                self.last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            finally:
                self.online = False
            if time.monotonic() - started > 2 * BACKOFF_MAX:
                delay = BACKOFF_MIN  # it was up a good while: this is a fresh failure
            wait = delay * random.uniform(0.8, 1.2)
            log.info("cloud: link to %s down (%s); next try in %.1fs", self.conf.url, self.last_error, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connect_once(self) -> None:
        conf = self.conf
        context = ssl.create_default_context() if conf.ssl else None
        async with connect(
            conf.url, ssl=context, max_size=None, compression=None, ping_interval=None, open_timeout=HELLO_TIMEOUT
        ) as ws:
            hello = control(
                "hello",
                user=conf.user,
                password=conf.password,
                servertoken=conf.server_token,
                servername=conf.server_name,
                keepalive=conf.keepalive,
                version=self.svc.version,
            )
            await ws.send(hello)
            first = await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT)
            if not isinstance(first, str):
                raise ProtocolError("the centre answered the hello with binary data")
            answer = parse_control(first)
            if answer["t"] == "refused":
                raise Refused(str(answer.get("reason", "no reason given")))
            if answer["t"] != "welcome":
                raise ProtocolError(f"unexpected answer to the hello: {answer['t']}")
            await self._serve(ws)

    async def _serve(self, ws: ClientConnection) -> None:
        link = Link(self.conf.server_token, ws.send)
        link.on_call = self._call
        link.on_open = self._open
        self._link = link
        self._sent_sources = None
        self.online = True
        self.connects += 1
        self.last_error = ""
        log.info("cloud: online with %s as %s", self.conf.url, self.conf.server_token)
        heard = time.monotonic()
        tasks = [asyncio.create_task(self._keepalive(ws, lambda: heard)), asyncio.create_task(self._sources(link))]
        try:
            async for message in ws:
                heard = time.monotonic()
                await link.dispatch(message)
        finally:
            link.close("the link to the centre closed")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _keepalive(self, ws: ClientConnection, heard: Any) -> None:
        every = max(1, self.conf.keepalive)
        while True:
            await asyncio.sleep(every)
            if time.monotonic() - heard() > 3 * every + 2:
                log.warning("cloud: the centre sent nothing for %ds: reconnecting", 3 * every + 2)
                await ws.close(1001, "keepalive timeout")
                return
            await ws.send(control("ping"))

    async def _sources(self, link: Link) -> None:
        while True:
            await self._send_sources(link)
            await asyncio.sleep(SOURCES_EVERY)

    def source_list(self) -> list[dict[str, Any]]:
        """What the centre lists of this edge's sources (its own cloud sources, if it is a centre too, stay out)."""
        listed = []
        for token, runtime in sorted(self.svc.registry.sources.items()):
            cfg = runtime.config
            if cfg.kind == CLOUD_KIND:
                continue
            recordings = self.svc.recordings
            rec = bool(cfg.record) or (recordings is not None and recordings.status(token).recording)
            listed.append({"token": token, "name": cfg.name, "online": runtime.online, "rec": rec, "kind": cfg.kind})
        return listed

    async def _send_sources(self, link: Link) -> None:
        current = self.source_list()
        if current != self._sent_sources:
            await link.send(control("sources", src=current))
            self._sent_sources = current

    # -- what the centre asks -------------------------------------------------------------------------
    async def _local_session(self) -> str:
        """A session of one of this server's Administrators for the centre's calls (made once, renewed by use)."""
        auth = self.svc.auth
        if self._session and await auth.check(self._session) is not None:
            return self._session
        admins = sorted(n for n, u in auth.users.items() if auth.kind_of(u) == "Administrator")
        if not admins:
            raise RuntimeError("this edge has no Administrator user to carry out the centre's calls")
        name = "admin" if "admin" in admins else admins[0]
        self._session = await auth.open_session(name)
        return self._session

    async def _call(self, path: str, query: list[tuple[str, str]]) -> Reply:
        if path not in FORWARDED:
            return _answer(403, f"{path[:64]} is not carried out for the centre")
        reply = await local.http_get(self.svc.app, f"/api/v1/{path}", query, await self._local_session())
        log.info("cloud: %s from the centre: %d", path, reply.status)
        if path in CHANGES_SOURCES:
            if self._link is not None:
                await self._send_sources(self._link)  # before the answer: the centre maps the new source first
        return reply

    async def _open(self, channel: Channel, path: str, query: list[tuple[str, str]]) -> None:
        if path.startswith(FILES) and ".." not in path.split("/"):
            await local.http_stream(self.svc.app, channel, path, query, await self._local_session())
        elif path in SOCKETS:
            await local.websocket(self.svc.app, channel, path, query, await self._local_session())
        else:
            await channel.close(4403, "not opened for the centre")
