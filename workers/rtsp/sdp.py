"""SDP (RFC 4566) as an RTSP camera describes its streams: one Media per m= line, with what we need to
depacketize it (payload type, encoding, clock rate, fmtp) and where to SETUP it (control URL)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from urllib.parse import urljoin

# Static payload types (RFC 3551) that cameras send without an rtpmap line.
STATIC_PAYLOADS = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 26: ("JPEG", 90000, 1), 14: ("MPA", 90000, 1)}


@dataclass
class Media:
    kind: str  # "video", "audio", ...
    payload: int
    encoding: str = ""  # upper case: H264, H265, MPEG4-GENERIC, PCMA, PCMU, JPEG, ...
    clock_rate: int = 90000
    channels: int = 1
    fmtp: dict[str, str] = field(default_factory=dict)
    control: str = ""
    framerate: float = 0.0
    direction: str = "sendrecv"  # a=sendonly/recvonly/...: an ONVIF back-channel is the camera's "sendonly"

    def param_sets(self, *names: str) -> list[bytes]:
        """Base64 parameter sets from fmtp (sprop-parameter-sets, sprop-vps/sps/pps), in the order named."""
        out: list[bytes] = []
        for name in names:
            for item in self.fmtp.get(name, "").split(","):
                item = item.strip()
                if not item:
                    continue
                try:
                    out.append(base64.b64decode(item + "=" * (-len(item) % 4)))
                except (binascii.Error, ValueError):
                    continue
        return [p for p in out if p]


@dataclass
class Sdp:
    media: list[Media]
    control: str = ""  # session-level a=control

    def first(self, kind: str) -> Media | None:
        return next((m for m in self.media if m.kind == kind), None)


def parse_sdp(text: str) -> Sdp:
    sdp = Sdp([])
    current: Media | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        key, value = line[0], line[2:]
        if key == "m":
            parts = value.split()
            if len(parts) < 4:
                current = None
                continue
            try:
                pt = int(parts[3])
            except ValueError:
                current = None
                continue
            current = Media(parts[0].lower(), pt)
            if pt in STATIC_PAYLOADS:
                current.encoding, current.clock_rate, current.channels = STATIC_PAYLOADS[pt]
            sdp.media.append(current)
        elif key == "a":
            name, _, arg = value.partition(":")
            if current is None:
                if name == "control":
                    sdp.control = arg.strip()
                continue
            if name == "control":
                current.control = arg.strip()
            elif name == "rtpmap":
                pt_text, _, spec = arg.partition(" ")
                if pt_text.strip() == str(current.payload):
                    bits = spec.strip().split("/")
                    current.encoding = bits[0].upper()
                    if len(bits) > 1 and bits[1].isdigit():
                        current.clock_rate = int(bits[1])
                    if len(bits) > 2 and bits[2].isdigit():
                        current.channels = int(bits[2])
            elif name == "fmtp":
                pt_text, _, params = arg.partition(" ")
                if pt_text.strip() == str(current.payload):
                    for item in params.split(";"):
                        k, _, v = item.strip().partition("=")
                        if k:
                            current.fmtp[k.strip().lower()] = v.strip()
            elif name in ("sendonly", "recvonly", "sendrecv", "inactive") and not arg:
                current.direction = name
            elif name == "framerate":
                try:
                    current.framerate = float(arg)
                except ValueError:
                    pass
    return sdp


def control_url(base: str, control: str) -> str:
    """Where to SETUP a stream: an absolute control as is, '*' or none is the base, else relative to it."""
    if not control or control == "*":
        return base
    if control.lower().startswith(("rtsp://", "rtsps://")):
        return control
    if not base.endswith("/"):
        base += "/"
    # urljoin only knows the schemes it was told about; join as http and put the scheme back.
    scheme, rest = base.split(":", 1)
    return scheme + ":" + urljoin("http:" + rest, control)[5:]
