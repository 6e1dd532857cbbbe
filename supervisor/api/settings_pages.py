"""The consoles' settings pages: log, IP/port check, storage, HTTP/HTTPS, WebRTC, configuration backups.

Get/SetLogLevel, Get/SetRotatingLog, Get/SetIpPortCheck, Get/SetStorageConf, Get/SetHTTPConf, the three
WebRTC pairs (Get/SetRTCCloudModeInfo, Get/SetRTCRelayModeInfo, Get/SetRTCTurnServerInfo),
GetSnapshotList/CreateSnapshot and h5gate's own GetSnapshotFile (download) and
RestoreSnapshot (restore, then restart). What each setting does is in supervisor/console_conf.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from supervisor import console_conf
from supervisor.api.common import Chapter, endpoint, ok, param, param_bool, param_number, services
from supervisor.auth import User
from supervisor.errors import BadValue
from supervisor.services import Services

RESTART_NOTE = "saved; takes effect after Restart"


def _is_folder(path: str) -> bool:
    return Path(path).expanduser().is_dir()


def _host(request: Request, name: str) -> str:
    value = param(request, name, required=False, maxlen=253)
    if not value:
        return ""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        if all(part.isalnum() or "-" in part for part in value.split(".")) and not value.startswith("-"):
            return value
        raise BadValue(f"invalid {name}: an IP address or host name") from None


def _port(request: Request, name: str, default: int) -> int:
    return int(param_number(request, name, default=default, low=0, high=65535, integer=True))


@endpoint(role="Administrator")
async def get_log_level(request: Request, user: User) -> Any:
    svc = services(request)
    return {"strLevelLog": console_conf.log_level_name(svc.settings, svc.conf), "levels": list(console_conf.LOG_LEVELS)}


@endpoint(role="Administrator")
async def set_log_level(request: Request, user: User) -> Any:
    level = param(request, "level", maxlen=32)
    if level not in console_conf.LOG_LEVELS:
        raise BadValue(f"invalid level: use one of {', '.join(console_conf.LOG_LEVELS)}")
    await services(request).conf.set("log_level", level)
    console_conf.apply_log_level(level)
    return ok("Set log level successfully")


@endpoint(role="Administrator")
async def get_rotating_log(request: Request, user: User) -> Any:
    svc = services(request)
    return {
        "enable": svc.conf.get("rotating_log") is True,
        "strPath": str(svc.settings.data_dir / "logs" / "h5gate.log"),
    }


@endpoint(role="Administrator")
async def set_rotating_log(request: Request, user: User) -> Any:
    svc = services(request)
    enable = param_bool(request, "enable", False)
    await svc.conf.set("rotating_log", enable)
    path = await asyncio.to_thread(console_conf.apply_rotating_log, svc.settings, enable)
    return ok("Set rotating log successfully", strPath=str(path) if enable else "")


@endpoint(role="Administrator")
async def get_ip_port_check(request: Request, user: User) -> Any:
    check = services(request).registry.port_check
    return {"enable": check.enabled, "nDetentionPeriod": int(check.period)}


@endpoint(role="Administrator")
async def set_ip_port_check(request: Request, user: User) -> Any:
    svc = services(request)
    enable = param_bool(request, "enable", False)
    period = int(
        param_number(request, "period", default=svc.registry.port_check.period, low=1, high=3600, integer=True)
    )
    await svc.conf.set("ip_port_check", {"enable": enable, "period": period})
    svc.registry.port_check.enabled, svc.registry.port_check.period = enable, float(period)
    return ok("Set IP port check successfully")


@endpoint(role="Administrator")
async def get_storage_conf(request: Request, user: User) -> Any:
    stored = services(request).conf.section("storage", {"bStorageConfigUI": False, "nStorageConfigPort": 0})
    return {"bStatus": True, "strCode": "", **stored}


@endpoint(role="Administrator")
async def set_storage_conf(request: Request, user: User) -> Any:
    values = {
        "bStorageConfigUI": param_bool(request, "storageui", False),
        "nStorageConfigPort": _port(request, "storageport", 0),
    }
    await services(request).conf.set("storage", values)
    return ok("Set storage config successfully")


@endpoint(role="Administrator")
async def get_http_conf(request: Request, user: User) -> Any:
    svc = services(request)
    return svc.conf.section("http", console_conf.http_defaults(svc.settings))


@endpoint(role="Administrator")
async def set_http_conf(request: Request, user: User) -> Any:
    svc = services(request)
    https = _port(request, "https", 0)
    cert = param(request, "sslcertificatefile", required=False, maxlen=512)
    root = param(request, "documentroot", required=False, maxlen=1024)
    if https:
        await asyncio.to_thread(console_conf.check_certificate, svc.settings, cert)
    if root and not await asyncio.to_thread(_is_folder, root):
        raise BadValue("documentroot must be an existing folder")
    values = {
        "nHTTPPort": _port(request, "http", svc.settings.port) or svc.settings.port,
        "nHTTPSPort": https,
        "strSSLCertificateFile": cert,
        "bForceHTTPS": param_bool(request, "forcehttps", False),
        "bEnableDomain": param_bool(request, "enabledomain", False),
        "strDocumentRoot": root,
    }
    await svc.conf.set("http", values)
    return ok(f"Set HTTP config successfully ({RESTART_NOTE})")


RTC_PAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "cloud": ("rtc_cloud", {"bCloudMode": False, "strCloudPublicIp": "", "iPortRangeMin": 0, "iPortRangeMax": 0}),
    "relay": (
        "rtc_relay",
        {
            "bRelayMode": False,
            "strRelayPublicIp": "",
            "nRelayPublicPort": 3478,
            "strRelayUser": "",
            "strRelayPasswd": "",
            "bRelayPasswdEncrypt": False,
        },
    ),  # fmt: skip
    "turn": ("rtc_turn", {"bTurnServer": False, "strTurnServerIp": "", "nTurnServerPort": 3478}),
}


def _rtc_section(svc: Services, page: str) -> dict[str, Any]:
    key, defaults = RTC_PAGES[page]
    if page == "cloud":
        s = svc.settings
        defaults = {**defaults, "bCloudMode": bool(s.webrtc_public_ip), "strCloudPublicIp": s.webrtc_public_ip,
                    "iPortRangeMin": s.webrtc_port_min, "iPortRangeMax": s.webrtc_port_max}  # fmt: skip
    return svc.conf.section(key, defaults)


@endpoint(role="Administrator")
async def get_rtc_cloud(request: Request, user: User) -> Any:
    return _rtc_section(services(request), "cloud")


@endpoint(role="Administrator")
async def set_rtc_cloud(request: Request, user: User) -> Any:
    low, high = _port(request, "portrangemin", 50000), _port(request, "portrangemax", 54999)
    if low > high:
        raise BadValue("portrangemin must not be above portrangemax")
    values = {
        "bCloudMode": param_bool(request, "cloudmode", False),
        "strCloudPublicIp": _host(request, "cloudpublicip"),
        "iPortRangeMin": low,
        "iPortRangeMax": high,
    }
    await services(request).conf.set("rtc_cloud", values)
    return ok(f"Set WebRTC cloud mode successfully ({RESTART_NOTE})")


@endpoint(role="Administrator")
async def get_rtc_relay(request: Request, user: User) -> Any:
    section = dict(_rtc_section(services(request), "relay"))
    section["strRelayPasswd"] = "******" if section["strRelayPasswd"] else ""
    return section


@endpoint(role="Administrator")
async def set_rtc_relay(request: Request, user: User) -> Any:
    svc = services(request)
    password = param(request, "relaypasswd", required=False, maxlen=128)
    if password == "******":  # the masked value shown by Get: unchanged
        password = _rtc_section(svc, "relay")["strRelayPasswd"]
    values = {
        "bRelayMode": param_bool(request, "relaymode", False),
        "strRelayPublicIp": _host(request, "relaypublicip"),
        "nRelayPublicPort": _port(request, "relaypublicport", 3478),
        "strRelayUser": param(request, "relayuser", required=False, maxlen=128),
        "strRelayPasswd": password,
        "bRelayPasswdEncrypt": param_bool(request, "relaypasswdencrypt", False),
    }
    await svc.conf.set("rtc_relay", values)
    return ok(f"Set WebRTC relay mode successfully ({RESTART_NOTE})")


@endpoint(role="Administrator")
async def get_rtc_turn(request: Request, user: User) -> Any:
    return _rtc_section(services(request), "turn")


@endpoint(role="Administrator")
async def set_rtc_turn(request: Request, user: User) -> Any:
    values = {
        "bTurnServer": param_bool(request, "turnserver", False),
        "strTurnServerIp": _host(request, "turnserverip"),
        "nTurnServerPort": _port(request, "turnserverport", 3478),
    }
    await services(request).conf.set("rtc_turn", values)
    return ok(f"Set TURN server successfully ({RESTART_NOTE})")


@endpoint(role="Administrator")
async def get_snapshot_list(request: Request, user: User) -> Any:
    return {"strName": await asyncio.to_thread(console_conf.list_backups, services(request).settings)}


@endpoint(role="Administrator")
async def create_snapshot(request: Request, user: User) -> Any:
    svc = services(request)
    name = await asyncio.to_thread(console_conf.create_backup, svc.settings, svc.settings.db_path)
    return ok("Create snapshot successfully", strName=name, strUrl=f"/api/v1/GetSnapshotFile?name={name}")


@endpoint(role="Administrator")
async def get_snapshot_file(request: Request, user: User) -> Any:
    path = await asyncio.to_thread(console_conf.backup_path, services(request).settings, param(request, "name"))
    return FileResponse(path, media_type="application/json", filename=path.name)


@endpoint(role="Administrator")
async def restore_snapshot(request: Request, user: User) -> Any:
    svc = services(request)
    name = param(request, "name", maxlen=64)
    await asyncio.to_thread(console_conf.restore_backup, svc.settings, svc.settings.db_path, name)
    svc.restart.request(f"configuration {name} restored by {user.name}")
    return ok("Restore snapshot successfully, restarting")


async def start(svc: Services) -> None:
    console_conf.apply_at_start(svc.settings, svc.conf)
    check = svc.conf.get("ip_port_check")
    if isinstance(check, dict):
        svc.registry.port_check.enabled = bool(check.get("enable"))
        svc.registry.port_check.period = float(check.get("period") or svc.registry.port_check.period)


routes = [
    Route("/api/v1/GetLogLevel", get_log_level),
    Route("/api/v1/SetLogLevel", set_log_level),
    Route("/api/v1/GetRotatingLog", get_rotating_log),
    Route("/api/v1/SetRotatingLog", set_rotating_log),
    Route("/api/v1/GetIpPortCheck", get_ip_port_check),
    Route("/api/v1/SetIpPortCheck", set_ip_port_check),
    Route("/api/v1/GetStorageConf", get_storage_conf),
    Route("/api/v1/SetStorageConf", set_storage_conf),
    Route("/api/v1/GetHTTPConf", get_http_conf),
    Route("/api/v1/SetHTTPConf", set_http_conf),
    Route("/api/v1/GetRTCCloudModeInfo", get_rtc_cloud),
    Route("/api/v1/SetRTCCloudModeInfo", set_rtc_cloud),
    Route("/api/v1/GetRTCRelayModeInfo", get_rtc_relay),
    Route("/api/v1/SetRTCRelayModeInfo", set_rtc_relay),
    Route("/api/v1/GetRTCTurnServerInfo", get_rtc_turn),
    Route("/api/v1/SetRTCTurnServerInfo", set_rtc_turn),
    Route("/api/v1/GetSnapshotList", get_snapshot_list),
    Route("/api/v1/CreateSnapshot", create_snapshot),
    Route("/api/v1/GetSnapshotFile", get_snapshot_file),
    Route("/api/v1/RestoreSnapshot", restore_snapshot),
]
chapter = Chapter("settings pages", routes, start=start)
