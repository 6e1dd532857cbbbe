"""A centre-side source of an edge camera: its hubs are fed over the link by workers/relay_source.py.

Each profile (main, sub) is a RelayInput whose provider opens one channel to the edge's own h5swsapi
for the original token: the edge's hub's fMP4 (init, then fragments) crosses the link once, and the
centre's hub fans it out to WS, WebRTC and HLS viewers and whatever else reads it. The streams start
with their first viewer and stop a while after the last (the registry's on-demand rule), which closes
the channel. While the edge is offline a provider fails at once and RelayInput retries with backoff,
so the stream resumes by itself when the edge returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from supervisor.cloud.link import ChannelClosed, Link, LinkDown
from supervisor.config import Settings
from supervisor.registry import SourceConfig, SourceRuntime, Stream
from workers.hub import StreamHub
from workers.relay_source import Provider, RelayInput, UpstreamClosed

CLOSE_FORMAT_CHANGED = 4000
LinkOf = Callable[[], Link | None]


class CloudInput(RelayInput):
    """A RelayInput whose `online` is what the edge says of its source, while the edge is online.

    GetSrc shows an edge camera online when the edge has it, whether or not anyone here watches it now.
    """

    def __init__(self, name: str, hub: StreamHub, provider: Provider, remote_online: Callable[[], bool]) -> None:
        super().__init__(name, hub, provider, upstream="cloud edge", restart_max=5.0)
        self.remote_online = remote_online

    async def reconnect_now(self) -> None:
        """The edge is back: a stream waiting out its backoff connects at once instead."""
        if self.supervisor.running:
            await self.stop()
            self.start()

    @property
    def online(self) -> bool:
        return self.remote_online()


def channel_provider(link_of: LinkOf, edge: str, original: str, profile: str) -> Provider:
    """Messages of the edge's h5swsapi for `original`/`profile`, over a channel of the edge's current link."""

    async def messages() -> AsyncIterator[bytes]:
        link = link_of()
        if link is None or link.down is not None:
            raise UpstreamClosed(f"cloud edge {edge} is offline", 1013)
        try:
            channel = await link.open("/api/v1/h5swsapi", [("token", original), ("profile", profile)])
        except (LinkDown, TimeoutError) as e:
            raise UpstreamClosed(f"cloud edge {edge}: {str(e) or 'no answer'}", 1013) from None
        try:
            while True:
                message = await channel.receive()
                if isinstance(message, ChannelClosed):
                    reason = message.reason or f"the edge closed the stream ({message.code})"
                    raise UpstreamClosed(reason, message.code, retry_now=message.code == CLOSE_FORMAT_CHANGED)
                if isinstance(message, bytes):
                    yield message
        finally:
            await channel.close()

    return messages


def cloud_runtime(
    cfg: SourceConfig, settings: Settings, link_of: LinkOf, remote_online: Callable[[], bool]
) -> SourceRuntime:
    """The centre's runtime for an edge source: main and sub, each fed by its own channel when watched."""
    runtime = SourceRuntime(cfg)
    for profile in ("main", "sub"):
        name = f"{cfg.token}/{profile}"
        hub = StreamHub(name, settings.ring_seconds)
        provider = channel_provider(link_of, cfg.server_token, cfg.original_token, profile)
        stream = Stream(runtime, profile, hub, CloudInput(name, hub, provider, remote_online), False)
        stream.idle_seconds = settings.cloud_idle_seconds
        runtime.streams[profile] = stream
    return runtime
