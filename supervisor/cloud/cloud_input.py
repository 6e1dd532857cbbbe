"""A centre-side source of an edge camera: its hubs are fed over the link by workers/relay_source.py.

Each profile (main, sub) is a RelayInput whose provider opens one channel to the edge's own h5swsapi
for the original token: the edge's hub's fMP4 (init, then fragments) crosses the link once, and the
centre's hub fans it out to WS, WebRTC and HLS viewers and whatever else reads it. The streams start
with their first viewer and stop a while after the last (the registry's on-demand rule), which closes
the channel. While the edge is offline a provider fails at once and RelayInput retries with backoff,
so the stream resumes by itself when the edge returns.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from supervisor.cloud.link import Channel, ChannelClosed, Link, LinkDown
from supervisor.config import Settings
from supervisor.registry import SourceConfig, SourceRuntime, Stream
from workers.hub import StreamHub
from workers.relay_source import RelayInput, UpstreamClosed

log = logging.getLogger("h5gate.cloud")

CLOSE_FORMAT_CHANGED = 4000
LinkOf = Callable[[], Link | None]
OnlineOf = Callable[[], bool]


class CloudInput(RelayInput):
    """A RelayInput fed by a channel of an edge's link, whose `online` is what the edge says of its source.

    GetSrc shows an edge camera online when the edge has it, whether or not anyone here watches it now.
    The channel in use is kept here too: stopping the stream closes it at once, so the edge's stream ends
    with the last viewer here, whatever point the relay's read had reached when it was stopped.
    """

    def __init__(
        self, name: str, hub: StreamHub, link_of: LinkOf, cfg: SourceConfig, profile: str, remote_online: OnlineOf
    ) -> None:
        self.link_of = link_of
        self.edge = cfg.server_token
        self.query = [("token", cfg.original_token), ("profile", profile)]
        self.remote_online = remote_online
        self.channel: Channel | None = None
        super().__init__(name, hub, self._messages, upstream=f"cloud edge {self.edge}", restart_max=5.0)

    @property
    def online(self) -> bool:
        return self.remote_online()

    async def _messages(self) -> AsyncIterator[bytes]:
        """Messages of the edge's h5swsapi for this source and profile, over a channel of the edge's link."""
        link = self.link_of()
        if link is None or link.down is not None:
            raise UpstreamClosed(f"cloud edge {self.edge} is offline", 1013)
        try:
            channel = self.channel = await link.open("/api/v1/h5swsapi", self.query)
        except (LinkDown, TimeoutError) as e:
            raise UpstreamClosed(f"cloud edge {self.edge}: {str(e) or 'no answer'}", 1013) from None
        try:
            while True:
                message = await channel.receive()
                if isinstance(message, ChannelClosed):
                    reason = message.reason or f"the edge closed the stream ({message.code})"
                    raise UpstreamClosed(reason, message.code, retry_now=message.code == CLOSE_FORMAT_CHANGED)
                if isinstance(message, bytes):
                    yield message
        finally:
            if self.channel is channel:
                self.channel = None
            await channel.close(1000, "no viewer here")

    async def stop(self) -> None:
        await super().stop()
        channel, self.channel = self.channel, None
        if channel is not None:  # the run was stopped before its read ended: the edge is told all the same
            log.info("%s: stopped mid-read; its channel to edge %s closed", self.name, self.edge)
            await channel.close(1000, "no viewer here")

    async def reconnect_now(self) -> None:
        """The edge is back: a stream waiting out its backoff connects at once instead."""
        if self.supervisor.running:
            await self.stop()
            self.start()


def cloud_runtime(
    cfg: SourceConfig, settings: Settings, link_of: LinkOf, remote_online: Callable[[], bool]
) -> SourceRuntime:
    """The centre's runtime for an edge source: main and sub, each fed by its own channel when watched."""
    runtime = SourceRuntime(cfg)
    for profile in ("main", "sub"):
        name = f"{cfg.token}/{profile}"
        hub = StreamHub(name, settings.ring_seconds)
        stream = Stream(runtime, profile, hub, CloudInput(name, hub, link_of, cfg, profile, remote_online), False)
        stream.idle_seconds = settings.cloud_idle_seconds
        runtime.streams[profile] = stream
    return runtime
