"""Manual §5.2, System: Login, Logout, Keepalive, GetSystemInfo, GetRunInfo; and the consoles' system calls.

GetVersion, GetLicEndTime (no licence: unlimited), GetCodecInfo, GetDeviceSummary, GetVidStreamStatus
and Restart, as the vendor consoles' dashboard, live view and header read them. Users and roles are in
users.py.
"""

from __future__ import annotations

import asyncio
import platform
import re
import shutil
import subprocess
import time
from typing import Any

import psutil
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from supervisor import RELEASE_DATE
from supervisor.api.common import Chapter, endpoint, ok, param, param_token, require_camera, services, session_of
from supervisor.api.users import MD5_RE, USER_RE
from supervisor.auth import User
from supervisor.errors import NotFound, Unavailable


@endpoint(role=None)
async def login(request: Request, _: None) -> Any:
    user = param(request, "user", pattern=USER_RE, maxlen=64)
    password = param(request, "password", maxlen=128)
    auth = services(request).auth
    client = request.client.host if request.client else "?"
    session, faults = await auth.login(user, password, client)
    if session is None:
        residue = max(0, int(faults.locked_until - time.monotonic()))
        code = "login locked, try again later" if residue else "wrong user or password"
        # 200, not 401: the consoles show their "wrong password" and lockout messages only for a 200
        # answer (a 401 sends them back to the login page with nothing shown)
        return JSONResponse(
            {"bStatus": False, "strCode": code, "nFaultTimes": faults.count, "tLockTimeResidue": residue}
        )
    keys = services(request).digest_keys
    if keys is not None and not MD5_RE.match(password):  # the plain password: its RTSP Digest key can be made
        await keys.learn(auth.users[user], password)
    response = JSONResponse(
        {"bStatus": True, "strCode": "Login successfully", "strSession": session, "nTimeout": auth.timeout}
    )
    # Strict: no other site's link, image or form makes the browser send it (the session for actions
    # travels in the query or the Authorization header, which the console sets: see common.check_action)
    response.set_cookie(
        "h5gate_session", session, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


@endpoint()
async def logout(request: Request, user: User) -> Any:
    await services(request).auth.logout(session_of(request) or "")
    response = JSONResponse(ok("Logout successfully"))
    response.delete_cookie("h5gate_session")
    return response


@endpoint()
async def keepalive(request: Request, user: User) -> Any:
    return ok("Keepalive successfully")


def vendor_version(version: str, released: str = RELEASE_DATE) -> str:
    """The vendor's `rX.Y.MMDD.YY` shape (r4.0.0403.18) from h5gate's X.Y.Z and its release date."""
    numbers = [int(n) for n in re.findall(r"\d+", version)[:2]] + [0, 0]
    year, month, day = (int(p) for p in released.split("-"))
    return f"r{numbers[0]}.{numbers[1]}.{month:02d}{day:02d}.{year % 100:02d}"


@endpoint()
async def get_system_info(request: Request, user: User) -> Any:
    svc = services(request)
    return {
        "strVersion": vendor_version(svc.version),
        "strH5gateVersion": svc.version,
        "strHostId": svc.host_id,
        "strLicenseType": "None",
        "strLicenseFull": "",
        "strChannelLimit": "unlimited",
        "strEndtime": "unlimited",
        # what the vendor's dashboard lists as licensed features
        "bDeviceSDK": False,
        "bDeviceSDKPb": False,
        "bGB28181": False,
        "bTranscoding": True,
        "bCluster": False,
        "bPlatform": False,
        "bVideoConference": False,
        "bLingvideo": False,
        "bDocker": False,
    }


@endpoint()
async def get_version(request: Request, user: User) -> Any:
    svc = services(request)
    vendor = vendor_version(svc.version)
    return {"strVersion": vendor, "strVer": vendor, "strH5gateVersion": svc.version}


@endpoint(role=None)
async def get_lic_end_time(request: Request, _: None) -> Any:
    """No licence: it never ends. The login pages parse strEndtime as a date and warn when it is near;
    "unlimited" parses to no date, so no warning shows."""
    return {"bStatus": True, "strEndtime": "unlimited", "bUnlimited": True}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ffmpeg_codecs(ffmpeg: str) -> tuple[list[str], list[str]]:
    """(encoders, decoders) of the video codecs h5gate uses, as this ffmpeg build has them."""
    wanted = {"h264", "hevc", "mjpeg"}
    encoders: list[str] = []
    decoders: list[str] = []
    for flag, out in (("-encoders", encoders), ("-decoders", decoders)):
        try:
            text = subprocess.run(
                [ffmpeg, "-hide_banner", flag], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith("V") and len(parts[0]) == 6:
                name = parts[1]
                if name in wanted or name.startswith(("libx264", "libx265", "h264_", "hevc_")):
                    out.append(name)
    return encoders, decoders


@endpoint()
async def get_codec_info(request: Request, user: User) -> Any:
    svc = services(request)
    encoders, decoders = await asyncio.to_thread(_ffmpeg_codecs, svc.ffmpeg)
    hardware = ("_nvenc", "_qsv", "_vaapi", "_v4l2m2m", "_cuvid", "_amf", "_videotoolbox")
    return {
        "strCPUModel": await asyncio.to_thread(_cpu_model),
        "nCPU": 1,
        "nCPUCore": psutil.cpu_count(logical=True) or 1,
        "strHWEncoders": " ".join(e for e in encoders if e.endswith(hardware)),
        "strHWDecoders": " ".join(d for d in decoders if d.endswith(hardware)),
        "strSWEncoders": " ".join(e for e in encoders if not e.endswith(hardware)),
        "strSWDecoders": " ".join(d for d in decoders if not d.endswith(hardware)),
    }


@endpoint()
async def get_device_summary(request: Request, user: User) -> Any:
    """The dashboard's source counts; the vendor SDK devices h5gate does not drive count zero."""
    svc = services(request)
    runtimes = [r for t, r in svc.registry.sources.items() if svc.auth.sees(user, t)]

    def count(kinds: tuple[str, ...]) -> tuple[int, int]:
        mine = [r for r in runtimes if r.config.kind in kinds]
        return len(mine), sum(1 for r in mine if r.online)

    rtsp_total, rtsp_online = count(("H5_STREAM", "H5_FILE"))
    onvif_total, onvif_online = count(("H5_ONVIF",))
    push_total, push_online = count(("H5_RTMP_PUSH",))
    cloud_total, cloud_online = count(("H5_CLOUD",))
    summary: dict[str, Any] = {
        "nRTSPRTMPTotal": rtsp_total,
        "nRTSPRTMPOnline": rtsp_online,
        "nONVIFTotal": onvif_total,
        "nONVIFOnline": onvif_online,
        "nRTMPPushTotal": push_total,
        "nRTMPPushOnline": push_online,
        "nCloudTotal": cloud_total,  # the cameras of cloud edges registered here
        "nCloudOnline": cloud_online,
        "nTotal": len(runtimes),
        "nOnline": sum(1 for r in runtimes if r.online),
    }
    for dev in ("Hik", "Dh", "Td", "Gb", "HikIsc", "Unv", "Dss", "Ivs", "Vik"):
        summary[f"n{dev}DevTotal"] = 0
        summary[f"n{dev}DevOnline"] = 0
    return summary


def stream_status(hub: Any, window: float = 4.0) -> dict[str, Any]:
    """Codec, size, frame rate and bit rates of a live stream, measured over the hub's last seconds."""
    init = hub.init
    video = init.video if init else None
    audio = next((t for t in init.tracks.values() if t.handler == "soun"), None) if init else None
    frags = [f for f in hub.since(window) if init is None or f.gen == hub.gen]
    span = (frags[-1].end - frags[0].dts) if len(frags) > 1 else 0.0
    vframes = [f for f in frags if f.video]
    vbytes = sum(len(f.data) for f in vframes)
    abytes = sum(len(f.data) for f in frags if not f.video)

    def codec_name(codec: str) -> str:
        family = codec[:4]
        return {"avc1": "H264", "avc3": "H264", "hev1": "H265", "hvc1": "H265", "mp4a": "AAC", "Opus": "OPUS"}.get(
            family, family.upper()
        )

    return {
        "strVideoType": codec_name(video.codec) if video else "",
        "strVideoCodec": video.codec if video else "",
        "nVideoWidth": video.width if video else 0,
        "nVideoHeight": video.height if video else 0,
        "nVideoFPS": round(sum(f.info.samples for f in vframes) / span) if span > 0 else 0,
        "nVideoBitrate": round(vbytes * 8 / span) if span > 0 else 0,
        "strAudioType": codec_name(audio.codec) if audio else "",
        "strAudioCodec": audio.codec if audio else "",
        "nAudioSampleRate": audio.timescale if audio else 0,
        "nAudioSampleBit": 16 if audio else 0,
        "nAudioChannels": (audio.channels or 1) if audio else 0,
        "nAudioBitrate": round(abytes * 8 / span) if audio and span > 0 else 0,
    }


@endpoint()
async def get_vid_stream_status(request: Request, user: User) -> Any:
    token = param_token(request)
    require_camera(request, user, token)
    runtime = services(request).registry.get(token)
    if runtime is None:
        raise NotFound(f"no such source: {token}")
    name = param(request, "stream", required=False, default="main", maxlen=64)
    stream = runtime.stream(name)
    if stream is None:
        raise NotFound(f"no such stream: {name}")
    if not stream.hub.ready:
        raise Unavailable(f"{token}/{name} has no media yet")
    return {"bStatus": True, "strToken": token, "strStream": stream.profile, **stream_status(stream.hub)}


@endpoint(role="Administrator")
async def restart(request: Request, user: User) -> Any:
    """The whole server restarts in place (the same process re-executes itself) a moment after answering."""
    services(request).restart.request(f"Restart by {user.name}")
    return ok("Restart successfully")


class RunInfo:
    """CPU, memory and network rates between two calls (psutil's counters are cumulative)."""

    def __init__(self) -> None:
        self.started = time.time()
        psutil.cpu_percent(None)
        self._net = psutil.net_io_counters()
        self._net_at = time.monotonic()
        self._rates = (0.0, 0.0)

    def network_kbps(self) -> tuple[float, float]:
        now = time.monotonic()
        if now - self._net_at >= 1.0:
            net = psutil.net_io_counters()
            dt = now - self._net_at
            self._rates = (
                (net.bytes_recv - self._net.bytes_recv) * 8 / 1000 / dt,
                (net.bytes_sent - self._net.bytes_sent) * 8 / 1000 / dt,
            )
            self._net, self._net_at = net, now
        return self._rates


def _disk(path: Any) -> tuple[int, int]:
    path.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(path)
    return usage.total, usage.free


@endpoint()
async def get_run_info(request: Request, user: User) -> Any:
    svc = services(request)
    info = svc.run_info
    run_sec = int(time.time() - info.started)
    cpu = psutil.cpu_percent(None)
    mem = psutil.virtual_memory()
    net_in, net_out = info.network_kbps()
    total, free = await asyncio.to_thread(_disk, svc.settings.data_dir)
    rec_total, rec_free = await asyncio.to_thread(_disk, svc.settings.media_store)
    return {
        "strRunTime": f"{run_sec // 3600}H {run_sec % 3600 // 60}MIN",
        "strCPU": f"{round(cpu)}%",
        "strMemory": f"{round(mem.percent)}%",
        "strNetworkIn": f"{round(net_in)}kpbs",
        "strNetworkOut": f"{round(net_out)}kpbs",
        "strTotalSpace": f"{total / 2**30:.1f}GB",
        "strFreeSpace": f"{free / 2**30:.1f}GB",
        "nRunTimeSec": run_sec,
        "nCPUUsage": round(cpu),
        "nMemoryUsage": round(mem.percent),
        "nTotalMemoryByte": mem.total,
        "nNetworkInK": round(net_in),
        "nNetworkOutK": round(net_out),
        "nTotalSpaceByte": total,
        "nFreeSpaceByte": free,
        "nRecordTotalSpaceByte": rec_total,
        "nRecordFreeSpaceByte": rec_free,
    }


routes = [
    Route("/api/v1/Login", login),
    Route("/api/v1/Logout", logout),
    Route("/api/v1/Keepalive", keepalive),
    Route("/api/v1/GetSystemInfo", get_system_info),
    Route("/api/v1/GetRunInfo", get_run_info),
    Route("/api/v1/GetVersion", get_version),
    Route("/api/v1/GetLicEndTime", get_lic_end_time),
    Route("/api/v1/GetCodecInfo", get_codec_info),
    Route("/api/v1/GetDeviceSummary", get_device_summary),
    Route("/api/v1/GetVidStreamStatus", get_vid_stream_status),
    Route("/api/v1/Restart", restart),
]
chapter = Chapter("system", routes)
