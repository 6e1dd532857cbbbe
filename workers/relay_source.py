"""A relayed source: another h5gate's fMP4 (as its WS viewers get it) becomes this node's hub input.

A cluster node that does not pull a camera itself, or a cloud centre serving an edge's camera, gets the
stream once from whoever does and fans it out locally. `RelayInput` stands where an FfmpegProcess stands
(start/stop/state/online, the same State), fed by a *provider*: a callable that opens one upstream
connection and yields its messages. The first media message of a connection is an init segment
(ftyp+moov), then moof+mdat fragments, possibly several per message (h5swsapi batches what its ring
already holds and lets audio ride with video); anything else (h5swsapi's MIME string, a control message)
is skipped. A provider that ends or raises ends the run; the supervisor reconnects with backoff.

Why re-time at all when the upstream already owns a clean timeline? Every upstream connection starts
the viewer's decode times at zero, and the upstream itself may change (a new owner node after a takeover,
an edge back online): without our own timeline the hub would jump back to zero and every local viewer,
recording and HLS segment would freeze or collapse. Each connection is a new *run* of the source's
owned timeline (workers/timeline.py), which places it after the previous one by the wall-clock gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from workers.fmp4 import InitInfo, boxes, parse_fragment, parse_init, retime_fragment
from workers.hub import StreamHub
from workers.process import ONLINE_WINDOW, State
from workers.supervise import Backoff, Stalled, Supervisor, Watchdog
from workers.timeline import SourceTimeline, TrackTimeline

log = logging.getLogger("h5gate.relay")

Provider = Callable[[], AsyncIterator[bytes]]

HEALTHY_AFTER = 5.0  # seconds of media after which a run counts as healthy (the backoff starts afresh)
CODEC_NAMES = {"avc1": "h264", "avc3": "h264", "hev1": "hevc", "hvc1": "hevc", "mp4a": "aac"}


class UpstreamClosed(Exception):
    """A provider's connection ended; `code` is the upstream's close code (0 where there is none).

    `retry_now` says the upstream asked for an immediate reconnect (its stream format changed).
    """

    def __init__(self, reason: str, code: int = 0, *, retry_now: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.retry_now = retry_now


def split_message(message: bytes) -> tuple[str, list[bytes]]:
    """What one upstream message holds: ("init", [ftyp+moov]), ("fragments", [moof+mdat, ...]) or ("other", []).

    A message is taken only when it is wholly made of complete boxes of the expected kinds: a text message
    that happens to start with plausible size bytes must not reach the hub.
    """
    if message[4:8] == b"ftyp":
        kinds = [kind for kind, _, _, _ in boxes(message)]
        end = sum(size for _, _, _, size in boxes(message))
        if b"moov" in kinds and end == len(message):
            return "init", [message]
        return "other", []
    if message[4:8] != b"moof":
        return "other", []
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
    if end != len(message) or moof >= 0:
        return "other", []
    return "fragments", pieces


class _Switched(Exception):
    """set_provider() ended this connection: the next run starts at once with the new provider."""


class RelayInput:
    """Keeps one upstream connection open for one stream and feeds what it brings into a StreamHub."""

    def __init__(
        self,
        name: str,
        hub: StreamHub,
        provider: Provider,
        *,
        stall_timeout: float = 10.0,
        restart_min: float = 0.5,
        restart_max: float = 10.0,
        upstream: str = "",
    ) -> None:
        self.name = name
        self.hub = hub
        self.provider = provider
        self.stall_timeout = stall_timeout
        self.upstream = upstream  # where the stream comes from, for log lines (a node id, an edge)
        self.state = State(transport="relay")
        self.timeline = SourceTimeline(name, common_clock=True)  # outlives every connection
        self.runs = 0
        self._reading: asyncio.Future[bytes] | None = None  # the pending read of the current connection
        self._switching = False  # set_provider() asked the current connection to end
        self._first_media = 0.0  # when the current connection first delivered media
        self.supervisor = Supervisor(
            f"{name}: relay",
            self._run_once,
            state=self.state,
            backoff=Backoff(restart_min, restart_max),
            logger=log,
        )

    @property
    def online(self) -> bool:
        """Connected and delivering: media arrived within the last few seconds."""
        return self.state.online and time.monotonic() - self.hub.last_arrival < ONLINE_WINDOW

    def start(self) -> None:
        self.supervisor.start()

    async def stop(self) -> None:
        await self.supervisor.stop()

    def set_provider(self, provider: Provider, upstream: str = "") -> None:
        """Switch upstream (a new owner node): the current connection ends and the next uses `provider` at once.

        The timeline carries on across the switch: the new upstream's times start over, ours move forward.
        """
        self.provider = provider
        self.upstream = upstream
        if self._reading is not None:  # a connection is open (else the next run takes the new provider anyway)
            self._switching = True
            self.supervisor.restart_now()
            if not self._reading.done():  # a read that already completed is seen by the run's check below
                self._reading.cancel()

    async def _run_once(self) -> bool:
        """One upstream connection; True if it delivered media for a while (so the backoff resets)."""
        st = self.state
        st.started_at = time.monotonic()
        self._switching = False
        self.runs += 1
        log.info("%s: relaying%s", self.name, f" from {self.upstream}" if self.upstream else "")
        messages = self.provider()
        self._first_media = 0.0
        try:
            await self._pump(messages)
            if not st.last_error:
                st.last_error = "upstream ended the stream"
        except Stalled:
            st.last_error = f"no data from upstream for {self.stall_timeout:.0f}s (stalled)"
            log.warning("%s: watchdog: %s, reconnecting", self.name, st.last_error)
        except UpstreamClosed as e:
            st.last_error = str(e)
            if e.retry_now:
                self.supervisor.restart_now()
            log.warning("%s: upstream: %s", self.name, st.last_error)
        except _Switched:
            st.last_error = "upstream switched"
        except asyncio.CancelledError:
            if not self._switching:
                raise
            st.last_error = "upstream switched"
        except (OSError, ValueError, EOFError) as e:  # a refused connection, a broken message, a dropped link
            st.last_error = f"upstream: {str(e) or e.__class__.__name__}"
            log.warning("%s: %s", self.name, st.last_error)
        finally:
            st.online = False
            aclose = getattr(messages, "aclose", None)
            if aclose is not None:
                await asyncio.shield(_quietly(aclose()))
        first_media = self._first_media  # however the run ended: an hour of media was a healthy run
        return bool(first_media) and time.monotonic() - first_media > HEALTHY_AFTER

    async def _pump(self, messages: AsyncIterator[bytes]) -> None:
        """Read messages until the upstream ends; notes when media first reached the hub."""
        st = self.state
        hub = self.hub
        watchdog = Watchdog(self.stall_timeout)
        tracks: dict[int, TrackTimeline] = {}
        init: InitInfo | None = None
        iterator = aiter(messages)
        while True:
            self._reading = asyncio.ensure_future(anext(iterator))
            try:
                message = await watchdog.within(self._reading)
            except StopAsyncIteration:
                return
            finally:
                self._reading = None
            if self._switching:
                raise _Switched
            if not isinstance(message, bytes | bytearray | memoryview):
                continue  # a text control message
            message = bytes(message)
            st.bytes_in += len(message)
            kind, pieces = split_message(message)
            if kind == "init":
                init = parse_init(pieces[0])
                hub.set_init(pieces[0], init)
                tracks = self._timelines(init)
                log.info("%s: stream %s (relayed)", self.name, init.mime)
                continue
            if kind != "fragments" or init is None:
                continue  # the MIME string, or media before an init: nothing a consumer could use
            arrival = time.monotonic()
            for data in pieces:
                info = parse_fragment(data)
                tl = tracks.get(info.track_id)
                if tl is None:
                    continue
                fixed, fixed_info = retime_fragment(data, info, tl.map(info.tfdt, arrival), tl.duration)
                if hub.publish(fixed, fixed_info) is not None and not self._first_media:
                    self._first_media = time.monotonic()
                    st.online, st.last_error = True, ""
                    log.info("%s: online (relayed)", self.name)

    def _timelines(self, init: InitInfo) -> dict[int, TrackTimeline]:
        """A new init: the upstream's decode times may start over (new connection, new run upstream)."""
        self.timeline.new_run()
        st = self.state
        st.video_codec = st.audio_codec = ""
        kinds = {"vide": "video", "soun": "audio"}
        out: dict[int, TrackTimeline] = {}
        for t in init.tracks.values():
            if t.handler not in kinds:
                continue
            out[t.track_id] = self.timeline.track(kinds[t.handler], t.timescale)
            name = CODEC_NAMES.get(t.codec[:4], t.codec[:4])
            if t.handler == "vide":
                st.video_codec = name
            else:
                st.audio_codec = name
        return out


async def _quietly(step: Awaitable[object]) -> None:
    """Await a provider's cleanup; its own errors (a socket already gone) are not ours to report."""
    try:
        await step
    except Exception as e:  # noqa: BLE001 - cleanup of a connection that already failed
        log.debug("relay cleanup: %s", e)
