"""A real WebSocket viewer for tests: collects what h5swsapi sends and checks it as a browser would need it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import websockets

from workers.fmp4 import FragInfo, InitInfo, boxes, parse_fragment, parse_init


@dataclass
class Received:
    mime: str = ""
    inits: list[InitInfo] = field(default_factory=list)
    fragments: list[tuple[int, FragInfo, float]] = field(default_factory=list)  # (init index, info, time)
    texts: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    first_at: float = 0.0
    messages: int = 0  # binary media messages (each holds one or more moof+mdat pairs)

    def video(self) -> list[FragInfo]:
        return [f for i, f, _ in self.fragments if self.inits[i].tracks[f.track_id].handler == "vide"]


async def watch(
    url: str, *, frames: int = 50, seconds: float = 20.0, keepalive: str | None = None, stop_after: float | None = None
) -> Received:
    """Read until `frames` video fragments arrived, the time is up, or the server closed the socket."""
    got = Received()
    deadline = time.monotonic() + (stop_after or seconds)
    # max_queue=None: a bounded client queue stops reading the socket, misses the server's close frame
    # and then waits out its close timeout.
    async with websockets.connect(url, max_size=None, max_queue=None, compression=None) as ws:
        try:
            while time.monotonic() < deadline:
                if keepalive is not None:
                    await ws.send(keepalive)
                try:
                    msg = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if isinstance(msg, str):
                    got.texts.append(msg)
                elif not got.mime:
                    got.mime = msg.decode("ascii")
                elif msg[4:8] == b"ftyp":
                    got.inits.append(parse_init(msg))
                else:
                    if not got.first_at:
                        got.first_at = time.monotonic()
                    now = time.monotonic()
                    pieces = split_fragments(msg)
                    assert pieces, "a binary message that is neither init nor moof+mdat"
                    got.messages += 1
                    got.fragments += [(len(got.inits) - 1, parse_fragment(p), now) for p in pieces]
                    if stop_after is None and len(got.video()) >= frames:
                        break
        except websockets.ConnectionClosed as e:
            got.close_code, got.close_reason = e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else ""
    return got


def split_fragments(message: bytes) -> list[bytes]:
    """The moof+mdat pairs of one message; the whole message must be made of them."""
    pieces: list[bytes] = []
    moof = -1
    end = 0
    for kind, pos, _, size in boxes(message):
        if kind == b"moof":
            moof = pos
        elif kind == b"mdat" and moof >= 0:
            pieces.append(message[moof : pos + size])
            moof = -1
        end = pos + size
    return pieces if end == len(message) and moof < 0 else []


def watch_sync(url: str, **kwargs: object) -> Received:
    return asyncio.run(watch(url, **kwargs))  # type: ignore[arg-type]


def check_playable(got: Received) -> None:
    """What a stock MSE SourceBuffer needs: MIME first, init, keyframe at time ~0, continuous tracks."""
    assert got.mime.startswith(("video/mp4; codecs=", "audio/mp4; codecs=")), got.mime
    assert got.inits, "no init segment"
    assert got.inits[0].mime == got.mime
    first_idx, first, _ = got.fragments[0]
    assert got.inits[first_idx].tracks[first.track_id].handler == "vide" and first.keyframe
    assert first.tfdt == 0
    ends: dict[int, int] = {}
    for idx, frag, _ in got.fragments:
        assert idx == 0, "unexpected re-init"
        if frag.track_id in ends:
            assert frag.tfdt >= ends[frag.track_id] - 1, "decode time went backwards"
        ends[frag.track_id] = frag.tfdt + frag.duration
