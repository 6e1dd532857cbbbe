"""A WebRTC viewer that speaks H5Stream's signalling, for tests and tools/bench_webrtc.py.

It is an aiortc peer whose receivers do not decode: each complete access unit (or Opus packet) is kept as
the bytes that crossed the wire, so a test can compare them with the source file, and ten viewers cost
the benchmark machine next to nothing. Also: a private network namespace with only `lo`, where WebRTC on
loopback works (the only address there is 127.0.0.1) and nothing can leave the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aioice.turn
import aiortc.rtcrtpreceiver
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from workers.webrtc.ice import use_host_addresses

CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def private_network() -> Iterator[None]:
    """Move this thread (and every process it starts) into a new network namespace with only `lo` up."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed (needs root)")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original network namespace failed")
    finally:
        os.close(original)


def _keep_encoded(
    loop: asyncio.AbstractEventLoop, input_q: Any, output_q: asyncio.Queue[Any], decode_error: Any
) -> None:
    """Stands in for aiortc's decoder thread: hands the track (payload type name, RTP time, bytes)."""
    while True:
        task = input_q.get()
        if task is None:
            asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
            return
        codec, frame = task
        asyncio.run_coroutine_threadsafe(output_q.put((codec.name, frame.timestamp, bytes(frame.data))), loop)


aiortc.rtcrtpreceiver.decoder_worker = _keep_encoded
# Python viewers on a busy machine drain their sockets late; the kernel drops what does not fit (a lost
# packet leaves aiortc a broken frame, which the byte-for-byte tests would rightly count as a failure).
aioice.turn.UDP_SOCKET_BUFFER_SIZE = 4 * 1024 * 1024
use_host_addresses([])


@dataclass
class RtcViewer:
    """One viewer: `await start()`, then frames arrive in .video (H.264 Annex B) and .audio (Opus)."""

    url: str
    typed_candidates: bool = True  # send remoteice with "type" (r11.5+) or without it (P-r4)
    video: list[tuple[int, bytes]] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    codecs: list[str] = field(default_factory=list)
    started: float = 0.0
    first_frame: float = 0.0  # seconds from start() to the first complete video frame
    close_code: int | None = None
    close_reason: str = ""
    ws: Any = None
    pc: RTCPeerConnection | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        """Connect and answer the server's offer (returns once the answer and candidates are sent)."""
        self.started = time.monotonic()
        self.ws = await websockets.connect(self.url, max_size=None, compression=None)
        await self.ws.send(json.dumps({"type": "open"}))
        self._tasks.append(asyncio.create_task(self._keepalive()))
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                self.messages.append(message)
                if message.get("type") == "offer":
                    break
        self._reader = asyncio.create_task(self._read_rest())
        self._tasks.append(self._reader)
        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.on("track", self._on_track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=message["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        local = pc.localDescription
        # as a browser does: the answer without candidates, which follow one by one (trickle)
        sdp_only = "\r\n".join(
            line for line in local.sdp.splitlines() if not line.startswith(("a=candidate", "a=end-of-candidates"))
        )
        await self.ws.send(json.dumps({"type": "answer", "sdp": sdp_only + "\r\n"}))
        for line in local.sdp.splitlines():
            if line.startswith("a=candidate"):
                candidate: dict[str, Any] = {"candidate": line[2:], "sdpMid": "0", "sdpMLineIndex": 0}
                if self.typed_candidates:
                    candidate["type"] = "remoteice"
                await self.ws.send(json.dumps(candidate))

    def _on_track(self, track: Any) -> None:
        self._tasks.append(asyncio.create_task(self._consume(track)))

    async def _consume(self, track: Any) -> None:
        while True:
            try:
                name, timestamp, data = await track.recv()
            except Exception:
                return
            if name not in self.codecs:
                self.codecs.append(name)
            if track.kind == "video":
                if not self.video:
                    self.first_frame = time.monotonic() - self.started
                self.video.append((timestamp, data))
            else:
                self.audio.append(data)
            self._arrived.set()

    async def _keepalive(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await self.ws.send(json.dumps({"type": "keepalive"}))
                await asyncio.sleep(1.0)

    async def _read_rest(self) -> None:
        try:
            async for raw in self.ws:
                self.messages.append(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        self.close_code = self.ws.close_code
        self.close_reason = self.ws.close_reason or ""

    async def wait_frames(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.video) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Until the server closes the signalling socket (then close_code and close_reason are set)."""
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()


async def _hold(url: str) -> None:
    """Play until killed; prints PLAYING once frames arrive (a viewer a test can freeze with SIGSTOP)."""
    viewer = RtcViewer(url)
    await viewer.start()
    await viewer.wait_frames(5)
    print("PLAYING", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_hold(sys.argv[1]))
