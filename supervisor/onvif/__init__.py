"""The ONVIF client library: device login (session), media, PTZ, imaging and WS-Discovery.

It speaks ONVIF and returns plain dataclasses (ProfileInfo, Preset, DiscoveredDevice); it knows nothing
of the H5Stream API: supervisor/api/onvif_fields.py turns its answers into the manual's fields.
Every failure is an `OnvifError` with a fixed, credential-free message.
"""

from supervisor.onvif.device import DevicePool, OnvifDevice, probe
from supervisor.onvif.discovery import DiscoveredDevice, DiscoveryTarget, discover, parse_probe_matches, parse_targets
from supervisor.onvif.errors import (
    DeviceAuthError,
    DeviceBadAnswer,
    DeviceRefused,
    DeviceTimeout,
    DeviceUnreachable,
    NotSupported,
    OnvifError,
)
from supervisor.onvif.media import ProfileInfo, pick_profiles
from supervisor.onvif.ptz import Preset
from supervisor.onvif.session import start_prewarm
from supervisor.onvif.urls import DEFAULT_ONVIF_ADDR, DeviceAddress

__all__ = [
    "DEFAULT_ONVIF_ADDR",
    "DeviceAddress",
    "DeviceAuthError",
    "DeviceBadAnswer",
    "DevicePool",
    "DeviceRefused",
    "DeviceTimeout",
    "DeviceUnreachable",
    "DiscoveredDevice",
    "DiscoveryTarget",
    "NotSupported",
    "OnvifDevice",
    "OnvifError",
    "Preset",
    "ProfileInfo",
    "discover",
    "parse_probe_matches",
    "parse_targets",
    "pick_profiles",
    "probe",
    "start_prewarm",
]
