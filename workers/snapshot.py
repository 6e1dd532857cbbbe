"""JPEG from the hub's newest keyframe: one short ffmpeg decode, no new camera connection.

A page of posters asks for many images at once; results are cached per hub for about a second and
concurrent requests for the same hub share one decode.
"""

from __future__ import annotations

import asyncio
import logging
import time

from workers.hub import StreamHub

log = logging.getLogger("h5gate.snapshot")


class SnapshotError(Exception):
    pass


async def keyframe_jpeg(ffmpeg: str, hub: StreamHub, quality: int = 4, timeout: float = 10.0) -> bytes:
    """Decode the newest keyframe of the hub (init + that one fragment) into a JPEG."""
    latest = hub.latest_keyframe()
    if latest is None:
        raise SnapshotError("no keyframe yet")
    init, frag = latest
    video = init.video
    if video is None:
        raise SnapshotError("stream has no video")
    # Only the video fragment is fed; its init lists every track, ffmpeg ignores the empty ones.
    data = init.data + frag.data
    proc = await asyncio.create_subprocess_exec(
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-f",
        "mp4",
        "-i",
        "pipe:0",
        "-map",
        "0:v:0",
        "-frames:v",
        "1",
        "-q:v",
        str(quality),
        "-f",
        "image2",
        "-c:v",
        "mjpeg",
        "pipe:1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SnapshotError("decoder timed out") from None
    if proc.returncode != 0 or not out.startswith(b"\xff\xd8"):
        raise SnapshotError(err.decode("utf-8", "replace").strip()[:200] or "decode failed")
    return out


class SnapshotCache:
    """Per-hub JPEG cache with single-flight decoding."""

    def __init__(self, ffmpeg: str, max_age: float = 1.0) -> None:
        self.ffmpeg = ffmpeg
        self.max_age = max_age
        self._cache: dict[int, tuple[float, int, bytes]] = {}
        self._inflight: dict[int, asyncio.Future[bytes]] = {}
        self.decodes = 0

    async def get(self, hub: StreamHub) -> bytes:
        key = id(hub)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit and (now - hit[0] < self.max_age or hit[1] == hub.keyframe_seq):
            return hit[2]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            seq = hub.keyframe_seq or 0
            jpeg = await keyframe_jpeg(self.ffmpeg, hub)
            self.decodes += 1
            self._cache[key] = (time.monotonic(), seq, jpeg)
            future.set_result(jpeg)
            return jpeg
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as e:
            future.set_exception(e)
            future.exception()  # mark retrieved: there may be no other waiter
            raise
        finally:
            del self._inflight[key]

    def forget(self, hub: StreamHub) -> None:
        self._cache.pop(id(hub), None)
