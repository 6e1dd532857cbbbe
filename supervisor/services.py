"""Services: everything the running server shares, in one typed object.

The app's lifespan builds it (database, auth, registry ... in that order), each chapter's `start` adds
its own service (recordings, ONVIF, WebRTC) and every handler reads it through
`supervisor.api.common.services(request)`. One object with named, typed fields instead of attributes
set on Starlette's `app.state` and read back with `getattr`: a reader sees at once what exists, and
mypy sees it too. The optional fields are None while their chapter is off (WebRTC turned off) or not
started yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from supervisor.api.flv import FlvListener
    from supervisor.api.onvif import OnvifState
    from supervisor.api.playback_sinks import PlaybackServer
    from supervisor.api.streams import HlsViewers, Viewers
    from supervisor.api.system import RunInfo
    from supervisor.auth import Auth, User
    from supervisor.cloud.service import CloudService
    from supervisor.cluster.service import Cluster
    from supervisor.conf_store import ConfStore
    from supervisor.config import Settings
    from supervisor.db import Database
    from supervisor.digest_keys import DigestKeys
    from supervisor.events import EventBus
    from supervisor.hls import HlsService
    from supervisor.metrics import LoopLag, RequestCounts
    from supervisor.organisation import Organisation
    from supervisor.recordings.service import Recordings
    from supervisor.registry import Registry
    from supervisor.restart import Restarter
    from supervisor.transcode import Transcoder
    from supervisor.webrtc import WebRTCService
    from workers.rtmp.server import RtmpServer
    from workers.rtsp.server import RtspServer
    from workers.snapshot import SnapshotCache

# h5swsapi?playback=true hands its socket to this, when the recordings chapter runs (WebRTC playback uses
# `playback`, which plays into any workers.playback.PlaybackSink)
PlaybackHandler = Callable[["WebSocket", "User"], Awaitable[None]]


@dataclass(eq=False)
class Services:
    settings: Settings
    version: str  # the package version (GetSystemInfo strVersion, the pages' footer)
    host_id: str  # this installation's stable id (GetSystemInfo strHostId, GetSrc strServerUuid)
    ffmpeg: str  # the ffmpeg binary in use
    db: Database
    auth: Auth
    registry: Registry
    snapshots: SnapshotCache
    viewers: Viewers  # live WebSocket viewer counts and the slow-viewer sweeper
    run_info: RunInfo  # GetRunInfo's CPU/network rate state
    hls_viewers: HlsViewers  # who read a playlist lately (HLS has no connection to count)
    requests: RequestCounts  # HTTP answers by status, WebSocket handshakes by path (the app's middleware)
    conf: ConfStore  # values the consoles' settings pages change at run time
    restart: Restarter  # Restart and a configuration restore: the server re-executes itself
    recordings: Recordings | None = None  # the recordings chapter's service
    playback_ws: PlaybackHandler | None = None  # h5swsapi?playback=true, set by the recordings chapter
    playback: PlaybackServer | None = None  # playback into any sink (WebRTC's), set by the recordings chapter
    onvif: OnvifState | None = None  # the ONVIF chapter's device pool and last good URIs
    hls: HlsService | None = None  # HLS made on demand, set by the hls chapter
    webrtc: WebRTCService | None = None  # None when WebRTC is turned off (settings.webrtc)
    loop_lag: LoopLag | None = None  # the observe chapter's event-loop lag monitor (/metrics, /healthz)
    organisation: Organisation | None = None  # regions and saved views, set by the organisation chapter
    flv: FlvListener | None = None  # the HTTP-FLV listener on flv_port; None when 0 or it could not listen
    rtmp: RtmpServer | None = None  # RTMP push-in; None when rtmp_port = 0 or it could not listen
    events: EventBus | None = None  # the event socket's bus, set by the events chapter
    transcoder: Transcoder | None = None  # transcoding profiles and their shared ffmpegs, set by its chapter
    digest_keys: DigestKeys | None = None  # users' RTSP Digest keys, learnt from plain passwords (rtsp chapter)
    rtsp: RtspServer | None = None  # the RTSP re-serve; None when rtsp_port = 0 or it could not listen
    cluster: Cluster | None = None  # the cluster chapter's view of Redis; always set once it started (maybe off)
    app: Any = None  # the ASGI app itself: the cloud edge runs the centre's calls through it in-process
    cloud: CloudService | None = None  # cloud edge client and centre registry, set by the cloud chapter
