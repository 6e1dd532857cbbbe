"""The RTSP re-serve chapter: who may pull which stream over RTSP, and the server's life (setting rtsp_port).

workers/rtsp/server.py speaks RTSP and RTP; this side answers its questions (the `Gate`): a user's Digest
key (supervisor/digest_keys.py), a Basic password (loopback clients only: Basic sends the password
itself, and on loopback nobody can read it off the wire), a console session given as `?session=`, and
which hub a path names, held through the registry exactly as a WebSocket viewer holds it, so an
on-demand source starts for an RTSP client and no second camera connection is ever made.

Rights: a user watches only the cameras of their role (per-camera rights, issue #10: `Auth.sees`, the
same check as the WebSocket, HLS and FLV paths). A camera a user may not see answers 404, like the REST
API: to them it does not exist.
"""

from __future__ import annotations

import ipaddress
import logging
import re

from supervisor.api.common import TOKEN_RE, Chapter
from supervisor.digest_keys import REALM, DigestKeys
from supervisor.registry import Stream
from supervisor.services import Services
from workers.hub import StreamHub
from workers.rtsp.server import Refused, RtspServer

log = logging.getLogger("h5gate.rtsp.serve")

MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")


class _Held:
    """A registry stream held for one RTSP connection (released exactly once)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.hub: StreamHub = stream.hub
        self.name = f"{stream.runtime.config.token}/{stream.profile}"
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.stream.release()

    def offline_reason(self) -> str:
        return self.stream.process.state.last_error


class UserGate:
    """The Gate of workers/rtsp/server.py over h5gate's users, sessions and registry."""

    def __init__(self, services: Services, keys: DigestKeys) -> None:
        self.services = services
        self.keys = keys

    def basic_allowed(self, peer: str) -> bool:
        try:
            return ipaddress.ip_address(peer.split("%", 1)[0]).is_loopback
        except ValueError:
            return False

    async def digest_ha1(self, name: str) -> str | None:
        user = await self.services.auth.user(name)
        if user is None:
            return None
        key = await self.keys.ha1(user)
        if key is None:
            log.info(
                "no RTSP digest key for %s yet: it is made when the plain password is seen "
                "(Login with the password, `h5gate passwd`, or RTSP Basic on loopback)",
                name,
            )
        return key

    async def check_basic(self, name: str, password: str) -> bool:
        user = await self.services.auth.user(name)
        if user is None or not await self.services.auth.password_matches(user, password):
            return False
        if not MD5_RE.match(password):
            await self.keys.learn(user, password)
        return True

    async def check_session(self, session: str) -> str | None:
        user = await self.services.auth.check(session)
        return user.name if user is not None else None

    async def open(self, user_name: str, token: str, profile: str) -> _Held:
        user = await self.services.auth.user(user_name)
        if user is None:
            raise Refused(401, f"user {user_name[:64]} is gone")
        runtime = self.services.registry.get(token) if TOKEN_RE.match(token) else None
        if runtime is None or not self.services.auth.sees(user, token):
            raise Refused(404, f"unknown token: {token[:64]}")
        if profile not in ("main", "sub"):
            raise Refused(404, f"unknown profile: {profile[:64]}")
        stream = runtime.stream(profile)
        if stream is None:
            raise Refused(404, f"unknown profile: {profile[:64]}")
        stream.acquire()
        return _Held(stream)


async def start(services: Services) -> None:
    keys = services.digest_keys = DigestKeys(services.db)
    settings = services.settings
    if not settings.rtsp_port:
        log.info("RTSP re-serve off (rtsp_port = 0)")
        return
    server = RtspServer(
        UserGate(services, keys),
        REALM,
        send_timeout=settings.send_timeout,
        slow_seconds=settings.slow_viewer_seconds,
        send_buffer=settings.ws_send_buffer,
    )
    try:
        await server.start(settings.host, settings.rtsp_port)
    except OSError as e:
        # The web server is worth more than one of its outputs: say so loudly and run on without RTSP.
        log.error("RTSP re-serve cannot listen on %s:%d: %s", settings.host, settings.rtsp_port, e.strerror or e)
        return
    services.rtsp = server


async def stop(services: Services) -> None:
    if services.rtsp is not None:
        await services.rtsp.stop()
        services.rtsp = None


chapter = Chapter("rtsp", [], start=start, stop=stop)
