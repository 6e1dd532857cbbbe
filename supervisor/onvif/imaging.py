"""The imaging service: continuous focus and iris steps on a profile's video source.

Why: focus and iris act on a video source, not a profile; and a camera only lets the iris move in
MANUAL exposure, so a step switches it there first.
"""

from __future__ import annotations

from supervisor.onvif.errors import NotSupported
from supervisor.onvif.media import Media
from supervisor.onvif.session import NS_IMAGING, Camera, DeviceSession, answer_field


class Imaging:
    """Focus and iris of one device; remembers whether focus is moving, so a PTZ stop can stop it too."""

    def __init__(self, session: DeviceSession, media: Media) -> None:
        self.session, self.media = session, media
        self.focus_moving = False

    async def _video_source(self, preferred: str) -> str:
        profiles = await self.media.profiles()
        if not self.session.has_service(NS_IMAGING):
            raise NotSupported("this camera has no focus/iris control (no imaging service)")
        source = next((p.video_source for p in profiles if p.token == preferred and p.video_source), "") or next(
            (p.video_source for p in profiles if p.video_source), ""
        )
        if not source:
            raise NotSupported("this camera has no focus/iris control (no video source)")
        return source

    async def focus(self, preferred: str, speed: float) -> None:
        """Continuous focus at speed (+ far, - near); 0 stops it."""
        source = await self._video_source(preferred)

        async def op(cam: Camera) -> None:
            imaging = await cam.create_imaging_service()
            if speed:
                await imaging.Move({"VideoSourceToken": source, "Focus": {"Continuous": {"Speed": speed}}})
            else:
                await imaging.Stop({"VideoSourceToken": source})

        await self.session.call("focus", op)
        self.focus_moving = bool(speed)

    async def iris(self, preferred: str, step: float) -> float:
        """Open (+) or close (-) the iris by `step` dB; switches exposure to MANUAL, as iris control needs."""
        source = await self._video_source(preferred)

        async def op(cam: Camera) -> float:
            imaging = await cam.create_imaging_service()
            settings = await imaging.GetImagingSettings({"VideoSourceToken": source})
            exposure = answer_field(settings, "Exposure")
            current = answer_field(exposure, "Iris")
            low, high = answer_field(exposure, "MinIris"), answer_field(exposure, "MaxIris")
            value = (float(current) if current is not None else 0.0) + step
            value = min(float(high) if high is not None else 0.0, value)
            if low is not None:
                value = max(float(low), value)
            await imaging.SetImagingSettings(
                {
                    "VideoSourceToken": source,
                    "ImagingSettings": {"Exposure": {"Mode": "MANUAL", "Iris": value}},
                    "ForcePersistence": False,
                }
            )
            return value

        return await self.session.call("iris", op)
