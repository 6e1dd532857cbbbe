"""Manual §5.2, System: Login, Logout, Keepalive, GetSystemInfo, GetRunInfo, UpdateUser, GetUserInfo."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from typing import Any

import psutil
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from supervisor.api.common import Chapter, endpoint, ok, param, services, session_of
from supervisor.auth import User
from supervisor.errors import Forbidden, NotFound

MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@endpoint(role=None)
async def login(request: Request, _: None) -> Any:
    user = param(request, "user", pattern=USER_RE, maxlen=64)
    password = param(request, "password", maxlen=128)
    auth = services(request).auth
    client = request.client.host if request.client else "?"
    session, faults = auth.login(user, password, client)
    if session is None:
        residue = max(0, int(faults.locked_until - time.monotonic()))
        code = "login locked, try again later" if residue else "wrong user or password"
        return JSONResponse(
            {"bStatus": False, "strCode": code, "nFaultTimes": faults.count, "tLockTimeResidue": residue},
            status_code=401,
        )
    response = JSONResponse(
        {"bStatus": True, "strCode": "Login successfully", "strSession": session, "nTimeout": auth.timeout}
    )
    response.set_cookie("h5gate_session", session, httponly=True, samesite="lax")
    return response


@endpoint()
async def logout(request: Request, user: User) -> Any:
    services(request).auth.logout(session_of(request) or "")
    response = JSONResponse(ok("Logout successfully"))
    response.delete_cookie("h5gate_session")
    return response


@endpoint()
async def keepalive(request: Request, user: User) -> Any:
    return ok("Keepalive successfully")


@endpoint()
async def get_system_info(request: Request, user: User) -> Any:
    svc = services(request)
    return {
        "strVersion": svc.version,
        "strHostId": svc.host_id,
        "strLicenseType": "None",
        "strLicenseFull": "",
        "strChannelLimit": "unlimited",
        "strEndtime": "unlimited",
    }


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


@endpoint()
async def update_user(request: Request, user: User) -> Any:
    name = param(request, "user", pattern=USER_RE, maxlen=64)
    old = param(request, "oldpassword", maxlen=64)
    new = param(request, "newpassword", pattern=MD5_RE, maxlen=32)
    auth = services(request).auth
    if name != user.name and user.role != "Administrator":
        raise Forbidden("only an Administrator may change another user's password")
    target = auth.users.get(name)
    if target is None:
        raise NotFound(f"no such user: {name}")
    if name == user.name and not auth.password_matches(target, old):
        raise Forbidden("old password is wrong")
    await auth.change_password(name, new, keep=session_of(request))
    auth.warn_default_password()
    return ok("Update user successfully")


@endpoint()
async def get_user_info(request: Request, user: User) -> Any:
    name = param(request, "user", required=False, default=user.name, pattern=USER_RE, maxlen=64)
    if name != user.name and user.role != "Administrator":
        raise Forbidden("only an Administrator may read another user")
    target = services(request).auth.users.get(name)
    if target is None:
        raise NotFound(f"no such user: {name}")
    return {"strUser": target.name, "strUserType": target.role}


routes = [
    Route("/api/v1/Login", login),
    Route("/api/v1/Logout", logout),
    Route("/api/v1/Keepalive", keepalive),
    Route("/api/v1/GetSystemInfo", get_system_info),
    Route("/api/v1/GetRunInfo", get_run_info),
    Route("/api/v1/UpdateUser", update_user),
    Route("/api/v1/GetUserInfo", get_user_info),
]
chapter = Chapter("system", routes)
