"""One logged-in ONVIF device: login and auth, service addresses, a deadline and error translation per call.

Why it looks like this: a camera that hangs, refuses logins or answers garbage must never stall the
event loop or other requests, so every device exchange is async (zeep over aiohttp) and bounded by an
asyncio timeout, and every failure becomes one of a few `OnvifError`s whose message is fixed,
human-readable and free of credentials. The media, PTZ and imaging modules run their requests through
`DeviceSession.call`; none of them logs in or handles a timeout itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import zeep.exceptions
from aiohttp import DigestAuthMiddleware

from supervisor.onvif.errors import (
    DeviceAuthError,
    DeviceBadAnswer,
    DeviceRefused,
    DeviceTimeout,
    DeviceUnreachable,
    NotSupported,
    OnvifError,
)
from supervisor.onvif.text import short
from supervisor.onvif.urls import DeviceAddress
from workers.credentials import redact


def _import_onvif() -> Any:
    """onvif.client calls logging.basicConfig() on import; undo that so the app's logging setup wins."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import onvif.client as lib

    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    return lib


_lib = _import_onvif()
from onvif.exceptions import ONVIFAuthError, ONVIFError, ONVIFTimeoutError  # noqa: E402
from onvif.util import is_auth_error, stringify_onvif_error  # noqa: E402

log = logging.getLogger("h5gate.onvif")
# zeep/onvif log SOAP envelopes (with the WS-Security digest) at DEBUG: keep them quiet even when we debug.
for _name in ("zeep", "onvif"):
    logging.getLogger(_name).setLevel(logging.WARNING)

T = TypeVar("T")
NS_MEDIA = "http://www.onvif.org/ver10/media/wsdl"
NS_PTZ = "http://www.onvif.org/ver20/ptz/wsdl"
NS_IMAGING = "http://www.onvif.org/ver20/imaging/wsdl"
_PROXY_VARS = ("http_proxy", "https_proxy")


# -- reading zeep answers ---------------------------------------------------------------------------------
def answer_field(obj: Any, path: str) -> Any:
    """obj.A.B for a dotted path through a zeep answer (objects or dicts); None where anything is missing."""
    for name in path.split("."):
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


def answer_int(value: Any) -> int:
    """An int from whatever a device sent ("25", 25.0, None): 0 when it is no number."""
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


# -- error translation --------------------------------------------------------------------------------
class HttpStatusError(Exception):
    """A non-SOAP HTTP refusal (401/403/404): zeep would turn its text body into an AttributeError."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def translate(exc: BaseException, timeout: float, secrets: tuple[str, ...] = ()) -> OnvifError:
    """Map whatever zeep/aiohttp/onvif raised to one OnvifError with a fixed, credential-free message."""
    seen = 0
    while (
        isinstance(exc, ONVIFError)
        and not isinstance(exc, ONVIFTimeoutError | ONVIFAuthError)
        and exc.__cause__ is not None
        and seen < 5
    ):
        exc, seen = exc.__cause__, seen + 1
    if isinstance(exc, OnvifError):
        return exc
    if isinstance(exc, TimeoutError | ONVIFTimeoutError):
        return DeviceTimeout(f"the device did not answer within {timeout:g} s")
    if isinstance(exc, ONVIFAuthError):
        return DeviceAuthError()
    if isinstance(exc, zeep.exceptions.Fault):
        if is_auth_error(exc):
            return DeviceAuthError()
        reason = short(redact(stringify_onvif_error(exc), *secrets))
        if "ActionNotSupported" in reason or "not supported" in reason.lower():
            return NotSupported(f"the device does not support this: {reason}")
        return DeviceRefused(f"the device refused: {reason}")
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if isinstance(exc, zeep.exceptions.TransportError | HttpStatusError):
        if status in (401, 403):
            return DeviceAuthError()
        if status == 404:
            return DeviceBadAnswer("no ONVIF service at this address (HTTP 404): check port and ONVIF path")
        return DeviceBadAnswer()
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | socket.gaierror):
        return DeviceUnreachable()
    if isinstance(exc, OSError):
        return DeviceUnreachable()
    if isinstance(exc, ONVIFError) and "support service" in str(exc):
        return NotSupported()
    return DeviceBadAnswer()


# -- the zeep camera, adapted ---------------------------------------------------------------------------
async def _status_middleware(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
    """Outermost middleware: sees the answer after any digest retry and names auth/path failures."""
    response: aiohttp.ClientResponse = await handler(request)
    if response.status in (401, 403, 404):
        body = await response.read()
        if b"Envelope" not in body[:2048]:  # a SOAP fault is left to zeep, which parses its reason
            response.release()
            raise HttpStatusError(response.status)
    return response


class Camera(_lib.ONVIFCamera):  # type: ignore[misc,name-defined]
    """ONVIFCamera with a configurable device-service path, HTTP digest, no global side effects.

    The library hard-codes /onvif/device_service, sends WS-Security only, pops proxy variables from
    the process environment and trusts GetSystemDateAndTime to be well-formed; each is fixed here.
    These overrides reach into the library's internals (service._session._middlewares,
    ONVIFCamera._adjust_time, dt_diff, services): pyproject.toml bounds onvif-zeep-async for that.
    """

    def __init__(self, addr: DeviceAddress) -> None:
        saved = {k: os.environ[k] for k in _PROXY_VARS if k in os.environ}
        try:
            super().__init__(
                addr.ip, addr.port, addr.user or None, addr.password or None, no_cache=True, adjust_time=True
            )
        finally:
            os.environ.update(saved)
        self._addr = addr

    def get_definition(self, name: str, port_type: str | None = None) -> tuple[str, str, str]:
        xaddr, wsdl, binding = super().get_definition(name, port_type)
        if name == "devicemgmt":
            xaddr = self._addr.device_url
        return xaddr, wsdl, binding

    async def create_onvif_service(
        self, name: str, port_type: str | None = None, read_timeout: int | None = None, write_timeout: int | None = None
    ) -> Any:
        service = await super().create_onvif_service(name, port_type, read_timeout, write_timeout)
        if not service._session._middlewares:
            # Devices that want HTTP digest answer 401 with a challenge; the digest middleware retries.
            digest = (DigestAuthMiddleware(self.user, self.passwd or ""),) if self.user else ()
            service._session._middlewares = (_status_middleware, *digest)
        if not self.user:
            service.zeep_client.wsse = None  # no user: no empty UsernameToken either
        return service

    async def _adjust_time(self, devicemgmt: Any) -> Any:
        """Compensate the device clock (WS-Security digests carry a timestamp) without trusting it."""
        try:
            answer = await devicemgmt.authless_GetSystemDateAndTime()
            utc = answer.UTCDateTime
            device_now = dt.datetime(
                utc.Date.Year,
                utc.Date.Month,
                utc.Date.Day,
                utc.Time.Hour,
                utc.Time.Minute,
                utc.Time.Second,
                tzinfo=dt.UTC,
            )
        except zeep.exceptions.Fault:
            return devicemgmt  # wants auth even for the clock: go without compensation
        except zeep.exceptions.TransportError as exc:
            if exc.status_code in (401, 403):
                return devicemgmt
            raise
        except HttpStatusError as exc:
            if exc.status in (401, 403):
                return devicemgmt
            raise
        except (AttributeError, TypeError, ValueError):
            return devicemgmt  # no usable clock in the answer
        diff = device_now - dt.datetime.now(dt.UTC)
        if abs(diff.total_seconds()) < 5:
            return devicemgmt
        log.info("onvif %s: device clock is %+.0f s off; compensating", self._addr.label, diff.total_seconds())
        self.dt_diff = diff
        await devicemgmt.close()
        self.services.pop(devicemgmt.binding_key, None)
        return await self.create_devicemgmt_service()


# -- WSDL prewarm ----------------------------------------------------------------------------------------
_prewarming: asyncio.Task[None] | None = None


def start_prewarm() -> asyncio.Task[None]:
    """Start prewarm() once; device logins wait for it rather than parse the same WSDLs in parallel."""
    global _prewarming
    if _prewarming is None or _prewarming.cancelled():
        _prewarming = asyncio.create_task(prewarm(), name="onvif-prewarm")
    return _prewarming


async def prewarm() -> None:
    """Parse the WSDLs now (in a worker thread) so the first device call does not pay ~0.5 s for it."""
    started = time.monotonic()
    for name in ("devicemgmt", "media", "ptz", "imaging"):
        try:
            # onvif.client._cached_document / _WSDL_PATH are internals: pyproject.toml bounds the version.
            await _lib._cached_document(os.path.join(_lib._WSDL_PATH, f"{name}.wsdl"))
        except Exception as e:  # only an optimisation: the first real call will load it again
            log.warning("onvif: could not preload %s.wsdl: %s", name, e)
            return
    log.info("onvif: WSDLs loaded in %.1f s", time.monotonic() - started)


# -- one logged-in device -----------------------------------------------------------------------------
class DeviceSession:
    """A logged-in device (service addresses known), reused across calls; every call has a deadline."""

    def __init__(self, addr: DeviceAddress, timeout: float) -> None:
        self.addr, self.timeout = addr, timeout
        self._cam: Camera | None = None
        self._lock = asyncio.Lock()
        self.broken = False
        self.last_used = time.monotonic()

    async def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            with contextlib.suppress(Exception):
                await cam.close()

    async def _login(self) -> Camera:
        warming = _prewarming
        if warming is not None and not warming.done() and warming.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(warming)
        async with self._lock:
            if self._cam is None:
                cam = Camera(self.addr)
                try:
                    await cam.update_xaddrs()
                    if NS_MEDIA not in cam.xaddrs:
                        raise DeviceBadAnswer("the device reports no media service")
                except BaseException:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(cam.close())
                    raise
                self._cam = cam
            return self._cam

    async def call(self, what: str, fn: Callable[[Camera], Awaitable[T]]) -> T:
        """Run fn(camera) with login, a deadline and error translation; broken logins are dropped."""
        self.last_used = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                return await fn(await self._login())
        except Exception as exc:
            err = translate(exc, self.timeout, self.addr.secrets())
            if err.fatal:
                self.broken = True
            detail = short(redact(f"{type(exc).__name__}: {exc}", *self.addr.secrets()), 200)
            log.warning("onvif %s %s failed: %s (%s)", self.addr.label, what, err.message, detail)
            raise err from None

    def has_service(self, namespace: str) -> bool:
        return self._cam is not None and bool(self._cam.xaddrs.get(namespace))
