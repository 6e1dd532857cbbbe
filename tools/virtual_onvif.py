#!/usr/bin/env python3
"""A virtual ONVIF camera (Profile S subset + PTZ + imaging) for tests, demos and client development.

Real ONVIF cameras are scarce on a developer's desk and never misbehave on demand, so this one
answers the calls a gateway needs with hand-written SOAP and can be told to fail at runtime:

  device   GetSystemDateAndTime (no auth), GetDeviceInformation, GetCapabilities, GetServices, GetScopes
  media    GetProfiles, GetProfile, GetStreamUri, GetSnapshotUri, GetVideoSources
  ptz      ContinuousMove, Stop, GetStatus, GetPresets, SetPreset, RemovePreset, GotoPreset, GetNodes,
           GetConfigurations
  imaging  Move (continuous focus), Stop, GetStatus, GetImagingSettings, SetImagingSettings, GetOptions,
           GetMoveOptions

Auth is WS-Security UsernameToken (digest or text) by default, or HTTP digest (`--auth digest`).
The stream URI points at any RTSP URL (`--rtsp-url`, e.g. tools/gst_camera.py); two profiles,
`main` and `sub`, report different resolutions. A WS-Discovery responder answers Probes by unicast
on `--discovery-bind` (default 127.0.0.1:3702; it never sends multicast).

Plain HTTP side doors (no auth; this is a test tool):
  GET /status                  PTZ position, presets, focus/iris, fault mode, counters (JSON)
  GET /fault?set=MODE          MODE: normal | refuse_login | drop_rtsp | change_uri | slow | garbage
                               (&seconds=N sets the delay for `slow`, default 30)
  GET /snapshot.jpg?profile=   a JPEG (HTTP basic or digest auth when auth is on)

Prints `READY port=<http port> discovery=<host:port|off> device=<device service URL>` when listening.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import uvicorn
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("virtual_onvif")

FAULT_MODES = ("normal", "refuse_login", "drop_rtsp", "change_uri", "slow", "garbage")
NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
    "timg": "http://www.onvif.org/ver20/imaging/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "ter": "http://www.onvif.org/ver10/error",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "dn": "http://www.onvif.org/ver10/network/wsdl",
}
SERVICE_PATHS = {
    "device": "/onvif/device_service",
    "media": "/onvif/media_service",
    "ptz": "/onvif/ptz_service",
    "imaging": "/onvif/imaging_service",
}
PT_VELOCITY = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace"
Z_VELOCITY = "http://www.onvif.org/ver10/tptz/ZoomSpaces/VelocityGenericSpace"
PT_POSITION = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
Z_POSITION = "http://www.onvif.org/ver10/tptz/ZoomSpaces/PositionGenericSpace"
BROKEN_RTSP = "rtsp://127.0.0.1:9/broken"  # discard port: nothing listens there
GARBAGE = b"\x00\xff<<garbage>> this is not SOAP &&& \x89PNG\r\n"
UNAUTHENTICATED_OPS = {"GetSystemDateAndTime"}
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)


def _now() -> float:
    return time.monotonic()


@dataclass
class Axis:
    """One PTZ/focus axis that integrates a continuous velocity over time, so position is observable."""

    pos: float
    low: float
    high: float
    velocity: float = 0.0
    since: float = field(default_factory=_now)
    rate: float = 0.5  # full-speed units per second

    def value(self) -> float:
        p = self.pos + self.velocity * self.rate * (_now() - self.since)
        return min(self.high, max(self.low, p))

    def set_velocity(self, v: float) -> None:
        self.pos, self.since, self.velocity = self.value(), _now(), v

    def set_position(self, p: float) -> None:
        self.pos, self.since, self.velocity = min(self.high, max(self.low, p)), _now(), 0.0


@dataclass
class Profile:
    token: str
    name: str
    width: int
    height: int
    fps: int
    bitrate: int
    rtsp_url: str


class Camera:
    """All state of the virtual device; the SOAP handlers read and change it."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.args = a
        self.user, self.password, self.auth = a.user, a.password, a.auth
        self.ptz_enabled, self.imaging_enabled = not a.no_ptz, not a.no_imaging
        self.fault = a.fault
        self.slow_seconds = a.slow_seconds
        self.uuid = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, a.name + a.serial)}"
        self.http_port = a.port
        mw, mh = (int(x) for x in a.main_size.split("x"))
        sw, sh = (int(x) for x in a.sub_size.split("x"))
        sub_url = a.rtsp_url_sub or a.rtsp_url
        self.profiles = [
            Profile("main", "MainStream", mw, mh, 25, 4096, a.rtsp_url),
            Profile("sub", "SubStream", sw, sh, 15, 512, sub_url),
        ]
        alt_main = sub_url if sub_url != a.rtsp_url else a.rtsp_url + "?alt=1"
        self.alt_urls = {"main": a.alt_rtsp_url or alt_main, "sub": a.alt_rtsp_url_sub or a.rtsp_url}
        self.pan, self.tilt = Axis(0.0, -1.0, 1.0), Axis(0.0, -1.0, 1.0)
        self.zoom = Axis(0.0, 0.0, 1.0)
        self.focus = Axis(0.5, 0.0, 1.0)
        self.iris, self.exposure_mode = -6.0, "AUTO"
        self.presets: dict[str, dict[str, Any]] = {}
        self.preset_seq = 0
        self.counters: dict[str, Any] = {
            "requests": 0,
            "auth_failures": 0,
            "password_digest": 0,
            "password_text": 0,
            "http_digest": 0,
            "ops": {},
        }
        self.stream_uris_given: list[str] = []
        self.snapshot = b""
        self.digest_realm = "virtual_onvif"
        self.digest_key = secrets.token_bytes(16)

    # -- observable state ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "name": self.args.name,
            "fault": self.fault,
            "slow_seconds": self.slow_seconds,
            "auth": self.auth,
            "ptz_enabled": self.ptz_enabled,
            "imaging_enabled": self.imaging_enabled,
            "ptz": {
                "pan": round(self.pan.value(), 4),
                "tilt": round(self.tilt.value(), 4),
                "zoom": round(self.zoom.value(), 4),
                "moving": any(a.velocity for a in (self.pan, self.tilt, self.zoom)),
                "velocity": {"pan": self.pan.velocity, "tilt": self.tilt.velocity, "zoom": self.zoom.velocity},
            },
            "presets": [{"token": t, **p} for t, p in self.presets.items()],
            "imaging": {
                "focus": round(self.focus.value(), 4),
                "focus_moving": bool(self.focus.velocity),
                "iris": self.iris,
                "exposure_mode": self.exposure_mode,
            },
            "counters": self.counters,
            "stream_uris_given": self.stream_uris_given[-20:],
        }

    def camera_time(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.args.clock_offset)

    def xaddr(self, service: str) -> str:
        return f"http://{self.args.advertise_host}:{self.http_port}{SERVICE_PATHS[service]}"

    # -- authentication -----------------------------------------------------------------------------
    def check_wsse(self, header: etree._Element | None) -> bool:
        """WS-Security UsernameToken: PasswordDigest = B64(SHA1(nonce + created + password)) or text."""
        token = _first(header, "Security/UsernameToken") if header is not None else None
        if token is None:
            return False
        user = _text(token, "Username")
        pw_el = _first(token, "Password")
        if pw_el is None or user != self.user:
            return False
        pw_type = pw_el.get("Type", "")
        given = (pw_el.text or "").strip()
        if pw_type.endswith("#PasswordText"):
            self.counters["password_text"] += 1
            return hmac.compare_digest(given.encode(), self.password.encode())
        self.counters["password_digest"] += 1
        nonce_b64, created = _text(token, "Nonce"), _text(token, "Created")
        try:
            nonce = base64.b64decode(nonce_b64)
            when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        if abs((when - self.camera_time()).total_seconds()) > self.args.clock_window:
            log.info("ws-security: Created %s too far from camera clock", created)
            return False
        expect = base64.b64encode(hashlib.sha1(nonce + created.encode() + self.password.encode()).digest())
        return hmac.compare_digest(given.encode(), expect)

    def digest_challenge(self) -> str:
        nonce = (
            f"{int(time.time())}:"
            + hmac.new(self.digest_key, str(int(time.time())).encode(), "sha256").hexdigest()[:24]
        )
        return f'Digest realm="{self.digest_realm}", qop="auth", nonce="{nonce}", algorithm=MD5'

    def check_http(self, request: Request) -> bool:
        """HTTP Basic or Digest (RFC 7616, MD5, qop=auth) against the configured user."""
        header = request.headers.get("authorization", "")
        scheme, _, rest = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, pw = base64.b64decode(rest).decode().partition(":")
            except ValueError:
                return False
            return user == self.user and hmac.compare_digest(pw.encode(), self.password.encode())
        if scheme.lower() != "digest":
            return False
        p = _parse_digest(rest)
        nonce = p.get("nonce", "")
        stamp, _, mac = nonce.partition(":")
        good_mac = hmac.new(self.digest_key, stamp.encode(), "sha256").hexdigest()[:24]
        if not stamp.isdigit() or not hmac.compare_digest(mac, good_mac) or time.time() - int(stamp) > 300:
            return False
        if p.get("username") != self.user:
            return False
        ha1 = hashlib.md5(f"{self.user}:{self.digest_realm}:{self.password}".encode()).hexdigest()
        ha2 = hashlib.md5(f"{request.method}:{p.get('uri', '')}".encode()).hexdigest()
        if p.get("qop"):
            raw = f"{ha1}:{nonce}:{p.get('nc', '')}:{p.get('cnonce', '')}:{p['qop']}:{ha2}"
        else:
            raw = f"{ha1}:{nonce}:{ha2}"
        self.counters["http_digest"] += 1
        return hmac.compare_digest(p.get("response", ""), hashlib.md5(raw.encode()).hexdigest())


# -- XML helpers ------------------------------------------------------------------------------------
def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


def _first(el: etree._Element | None, path: str) -> etree._Element | None:
    """Namespace-agnostic child lookup by a/b/c local names (clients use many prefixes)."""
    for name in path.split("/"):
        if el is None:
            return None
        el = next((c for c in el if _local(c.tag) == name), None)
    return el


def _text(el: etree._Element | None, path: str, default: str = "") -> str:
    found = _first(el, path)
    return (found.text or "").strip() if found is not None and found.text else default


def _float_attr(el: etree._Element | None, path: str, attr: str) -> float | None:
    found = _first(el, path)
    if found is None or found.get(attr) is None:
        return None
    try:
        return float(found.get(attr, ""))
    except ValueError:
        return None


def _parse_digest(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _split_commas(text):
        k, _, v = part.strip().partition("=")
        out[k.strip().lower()] = v.strip().strip('"')
    return out


def _split_commas(text: str) -> list[str]:
    parts, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [*parts, cur] if cur.strip() else parts


def envelope(body: str, header: str = "") -> str:
    decl = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<s:Envelope {decl}>'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )


def fault(code: str, subcode: str, reason: str, status: int) -> Response:
    body = (
        f"<s:Fault><s:Code><s:Value>s:{code}</s:Value><s:Subcode><s:Value>{subcode}</s:Value>"
        f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en">{escape(reason)}</s:Text></s:Reason>'
        "</s:Fault>"
    )
    return soap(body, status)


def soap(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        envelope(body), status_code=status, headers=headers, media_type="application/soap+xml; charset=utf-8"
    )


class SoapFault(Exception):
    def __init__(self, code: str, subcode: str, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.code, self.subcode, self.reason, self.status = code, subcode, reason, status


def _bad_profile() -> SoapFault:
    return SoapFault("Sender", "ter:InvalidArgVal", "No such profile (ter:NoProfile)")


# -- operations -------------------------------------------------------------------------------------
def op_GetSystemDateAndTime(cam: Camera, req: etree._Element) -> str:
    t = cam.camera_time()
    return (
        "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
        "<tt:DateTimeType>Manual</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
        "<tt:TimeZone><tt:TZ>UTC0</tt:TZ></tt:TimeZone>"
        f"<tt:UTCDateTime><tt:Time><tt:Hour>{t.hour}</tt:Hour><tt:Minute>{t.minute}</tt:Minute>"
        f"<tt:Second>{t.second}</tt:Second></tt:Time><tt:Date><tt:Year>{t.year}</tt:Year>"
        f"<tt:Month>{t.month}</tt:Month><tt:Day>{t.day}</tt:Day></tt:Date></tt:UTCDateTime>"
        "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
    )


def op_GetDeviceInformation(cam: Camera, req: etree._Element) -> str:
    a = cam.args
    return (
        f"<tds:GetDeviceInformationResponse><tds:Manufacturer>{escape(a.manufacturer)}</tds:Manufacturer>"
        f"<tds:Model>{escape(a.model)}</tds:Model><tds:FirmwareVersion>1.0.0</tds:FirmwareVersion>"
        f"<tds:SerialNumber>{escape(a.serial)}</tds:SerialNumber><tds:HardwareId>VIRT-1</tds:HardwareId>"
        "</tds:GetDeviceInformationResponse>"
    )


def op_GetCapabilities(cam: Camera, req: etree._Element) -> str:
    parts = [f"<tt:Device><tt:XAddr>{cam.xaddr('device')}</tt:XAddr></tt:Device>"]
    if cam.imaging_enabled:
        parts.append(f"<tt:Imaging><tt:XAddr>{cam.xaddr('imaging')}</tt:XAddr></tt:Imaging>")
    parts.append(
        f"<tt:Media><tt:XAddr>{cam.xaddr('media')}</tt:XAddr><tt:StreamingCapabilities>"
        "<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
        "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
    )
    if cam.ptz_enabled:
        parts.append(f"<tt:PTZ><tt:XAddr>{cam.xaddr('ptz')}</tt:XAddr></tt:PTZ>")
    return (
        f"<tds:GetCapabilitiesResponse><tds:Capabilities>{''.join(parts)}</tds:Capabilities>"
        "</tds:GetCapabilitiesResponse>"
    )


def op_GetServices(cam: Camera, req: etree._Element) -> str:
    services = [("device", NS["tds"]), ("media", NS["trt"])]
    if cam.ptz_enabled:
        services.append(("ptz", NS["tptz"]))
    if cam.imaging_enabled:
        services.append(("imaging", NS["timg"]))
    items = "".join(
        f"<tds:Service><tds:Namespace>{ns}</tds:Namespace><tds:XAddr>{cam.xaddr(name)}</tds:XAddr>"
        "<tds:Version><tt:Major>2</tt:Major><tt:Minor>6</tt:Minor></tds:Version></tds:Service>"
        for name, ns in services
    )
    return f"<tds:GetServicesResponse>{items}</tds:GetServicesResponse>"


def op_GetScopes(cam: Camera, req: etree._Element) -> str:
    items = "".join(
        f"<tds:Scopes><tt:ScopeDef>Fixed</tt:ScopeDef><tt:ScopeItem>{escape(s)}</tt:ScopeItem></tds:Scopes>"
        for s in scopes(cam)
    )
    return f"<tds:GetScopesResponse>{items}</tds:GetScopesResponse>"


def _profile_xml(cam: Camera, p: Profile, tag: str) -> str:
    ptz = ""
    if cam.ptz_enabled:
        ptz = (
            '<tt:PTZConfiguration token="ptzcfg"><tt:Name>PTZ</tt:Name><tt:UseCount>2</tt:UseCount>'
            "<tt:NodeToken>ptznode</tt:NodeToken>"
            f"<tt:DefaultContinuousPanTiltVelocitySpace>{PT_VELOCITY}</tt:DefaultContinuousPanTiltVelocitySpace>"
            f"<tt:DefaultContinuousZoomVelocitySpace>{Z_VELOCITY}</tt:DefaultContinuousZoomVelocitySpace>"
            "<tt:DefaultPTZTimeout>PT10S</tt:DefaultPTZTimeout></tt:PTZConfiguration>"
        )
    main = cam.profiles[0]
    return (
        f'<{tag} token="{p.token}" fixed="true"><tt:Name>{p.name}</tt:Name>'
        '<tt:VideoSourceConfiguration token="vsc0"><tt:Name>VideoSource</tt:Name><tt:UseCount>2</tt:UseCount>'
        f'<tt:SourceToken>vs0</tt:SourceToken><tt:Bounds x="0" y="0" width="{main.width}" '
        f'height="{main.height}"/></tt:VideoSourceConfiguration>'
        f'<tt:VideoEncoderConfiguration token="vec_{p.token}"><tt:Name>{p.name}Encoder</tt:Name>'
        "<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding>"
        f"<tt:Resolution><tt:Width>{p.width}</tt:Width><tt:Height>{p.height}</tt:Height></tt:Resolution>"
        f"<tt:Quality>5</tt:Quality><tt:RateControl><tt:FrameRateLimit>{p.fps}</tt:FrameRateLimit>"
        f"<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>{p.bitrate}</tt:BitrateLimit>"
        f"</tt:RateControl><tt:H264><tt:GovLength>{p.fps * 2}</tt:GovLength>"
        "<tt:H264Profile>Main</tt:H264Profile>"
        "</tt:H264><tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address>"
        "</tt:Address><tt:Port>0</tt:Port><tt:TTL>1</tt:TTL><tt:AutoStart>false</tt:AutoStart></tt:Multicast>"
        "<tt:SessionTimeout>PT60S</tt:SessionTimeout></tt:VideoEncoderConfiguration>"
        f"{ptz}</{tag}>"
    )


def _profile(cam: Camera, req: etree._Element) -> Profile:
    token = _text(req, "ProfileToken")
    for p in cam.profiles:
        if p.token == token:
            return p
    raise _bad_profile()


def op_GetProfiles(cam: Camera, req: etree._Element) -> str:
    items = "".join(_profile_xml(cam, p, "trt:Profiles") for p in cam.profiles)
    return f"<trt:GetProfilesResponse>{items}</trt:GetProfilesResponse>"


def op_GetProfile(cam: Camera, req: etree._Element) -> str:
    profile = _profile_xml(cam, _profile(cam, req), "trt:Profile")
    return f"<trt:GetProfileResponse>{profile}</trt:GetProfileResponse>"


def op_GetVideoSources(cam: Camera, req: etree._Element) -> str:
    m = cam.profiles[0]
    return (
        '<trt:GetVideoSourcesResponse><trt:VideoSources token="vs0"><tt:Framerate>25</tt:Framerate>'
        f"<tt:Resolution><tt:Width>{m.width}</tt:Width><tt:Height>{m.height}</tt:Height></tt:Resolution>"
        "</trt:VideoSources></trt:GetVideoSourcesResponse>"
    )


def _media_uri(tag: str, uri: str) -> str:
    return (
        f"<trt:{tag}Response><trt:MediaUri><tt:Uri>{escape(uri)}</tt:Uri>"
        "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
        "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout>"
        f"</trt:MediaUri></trt:{tag}Response>"
    )


def op_GetStreamUri(cam: Camera, req: etree._Element) -> str:
    p = _profile(cam, req)
    uri = {"drop_rtsp": BROKEN_RTSP, "change_uri": cam.alt_urls[p.token]}.get(cam.fault, p.rtsp_url)
    cam.stream_uris_given.append(uri)
    return _media_uri("GetStreamUri", uri)


def op_GetSnapshotUri(cam: Camera, req: etree._Element) -> str:
    p = _profile(cam, req)
    return _media_uri(
        "GetSnapshotUri", f"http://{cam.args.advertise_host}:{cam.http_port}/snapshot.jpg?profile={p.token}"
    )


def _need_ptz(cam: Camera, req: etree._Element) -> None:
    if not cam.ptz_enabled:
        raise SoapFault("Receiver", "ter:ActionNotSupported", "PTZ is not supported")
    _profile(cam, req)


def op_ContinuousMove(cam: Camera, req: etree._Element) -> str:
    _need_ptz(cam, req)
    for value, axis in (
        (_float_attr(req, "Velocity/PanTilt", "x"), cam.pan),
        (_float_attr(req, "Velocity/PanTilt", "y"), cam.tilt),
        (_float_attr(req, "Velocity/Zoom", "x"), cam.zoom),
    ):
        if value is not None:
            if not -1.0 <= value <= 1.0:
                raise SoapFault("Sender", "ter:InvalidArgVal", "velocity out of range (ter:InvalidVelocity)")
            axis.set_velocity(value)
    return "<tptz:ContinuousMoveResponse/>"


def op_Stop(cam: Camera, req: etree._Element) -> str:
    if _local(req.tag) == "Stop" and etree.QName(req).namespace == NS["timg"]:
        return img_Stop(cam, req)
    _need_ptz(cam, req)
    pan_tilt = _text(req, "PanTilt", "true").lower() != "false"
    zoom = _text(req, "Zoom", "true").lower() != "false"
    if pan_tilt:
        cam.pan.set_velocity(0.0)
        cam.tilt.set_velocity(0.0)
    if zoom:
        cam.zoom.set_velocity(0.0)
    return "<tptz:StopResponse/>"


def op_GetStatus(cam: Camera, req: etree._Element) -> str:
    if etree.QName(req).namespace == NS["timg"]:
        return img_GetStatus(cam, req)
    _need_ptz(cam, req)
    moving_pt = "MOVING" if cam.pan.velocity or cam.tilt.velocity else "IDLE"
    moving_z = "MOVING" if cam.zoom.velocity else "IDLE"
    return (
        f"<tptz:GetStatusResponse><tptz:PTZStatus><tt:Position>"
        f'<tt:PanTilt x="{cam.pan.value():.4f}" y="{cam.tilt.value():.4f}" space="{PT_POSITION}"/>'
        f'<tt:Zoom x="{cam.zoom.value():.4f}" space="{Z_POSITION}"/></tt:Position>'
        f"<tt:MoveStatus><tt:PanTilt>{moving_pt}</tt:PanTilt><tt:Zoom>{moving_z}</tt:Zoom></tt:MoveStatus>"
        f"<tt:UtcTime>{cam.camera_time().strftime('%Y-%m-%dT%H:%M:%SZ')}</tt:UtcTime>"
        "</tptz:PTZStatus></tptz:GetStatusResponse>"
    )


def op_GetPresets(cam: Camera, req: etree._Element) -> str:
    _need_ptz(cam, req)
    items = "".join(
        f'<tptz:Preset token="{escape(t)}"><tt:Name>{escape(p["name"])}</tt:Name><tt:PTZPosition>'
        f'<tt:PanTilt x="{p["pan"]:.4f}" y="{p["tilt"]:.4f}" space="{PT_POSITION}"/>'
        f'<tt:Zoom x="{p["zoom"]:.4f}" space="{Z_POSITION}"/></tt:PTZPosition></tptz:Preset>'
        for t, p in cam.presets.items()
    )
    return f"<tptz:GetPresetsResponse>{items}</tptz:GetPresetsResponse>"


def op_SetPreset(cam: Camera, req: etree._Element) -> str:
    _need_ptz(cam, req)
    token = _text(req, "PresetToken")
    name = _text(req, "PresetName")
    if not token:
        cam.preset_seq += 1
        token = str(cam.preset_seq)
        while token in cam.presets:
            cam.preset_seq += 1
            token = str(cam.preset_seq)
    if len(cam.presets) >= 64 and token not in cam.presets:
        raise SoapFault("Receiver", "ter:Action", "Too many presets (ter:TooManyPresets)", 500)
    name = name or cam.presets.get(token, {}).get("name") or f"Preset {token}"
    cam.presets[token] = {"name": name, "pan": cam.pan.value(), "tilt": cam.tilt.value(), "zoom": cam.zoom.value()}
    return f"<tptz:SetPresetResponse><tptz:PresetToken>{escape(token)}</tptz:PresetToken></tptz:SetPresetResponse>"


def _preset(cam: Camera, req: etree._Element) -> str:
    token = _text(req, "PresetToken")
    if token not in cam.presets:
        raise SoapFault("Sender", "ter:InvalidArgVal", "No such preset (ter:NoToken)")
    return token


def op_RemovePreset(cam: Camera, req: etree._Element) -> str:
    _need_ptz(cam, req)
    del cam.presets[_preset(cam, req)]
    return "<tptz:RemovePresetResponse/>"


def op_GotoPreset(cam: Camera, req: etree._Element) -> str:
    _need_ptz(cam, req)
    p = cam.presets[_preset(cam, req)]
    cam.pan.set_position(p["pan"])
    cam.tilt.set_position(p["tilt"])
    cam.zoom.set_position(p["zoom"])
    return "<tptz:GotoPresetResponse/>"


def op_GetNodes(cam: Camera, req: etree._Element) -> str:
    if not cam.ptz_enabled:
        raise SoapFault("Receiver", "ter:ActionNotSupported", "PTZ is not supported")
    return (
        '<tptz:GetNodesResponse><tptz:PTZNode token="ptznode" FixedHomePosition="false">'
        "<tt:Name>VirtualPTZ</tt:Name><tt:SupportedPTZSpaces>"
        f"<tt:ContinuousPanTiltVelocitySpace><tt:URI>{PT_VELOCITY}</tt:URI>"
        "<tt:XRange><tt:Min>-1</tt:Min><tt:Max>1</tt:Max></tt:XRange>"
        "<tt:YRange><tt:Min>-1</tt:Min><tt:Max>1</tt:Max></tt:YRange></tt:ContinuousPanTiltVelocitySpace>"
        f"<tt:ContinuousZoomVelocitySpace><tt:URI>{Z_VELOCITY}</tt:URI>"
        "<tt:XRange><tt:Min>-1</tt:Min><tt:Max>1</tt:Max></tt:XRange></tt:ContinuousZoomVelocitySpace>"
        "</tt:SupportedPTZSpaces><tt:MaximumNumberOfPresets>64</tt:MaximumNumberOfPresets>"
        "<tt:HomeSupported>false</tt:HomeSupported></tptz:PTZNode></tptz:GetNodesResponse>"
    )


def op_GetConfigurations(cam: Camera, req: etree._Element) -> str:
    if not cam.ptz_enabled:
        raise SoapFault("Receiver", "ter:ActionNotSupported", "PTZ is not supported")
    return (
        '<tptz:GetConfigurationsResponse><tptz:PTZConfiguration token="ptzcfg"><tt:Name>PTZ</tt:Name>'
        "<tt:UseCount>2</tt:UseCount><tt:NodeToken>ptznode</tt:NodeToken>"
        "<tt:DefaultPTZTimeout>PT10S</tt:DefaultPTZTimeout></tptz:PTZConfiguration>"
        "</tptz:GetConfigurationsResponse>"
    )


# imaging (same operation names as PTZ for Stop/GetStatus: dispatched on the request namespace)
def _need_imaging(cam: Camera, req: etree._Element) -> None:
    if not cam.imaging_enabled:
        raise SoapFault("Receiver", "ter:ActionNotSupported", "Imaging is not supported")
    if _text(req, "VideoSourceToken") != "vs0":
        raise SoapFault("Sender", "ter:InvalidArgVal", "No such video source (ter:NoSource)")


def op_Move(cam: Camera, req: etree._Element) -> str:
    _need_imaging(cam, req)
    speed = _text(req, "Focus/Continuous/Speed")
    try:
        value = float(speed)
    except ValueError:
        raise SoapFault("Sender", "ter:InvalidArgVal", "only continuous focus moves are supported") from None
    cam.focus.set_velocity(max(-1.0, min(1.0, value)))
    return "<timg:MoveResponse/>"


def img_Stop(cam: Camera, req: etree._Element) -> str:
    _need_imaging(cam, req)
    cam.focus.set_velocity(0.0)
    return "<timg:StopResponse/>"


def img_GetStatus(cam: Camera, req: etree._Element) -> str:
    _need_imaging(cam, req)
    moving = "MOVING" if cam.focus.velocity else "IDLE"
    return (
        f"<timg:GetStatusResponse><timg:Status><tt:FocusStatus20><tt:Position>{cam.focus.value():.4f}"
        f"</tt:Position><tt:MoveStatus>{moving}</tt:MoveStatus></tt:FocusStatus20></timg:Status>"
        "</timg:GetStatusResponse>"
    )


def op_GetImagingSettings(cam: Camera, req: etree._Element) -> str:
    _need_imaging(cam, req)
    return (
        "<timg:GetImagingSettingsResponse><timg:ImagingSettings><tt:Brightness>50</tt:Brightness>"
        f"<tt:Exposure><tt:Mode>{cam.exposure_mode}</tt:Mode><tt:MinIris>-22</tt:MinIris>"
        f"<tt:MaxIris>0</tt:MaxIris><tt:Iris>{cam.iris:.2f}</tt:Iris></tt:Exposure>"
        "<tt:Focus><tt:AutoFocusMode>MANUAL</tt:AutoFocusMode></tt:Focus>"
        "</timg:ImagingSettings></timg:GetImagingSettingsResponse>"
    )


def op_SetImagingSettings(cam: Camera, req: etree._Element) -> str:
    _need_imaging(cam, req)
    exposure = _first(req, "ImagingSettings/Exposure")
    if exposure is not None:
        mode = _text(exposure, "Mode")
        if mode:
            if mode not in ("AUTO", "MANUAL"):
                raise SoapFault("Sender", "ter:InvalidArgVal", "bad exposure mode")
            cam.exposure_mode = mode
        iris = _text(exposure, "Iris")
        if iris:
            try:
                value = float(iris)
            except ValueError:
                raise SoapFault("Sender", "ter:InvalidArgVal", "bad iris") from None
            if not -22.0 <= value <= 0.0:
                raise SoapFault("Sender", "ter:InvalidArgVal", "iris out of range (ter:SettingsInvalid)")
            cam.iris = value
    return "<timg:SetImagingSettingsResponse/>"


def op_GetOptions(cam: Camera, req: etree._Element) -> str:
    _need_imaging(cam, req)
    return (
        "<timg:GetOptionsResponse><timg:ImagingOptions><tt:Exposure><tt:Mode>AUTO</tt:Mode>"
        "<tt:Mode>MANUAL</tt:Mode><tt:Iris><tt:Min>-22</tt:Min><tt:Max>0</tt:Max></tt:Iris></tt:Exposure>"
        "</timg:ImagingOptions></timg:GetOptionsResponse>"
    )


def op_GetMoveOptions(cam: Camera, req: etree._Element) -> str:
    _need_imaging(cam, req)
    return (
        "<timg:GetMoveOptionsResponse><timg:MoveOptions><tt:Continuous><tt:Speed><tt:Min>-1</tt:Min>"
        "<tt:Max>1</tt:Max></tt:Speed></tt:Continuous></timg:MoveOptions></timg:GetMoveOptionsResponse>"
    )


OPERATIONS = {name[3:]: fn for name, fn in dict(globals()).items() if name.startswith("op_")}


def scopes(cam: Camera) -> list[str]:
    a = cam.args
    return [
        "onvif://www.onvif.org/type/video_encoder",
        "onvif://www.onvif.org/type/ptz",
        "onvif://www.onvif.org/Profile/Streaming",
        f"onvif://www.onvif.org/hardware/{quote(a.model)}",
        f"onvif://www.onvif.org/name/{quote(a.name)}",
        "onvif://www.onvif.org/location/country/virtual",
    ]


# -- HTTP side ----------------------------------------------------------------------------------------
def build_app(cam: Camera) -> Starlette:
    async def service(request: Request) -> Response:
        cam.counters["requests"] += 1
        body = await request.body()
        if cam.fault == "slow":
            await asyncio.sleep(cam.slow_seconds)
        if cam.fault == "garbage":
            return Response(GARBAGE, media_type="application/soap+xml")
        try:
            root = etree.fromstring(body, PARSER)
        except etree.XMLSyntaxError:
            return fault("Sender", "ter:WellFormed", "request is not well-formed XML", 400)
        header, body_el = _first(root, "Header"), _first(root, "Body")
        req = body_el[0] if body_el is not None and len(body_el) else None
        if req is None:
            return fault("Sender", "ter:InvalidArgs", "empty SOAP body", 400)
        op = _local(req.tag)
        cam.counters["ops"][op] = cam.counters["ops"].get(op, 0) + 1
        if op not in UNAUTHENTICATED_OPS and cam.auth != "none":
            if cam.auth == "digest":
                ok = cam.fault != "refuse_login" and cam.check_http(request)
                if not ok:
                    cam.counters["auth_failures"] += 1
                    return Response(
                        "401 Unauthorized", status_code=401, headers={"WWW-Authenticate": cam.digest_challenge()}
                    )
            else:
                ok = cam.fault != "refuse_login" and cam.check_wsse(header)
                if not ok:
                    cam.counters["auth_failures"] += 1
                    return fault("Sender", "ter:NotAuthorized", "Sender not Authorized", 400)
        fn = OPERATIONS.get(op)
        if fn is None:
            return fault("Receiver", "ter:ActionNotSupported", f"{op} is not supported", 500)
        try:
            return soap(fn(cam, req))
        except SoapFault as e:
            return fault(e.code, e.subcode, e.reason, e.status)

    async def status(request: Request) -> Response:
        return JSONResponse(cam.status())

    async def set_fault(request: Request) -> Response:
        mode = request.query_params.get("set")
        if mode is not None:
            if mode not in FAULT_MODES:
                return JSONResponse({"error": f"unknown mode; use one of {', '.join(FAULT_MODES)}"}, 400)
            cam.fault = mode
            if "seconds" in request.query_params:
                cam.slow_seconds = float(request.query_params["seconds"])
            log.info("fault mode -> %s", mode)
        return JSONResponse({"fault": cam.fault, "slow_seconds": cam.slow_seconds})

    async def snapshot(request: Request) -> Response:
        if cam.fault == "garbage":
            return Response(GARBAGE, media_type="image/jpeg")
        if cam.auth != "none" and (cam.fault == "refuse_login" or not cam.check_http(request)):
            return Response("401 Unauthorized", status_code=401, headers={"WWW-Authenticate": cam.digest_challenge()})
        if not cam.snapshot:
            return Response("no snapshot", status_code=404)
        return Response(cam.snapshot, media_type="image/jpeg")

    routes = [Route(path, service, methods=["POST"]) for path in SERVICE_PATHS.values()]
    routes += [Route("/status", status), Route("/fault", set_fault), Route("/snapshot.jpg", snapshot)]
    return Starlette(routes=routes)


# -- WS-Discovery --------------------------------------------------------------------------------------
class DiscoveryResponder(asyncio.DatagramProtocol):
    """Answers WS-Discovery Probes for NetworkVideoTransmitter/Device by unicast to the sender."""

    def __init__(self, cam: Camera) -> None:
        self.cam = cam
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        try:
            root = etree.fromstring(data, PARSER)
        except etree.XMLSyntaxError:
            return
        probe = _first(root, "Body/Probe")
        if probe is None:
            return
        types = _text(probe, "Types")
        wanted = {t.rpartition(":")[2] for t in types.split()}
        if wanted and not wanted & {"NetworkVideoTransmitter", "Device"}:
            return
        if self.cam.fault == "garbage":
            self.transport.sendto(GARBAGE, addr)
            return
        message_id = _text(root, "Header/MessageID")
        self.transport.sendto(probe_match(self.cam, message_id).encode(), addr)
        log.info("discovery: answered probe from %s:%s", *addr[:2])


def probe_match(cam: Camera, relates_to: str) -> str:
    header = (
        f"<wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>"
        f"<wsa:RelatesTo>{escape(relates_to)}</wsa:RelatesTo>"
        "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
        "<wsa:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</wsa:Action>"
    )
    body = (
        f"<d:ProbeMatches><d:ProbeMatch><wsa:EndpointReference><wsa:Address>{cam.uuid}</wsa:Address>"
        "</wsa:EndpointReference><d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>"
        f"<d:Scopes>{escape(' '.join(scopes(cam)))}</d:Scopes>"
        f"<d:XAddrs>{cam.xaddr('device')}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion>"
        "</d:ProbeMatch></d:ProbeMatches>"
    )
    return envelope(body, header)


async def start_discovery(cam: Camera, bind: str, join_multicast: bool) -> tuple[str, int] | None:
    if bind == "off":
        return None
    host, _, port = bind.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    if join_multicast:  # LAN demos only: this sends an IGMP join; tests never pass it
        mreq = struct.pack("4s4s", socket.inet_aton("239.255.255.250"), socket.inet_aton("0.0.0.0"))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: DiscoveryResponder(cam), sock=sock)
    return sock.getsockname()[:2]


# -- startup --------------------------------------------------------------------------------------------
def make_snapshot(path: str) -> bytes:
    """A JPEG to serve: --snapshot file, else one ffmpeg test-pattern frame, else the repo's placeholder."""
    if path:
        return Path(path).read_bytes()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        try:
            out = subprocess.run(
                [
                    ffmpeg,
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc2=size=640x360:rate=1",
                    "-frames:v",
                    "1",
                    "-f",
                    "image2pipe",
                    "-c:v",
                    "mjpeg",
                    "pipe:1",
                ],
                capture_output=True,
                timeout=20,
                check=True,
            )
            if out.stdout.startswith(b"\xff\xd8"):
                return out.stdout
        except (subprocess.SubprocessError, OSError):
            pass
    fallback = Path(__file__).resolve().parents[1] / "media" / "connecting.jpg"
    return fallback.read_bytes() if fallback.exists() else b""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (0 = pick a free one)")
    p.add_argument("--advertise-host", default="", help="host put into XAddrs/URIs (default: --host)")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default="12345")
    p.add_argument(
        "--auth",
        choices=("wsse", "digest", "none"),
        default="wsse",
        help="wsse: WS-Security UsernameToken; digest: HTTP digest; none: open",
    )
    p.add_argument("--rtsp-url", default="rtsp://127.0.0.1:8554/h264", help="stream URI of profile main")
    p.add_argument("--rtsp-url-sub", default="", help="stream URI of profile sub (default: --rtsp-url)")
    p.add_argument("--alt-rtsp-url", default="", help="main URI reported in change_uri mode")
    p.add_argument("--alt-rtsp-url-sub", default="", help="sub URI reported in change_uri mode")
    p.add_argument("--main-size", default="1920x1080")
    p.add_argument("--sub-size", default="640x360")
    p.add_argument("--name", default="VirtualCam")
    p.add_argument("--model", default="H5G-Virtual-PTZ")
    p.add_argument("--manufacturer", default="h5gate")
    p.add_argument("--serial", default="VC0001")
    p.add_argument("--no-ptz", action="store_true", help="a fixed camera: no PTZ service")
    p.add_argument("--no-imaging", action="store_true", help="no imaging service (no focus/iris)")
    p.add_argument(
        "--discovery-bind",
        default="127.0.0.1:3702",
        help="UDP host:port of the WS-Discovery responder, or 'off' (port 0 = pick)",
    )
    p.add_argument(
        "--discovery-join-multicast",
        action="store_true",
        help="also join 239.255.255.250 (real LAN demos only; needs --discovery-bind 0.0.0.0:3702)",
    )
    p.add_argument("--fault", choices=FAULT_MODES, default="normal", help="initial fault mode")
    p.add_argument("--slow-seconds", type=float, default=30.0, help="delay of the slow fault mode")
    p.add_argument("--clock-offset", type=float, default=0.0, help="seconds the camera clock is off")
    p.add_argument(
        "--clock-window", type=float, default=300.0, help="max |UsernameToken Created - camera clock| in seconds"
    )
    p.add_argument("--snapshot", default="", help="JPEG file to serve (default: generated)")
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="exit when the process that started this one dies (test harnesses)",
    )
    p.add_argument("--log-level", default="WARNING")
    a = p.parse_args(argv)
    a.advertise_host = a.advertise_host or ("127.0.0.1" if a.host in ("0.0.0.0", "") else a.host)
    return a


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """A killed test run must not leave cameras behind: reparenting means the parent is gone."""
    while os.getppid() == parent:
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
            return
        except TimeoutError:
            continue
    log.warning("parent process %d gone; exiting", parent)
    stop.set()


async def main(argv: list[str] | None = None) -> None:
    parent = os.getppid()
    a = parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s virtual_onvif %(levelname)s %(message)s")
    cam = Camera(a)
    cam.snapshot = await asyncio.to_thread(make_snapshot, a.snapshot)
    config = uvicorn.Config(
        build_app(cam),
        host=a.host,
        port=a.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            sys.exit("virtual_onvif: HTTP server failed to start")
        await asyncio.sleep(0.02)
    cam.http_port = server.servers[0].sockets[0].getsockname()[1]
    disc = await start_discovery(cam, a.discovery_bind, a.discovery_join_multicast)
    disc_text = f"{disc[0]}:{disc[1]}" if disc else "off"
    print(f"READY port={cam.http_port} discovery={disc_text} device={cam.xaddr('device')}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if a.exit_with_parent:
        watcher = asyncio.create_task(_watch_parent(parent, stop))  # noqa: F841 - runs until exit
    await stop.wait()
    server.should_exit = True
    await task


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    os._exit(0)  # uvicorn/asyncio teardown must never keep a test waiting
