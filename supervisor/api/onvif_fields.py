"""The manual's fields for the ONVIF client's answers (§5.4 OnvifSearch, OnvifProbe, GetPresets).

Why apart from the client: the client library speaks ONVIF and returns dataclasses; the H5Stream names
(strIp, strOnvifAddr, nBandwidth …) and quirks (a port as a string, the "bps" that is really kbit/s)
are this API's, and are written down once, here.
"""

from __future__ import annotations

from supervisor.onvif import DiscoveredDevice, Preset, ProfileInfo


def profile_label(p: ProfileInfo) -> str:
    """The profile's strName, e.g. "H264 1920 x 1080 25fps 3072bps" (the bitrate is the device's kbit/s)."""
    return f"{p.codec} {p.width} x {p.height} {p.fps}fps {p.bitrate}bps"


def profile_fields(p: ProfileInfo) -> dict[str, str | int | bool]:
    """One entry of OnvifProbe's "profile" list."""
    return {
        "strToken": p.token,
        "strCodecName": p.codec,
        "strName": profile_label(p),
        "strRtspUrl": p.stream_uri,
        "nWidth": p.width,
        "nHeight": p.height,
        "nFps": p.fps,
        "nBandwidth": p.bitrate,
        "bGotUrl": bool(p.stream_uri),
        "strProfileName": p.name,
    }


def device_fields(d: DiscoveredDevice) -> dict[str, str]:
    """One entry of OnvifSearch's "device" list."""
    return {
        "strIp": d.ip,
        "strPort": str(d.port),
        "strOnvifAddr": d.onvif_addr,
        "strModel": d.model,
        "strName": d.name,
    }


def preset_fields(p: Preset) -> dict[str, str]:
    """One entry of GetPresets' "preset" list."""
    return {"strName": p.name, "strToken": p.token}
