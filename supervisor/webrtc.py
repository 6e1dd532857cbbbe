"""The WebRTC sidecar, supervised: start it, restart it when it dies or stops answering pings, feed it media.

The sidecar (workers/webrtc) does the WebRTC work in its own process, so SRTP, ICE and packetising never
stall this event loop. Its restarts and backoff are workers/supervise.py's, its process group
workers/child.py's. It asks for media over one Unix socket and gets the hub's fragments: one feed per
source profile, however many viewers watch it. The browser's signalling (H5Stream's h5srtcapi) is
supervisor/api/webrtc.py's; it opens and closes Sessions here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import workers
from supervisor.config import Settings
from supervisor.registry import Registry
from workers.child import Child
from workers.hub import HubClosed
from workers.playback import Command
from workers.supervise import Backoff, RunState, Stalled, Supervisor, Watchdog
from workers.webrtc import wire

log = logging.getLogger("h5gate.webrtc")

RESTART_MIN, RESTART_MAX = 0.5, 10.0
HEALTHY_SECONDS = 10.0  # a sidecar that lived this long restarts without backoff
PING_INTERVAL, PING_TIMEOUT = 2.0, 10.0
STARTUP_TIMEOUT = 60.0  # importing aiortc on a busy machine can take a while
ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
PACKAGE_ROOT = str(Path(workers.__file__).resolve().parent.parent)  # where `-m workers.webrtc` is found
PRIVATE_FEEDS = 1 << 30  # feed ids from here on are the supervisor's (playback), below the sidecar's


def parse_ice_servers(text: str) -> list[dict[str, Any]]:
    """webrtc_ice_servers: a JSON list of RTCIceServer objects, or plain comma-separated STUN/TURN URLs."""
    text = text.strip()
    if not text:
        return []
    servers: list[dict[str, Any]]
    if text.startswith("["):
        try:
            servers = json.loads(text)
        except ValueError as e:
            raise ValueError(f"webrtc_ice_servers is not valid JSON: {e}") from None
    else:
        servers = [{"urls": url.strip()} for url in text.split(",") if url.strip()]
    for server in servers:
        urls = server.get("urls") if isinstance(server, dict) else None
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not all(isinstance(u, str) and u.startswith(ICE_SCHEMES) for u in urls):
            raise ValueError(f"webrtc_ice_servers: each server needs urls starting with {', '.join(ICE_SCHEMES)}")
        extra = set(server) - {"urls", "username", "credential"}
        if extra or not all(isinstance(server.get(k, ""), str) for k in ("username", "credential")):
            raise ValueError("webrtc_ice_servers: only urls, username and credential (strings) are allowed")
    return servers


class PlaybackCommands(Protocol):
    """What a playback session's player commands go to (api/playback_sinks.WebRTCSink)."""

    def command(self, cmd: Command) -> None: ...


class Session:
    """One browser's signalling socket, from accept to close."""

    def __init__(self, peer_id: int, name: str) -> None:
        self.id = peer_id
        self.name = name
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # what the sidecar says about it
        self.send_lock = asyncio.Lock()
        self.opened = False  # the player sent "open"
        self.offer = ""
        self.offer_sent = False
        self.connected = False
        self.playback: PlaybackCommands | None = None  # where its H5_* commands go, for recordings
        self.on_push: Callable[[int, int, bytes], None] | None = None  # a publisher's FLV tags (type, ms, body)


class WebRTCService:
    """The sidecar process, its link, the feeds it asked for and the sessions it serves."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.ice_servers = parse_ice_servers(settings.webrtc_ice_servers)
        self.sessions: dict[int, Session] = {}
        self.total = 0
        self.ready = asyncio.Event()
        self.state = RunState()  # restarts and pid of the sidecar
        self.child = Child(self.state)
        self.supervisor = Supervisor(
            "webrtc sidecar",
            self._run_once,
            state=self.state,
            backoff=Backoff(RESTART_MIN, RESTART_MAX),
            halt=self.child.stop,
            on_end=lambda healthy: self._down("WebRTC service restarting, reconnect"),
            logger=log,
            level=logging.WARNING,
        )
        self._link: wire.Link | None = None
        self._feeds: dict[int, asyncio.Task[None]] = {}
        self._next_peer = 1
        self._next_private_feed = PRIVATE_FEEDS
        self._pongs = Watchdog(PING_TIMEOUT)

    # -- the sidecar process --------------------------------------------------------------------------
    def start(self) -> None:
        self.supervisor.start()

    async def stop(self) -> None:
        await self.supervisor.stop()
        self._down("WebRTC service stopped")

    def _sidecar_config(self) -> dict[str, Any]:
        s = self.settings
        addresses = [a.strip() for a in s.webrtc_addresses.split(",") if a.strip()]
        return {
            "public_ip": s.webrtc_public_ip.strip(),
            "addresses": addresses,
            "port_min": s.webrtc_port_min,
            "port_max": s.webrtc_port_max,
        }

    async def _run_once(self) -> bool:
        """One sidecar run, until its link is lost; healthy if it lived long enough to reset the backoff."""
        started = time.monotonic()
        parent, theirs = socket.socketpair()  # ours, and the one the sidecar inherits
        path = os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        try:
            proc = await self.child.spawn(
                sys.executable,
                "-m",
                "workers.webrtc",
                "--fd",
                str(theirs.fileno()),
                "--config",
                json.dumps(self._sidecar_config()),
                "--log-level",
                self.settings.log_level,
                pass_fds=(theirs.fileno(),),
                env=env,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        link = wire.Link(writer)
        pinger = asyncio.create_task(self._ping(link))
        try:
            while True:
                kind, channel, payload = await wire.read_frame(reader)
                if kind == wire.PUSH:  # what a browser publishes (h5srtcpushapi): ms time, FLV tag type, body
                    session = self.sessions.get(channel)
                    if session is not None and session.on_push is not None and len(payload) > 5:
                        session.on_push(payload[4], int.from_bytes(payload[:4], "big"), payload[5:])
                    continue
                if kind != wire.CONTROL:
                    raise wire.ProtocolError("the sidecar sent media")
                self._on_control(link, wire.decode_control(payload))
        except (asyncio.IncompleteReadError, ConnectionError, wire.ProtocolError) as e:
            if not self.supervisor.stopping:
                log.warning("webrtc sidecar pid %d: link lost (%s)", proc.pid, type(e).__name__)
        finally:
            pinger.cancel()
            link.close()
            await self.child.reap()
            log.info("webrtc sidecar pid %d exited with %s", proc.pid, proc.returncode)
        return time.monotonic() - started > HEALTHY_SECONDS

    async def _ping(self, link: wire.Link) -> None:
        """A sidecar that does not start, or stops answering (hung, loop stalled), is killed and restarted."""
        try:
            await Watchdog(STARTUP_TIMEOUT).within(self.ready.wait())
        except Stalled:
            log.warning("webrtc sidecar: not ready after %.0fs, killing it", STARTUP_TIMEOUT)
            await self.child.stop()
            return
        self._pongs.feed()
        n = 0
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if self._pongs.expired:
                log.warning("webrtc sidecar: no answer for %.0fs, killing it", PING_TIMEOUT)
                await self.child.stop()
                return
            n += 1
            link.send("ping", n=n)

    def _down(self, reason: str) -> None:
        """The sidecar is gone: every session ends (players reconnect), every feed stops."""
        self.ready.clear()
        self._link = None
        for task in self._feeds.values():
            task.cancel()
        self._feeds.clear()
        for session in self.sessions.values():
            session.inbox.put_nowait({"op": "closed", "code": 1013, "reason": reason})

    def _on_control(self, link: wire.Link, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "pong":
            self._pongs.feed()
        elif op == "ready":
            self._link = link
            self.ready.set()
            log.info("webrtc sidecar pid %s ready", self.state.pid)
        elif op == "subscribe":
            feed_id = int(message["feed"])
            self._feeds[feed_id] = asyncio.create_task(
                self._feed(link, feed_id, str(message["token"]), str(message["profile"]))
            )
        elif op == "unsubscribe":
            task = self._feeds.pop(int(message["feed"]), None)
            if task is not None:
                task.cancel()
        elif op in ("offer", "answer", "connected", "closed"):
            session = self.sessions.get(message.get("peer", -1))
            if session is not None:
                session.inbox.put_nowait(message)
        else:
            log.warning("webrtc sidecar sent an unknown op: %s", op[:40])

    async def _feed(self, link: wire.Link, feed_id: int, token: str, profile: str) -> None:
        """The hub's init segments and fragments for one (token, profile), from its GOP cache on."""
        runtime = self.registry.get(token)
        stream = runtime.stream(profile) if runtime is not None else None
        if stream is None:
            link.send("feed_end", feed=feed_id, reason=f"unknown source: {token}")
            return
        hub = stream.acquire()
        try:
            cursor = hub.cursor()
            cursor.slow_seconds = self.settings.slow_viewer_seconds
            gen = None
            while True:
                frag = await cursor.next(timeout=30.0)
                if frag is None:
                    continue
                if frag.gen != gen:
                    init = hub.inits.get(frag.gen)
                    if init is None:
                        continue
                    link.send_media(wire.INIT, feed_id, init.data)
                    gen = frag.gen
                link.send_media(wire.FRAGMENT, feed_id, frag.data)
                await link.drain()
        except HubClosed:
            link.send("feed_end", feed=feed_id, reason="source deleted")
        except ConnectionError:
            pass
        finally:
            stream.release()

    # -- sessions -------------------------------------------------------------------------------------
    async def wait_ready(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            return False
        return self._link is not None

    def open(self, token: str, profile: str, codec: str, audio: bool, private_feed: int | None = None) -> Session:
        """Register a session (it counts from now on) and have the sidecar make its offer.

        A live session shares the sidecar's feed of (token, profile); a playback session gets a private
        feed, which the supervisor fills itself (send_media).
        """
        assert self._link is not None
        peer_id = self._next_peer
        self._next_peer += 1
        name = token if profile in ("", "main") else f"{token}/{profile}"
        session = Session(peer_id, name)
        self.sessions[peer_id] = session
        self.total += 1
        self._link.send("open", peer=peer_id, token=token, profile=profile, codec=codec, audio=audio, feed=private_feed)
        return session

    def open_push(self, token: str, on_push: Callable[[int, int, bytes], None], audio: bool) -> Session:
        """Register a browser publisher; the sidecar answers its offer and sends its media back as PUSH frames
        (FLV tag type 9 video, 8 audio, the time in ms, the tag body)."""
        assert self._link is not None
        peer_id = self._next_peer
        self._next_peer += 1
        session = Session(peer_id, token)
        session.on_push = on_push
        self.sessions[peer_id] = session
        self._link.send("push_open", peer=peer_id, token=token, audio=audio)
        return session

    def private_feed(self) -> int:
        self._next_private_feed += 1
        return self._next_private_feed

    async def send_media(self, feed_id: int, kind: int, data: bytes) -> None:
        link = self._link
        if link is not None:
            link.send_media(kind, feed_id, data)
            await link.drain()

    def signal(self, session: Session, message: dict[str, Any]) -> None:
        if self._link is not None:
            self._link.send("signal", peer=session.id, msg=message)

    def close(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        if self._link is not None:
            self._link.send("close", peer=session.id)

    def iceserver_message(self) -> dict[str, Any]:
        return {
            "type": "iceserver",
            "iceServers": self.ice_servers,
            "iceTransportPolicy": "relay" if self.settings.webrtc_relay_only else "all",
        }
