"""ONVIF client: WS-Discovery, login and profiles, stream/snapshot URIs, PTZ, presets, focus and iris.

Why it looks like this: a camera that hangs, refuses logins or answers garbage must never stall the
event loop or other requests, so every device exchange is async (zeep over aiohttp) and bounded by an
asyncio timeout, and every failure becomes one of a few `OnvifError`s whose message is fixed,
human-readable and free of credentials, so the API can show it as-is and logs can print it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aiohttp
import zeep.exceptions
from aiohttp import DigestAuthMiddleware
from lxml import etree


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
DEFAULT_ONVIF_ADDR = "/onvif/device_service"
DISCOVERY_PORT = 3702
_PROXY_VARS = ("http_proxy", "https_proxy")
_XML = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


# -- errors -------------------------------------------------------------------------------------------
class OnvifError(Exception):
    """A device operation that failed; `message` is safe to show to users (no credentials)."""

    status = 502
    fatal = True  # the cached login is dropped: the next call reconnects
    default = "ONVIF error"

    def __init__(self, message: str = "") -> None:
        self.message = message or self.default
        super().__init__(self.message)


class DeviceUnreachable(OnvifError):
    default = "can't connect device"


class DeviceTimeout(OnvifError):
    status = 504
    default = "the device did not answer in time"


class DeviceAuthError(OnvifError):
    status = 400
    default = "login failed: wrong user name or password"


class DeviceBadAnswer(OnvifError):
    default = "the device gave an invalid ONVIF answer"


class DeviceRefused(OnvifError):
    """The device understood the request and said no (SOAP fault): the connection itself is fine."""

    status = 400
    fatal = False
    default = "the device refused the request"


class NotSupported(OnvifError):
    status = 400
    fatal = False
    default = "the device does not support this"


# -- addresses, URLs, redaction -----------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceAddress:
    """Where and as whom to reach a device; the password never shows in repr()."""

    ip: str
    port: int = 80
    onvif_addr: str = DEFAULT_ONVIF_ADDR
    user: str = ""
    password: str = field(default="", repr=False)

    @property
    def label(self) -> str:
        return f"{_bracket(self.ip)}:{self.port}"

    @property
    def device_url(self) -> str:
        return f"http://{self.label}{self.onvif_addr or DEFAULT_ONVIF_ADDR}"

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.user, self.password) if s)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _split_netloc(netloc: str) -> tuple[str, str]:
    """'user:pw@host:port' -> ('user:pw', 'host:port'); rpartition because passwords may contain '@'."""
    userinfo, at, hostport = netloc.rpartition("@")
    return (userinfo if at else ""), hostport


def with_credentials(url: str, user: str, password: str) -> str:
    """The URL with user/password percent-encoded into it, replacing any it had.

    Percent-encoding (RFC 3986 userinfo) keeps '@', ':', '/' and friends in a password from being
    read as URL syntax; ffmpeg URL-decodes the userinfo before it authenticates.
    """
    if not user:
        return url
    parts = urlsplit(url)
    _, hostport = _split_netloc(parts.netloc)
    userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hostport}"))


def strip_credentials(url: str) -> str:
    """The URL without any userinfo: what GetSrc and the logs may show."""
    parts = urlsplit(url)
    userinfo, hostport = _split_netloc(parts.netloc)
    return urlunsplit(parts._replace(netloc=hostport)) if userinfo else url


def redact_url(url: str) -> str:
    """rtsp://***@host/... : shows that credentials are there without showing them."""
    parts = urlsplit(url)
    userinfo, hostport = _split_netloc(parts.netloc)
    return urlunsplit(parts._replace(netloc=f"***@{hostport}")) if userinfo else url


def scrub(text: str, *secrets: str) -> str:
    """Remove every secret (raw and percent-encoded) from a text, e.g. an exception or ffmpeg's stderr."""
    for secret in sorted({s for s in secrets if s and len(s) >= 1}, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret)}:
            text = text.replace(form, "***")
    return re.sub(r"([a-z][a-z0-9+.-]*://)[^/@\s]*@", r"\1***@", text, flags=re.I)


def _short(text: str, limit: int = 160) -> str:
    text = re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fix_stream_host(uri: str, device_ip: str) -> str:
    """Cameras sometimes advertise 0.0.0.0 or loopback in URIs; those mean 'me', i.e. the device's IP."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    loopback = host == "localhost" or _is_loopback(host)
    if host in ("", "0.0.0.0") or (loopback and not _is_loopback(device_ip)):
        userinfo, _ = _split_netloc(parts.netloc)
        port = f":{parts.port}" if parts.port else ""
        netloc = (f"{userinfo}@" if userinfo else "") + _bracket(device_ip) + port
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


# -- profiles -------------------------------------------------------------------------------------------
@dataclass
class ProfileInfo:
    """One media profile as the API reports it (OnvifProbe) and as profile selection sees it."""

    token: str
    name: str = ""
    codec: str = ""
    width: int = 0
    height: int = 0
    fps: int = 0
    bitrate: int = 0  # kbit/s as the device reports BitrateLimit
    ptz: bool = False
    video_source: str = ""
    rtsp_url: str = ""  # without credentials
    got_url: bool = False

    @property
    def label(self) -> str:
        return f"{self.codec} {self.width} x {self.height} {self.fps}fps {self.bitrate}bps"

    def to_api(self) -> dict[str, Any]:
        return {
            "strToken": self.token,
            "strCodecName": self.codec,
            "strName": self.label,
            "strRtspUrl": self.rtsp_url,
            "nWidth": self.width,
            "nHeight": self.height,
            "nFps": self.fps,
            "nBandwidth": self.bitrate,
            "bGotUrl": self.got_url,
            "strProfileName": self.name,
        }


def _get(obj: Any, path: str) -> Any:
    for name in path.split("."):
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def parse_profile(p: Any) -> ProfileInfo | None:
    """A zeep Profile -> ProfileInfo; None for profiles without video (audio/metadata only)."""
    vec = _get(p, "VideoEncoderConfiguration")
    token = _get(p, "token")
    if vec is None or not token:
        return None
    codec = str(_get(vec, "Encoding") or "").upper().replace(".", "").replace("HEVC", "H265")
    return ProfileInfo(
        token=str(token),
        name=str(_get(p, "Name") or ""),
        codec=codec,
        width=_int(_get(vec, "Resolution.Width")),
        height=_int(_get(vec, "Resolution.Height")),
        fps=_int(_get(vec, "RateControl.FrameRateLimit")),
        bitrate=_int(_get(vec, "RateControl.BitrateLimit")),
        ptz=_get(p, "PTZConfiguration") is not None,
        video_source=str(_get(p, "VideoSourceConfiguration.SourceToken") or ""),
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


# -- error translation --------------------------------------------------------------------------------
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
        reason = _short(scrub(stringify_onvif_error(exc), *secrets))
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
class HttpStatusError(Exception):
    """A non-SOAP HTTP refusal (401/403/404): zeep would turn its text body into an AttributeError."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


async def _status_middleware(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
    """Outermost middleware: sees the answer after any digest retry and names auth/path failures."""
    response = await handler(request)
    if response.status in (401, 403, 404):
        body = await response.read()
        if b"Envelope" not in body[:2048]:  # a SOAP fault is left to zeep, which parses its reason
            response.release()
            raise HttpStatusError(response.status)
    return response


class _Camera(_lib.ONVIFCamera):  # type: ignore[misc,name-defined]
    """ONVIFCamera with a configurable device-service path, HTTP digest, no global side effects.

    The library hard-codes /onvif/device_service, sends WS-Security only, pops proxy variables from
    the process environment and trusts GetSystemDateAndTime to be well-formed; each is fixed here.
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


# -- one logged-in device -----------------------------------------------------------------------------
class OnvifDevice:
    """A logged-in device (service addresses known), reused across calls; every call has a deadline."""

    def __init__(self, addr: DeviceAddress, timeout: float) -> None:
        self.addr, self.timeout = addr, timeout
        self._cam: _Camera | None = None
        self._lock = asyncio.Lock()
        self._profiles: list[ProfileInfo] | None = None
        self.broken = False
        self.focus_moving = False
        self.last_used = time.monotonic()

    async def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            with contextlib.suppress(Exception):
                await cam.close()

    async def _login(self) -> _Camera:
        warming = _prewarming
        if warming is not None and not warming.done() and warming.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(warming)
        async with self._lock:
            if self._cam is None:
                cam = _Camera(self.addr)
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

    async def call(self, what: str, fn: Callable[[_Camera], Awaitable[T]]) -> T:
        """Run fn(camera) with login, a deadline and error translation; broken logins are dropped."""
        self.last_used = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                return await fn(await self._login())
        except Exception as exc:
            err = translate(exc, self.timeout, self.addr.secrets())
            if err.fatal:
                self.broken = True
            detail = _short(scrub(f"{type(exc).__name__}: {exc}", *self.addr.secrets()), 200)
            log.warning("onvif %s %s failed: %s (%s)", self.addr.label, what, err.message, detail)
            raise err from None

    def has_service(self, namespace: str) -> bool:
        return self._cam is not None and bool(self._cam.xaddrs.get(namespace))

    # media ---------------------------------------------------------------------------------------
    async def profiles(self, refresh: bool = False) -> list[ProfileInfo]:
        if self._profiles is not None and not refresh:
            return self._profiles

        async def op(cam: _Camera) -> list[ProfileInfo]:
            media = await cam.create_media_service()
            answer = await media.GetProfiles()
            found = [p for p in (parse_profile(x) for x in answer or []) if p is not None]
            if not found:
                raise DeviceBadAnswer("the device has no video profile")
            return found

        self._profiles = await self.call("GetProfiles", op)
        return self._profiles

    async def stream_uri(self, token: str) -> str:
        """The profile's RTSP URI as the device reports it (credentials not added)."""

        async def op(cam: _Camera) -> str:
            media = await cam.create_media_service()
            answer = await media.GetStreamUri(
                {
                    "StreamSetup": {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}},
                    "ProfileToken": token,
                }
            )
            uri = str(_get(answer, "Uri") or "").strip()
            if not uri.lower().startswith(("rtsp://", "rtsps://")):
                raise DeviceBadAnswer("the device reported no usable RTSP stream URI")
            return _fix_stream_host(uri, self.addr.ip)

        return await self.call("GetStreamUri", op)

    async def snapshot(self, token: str) -> bytes | None:
        """A JPEG from the device's snapshot URI (HTTP digest, then basic), or None if it has none."""

        async def op(cam: _Camera) -> bytes | None:
            try:
                data = await cam.get_snapshot(token, timeout=self.timeout)
            except ONVIFAuthError:
                data = await cam.get_snapshot(token, basic_auth=True, timeout=self.timeout)
            return data if data and data[:2] == b"\xff\xd8" else None

        return await self.call("snapshot", op)

    # PTZ -----------------------------------------------------------------------------------------
    async def ptz_profile(self, preferred: str = "") -> str:
        """A profile token with a PTZ configuration, the preferred one if it has one."""
        profiles = await self.profiles()
        if not self.has_service(NS_PTZ):
            raise NotSupported("this camera has no PTZ")
        with_ptz = [p for p in profiles if p.ptz]
        if not with_ptz:
            raise NotSupported("this camera has no PTZ")
        return next((p.token for p in with_ptz if p.token == preferred), with_ptz[0].token)

    async def _ptz(self, what: str, preferred: str, fn: Callable[[Any, str], Awaitable[T]]) -> T:
        token = await self.ptz_profile(preferred)

        async def op(cam: _Camera) -> T:
            return await fn(await cam.create_ptz_service(), token)

        return await self.call(what, op)

    async def move(self, preferred: str, pan: float, tilt: float, zoom: float) -> None:
        velocity: dict[str, Any] = {}
        if pan or tilt:
            velocity["PanTilt"] = {"x": pan, "y": tilt}
        if zoom:
            velocity["Zoom"] = {"x": zoom}
        await self._ptz(
            "ContinuousMove",
            preferred,
            lambda ptz, tok: ptz.ContinuousMove({"ProfileToken": tok, "Velocity": velocity}),
        )

    async def stop(self, preferred: str) -> None:
        """Stop pan/tilt/zoom and, if it was moving, focus."""
        stopped = False
        if self.focus_moving:
            await self.focus(preferred, 0.0)
            stopped = True
        try:
            await self._ptz(
                "Stop", preferred, lambda ptz, tok: ptz.Stop({"ProfileToken": tok, "PanTilt": True, "Zoom": True})
            )
        except NotSupported:
            if not stopped:
                raise

    async def presets(self, preferred: str) -> list[tuple[str, str]]:
        """[(name, token)] of the device's presets."""

        async def op(ptz: Any, tok: str) -> list[tuple[str, str]]:
            answer = await ptz.GetPresets({"ProfileToken": tok})
            return [(str(_get(p, "Name") or ""), str(_get(p, "token") or "")) for p in answer or []]

        return await self._ptz("GetPresets", preferred, op)

    async def set_preset(self, preferred: str, name: str, token: str) -> str:
        request: dict[str, Any] = {}
        if name:
            request["PresetName"] = name
        if token:
            request["PresetToken"] = token

        async def op(ptz: Any, tok: str) -> str:
            answer = await ptz.SetPreset({"ProfileToken": tok, **request})
            return str(answer or token)

        return await self._ptz("SetPreset", preferred, op)

    async def remove_preset(self, preferred: str, token: str) -> None:
        await self._ptz(
            "RemovePreset", preferred, lambda ptz, tok: ptz.RemovePreset({"ProfileToken": tok, "PresetToken": token})
        )

    async def goto_preset(self, preferred: str, token: str) -> None:
        await self._ptz(
            "GotoPreset", preferred, lambda ptz, tok: ptz.GotoPreset({"ProfileToken": tok, "PresetToken": token})
        )

    # imaging ---------------------------------------------------------------------------------------
    async def _video_source(self, preferred: str) -> str:
        profiles = await self.profiles()
        if not self.has_service(NS_IMAGING):
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

        async def op(cam: _Camera) -> None:
            imaging = await cam.create_imaging_service()
            if speed:
                await imaging.Move({"VideoSourceToken": source, "Focus": {"Continuous": {"Speed": speed}}})
            else:
                await imaging.Stop({"VideoSourceToken": source})

        await self.call("focus", op)
        self.focus_moving = bool(speed)

    async def iris(self, preferred: str, step: float) -> float:
        """Open (+) or close (-) the iris by `step` dB; switches exposure to MANUAL, as iris control needs."""
        source = await self._video_source(preferred)

        async def op(cam: _Camera) -> float:
            imaging = await cam.create_imaging_service()
            settings = await imaging.GetImagingSettings({"VideoSourceToken": source})
            exposure = _get(settings, "Exposure")
            current = _get(exposure, "Iris")
            low, high = _get(exposure, "MinIris"), _get(exposure, "MaxIris")
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

        return await self.call("iris", op)


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
            await _lib._cached_document(os.path.join(_lib._WSDL_PATH, f"{name}.wsdl"))
        except Exception as e:  # only an optimisation: the first real call will load it again
            log.warning("onvif: could not preload %s.wsdl: %s", name, e)
            return
    log.info("onvif: WSDLs loaded in %.1f s", time.monotonic() - started)


# -- probe ----------------------------------------------------------------------------------------------
async def probe(addr: DeviceAddress, timeout: float) -> list[ProfileInfo]:
    """Log in, list the video profiles with their stream URIs (no credentials in them)."""
    device = OnvifDevice(addr, timeout)
    try:
        async with asyncio.timeout(timeout):
            profiles = await device.profiles()
            for p in profiles:
                try:
                    p.rtsp_url = strip_credentials(await device.stream_uri(p.token))
                    p.got_url = True
                except (DeviceRefused, NotSupported, DeviceBadAnswer):
                    p.got_url = False
    except TimeoutError:
        log.warning("onvif probe %s: no answer within %g s", addr.label, timeout)
        raise DeviceTimeout(f"the device did not answer within {timeout:g} s") from None
    finally:
        await device.close()
    log.info("onvif probe %s: %d profile(s)", addr.label, len(profiles))
    return profiles


# -- pool of logged-in devices for sources ------------------------------------------------------------
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
        dev = self._devices.get(key)
        if dev is not None and (dev.broken or dev.addr != addr):
            del self._devices[key]
            await dev.close()
            dev = None
        if dev is None:
            dev = self._devices[key] = OnvifDevice(addr, self.timeout)
        return dev

    async def drop(self, key: str) -> None:
        dev = self._devices.pop(key, None)
        if dev is not None:
            await dev.close()

    async def close(self) -> None:
        devices, self._devices = list(self._devices.values()), {}
        for dev in devices:
            await dev.close()


# -- WS-Discovery ----------------------------------------------------------------------------------------
_PROBE = """<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" \
xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" \
xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" \
xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="http://www.onvif.org/ver10/device/wsdl">
<s:Header><a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>
<a:MessageID>{mid}</a:MessageID>
<a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>
<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>
<s:Body><d:Probe><d:Types>{types}</d:Types></d:Probe></s:Body></s:Envelope>"""


@dataclass(frozen=True)
class DiscoveryTarget:
    host: str
    port: int
    interface: str = ""  # local address to send from (multicast: the outgoing interface)

    @property
    def multicast(self) -> bool:
        return ipaddress.ip_address(self.host).is_multicast


def parse_targets(text: str) -> list[DiscoveryTarget]:
    """'239.255.255.250:3702[@<local ip>]' (comma-separated for several); IPv4 literals only."""
    targets = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        hostport, _, iface = item.partition("@")
        host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", str(DISCOVERY_PORT))
        try:
            ipaddress.IPv4Address(host)
            if iface:
                ipaddress.IPv4Address(iface)
            port_n = int(port)
        except ValueError:
            raise ValueError(f"invalid ONVIF discovery target {item!r}: use IPv4:PORT[@LOCAL_IPv4]") from None
        if not 0 < port_n < 65536:
            raise ValueError(f"invalid port in ONVIF discovery target {item!r}")
        targets.append(DiscoveryTarget(host, port_n, iface))
    if not targets:
        raise ValueError("no ONVIF discovery target configured")
    return targets


class _Collector(asyncio.DatagramProtocol):
    def __init__(self, sink: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.sink = sink

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sink(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("onvif discovery: socket error %s", exc)


def parse_probe_matches(data: bytes, sender: str, message_ids: set[str]) -> list[dict[str, str]]:
    """ProbeMatches -> [{strIp, strPort, strOnvifAddr, strModel, strName}]; junk gives []."""
    try:
        root = etree.fromstring(data, _XML)
    except etree.XMLSyntaxError:
        return []
    relates = root.xpath("//*[local-name()='RelatesTo']/text()")
    if relates and relates[0].strip() not in message_ids:
        return []
    out = []
    for match in root.xpath("//*[local-name()='ProbeMatch']"):
        xaddrs = " ".join(match.xpath("./*[local-name()='XAddrs']/text()")).split()
        scopes = " ".join(match.xpath("./*[local-name()='Scopes']/text()")).split()
        chosen = _choose_xaddr(xaddrs, sender)
        if chosen is None:
            continue
        parts = urlsplit(chosen)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        out.append(
            {
                "strIp": (parts.hostname or sender),
                "strPort": str(port),
                "strOnvifAddr": parts.path or DEFAULT_ONVIF_ADDR,
                "strModel": _scope(scopes, "hardware"),
                "strName": _scope(scopes, "name"),
            }
        )
    return out


def _choose_xaddr(xaddrs: list[str], sender: str) -> str | None:
    """Prefer the address the answer came from, then any IPv4 http(s) address."""
    usable = [x for x in xaddrs if x.lower().startswith(("http://", "https://"))]
    for x in usable:
        if urlsplit(x).hostname == sender:
            return x
    for x in usable:
        host = urlsplit(x).hostname or ""
        if re.fullmatch(r"[0-9.]+", host):
            return x
    return usable[0] if usable else None


def _scope(scopes: list[str], kind: str) -> str:
    prefix = f"onvif://www.onvif.org/{kind}/"
    for s in scopes:
        if s.lower().startswith(prefix):
            return _short(unquote(s[len(prefix) :]), 80)
    return ""


async def discover(target: str, timeout: float) -> list[dict[str, str]]:
    """Send WS-Discovery Probes to the configured target(s) and collect answers for `timeout` seconds.

    The target is configurable so that tests (and locked-down hosts) probe a responder on loopback
    by unicast; on a real LAN it is the WS-Discovery multicast group 239.255.255.250:3702.
    """
    targets = parse_targets(target)
    loop = asyncio.get_running_loop()
    found: dict[tuple[str, str, str], dict[str, str]] = {}
    message_ids: set[str] = set()
    transports: list[asyncio.DatagramTransport] = []

    def sink(data: bytes, addr: tuple[str, int]) -> None:
        for dev in parse_probe_matches(data, addr[0], message_ids):
            found.setdefault((dev["strIp"], dev["strPort"], dev["strOnvifAddr"]), dev)

    started = time.monotonic()
    try:
        for t in targets:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
            try:
                sock.setblocking(False)
                if t.multicast:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                    if t.interface:
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(t.interface))
                sock.bind((t.interface or ("127.0.0.1" if _is_loopback(t.host) else "0.0.0.0"), 0))
                transport, _ = await loop.create_datagram_endpoint(lambda: _Collector(sink), sock=sock)
            except OSError:
                sock.close()
                raise
            transports.append(transport)
        # Two probe types (cameras answer NetworkVideoTransmitter, some NVRs only Device), sent twice:
        # UDP may drop one, and WS-Discovery expects senders to repeat.
        for attempt in range(2):
            for t, transport in zip(targets, transports, strict=True):
                for types in ("dn:NetworkVideoTransmitter", "tds:Device"):
                    mid = f"urn:uuid:{uuid.uuid4()}"
                    message_ids.add(mid)
                    transport.sendto(_PROBE.format(mid=mid, types=types).encode(), (t.host, t.port))
            if attempt == 0:
                await asyncio.sleep(min(0.5, timeout / 4))
        await asyncio.sleep(max(0.0, timeout - (time.monotonic() - started)))
    finally:
        for transport in transports:
            transport.close()
    devices = sorted(found.values(), key=lambda d: (d["strIp"], int(d["strPort"])))
    log.info("onvif search via %s: %d device(s) in %.1f s", target, len(devices), time.monotonic() - started)
    return devices
