"""The sidecar's main loop: frames from the supervisor in, feeds and peers managed, answers out.

The supervisor owns sessions, authentication and the hub; the sidecar owns RTCPeerConnections and the
CPU they cost (SRTP, ICE, packetising, Opus). It asks for a feed when the first peer of a (token, profile)
arrives and lets it go a little after the last one leaves, so a reconnecting player finds the GOP cached.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from workers.webrtc import wire
from workers.webrtc.feed import Feed, FeedEnded
from workers.webrtc.peer import CLOSE_NORMAL, Peer
from workers.webrtc.push import PushPeer

log = logging.getLogger("h5gate.webrtc")

FEED_LINGER = 5.0  # seconds a feed without peers is kept, for players that reconnect


@dataclass
class SidecarConfig:
    public_ip: str = ""
    addresses: list[str] = field(default_factory=list)
    port_min: int = 0
    port_max: int = 0


class Sidecar:
    def __init__(self, reader: asyncio.StreamReader, link: wire.Link, config: SidecarConfig) -> None:
        self.reader = reader
        self.link = link
        self.config = config
        self.feeds: dict[tuple[str, str], Feed] = {}
        self.feeds_by_id: dict[int, Feed] = {}
        self.peers: dict[int, Peer] = {}
        self.pushes: dict[int, PushPeer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_feed = 1

    async def run(self) -> None:
        """Until the supervisor goes away (then the sidecar has no reason to live)."""
        self.link.send("ready")
        try:
            while True:
                kind, channel, payload = await wire.read_frame(self.reader)
                if kind == wire.CONTROL:
                    try:
                        self._on_control(wire.decode_control(payload))
                    except (KeyError, TypeError, ValueError, wire.ProtocolError):
                        log.exception("bad control message from the supervisor skipped")
                    continue
                feed = self.feeds_by_id.get(channel)
                if feed is None:
                    continue
                try:
                    if kind == wire.INIT:
                        feed.on_init(payload)
                    else:
                        feed.on_fragment(payload)
                except FeedEnded as e:
                    log.warning("%s: %s; closing its WebRTC viewers", feed.name, e)
                    self._end_feed(feed, str(e))
                except (ValueError, IndexError, StopIteration, AssertionError) as e:
                    log.warning("%s: unreadable media from the hub skipped: %s", feed.name, e)
        except (asyncio.IncompleteReadError, ConnectionError):
            log.info("supervisor closed the link, sidecar exiting")
        finally:
            for peer in list(self.peers.values()):
                peer.close(CLOSE_NORMAL, "WebRTC service stopping")
            for push in list(self.pushes.values()):
                push.close(CLOSE_NORMAL, "WebRTC service stopping")
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_control(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "ping":
            self.link.send("pong", n=message.get("n"))
        elif op == "open":
            self._open(message)
        elif op == "push_open":
            self._open_push(message)
        elif op == "signal":
            peer = self.peers.get(message.get("peer", -1)) or self.pushes.get(message.get("peer", -1))
            if peer is not None and isinstance(message.get("msg"), dict):
                peer.inbox.put_nowait(message["msg"])
        elif op == "close":
            peer = self.peers.get(message.get("peer", -1)) or self.pushes.get(message.get("peer", -1))
            if peer is not None:
                peer.close(CLOSE_NORMAL, "viewer left")
        elif op == "feed_end":
            feed = self.feeds_by_id.get(message.get("feed", -1))
            if feed is not None:
                self._end_feed(feed, message.get("reason", "source deleted"))
        else:
            log.warning("unknown control op from the supervisor: %s", op[:40])

    def _open(self, message: dict[str, Any]) -> None:
        peer_id, token, profile = message["peer"], message["token"], message["profile"]
        private = message.get("feed")
        if private is not None:  # playback: the supervisor fills this peer's own feed
            feed = Feed(int(private), token, profile, live=False)
            self.feeds_by_id[feed.id] = feed
        elif (token, profile) in self.feeds:
            feed = self.feeds[(token, profile)]
        else:
            feed = Feed(self._next_feed, token, profile)
            self._next_feed += 1
            self.feeds[(token, profile)] = feed
            self.feeds_by_id[feed.id] = feed
            self.link.send("subscribe", feed=feed.id, token=token, profile=profile)
        feed.peers += 1

        def emit(op: str, **fields: Any) -> None:
            self.link.send(op, peer=peer_id, **fields)

        peer = Peer(
            peer_id, feed, str(message.get("codec", "")), bool(message.get("audio")), self.config.public_ip, emit
        )
        self.peers[peer_id] = peer
        log.info("%s: webrtc viewer %d opening (%d on this source)", feed.name, peer_id, feed.peers)
        self._spawn(self._run_peer(peer))

    def _open_push(self, message: dict[str, Any]) -> None:
        peer_id, token = int(message["peer"]), str(message["token"])

        def emit(op: str, **fields: Any) -> None:
            self.link.send(op, peer=peer_id, **fields)

        def media(payload: bytes) -> None:
            self.link.send_media(wire.PUSH, peer_id, payload)

        push = PushPeer(peer_id, token, self.config.public_ip, emit, media, bool(message.get("audio", True)))
        self.pushes[peer_id] = push
        log.info("%s: webrtc publisher %d opening", token, peer_id)
        self._spawn(self._run_push(push))

    async def _run_push(self, push: PushPeer) -> None:
        try:
            await push.run()
        finally:
            self.pushes.pop(push.id, None)
            log.info(
                "%s: webrtc publisher %d gone (%d video frames, %d AAC frames)",
                push.token,
                push.id,
                push.frames,
                push.audio_frames,
            )

    async def _run_peer(self, peer: Peer) -> None:
        try:
            await peer.run()
        finally:
            self.peers.pop(peer.id, None)
            feed = peer.feed
            feed.peers -= 1
            log.info("%s: webrtc viewer %d gone (%d left on this source)", feed.name, peer.id, feed.peers)
            if not feed.live:
                self._drop_feed(feed)
            elif feed.peers == 0 and not feed.ended:
                await asyncio.sleep(FEED_LINGER)
                if feed.peers == 0 and self.feeds.get((feed.token, feed.profile)) is feed:
                    self._drop_feed(feed)
                    self.link.send("unsubscribe", feed=feed.id)

    def _end_feed(self, feed: Feed, reason: str) -> None:
        """The source is gone or no longer H.264: end its tracks and peers, stop its media."""
        self._drop_feed(feed)
        feed.end()
        if feed.live:
            self.link.send("unsubscribe", feed=feed.id)
        for peer in [p for p in self.peers.values() if p.feed is feed]:
            peer.close(CLOSE_NORMAL, reason)

    def _drop_feed(self, feed: Feed) -> None:
        self.feeds_by_id.pop(feed.id, None)
        if self.feeds.get((feed.token, feed.profile)) is feed:
            del self.feeds[(feed.token, feed.profile)]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
