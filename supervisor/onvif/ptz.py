"""The PTZ service: continuous moves, stop, presets.

Why: PTZ requests name a media profile that carries a PTZ configuration; the source's main profile is
preferred, but cameras often put PTZ on one profile only, so the token is chosen here for every call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from supervisor.onvif.errors import NotSupported
from supervisor.onvif.media import Media
from supervisor.onvif.session import NS_PTZ, Camera, DeviceSession, answer_field

T = TypeVar("T")


@dataclass(frozen=True)
class Preset:
    name: str
    token: str


class Ptz:
    """PTZ requests of one device, each on the preferred profile if it has PTZ, else the first that has."""

    def __init__(self, session: DeviceSession, media: Media) -> None:
        self.session, self.media = session, media

    async def profile(self, preferred: str = "") -> str:
        """A profile token with a PTZ configuration, the preferred one if it has one."""
        profiles = await self.media.profiles()
        if not self.session.has_service(NS_PTZ):
            raise NotSupported("this camera has no PTZ")
        with_ptz = [p for p in profiles if p.ptz]
        if not with_ptz:
            raise NotSupported("this camera has no PTZ")
        return next((p.token for p in with_ptz if p.token == preferred), with_ptz[0].token)

    async def _call(self, what: str, preferred: str, fn: Callable[[Any, str], Awaitable[T]]) -> T:
        token = await self.profile(preferred)

        async def op(cam: Camera) -> T:
            return await fn(await cam.create_ptz_service(), token)

        return await self.session.call(what, op)

    async def move(self, preferred: str, pan: float, tilt: float, zoom: float) -> None:
        """ContinuousMove at these velocities (-1..1); zero axes are left out of the request."""
        velocity: dict[str, Any] = {}
        if pan or tilt:
            velocity["PanTilt"] = {"x": pan, "y": tilt}
        if zoom:
            velocity["Zoom"] = {"x": zoom}
        await self._call(
            "ContinuousMove",
            preferred,
            lambda ptz, tok: ptz.ContinuousMove({"ProfileToken": tok, "Velocity": velocity}),
        )

    async def stop(self, preferred: str) -> None:
        """Stop pan/tilt and zoom."""
        await self._call(
            "Stop", preferred, lambda ptz, tok: ptz.Stop({"ProfileToken": tok, "PanTilt": True, "Zoom": True})
        )

    async def presets(self, preferred: str) -> list[Preset]:
        async def op(ptz: Any, tok: str) -> list[Preset]:
            answer = await ptz.GetPresets({"ProfileToken": tok})
            return [
                Preset(str(answer_field(p, "Name") or ""), str(answer_field(p, "token") or "")) for p in answer or []
            ]

        return await self._call("GetPresets", preferred, op)

    async def set_preset(self, preferred: str, name: str, token: str) -> str:
        """Store the current position (under `token` if given, else a new one); the preset's token."""
        request: dict[str, Any] = {}
        if name:
            request["PresetName"] = name
        if token:
            request["PresetToken"] = token

        async def op(ptz: Any, tok: str) -> str:
            answer = await ptz.SetPreset({"ProfileToken": tok, **request})
            return str(answer or token)

        return await self._call("SetPreset", preferred, op)

    async def remove_preset(self, preferred: str, token: str) -> None:
        await self._call(
            "RemovePreset", preferred, lambda ptz, tok: ptz.RemovePreset({"ProfileToken": tok, "PresetToken": token})
        )

    async def goto_preset(self, preferred: str, token: str) -> None:
        await self._call(
            "GotoPreset", preferred, lambda ptz, tok: ptz.GotoPreset({"ProfileToken": tok, "PresetToken": token})
        )
