"""What the vendor consoles call that h5gate does not do: an honest "not supported", or an empty list.

GB28181, the vendor device SDKs (Hikvision, Dahua ... devices and their channels), GPU figures, maps,
licence upload, domains and the link agent are not part of h5gate. A call that
changes something answers `{"bStatus": false, "strCode": "not supported by h5gate"}`; a call a page
lists things from answers that list empty (with the same bStatus/strCode), so every page still loads.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from supervisor.api.common import Chapter, endpoint
from supervisor.auth import User

NOT_SUPPORTED = "not supported by h5gate"

# Calls that list things: the empty answer each page reads without failing.
LISTS: dict[str, dict[str, Any]] = {
    "GetDevice": {"dev": []},
    "GetDeviceSrc": {"src": []},
    "GetGbDevice": {"dev": []},
    "GetGbDeviceSrc": {"src": []},
    "GetCamera": {"cam": []},
    "GetGbPlatform": {"platform": []},
    "GetGPUInfo": {"nvidia": [], "intel": []},
    "GetGPULoad": {"nvidia": [], "intel": []},
    "GetMapCamList": {"cam": [], "src": []},
    "GetDomainList": {"domain": []},
    "SearchDeviceRecordByTime": {"record": []},
    "SearchDeviceRecordCalendar": {"record": []},
}

# Reads of a feature's settings: "not supported", with the switch the page reads shown off.
READS: dict[str, dict[str, Any]] = {
    "GetEnableLinkagent": {"enable": False},
    "GetGbConf": {"bEnable": False},
    "GetGbRegStatus": {"bRegStatus": False},
    "GetDeviceConf": {"bEnableLoadAllChannel": False, "nSandboxMode": "H5_SANDBOX_DISABLE"},
    "GetMapConf": {"strZoom": "", "center": {"strLatitude": "", "strLongitude": ""}},
}

# Calls that would change something h5gate does not have.
ACTIONS = (
    "AddDeviceHik",
    "AddDeviceDh",
    "AddDeviceHikISC",
    "AddDeviceTd",
    "AddDeviceUnv",
    "AddDeviceDss",
    "AddDeviceIvs",
    "AddDeviceVik",
    "DelDevice",
    "SetDeviceConf",
    "AddCamera",
    "DelCamera",
    "AddGbPlatform",
    "DelGbPlatform",
    "SetGbConf",
    "RefreshGbDevice",
    "RebootGbDevice",
    "SetEnableLinkagent",
    "SetMapConf",
    "MapAddCam",
    "MapDelCam",
    "AddDomainConf",
    "DelDomainConf",
    "UpLoadLic",
)


def _answer(extra: dict[str, Any]) -> Any:
    @endpoint()
    async def handler(request: Request, user: User) -> Any:
        return {"bStatus": False, "strCode": NOT_SUPPORTED, **extra}

    return handler


routes = [
    *(Route(f"/api/v1/{name}", _answer(body)) for name, body in {**LISTS, **READS}.items()),
    *(Route(f"/api/v1/{name}", _answer({}), methods=["GET", "POST"]) for name in ACTIONS),
]
chapter = Chapter("unsupported", routes)
