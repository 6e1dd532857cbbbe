"""The RTMP push-in chapter: who may publish where (setting rtmp_port), and the RTMP server's life.

workers/rtmp/server.py speaks RTMP; this side answers its one question, `authorize`: the application must
be `live`, the stream name an H5_RTMP_PUSH source's token, and the key (`?key=` on the stream name, or on
the tcUrl for encoders that keep the stream key field plain) that source's publish key, compared in
constant time. The media then goes to the source's PushInput, which refuses a second publisher while the
first is live. Every refusal is logged by the server with the token and the peer, never with a key.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable

from supervisor.api.common import TOKEN_RE, Chapter
from supervisor.services import Services
from workers.push_source import PushInput
from workers.rtmp.server import Publisher, PublishRequest, Refused, RtmpServer

log = logging.getLogger("h5gate.rtmp.push")

APP = "live"
KIND = "H5_RTMP_PUSH"


def new_key() -> str:
    """A per-source publish key: 128 random bits, URL-safe as it stands."""
    return secrets.token_hex(16)


def publish_url(host: str, port: int, token: str, key: str | None) -> str:
    """The URL an encoder publishes to; the key is left out for those who may not see it."""
    if not port:
        return ""
    shown = f"[{host}]" if ":" in host else host
    url = f"rtmp://{shown}:{port}/{APP}/{token}"
    return f"{url}?key={key}" if key is not None else url


class PushGate:
    """The `authorize` of the RTMP server, over h5gate's registry."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def __call__(self, request: PublishRequest, kick: Callable[[], None]) -> Publisher:
        if request.app != APP:
            raise Refused(f"unknown application '{request.app[:32]}': publish to /{APP}/<token>")
        token = request.stream
        runtime = self.services.registry.get(token) if TOKEN_RE.match(token) else None
        if runtime is None or runtime.config.kind != KIND:
            raise Refused(f"unknown token: {token[:64]}")
        given = request.query.get("key", "")
        if not given:
            raise Refused("no key: publish to .../<token>?key=<key>", "NetStream.Publish.Unauthorized")
        if not hmac.compare_digest(given.encode(), runtime.config.password.encode()):
            raise Refused("wrong key", "NetStream.Publish.Unauthorized")
        source = runtime.main.process
        if not isinstance(source, PushInput):  # in a cluster, another node owns this source
            owner = runtime.owner or "another node"
            raise Refused(f"this node does not own {token[:64]}: publish to {owner[:64]}")
        return source.begin(request.peer, kick)


async def start(services: Services) -> None:
    settings = services.settings
    if not settings.rtmp_port:
        log.info("RTMP push-in off (rtmp_port = 0)")
        return
    server = RtmpServer(PushGate(services), stall_timeout=settings.stall_timeout)
    try:
        await server.start(settings.host, settings.rtmp_port)
    except OSError as e:
        # The web server is worth more than one of its inputs: say so loudly and run on without RTMP.
        log.error("RTMP push-in cannot listen on %s:%d: %s", settings.host, settings.rtmp_port, e.strerror or e)
        return
    services.rtmp = server


async def stop(services: Services) -> None:
    if services.rtmp is not None:
        await services.rtmp.stop()
        services.rtmp = None


chapter = Chapter("rtmp", [], start=start, stop=stop)
