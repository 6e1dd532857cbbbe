"""Settings: built-in defaults < config file (TOML) < H5GATE_* environment < command-line flags."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
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
    login_max_faults: int = 4  # failed logins before a lockout (the consoles show "3 - n tries left")
    login_lock_seconds: int = 300
    login_fault_records: int = 4096  # failed-login records (user@address) kept at most; old ones expire
    demo_source: bool = True  # add the looping demo clip on the very first start
    media_roots: list[str] = field(default_factory=list)  # where AddSrcFile may read files (+ media/)
    hls: str = "v1,v2"  # which HLS flavours are served (made on demand): "", "v1", "v2" or "v1,v2"
    hls_segment_num: int = 4  # segments a playlist lists
    hls_duration: int = 2  # target segment length, seconds (segments are cut at the next keyframe)
    hls_part_seconds: float = 0.2  # LL-HLS part length (v2): parts are ready this soon after the camera
    hls_idle_seconds: float = 30.0  # HLS of a source stops this long after its last request
    rtsp_client: str = "own"  # RTSP H.264/H.265 cameras: "own" (our client, no lookahead) or "ffmpeg"
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
    rtmp_port: int = 8935  # RTMP push-in (rtmp://HOST:PORT/live/<token>?key=...); 0 = off, port not opened
    flv_port: int = 8090  # HTTP-FLV out (http://HOST:PORT/live/<token>.flv, also on the main port); 0 = off
    rtsp_port: int = 8554  # RTSP re-serve of every source (rtsp://HOST:PORT/<token>); 0 = off, port not opened
    metrics_token: str = ""  # bearer token for /metrics (a scraper); a logged-in session works too
    trusted_proxies: str = ""  # comma-separated proxy addresses whose X-Forwarded-For/-Proto is believed
    request_timeout: float = 10.0  # seconds a client may take to send a request's head (and body)
    idle_timeout: float = 5.0  # seconds an idle keep-alive connection is kept open
    max_connections_per_client: int = 0  # open connections per client address; 0 = a quarter of the fd limit
    snapshot_quota_mb: float = 1024.0  # snapshots (Snapshot/PathSnapshot) may keep at most this much; 0 = no cap
    archive_quota_mb: float = 4096.0  # exported clips (Archive/ExportClip) may keep at most this much; 0 = no cap
    archive_keep_hours: float = 24.0  # exported clips are deleted this long after they were made
    media_rate_per_minute: int = 60  # snapshots and exports each user may start per minute
    record_max_seconds: int = 86400  # how far ahead of now a recording's stop may be set or pushed
    log_level: str = "INFO"
    web_root: str = ""  # a folder served at / (a vendor console dist, your own pages); our console: /console/
    https_port: int = 0  # HTTPS on this port too (0 = off; SetHTTPConf can turn it on), with the cert and key below
    https_cert: str = ""  # PEM certificate (chain) for HTTPS; empty = data_dir/certificate/server.crt
    https_key: str = ""  # PEM private key for HTTPS; empty = data_dir/certificate/server.key
    http_redirect: bool = False  # with HTTPS on, the plain port redirects to it (but /healthz); bForceHTTPS too
    # The cluster (supervisor/cluster/): nodes share sources, ownership, users and sessions through one Redis.
    # SetRedisConf/SetEnableRedis store values that win over these once a console has saved them.
    redis_enable: bool = False  # join the cluster at start (SetEnableRedis)
    redis_host: str = "127.0.0.1"  # the Redis server (serverip)
    redis_port: int = 6379  # (serverport)
    redis_ssl: bool = False  # TLS to Redis (ssl)
    redis_password: str = ""  # Redis AUTH password; config file/environment only (the consoles have no field)
    node_id: str = ""  # this node's id in the cluster (nodeid); empty = this installation's host id
    node_name: str = ""  # shown to people (nodename); empty = the node id
    node_ip: str = ""  # where other nodes reach this node's HTTP port: "IP" or "IP:PORT" (nodeip); empty = host
    cluster_lease_seconds: float = 4.0  # a dead node's cameras are taken over this long after its last renewal
    # cloud edge (manual §5.6; SetCloudInfo's form overrides these once saved): this server connects out to a centre
    cloud_enable: bool = False  # register with the centre below and keep the link up
    cloud_server_name: str = ""  # servername: how the centre shows this edge
    cloud_server_token: str = ""  # servertoken: this edge's id at the centre (letters, digits, _ - .)
    cloud_ip: str = ""  # cloudip: the centre's address
    cloud_port: int = 8080  # cloudport: the centre's HTTP(S) port
    cloud_ssl: bool = False  # ssl: wss:// to the centre (its certificate is verified)
    cloud_user: str = ""  # user: an Administrator of the centre
    cloud_password: str = ""  # password: that user's password as MD5 hex, as Login takes it
    cloud_keepalive: int = 3  # keepalivetime: seconds between keepalives; the link is dropped after 3 missed
    cloud_idle_seconds: float = 30.0  # centre: an edge camera's stream stops this long after its last viewer
    cloud_edge_transcoding: bool = False  # edgetranscoding: stored and shown (transcoding runs where the viewer is)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "h5gate.db"

    @property
    def hls_dir(self) -> Path:
        return self.data_dir / "hls"

    @property
    def media_store(self) -> Path:
        return self.data_dir / "mediastore"


class ConfigError(ValueError):
    """A setting that cannot be used; its message is one line that names the source and the setting."""


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_NODE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _kind(name: str) -> str:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    return kind if isinstance(kind, str) else kind.__name__


def _coerce(name: str, value: Any, origin: str) -> Any:
    """Turn a TOML value or an environment/flag string into the field's type.

    TOML values must already have the right type (`port = "80"` is a mistake worth saying); strings from the
    environment and flags are parsed. Anything else raises ConfigError naming `origin` and the setting.
    """
    kind = _kind(name)
    from_text = isinstance(value, str) and origin != "toml"

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"expected {expected}, got {value!r}")

    if kind == "bool":
        if isinstance(value, bool):
            return value
        if from_text and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("true or false")
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text:
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad("a whole number")
    if kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_text:
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise bad("a number")
    if kind == "Path":
        if isinstance(value, str) and value:
            return Path(value).expanduser()
        raise bad("a path")
    if kind.startswith("list"):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        if from_text:
            return [v for v in value.split(os.pathsep) if v]
        raise bad("a list of strings")
    if isinstance(value, str):
        return value
    raise bad("a string")


def validate(settings: Settings) -> None:
    """Refuse values the server would misuse later (a port outside 1-65535 was once bound as a random one)."""

    def need(ok: bool, name: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{name}: {what}, got {getattr(settings, name)!r}")

    need(1 <= settings.port <= 65535, "port", "must be between 1 and 65535")
    need(bool(settings.host.strip()), "host", "must not be empty")
    for name in ("rtmp_port", "flv_port", "rtsp_port"):
        need(0 <= getattr(settings, name) <= 65535, name, "must be between 0 (off) and 65535")
    for name in ("webrtc_port_min", "webrtc_port_max"):
        need(0 <= getattr(settings, name) <= 65535, name, "must be between 0 (any) and 65535")
    if settings.webrtc_port_min and settings.webrtc_port_max:
        ordered = settings.webrtc_port_min <= settings.webrtc_port_max
        need(ordered, "webrtc_port_max", "must not be below webrtc_port_min")
    need(1 <= settings.cloud_port <= 65535, "cloud_port", "must be between 1 and 65535")
    need(1 <= settings.cloud_keepalive <= 3600, "cloud_keepalive", "must be between 1 and 3600 seconds")
    need(settings.cloud_idle_seconds >= 0, "cloud_idle_seconds", "must not be negative")
    need(settings.log_level.upper() in _LOG_LEVELS, "log_level", "must be one of " + ", ".join(_LOG_LEVELS))
    flavours = [k.strip() for k in settings.hls.split(",") if k.strip()]
    need(all(k in ("v1", "v2") for k in flavours), "hls", 'must be "v1", "v2", "v1,v2" or ""')
    for name in ("login_timeout", "login_lock_seconds", "hls_duration", "record_file_seconds", "ws_send_buffer"):
        need(getattr(settings, name) > 0, name, "must be above 0")
    for name in ("login_max_faults", "hls_segment_num", "login_fault_records"):
        need(getattr(settings, name) >= 1, name, "must be at least 1")
    for name in (
        "rtsp_timeout",
        "stall_timeout",
        "restart_min",
        "restart_max",
        "ring_seconds",
        "slow_viewer_seconds",
        "send_timeout",
        "onvif_timeout",
        "retention_interval",
        "webrtc_keepalive_timeout",
    ):
        need(getattr(settings, name) > 0, name, "must be above 0")
    need(settings.restart_max >= settings.restart_min, "restart_max", "must not be below restart_min")
    for name in ("image_cache_seconds", "pre_record_seconds"):
        need(getattr(settings, name) >= 0, name, "must not be negative")
    for name in ("record_in_day", "snapshot_in_day"):
        need(getattr(settings, name) >= 0, name, "must not be negative (0 keeps files forever)")
    need(0 < settings.disk_auto_del_percent <= 100, "disk_auto_del_percent", "must be above 0 and at most 100")
    if settings.ffmpeg:
        need(shutil.which(settings.ffmpeg) is not None, "ffmpeg", "must be an executable (a path, or a name on PATH)")
    if settings.web_root:
        need(Path(settings.web_root).expanduser().is_dir(), "web_root", "must name an existing folder")
    for name in ("request_timeout", "idle_timeout", "archive_keep_hours"):
        need(getattr(settings, name) > 0, name, "must be above 0")
    for name in ("max_connections_per_client", "snapshot_quota_mb", "archive_quota_mb", "media_rate_per_minute"):
        need(getattr(settings, name) >= 0, name, "must not be negative (0 = no limit)")
    need(settings.record_max_seconds >= 60, "record_max_seconds", "must be at least 60")
    need(1 <= settings.redis_port <= 65535, "redis_port", "must be between 1 and 65535")
    need(bool(settings.redis_host.strip()), "redis_host", "must not be empty")
    node_ok = not settings.node_id or bool(_NODE_ID.match(settings.node_id))
    need(node_ok, "node_id", "must be 1-64 letters, digits, '_', '-' or '.'")
    need(1.0 <= settings.cluster_lease_seconds <= 60.0, "cluster_lease_seconds", "must be between 1 and 60")


def load_settings(config_file: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Merge the four layers and validate the result.

    Every problem (a missing or malformed file, an unknown key, a wrong type, a bad value) raises ConfigError
    with one line that says where it came from, so the CLI can print it instead of a traceback.
    """
    values: dict[str, Any] = {}
    names = {f.name for f in fields(Settings)}
    path = config_file or os.environ.get("H5GATE_CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"{path}: unknown settings: {', '.join(sorted(unknown))}")
        for key, value in data.items():
            try:
                values[key] = _coerce(key, value, "toml")
            except ConfigError as e:
                raise ConfigError(f"{path}: {key}: {e}") from None
    for name in names:
        env = os.environ.get("H5GATE_" + name.upper())
        if env is not None:
            try:
                values[name] = _coerce(name, env, "env")
            except ConfigError as e:
                raise ConfigError(f"H5GATE_{name.upper()}: {e}") from None
    for name, value in (overrides or {}).items():
        if value is not None:
            try:
                values[name] = _coerce(name, value, "flag")
            except ConfigError as e:
                raise ConfigError(f"--{name.replace('_', '-')}: {e}") from None
    settings = dataclasses.replace(Settings(), **values)
    validate(settings)
    return settings
