"""What the consoles' settings pages set, and what each setting does in h5gate.

Each section is a dict kept in the ConfStore under its name, with defaults from the startup Settings.
`apply_at_start` puts the stored values into effect when the server starts (log level, rotating log
file, IP/port check, WebRTC addresses, HTTPS, the web root); the log settings and the IP/port check also
take effect at once when set. Configuration backups (CreateSnapshot) are JSON files of the database's
configuration tables, downloadable and restorable.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

from supervisor.config import Settings
from supervisor.errors import BadValue, NotFound

log = logging.getLogger("h5gate")

LOG_LEVELS = {"H5_LOG_DEBUG": "DEBUG", "H5_LOG_INFO": "INFO", "H5_LOG_WARNING": "WARNING", "H5_LOG_ERROR": "ERROR"}
ROTATE_BYTES, ROTATE_FILES = 10 * 2**20, 5
BACKUP_RE = re.compile(r"^h5gate-conf-\d{8}-\d{6}(-\d+)?\.json$")
# the configuration a backup holds (not recordings, jobs or the index: those follow the media store)
BACKUP_TABLES = ("sources", "users", "roles", "role_cams", "conf", "regions", "region_cams", "views", "trans_profiles")


def log_level_name(settings: Settings, conf: Any) -> str:
    stored = conf.get("log_level")
    if isinstance(stored, str) and stored in LOG_LEVELS:
        return stored
    return next((k for k, v in LOG_LEVELS.items() if v == settings.log_level.upper()), "H5_LOG_INFO")


def apply_log_level(level: str) -> None:
    logging.getLogger().setLevel(LOG_LEVELS[level])


def apply_rotating_log(settings: Settings, enable: bool) -> Path:
    """A rotating log file in data_dir/logs (5 files of 10 MB) beside the console output, or none."""
    path = settings.data_dir / "logs" / "h5gate.log"
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "h5gate_rotating", False)]:
        root.removeHandler(handler)
        handler.close()
    if enable:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=ROTATE_BYTES, backupCount=ROTATE_FILES)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.h5gate_rotating = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    return path


def http_defaults(settings: Settings) -> dict[str, Any]:
    return {
        "nHTTPPort": settings.port,
        "nHTTPSPort": settings.https_port,
        "strSSLCertificateFile": settings.https_cert,
        "bForceHTTPS": False,
        "bEnableDomain": False,
        "strDocumentRoot": settings.web_root,
    }


def certificate_dir(settings: Settings) -> Path:
    return settings.data_dir / "certificate"


def check_certificate(settings: Settings, name: str) -> Path:
    """A PEM file (certificate chain and private key together) in data_dir/certificate that TLS accepts."""
    if not name:
        raise BadValue("HTTPS needs sslcertificatefile: a PEM with the certificate and its key")
    folder = certificate_dir(settings).resolve()
    path = (folder / name).resolve() if not Path(name).is_absolute() else Path(name).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise BadValue(f"sslcertificatefile must be a file in {folder}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(path))
    except (ssl.SSLError, OSError) as e:
        raise BadValue(f"sslcertificatefile is not a usable PEM certificate and key: {e}") from None
    return path


def apply_at_start(settings: Settings, conf: Any) -> None:
    """The stored console settings over the startup ones (each only where the console set it)."""
    level = conf.get("log_level")
    if isinstance(level, str) and level in LOG_LEVELS:
        apply_log_level(level)
    if conf.get("rotating_log") is True:
        apply_rotating_log(settings, True)
    cloud = conf.get("rtc_cloud")
    if isinstance(cloud, dict):
        settings.webrtc_public_ip = cloud.get("strCloudPublicIp", "") if cloud.get("bCloudMode") else ""
        settings.webrtc_port_min = int(cloud.get("iPortRangeMin", settings.webrtc_port_min))
        settings.webrtc_port_max = int(cloud.get("iPortRangeMax", settings.webrtc_port_max))
    servers = ice_servers(conf)
    if servers is not None:
        settings.webrtc_ice_servers = json.dumps(servers)
        relay = conf.get("rtc_relay")
        settings.webrtc_relay_only = bool(isinstance(relay, dict) and relay.get("bRelayMode"))


def ice_servers(conf: Any) -> list[dict[str, Any]] | None:
    """STUN/TURN servers for browsers from the relay-mode and TURN-server pages; None if neither was set."""
    relay, turn = conf.get("rtc_relay"), conf.get("rtc_turn")
    if not isinstance(relay, dict) and not isinstance(turn, dict):
        return None
    servers: list[dict[str, Any]] = []
    if isinstance(relay, dict) and relay.get("bRelayMode") and relay.get("strRelayPublicIp"):
        server = {"urls": f"turn:{relay['strRelayPublicIp']}:{int(relay.get('nRelayPublicPort') or 3478)}"}
        if relay.get("strRelayUser"):
            server.update(username=relay["strRelayUser"], credential=relay.get("strRelayPasswd", ""))
        servers.append(server)
    if isinstance(turn, dict) and turn.get("bTurnServer") and turn.get("strTurnServerIp"):
        servers.append({"urls": f"stun:{turn['strTurnServerIp']}:{int(turn.get('nTurnServerPort') or 3478)}"})
    return servers


# ---------------------------------------------------------------------------------------------- backups


def backup_dir(settings: Settings) -> Path:
    return settings.data_dir / "backups"


def create_backup(settings: Settings, db_path: Path) -> str:
    """A JSON file of the configuration tables (blocking: run in a thread); returns its name."""
    folder = backup_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"h5gate-conf-{stamp}.json"
    n = 1
    while (folder / name).exists():
        name = f"h5gate-conf-{stamp}-{n}.json"
        n += 1
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        data = {table: [dict(r) for r in conn.execute(f"SELECT * FROM {table}")] for table in BACKUP_TABLES}
    finally:
        conn.close()
    tmp = folder / (name + ".tmp")
    tmp.write_text(json.dumps({"h5gate_backup": 1, "created": time.time(), "tables": data}, indent=1))
    tmp.replace(folder / name)
    return name


def list_backups(settings: Settings) -> list[str]:
    folder = backup_dir(settings)
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if BACKUP_RE.match(p.name)), reverse=True)


def backup_path(settings: Settings, name: str) -> Path:
    if not BACKUP_RE.match(name):
        raise BadValue("invalid backup name")
    path = backup_dir(settings) / name
    if not path.is_file():
        raise NotFound(f"no such backup: {name}")
    return path


def restore_backup(settings: Settings, db_path: Path, name: str) -> None:
    """Replace the configuration tables with a backup's (blocking; the caller then restarts the server)."""
    data = json.loads(backup_path(settings, name).read_text())
    tables = data.get("tables") if isinstance(data, dict) else None
    if not isinstance(tables, dict) or data.get("h5gate_backup") != 1:
        raise BadValue("not an h5gate configuration backup")
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table in BACKUP_TABLES:
            rows = tables.get(table, [])
            if not isinstance(rows, list):
                raise BadValue(f"backup table {table} is not a list")
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            conn.execute(f"DELETE FROM {table}")
            for row in rows:
                if not isinstance(row, dict) or not set(row) <= set(columns):
                    raise BadValue(f"backup table {table} has rows of another shape")
                keys = list(row)
                marks = ", ".join("?" for _ in keys)
                conn.execute(f"INSERT INTO {table} ({', '.join(keys)}) VALUES ({marks})", [row[k] for k in keys])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
