"""The media service: video profiles, stream URIs, device snapshots, and which profile to stream.

Why: a source is "main and sub profile of this camera"; the choice is re-made on every ffmpeg start
when profiles are automatic, so the rules live here once (`pick_profiles`), next to the answers they read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from onvif.exceptions import ONVIFAuthError

from supervisor.onvif.errors import DeviceBadAnswer, DeviceRefused
from supervisor.onvif.session import Camera, DeviceSession, answer_field, answer_int
from supervisor.onvif.urls import fix_stream_host


@dataclass
class ProfileInfo:
    """One video media profile of a device."""

    token: str
    name: str = ""
    codec: str = ""  # H264, H265, JPEG, MPEG4 …
    width: int = 0
    height: int = 0
    fps: int = 0
    bitrate: int = 0  # kbit/s as the device reports BitrateLimit
    ptz: bool = False
    video_source: str = ""
    stream_uri: str = ""  # filled by probe(), without credentials; "" when the device gave none


def parse_profile(p: Any) -> ProfileInfo | None:
    """A zeep Profile -> ProfileInfo; None for profiles without video (audio/metadata only)."""
    vec = answer_field(p, "VideoEncoderConfiguration")
    token = answer_field(p, "token")
    if vec is None or not token:
        return None
    codec = str(answer_field(vec, "Encoding") or "").upper().replace(".", "").replace("HEVC", "H265")
    return ProfileInfo(
        token=str(token),
        name=str(answer_field(p, "Name") or ""),
        codec=codec,
        width=answer_int(answer_field(vec, "Resolution.Width")),
        height=answer_int(answer_field(vec, "Resolution.Height")),
        fps=answer_int(answer_field(vec, "RateControl.FrameRateLimit")),
        bitrate=answer_int(answer_field(vec, "RateControl.BitrateLimit")),
        ptz=answer_field(p, "PTZConfiguration") is not None,
        video_source=str(answer_field(p, "VideoSourceConfiguration.SourceToken") or ""),
    )


def pick_profiles(profiles: list[ProfileInfo], main: str = "", sub: str = "") -> tuple[ProfileInfo, ProfileInfo]:
    """Given tokens win; otherwise main = the largest H.264 profile, sub = the smallest other one.

    H.264 is preferred because every browser path can play it without transcoding; without any,
    the largest non-JPEG profile is taken. A device with one profile uses it for both.
    """
    if not profiles:
        raise DeviceBadAnswer("the device has no video profile")
    by_token = {p.token: p for p in profiles}
    for token in (main, sub):
        if token and token not in by_token:
            raise DeviceRefused(f"the device has no profile {token!r}")
    pool = [p for p in profiles if p.codec == "H264"] or [p for p in profiles if p.codec != "JPEG"] or profiles

    def size(p: ProfileInfo) -> tuple[int, int, int]:
        return (p.width * p.height, p.fps, p.bitrate)

    main_p = by_token[main] if main else max(pool, key=size)
    if sub:
        return main_p, by_token[sub]
    others = [p for p in pool if p is not main_p]
    return main_p, (min(others, key=size) if others else main_p)


class Media:
    """GetProfiles (cached per login until refreshed), GetStreamUri and the snapshot URI of one device."""

    def __init__(self, session: DeviceSession) -> None:
        self.session = session
        self._profiles: list[ProfileInfo] | None = None

    async def profiles(self, refresh: bool = False) -> list[ProfileInfo]:
        if self._profiles is not None and not refresh:
            return self._profiles

        async def op(cam: Camera) -> list[ProfileInfo]:
            media = await cam.create_media_service()
            answer = await media.GetProfiles()
            found = [p for p in (parse_profile(x) for x in answer or []) if p is not None]
            if not found:
                raise DeviceBadAnswer("the device has no video profile")
            return found

        self._profiles = await self.session.call("GetProfiles", op)
        return self._profiles

    async def stream_uri(self, token: str) -> str:
        """The profile's RTSP URI as the device reports it (credentials not added)."""

        async def op(cam: Camera) -> str:
            media = await cam.create_media_service()
            answer = await media.GetStreamUri(
                {
                    "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                    "ProfileToken": token,
                }
            )
            uri = str(answer_field(answer, "Uri") or "").strip()
            if not uri.lower().startswith(("rtsp://", "rtsps://")):
                raise DeviceBadAnswer("the device reported no usable RTSP stream URI")
            return fix_stream_host(uri, self.session.addr.ip)

        return await self.session.call("GetStreamUri", op)

    async def snapshot(self, token: str) -> bytes | None:
        """A JPEG from the device's snapshot URI (HTTP digest, then basic), or None if it has none."""
        timeout = self.session.timeout

        async def op(cam: Camera) -> bytes | None:
            data: bytes | None
            try:
                data = await cam.get_snapshot(token, timeout=timeout)
            except ONVIFAuthError:
                data = await cam.get_snapshot(token, basic_auth=True, timeout=timeout)
            return data if data and data[:2] == b"\xff\xd8" else None

        return await self.session.call("snapshot", op)
