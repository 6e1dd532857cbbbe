"""Settings: built-in defaults < config file (TOML) < H5GATE_* environment < command-line flags."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs


@dataclass
class Settings:
    """Everything the server can be told; field names double as config keys and H5GATE_<NAME> variables."""

    host: str = "0.0.0.0"
    port: int = 8080
    data_dir: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("h5gate")))
    ffmpeg: str = ""  # explicit ffmpeg binary; empty = PATH, then imageio-ffmpeg
    login_timeout: int = 600  # session idle timeout, seconds (H5Stream nLoginTimeout)
    login_max_faults: int = 5  # failed logins before a lockout
    login_lock_seconds: int = 300
    demo_source: bool = True  # add the looping demo clip on the very first start
    media_roots: list[str] = field(default_factory=list)  # where AddSrcFile may read files (+ media/)
    hls: str = "v1,v2"  # which HLS flavours each ffmpeg writes: "", "v1", "v2" or "v1,v2"
    hls_segment_num: int = 4
    hls_duration: int = 2
    rtsp_timeout: float = 5.0  # seconds ffmpeg waits on a silent camera before giving up
    stall_timeout: float = 10.0  # watchdog: kill an ffmpeg with no output for this long
    restart_min: float = 0.5  # backoff between restarts: min doubling to max
    restart_max: float = 30.0
    ring_seconds: float = 6.0  # how much live media the hub keeps for slow viewers and pre-record
    slow_viewer_seconds: float = 4.0  # a viewer this far behind is skipped to the newest keyframe
    send_timeout: float = 10.0  # a viewer whose send blocks this long is disconnected
    ws_send_buffer: int = 262144  # kernel send buffer of WebSocket connections, bytes (bounds a slow viewer)
    image_cache_seconds: float = 1.0
    onvif_discovery_target: str = "239.255.255.250:3702"  # WS-Discovery probe target(s): HOST:PORT[@LOCAL_IP]
    onvif_timeout: float = 10.0  # seconds an ONVIF device may take to answer before it counts as down
    record_file_seconds: int = 300  # continuous recording: length of each file, cut at the next keyframe
    record_in_day: int = 30  # nRecordInDay: recordings older than this many days are deleted
    snapshot_in_day: int = 30  # nSnapshotInDay: the same for snapshots
    disk_auto_del_percent: float = 92.0  # nDiskAutoDelPercent: above this disk use the oldest files go
    pre_record_seconds: float = 5.0  # nPreRecordLength: media from before a recording's start (from the hub)
    retention_interval: float = 60.0  # seconds between retention runs
    webrtc: bool = True  # bWebRTCSink: serve /api/v1/h5srtcapi through the aiortc sidecar
    webrtc_public_ip: str = ""  # strRelatedPublicIp: address advertised to browsers besides the host's own
    webrtc_port_min: int = 50000  # nPortRangeMin/Max: UDP ports for ICE; 0 = any free port
    webrtc_port_max: int = 54999
    webrtc_addresses: str = ""  # local IPs for ICE host candidates, comma-separated; empty = every interface
    webrtc_ice_servers: str = ""  # STUN/TURN for browsers: JSON list of RTCIceServer, or comma-separated URLs
    webrtc_relay_only: bool = False  # browsers send through TURN only (iceTransportPolicy "relay")
    webrtc_keepalive_timeout: float = 15.0  # close a WebRTC session whose player sent nothing for this long
    log_level: str = "INFO"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "h5gate.db"

    @property
    def hls_dir(self) -> Path:
        return self.data_dir / "hls"

    @property
    def media_store(self) -> Path:
        return self.data_dir / "mediastore"


def _coerce(name: str, value: Any) -> Any:
    """Turn a string or TOML value into the type the field declares."""
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if kind in ("int", int):
        return int(value)
    if kind in ("float", float):
        return float(value)
    if kind in ("bool", bool):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    if kind in ("Path", Path):
        return Path(value).expanduser()
    if kind.startswith("list"):
        return list(value) if isinstance(value, list) else [v for v in str(value).split(os.pathsep) if v]
    return str(value)


def load_settings(config_file: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Merge the four layers; unknown keys in the file are an error so typos do not pass silently."""
    values: dict[str, Any] = {}
    names = {f.name for f in fields(Settings)}
    path = config_file or os.environ.get("H5GATE_CONFIG")
    if path:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
        values.update({k: _coerce(k, v) for k, v in data.items()})
    for name in names:
        env = os.environ.get("H5GATE_" + name.upper())
        if env is not None:
            values[name] = _coerce(name, env)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value)
    return dataclasses.replace(Settings(), **values)
