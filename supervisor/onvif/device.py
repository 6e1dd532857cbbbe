"""A device with its services (media, PTZ, imaging), the pool that keeps them logged in, and probe().

Why: a PTZ click should be one request, not a login, so logged-in devices are kept per source and
shared by the API's calls; a device that failed fatally is dropped and the next call logs in again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from supervisor.onvif.errors import DeviceBadAnswer, DeviceRefused, DeviceTimeout, NotSupported
from supervisor.onvif.imaging import Imaging
from supervisor.onvif.media import Media, ProfileInfo
from supervisor.onvif.ptz import Ptz
from supervisor.onvif.session import DeviceSession, log
from supervisor.onvif.urls import DeviceAddress
from workers.credentials import strip_credentials


class OnvifDevice(DeviceSession):
    """One logged-in device and its services; `media`, `ptz` and `imaging` share its login and deadline."""

    def __init__(self, addr: DeviceAddress, timeout: float) -> None:
        super().__init__(addr, timeout)
        self.media = Media(self)
        self.ptz = Ptz(self, self.media)
        self.imaging = Imaging(self, self.media)

    async def stop(self, preferred: str) -> None:
        """Stop pan/tilt/zoom and, if it was moving, focus (a camera without PTZ may still focus)."""
        stopped = False
        if self.imaging.focus_moving:
            await self.imaging.focus(preferred, 0.0)
            stopped = True
        try:
            await self.ptz.stop(preferred)
        except NotSupported:
            if not stopped:
                raise


async def probe(addr: DeviceAddress, timeout: float) -> list[ProfileInfo]:
    """Log in, list the video profiles with their stream URIs (no credentials in them)."""
    device = OnvifDevice(addr, timeout)
    found: list[ProfileInfo] = []
    try:
        async with asyncio.timeout(timeout):
            for p in await device.media.profiles():
                try:
                    uri = strip_credentials(await device.media.stream_uri(p.token))
                except (DeviceRefused, NotSupported, DeviceBadAnswer):
                    uri = ""
                found.append(dataclasses.replace(p, stream_uri=uri))
    except TimeoutError:
        log.warning("onvif probe %s: no answer within %g s", addr.label, timeout)
        raise DeviceTimeout(f"the device did not answer within {timeout:g} s") from None
    finally:
        await device.close()
    log.info("onvif probe %s: %d profile(s)", addr.label, len(found))
    return found


class DevicePool:
    """One OnvifDevice per source token, so a PTZ click is one request, not a login.

    Entries are replaced when the source's address or credentials change, dropped after a fatal
    error (the next call logs in again) and closed when idle for `idle` seconds.
    """

    def __init__(self, timeout: float, idle: float = 300.0) -> None:
        self.timeout, self.idle = timeout, idle
        self._devices: dict[str, OnvifDevice] = {}

    async def get(self, key: str, addr: DeviceAddress) -> OnvifDevice:
        now = time.monotonic()
        for k, dev in list(self._devices.items()):
            if k != key and now - dev.last_used > self.idle:
                del self._devices[k]
                await dev.close()
        current = self._devices.get(key)
        if current is not None and (current.broken or current.addr != addr):
            del self._devices[key]
            await current.close()
            current = None
        if current is None:
            current = self._devices[key] = OnvifDevice(addr, self.timeout)
        return current

    async def drop(self, key: str) -> None:
        dev = self._devices.pop(key, None)
        if dev is not None:
            await dev.close()

    async def close(self) -> None:
        devices, self._devices = list(self._devices.values()), {}
        for dev in devices:
            await dev.close()
