"""The vendor consoles' contract (issue #10) against the real server with real HTTP and WebSocket clients.

What the consoles' sources send and read is the contract: `//api/v1/<Name>` paths (double slash, no
redirect), `Authorization: token`, 200 with bStatus false for failures in that form (their axios
interceptor drops every other status but 401), the web root at `/` with h5gate's console under
`/console/`, users and roles with per-camera rights on every path, regions, views, the system calls and
an honest "not supported" for what h5gate does not do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.wsclient import watch_sync
from tools.harness.gateway import Gateway

MD5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731 - as the consoles' $.md5
DEMO = str(Path(__file__).resolve().parents[1] / "media" / "demo.mp4")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Vendor:
    """Calls in the consoles' own form: //api/v1/<Name>?...&session=<s>, with `Authorization: token <s>`."""

    def __init__(self, gw: Gateway, session: str | None) -> None:
        self.gw = gw
        self.session = session

    def call(self, api: str, /, path: str = "//api/v1/", **params: Any) -> tuple[int, Any]:
        query = dict(params)
        headers = {}
        if self.session is not None:
            query["session"] = self.session
            headers["Authorization"] = f"token {self.session}"
        status, _, body = self.gw.request(f"{path}{api}?{urllib.parse.urlencode(query)}", headers=headers)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def ok(self, api: str, /, **params: Any) -> Any:
        status, body = self.call(api, **params)
        assert status == 200 and isinstance(body, dict), (api, status, body)
        assert body.get("bStatus") is not False, (api, body)
        return body


def login(gw: Gateway, user: str, password: str) -> Vendor:
    status, body = Vendor(gw, None).call("Login", user=user, password=MD5(password))
    assert status == 200 and body["bStatus"] is True, body
    return Vendor(gw, body["strSession"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A web root standing in for a console's dist: index.html and a static/ folder."""
    root = tmp_path_factory.mktemp("webroot")
    (root / "index.html").write_text("<!doctype html><title>vendor console</title><div id=app></div>")
    (root / "static").mkdir()
    (root / "static" / "app.js").write_text("window.loaded = true;")
    yield root


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Iterator[Gateway]:
    """A server with a web root, the demo source and a second camera `clip2` (the same clip)."""
    gateway = Gateway(tmp_path_factory.mktemp("vendor"), env={"H5GATE_WEB_ROOT": str(site)}).start()
    try:
        gateway.ok("AddSrcFile", token="clip2", name="Clip two", url=DEMO)
        gateway.wait_online("demo", timeout=30)
        gateway.wait_online("clip2", timeout=30)
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Vendor:
    return Vendor(gw, gw.session)


# ---------------------------------------------------------------------------------------------- paths, web root


def test_repeated_slashes_route_as_single_without_redirect(gw: Gateway, admin: Vendor) -> None:
    single = admin.call("GetSrc", path="/api/v1/")[1]
    for path in ("//api/v1/", "//api/v1//", "///api//v1///"):
        status, body = admin.call("GetSrc", path=path)
        assert status == 200 and body == single, path  # urllib follows redirects: the status proves none
    status, body = admin.call("GetSrcCamera", path="//api/v1//")
    assert status == 200 and [s["strToken"] for s in body["src"]] == [s["strToken"] for s in single["src"]]


def test_status_with_ampersand_session_form(gw: Gateway) -> None:
    for name in ("h5swsapi/Status", "h5srtcapi/Status"):
        status, _, body = gw.request(f"/api/v1/{name}&session={gw.session}")
        assert status == 200 and isinstance(json.loads(body)["nConnectCount"], int), name
        assert gw.request(f"/api/v1/{name}&session=nope")[0] == 401


def test_live_websocket_through_double_slash(gw: Gateway) -> None:
    query = urllib.parse.urlencode({"token": "demo", "session": gw.session})
    got = watch_sync(f"{gw.ws_base}//api/v1/h5swsapi?{query}", frames=5, seconds=15)
    assert got.mime.startswith("video/mp4") and len(got.video()) >= 5


def test_web_root_at_slash_and_console_under_console(gw: Gateway, site: Path) -> None:
    status, headers, body = gw.request("/")
    assert status == 200 and b"vendor console" in body and headers["content-type"].startswith("text/html")
    assert gw.request("/static/app.js")[2] == b"window.loaded = true;"
    assert gw.request("/index.html")[0] == 200
    status, _, body = gw.request("/console/")
    assert status == 200 and b"h5gate" in body and b"/console/static/console.js" in body
    assert gw.request("/console/login")[0] == 200
    assert gw.request("/console/static/h5splayer.js")[0] == 200
    for old, new in (("/login", "/console/login"), ("/recordings", "/console/recordings")):
        req = urllib.request.Request(gw.base + old)
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.url == gw.base + new and resp.status == 200
    assert gw.request("/../h5gate.db")[0] == 404
    assert gw.request("/nothing-here.js")[0] == 404


def test_without_web_root_slash_leads_to_the_console(tmp_path: Path) -> None:
    plain = Gateway(tmp_path, extra_args=["--no-demo"]).start()
    try:
        with urllib.request.urlopen(plain.base + "/", timeout=10) as resp:
            assert resp.url == plain.base + "/console/" and b"h5gate" in resp.read()
        assert plain.request("/static/h5splayer.js")[0] == 200  # the old asset paths still work
    finally:
        plain.stop()


# ---------------------------------------------------------------------------------------------- statuses, login


def test_failures_in_the_vendor_form_are_200_with_bstatus_false(gw: Gateway, admin: Vendor) -> None:
    status, body = admin.call("GetSrc", token="nope")
    assert status == 200 and body["bStatus"] is False and body["strCode"]
    assert gw.get("GetSrc", token="nope")[0] == 404  # the single-slash form keeps h5gate's statuses
    status, body = admin.call("AddSrcRTSP", token="bad token!", url="rtsp://127.0.0.1/x")
    assert status == 200 and body["bStatus"] is False
    status, body = Vendor(gw, "null").call("GetSrcCamera")  # every page load before login: session=null
    assert status == 401 and body["bStatus"] is False  # 401 is what sends the consoles to their login page


def test_wrong_password_shows_fault_count_then_lock(gw: Gateway) -> None:
    anon = Vendor(gw, None)
    faults = []
    for _ in range(3):
        status, body = anon.call("Login", user="locky", password=MD5("wrong"))
        assert status == 200 and body["bStatus"] is False and body["tLockTimeResidue"] == 0
        faults.append(body["nFaultTimes"])
    assert faults == [1, 2, 3]  # the consoles show 3 - n tries left
    status, body = anon.call("Login", user="locky", password=MD5("wrong"))
    assert status == 200 and body["nFaultTimes"] > 3 and 240 < body["tLockTimeResidue"] <= 300


def test_login_lock_can_be_turned_off(gw: Gateway, admin: Vendor) -> None:
    assert admin.ok("GetLoginLockStatus")["bLoginLockStatus"] is True
    admin.ok("SetLoginLockStatus", enable="false")
    try:
        assert admin.ok("GetLoginLockStatus")["bLoginLockStatus"] is False
        anon = Vendor(gw, None)
        for _ in range(6):
            body = anon.call("Login", user="nolock", password=MD5("wrong"))[1]
            assert body["bStatus"] is False and body["tLockTimeResidue"] == 0
    finally:
        admin.ok("SetLoginLockStatus", enable="true")
    assert admin.ok("GetLoginLockStatus")["bLoginLockStatus"] is True


def test_lic_end_time_and_version(admin: Vendor, gw: Gateway) -> None:
    body = Vendor(gw, "null").call("GetLicEndTime")[1]  # the login page asks before login
    assert body["strEndtime"] == "unlimited"
    info = admin.ok("GetSystemInfo")
    assert info["strVersion"].startswith("r") and len(info["strVersion"].split(".")) == 4
    assert info["strH5gateVersion"] and info["bTranscoding"] is True and info["bGB28181"] is False
    version = admin.ok("GetVersion")
    assert version["strVersion"] == info["strVersion"] and version["strH5gateVersion"] == info["strH5gateVersion"]


# ---------------------------------------------------------------------------------------------- users and roles


def test_users_and_roles_lifecycle(gw: Gateway, admin: Vendor) -> None:
    roles = {r["strRoleToken"]: r for r in admin.ok("GetRoleList")["roles"]}
    assert {"Administrator", "Operator", "Viewer"} <= set(roles)
    assert roles["Administrator"]["permission"] == {"bConfig": True, "bOperate": True}
    assert roles["Operator"]["permission"] == {"bConfig": False, "bOperate": True}
    admin.ok("CreateRole", roletoken="lobby", role="Operator")
    assert admin.call("CreateRole", roletoken="lobby", role="Operator")[1]["bStatus"] is False
    assert admin.call("CreateRole", roletoken="x", role="God")[1]["bStatus"] is False
    admin.ok("AddCamToRole", roletoken="lobby", camtoken="clip2", cam="Clip two")
    info = admin.ok("GetRoleInfo", roletoken="lobby")
    assert info["strRoleToken"] == "lobby" and info["strRole"] == "Operator"
    assert info["cams"] == [{"strCamName": "Clip two", "strCamToken": "clip2"}]
    assert admin.call("AddCamToRole", roletoken="lobby", camtoken="ghost", cam="x")[1]["bStatus"] is False
    admin.ok("CreateUser", user="guard", password=MD5("guard-pass"), roletoken="lobby")
    assert admin.call("CreateUser", user="guard", password=MD5("x"), roletoken="lobby")[1]["bStatus"] is False
    assert admin.call("CreateUser", user="g2", password=MD5("x"), roletoken="nope")[1]["bStatus"] is False
    users = {u["strUser"]: u for u in admin.ok("GetUserList")["users"]}
    assert users["guard"]["strRole"] == "lobby" and users["guard"]["strUserType"] == "Operator"
    assert "strPasswd" not in users["guard"] and users["admin"]["strUserType"] == "Administrator"
    guard = login(gw, "guard", "guard-pass")
    me = guard.ok("GetUserInfo", user="guard")
    assert me == {"strUser": "guard", "strRole": "lobby", "strRoleToken": "lobby", "strUserType": "Operator"}
    assert guard.call("GetUserList")[1]["bStatus"] is False  # not an Administrator
    assert admin.call("DeleteRole", roletoken="lobby")[1]["bStatus"] is False  # it has a user
    guard.ok("UpdateUser", user="guard", oldpassword=MD5("guard-pass"), newpassword=MD5("new-pass"))
    login(gw, "guard", "new-pass")
    admin.ok("DelCamInRole", roletoken="lobby", camtoken="clip2")
    assert admin.ok("GetRoleInfo", roletoken="lobby")["cams"] == []
    admin.ok("DeleteUser", user="guard")
    assert guard.call("GetSrc")[0] == 401  # the deleted user's sessions end
    admin.ok("DeleteRole", roletoken="lobby")
    assert "lobby" not in {r["strRoleToken"] for r in admin.ok("GetRoleList")["roles"]}
    assert admin.call("DeleteRole", roletoken="Administrator")[1]["bStatus"] is False
    assert admin.call("DeleteUser", user="admin")[1]["bStatus"] is False  # not yourself


@pytest.fixture(scope="module")
def limited(gw: Gateway, admin: Vendor) -> Iterator[Vendor]:
    """A user whose role has only `clip2`; recordings and a snapshot exist for both cameras."""
    admin.ok("CreateRole", roletoken="cliponly", role="Operator")
    admin.ok("AddCamToRole", roletoken="cliponly", camtoken="clip2", cam="Clip two")
    admin.ok("CreateUser", user="clipper", password=MD5("clip-pass"), roletoken="cliponly")
    for token in ("demo", "clip2"):
        admin.ok("Record", token=token, duration=2)
        admin.ok("Snapshot", token=token)
    time.sleep(4)
    user = login(gw, "clipper", "clip-pass")
    yield user
    admin.ok("DeleteUser", user="clipper")
    admin.ok("DeleteRole", roletoken="cliponly")


def test_role_limits_listing(limited: Vendor, admin: Vendor) -> None:
    for name in ("GetSrc", "GetSrcCamera", "GetSrcWithoutDevice"):
        assert [s["strToken"] for s in limited.ok(name)["src"]] == ["clip2"], name
        assert {"demo", "clip2"} <= {s["strToken"] for s in admin.ok(name)["src"]}
    assert limited.call("GetSrc", token="demo")[1]["bStatus"] is False
    assert [s["strToken"] for s in limited.ok("GetRegion")["src"]] == ["clip2"]
    summary = limited.ok("GetDeviceSummary")
    assert summary["nRTSPRTMPTotal"] == 1 and summary["nTotal"] == 1


def test_role_limits_images_and_stream_status(gw: Gateway, limited: Vendor) -> None:
    status, headers, body = gw.request(f"/api/v1/GetImage?token=clip2&session={limited.session}")
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert gw.request(f"/api/v1/GetImage?token=demo&session={limited.session}")[0] == 404
    assert limited.call("GetVidStreamStatus", token="demo", stream="main")[1]["bStatus"] is False
    assert limited.ok("GetVidStreamStatus", token="clip2", stream="main")["nVideoWidth"] > 0


def test_role_limits_live_websocket_webrtc_and_hls(gw: Gateway, limited: Vendor) -> None:
    assert len(watch_sync(gw.ws_url("clip2", session=limited.session), frames=3, seconds=15).video()) >= 3
    got = watch_sync(gw.ws_url("demo", session=limited.session), frames=3, seconds=10)
    assert got.close_code == 4404 and not got.mime
    query = urllib.parse.urlencode({"token": "demo", "session": limited.session})

    async def rtc() -> tuple[int | None, str]:
        async with websockets.connect(f"{gw.ws_base}/api/v1/h5srtcapi?{query}") as ws:
            try:
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as e:
                return (e.rcvd.code if e.rcvd else None), (e.rcvd.reason if e.rcvd else "")
        return None, ""

    code, reason = asyncio.run(rtc())
    assert code == 4404 and "unknown token" in reason
    assert gw.request(f"/hls/v1/demo/hls.m3u8?session={limited.session}")[0] == 404
    deadline = time.monotonic() + 20
    while gw.request(f"/hls/v1/clip2/hls.m3u8?session={limited.session}")[0] != 200:
        assert time.monotonic() < deadline, "clip2's playlist never came"
        time.sleep(0.5)


def test_role_limits_search_playback_and_downloads(gw: Gateway, limited: Vendor, admin: Vendor) -> None:
    window = {"start": iso(time.time() - 600), "end": iso(time.time() + 60)}
    for kind in ("record", "snapshot"):
        everything = admin.ok("Search", type=kind, **window)["record"]
        assert {"demo", "clip2"} <= {r["strToken"] for r in everything}, kind
        mine = limited.ok("Search", type=kind, **window)["record"]
        assert mine and {r["strToken"] for r in mine} == {"clip2"}, kind
        assert limited.call("Search", type=kind, token="demo", **window)[1]["bStatus"] is False
        theirs = next(r for r in everything if r["strToken"] == "demo")
        assert gw.request(f"{theirs['strPath']}?session={limited.session}")[0] == 404
        own = mine[0]
        status, _, body = gw.request(f"{own['strPath']}?session={limited.session}")
        assert status == 200 and len(body) > 1000
    rec = next(r for r in admin.ok("Search", type="record", **window)["record"] if r["strToken"] == "demo")
    params = {"token": "demo", "playback": "true", "serverpb": "true", "session": limited.session}
    params.update(begintime=rec["strStartTime"], endtime=rec["strEndTime"])
    got = watch_sync(f"{gw.ws_base}/api/v1/h5swsapi?{urllib.parse.urlencode(params)}", frames=3, seconds=10)
    assert got.close_code == 4404 and not got.mime
    assert limited.call("Archive", token="demo", start1="2020-1-1", start2="1-1-1", duration=5)[1]["bStatus"] is False
    assert limited.call("ManualRecordStart", token="demo")[1]["bStatus"] is False
    assert limited.call("Ptz", token="demo", action="stop")[1]["bStatus"] is False


def test_search_takes_the_r12_consoles_time_form(admin: Vendor) -> None:
    """h5sweb's playback page sends `Date.toISOString() + "08:00"` ("...000Z08:00"): the same window as the plain Z."""
    start, end = time.time() - 600, time.time() + 60
    plain = admin.ok("Search", type="record", start=iso(start), end=iso(end))["record"]
    assert plain
    r12 = admin.ok("Search", type="record", start=iso(start) + "08:00", end=iso(end) + "08:00")["record"]
    # the same list: read as +08:00 the window would lie 8 hours back, where nothing was recorded
    assert [r["strPath"] for r in r12] == [r["strPath"] for r in plain]


def test_deleted_source_leaves_roles_and_regions(gw: Gateway, admin: Vendor) -> None:
    admin.ok("AddSrcFile", token="gone", name="Gone", url=DEMO)
    admin.ok("CreateRole", roletoken="tmprole", role="Viewer")
    admin.ok("AddCamToRole", roletoken="tmprole", camtoken="gone", cam="Gone")
    region = admin.ok("AddRegion", name="Temp")["strToken"]
    admin.ok("AddRegionCam", srctoken="gone", regiontoken=region)
    admin.ok("DelSrc", token="gone")
    try:
        assert admin.ok("GetRoleInfo", roletoken="tmprole")["cams"] == []
        assert admin.ok("GetRegion", token=region)["root"]["cam"] == []
    finally:
        admin.ok("DeleteRole", roletoken="tmprole")
        admin.ok("DelRegion", token=region)


def test_anonymous_view(gw: Gateway, admin: Vendor) -> None:
    assert admin.ok("GetAnonymousView")["bAnonymousView"] is False
    got = watch_sync(f"{gw.ws_base}/api/v1/h5swsapi?token=clip2", frames=3, seconds=10)
    assert got.close_code == 4401
    admin.ok("CreateRole", roletoken="kiosk", role="Viewer")
    admin.ok("AddCamToRole", roletoken="kiosk", camtoken="clip2", cam="Clip two")
    admin.ok("SetAnonymousView", enable="true", roletoken="kiosk")
    try:
        assert admin.ok("GetAnonymousView") == {"bAnonymousView": True, "strRoleToken": "kiosk"}
        assert len(watch_sync(f"{gw.ws_base}/api/v1/h5swsapi?token=clip2", frames=3, seconds=15).video()) >= 3
        assert watch_sync(f"{gw.ws_base}/api/v1/h5swsapi?token=demo", frames=3, seconds=10).close_code == 4404
        assert gw.request("/api/v1/GetImage?token=clip2")[0] == 200
        assert gw.request("/api/v1/GetImage?token=demo")[0] == 404
        assert gw.get("GetSrc", session=None)[0] == 401  # only watching goes without a session
        params = urllib.parse.urlencode({"token": "clip2", "playback": "true", "serverpb": "true"})
        assert watch_sync(f"{gw.ws_base}/api/v1/h5swsapi?{params}", frames=1, seconds=5).close_code == 4401
    finally:
        admin.ok("SetAnonymousView", enable="false")
        admin.ok("DeleteRole", roletoken="kiosk")
    assert watch_sync(f"{gw.ws_base}/api/v1/h5swsapi?token=clip2", frames=3, seconds=10).close_code == 4401


# ---------------------------------------------------------------------------------------------- regions, views


def test_regions_tree(admin: Vendor) -> None:
    tree = admin.ok("GetRegion")
    assert tree["root"]["strToken"] == "root" and isinstance(tree["root"]["node"], list)
    assert {"demo", "clip2"} <= {s["strToken"] for s in tree["src"]}
    north = admin.ok("AddRegion", name="North")["strToken"]
    gate = admin.ok("AddRegion", name="Gate", parent=north)["strToken"]
    admin.ok("AddRegionCam", srctoken="clip2", regiontoken=gate)
    admin.ok("AddRegionCam", srctoken="demo", regiontoken="root")
    tree = admin.ok("GetRegion")["root"]
    node = next(n for n in tree["node"] if n["strToken"] == north)
    assert node["strName"] == "North" and node["node"][0]["strToken"] == gate
    assert node["node"][0]["cam"] == [{"strToken": "clip2"}] and {"strToken": "demo"} in tree["cam"]
    sub = admin.ok("GetRegion", token=gate)
    assert sub["root"]["strName"] == "Gate" and sub["root"]["cam"] == [{"strToken": "clip2"}]
    admin.ok("DelRegionCam", srctoken="clip2", regiontoken=gate)
    assert admin.ok("GetRegion", token=gate)["root"]["cam"] == []
    assert admin.call("AddRegionCam", srctoken="ghost", regiontoken=gate)[1]["bStatus"] is False
    assert admin.call("AddRegion", name="x", parent="nope")[1]["bStatus"] is False
    admin.ok("DelRegion", token=north)  # the subtree goes with it
    assert admin.call("GetRegion", token=gate)[1]["bStatus"] is False
    assert admin.call("DelRegion", token="root")[1]["bStatus"] is False
    admin.ok("DelRegionCam", srctoken="demo", regiontoken="root")


def test_views_post_and_list(gw: Gateway, admin: Vendor) -> None:
    view = {
        "strName": "Front",
        "strToken": "v1abc",
        "strLayoutType": "2|2",
        "src": [{"strIndex": "0", "strToken": "demo", "strStream": "main"}],
    }
    req = urllib.request.Request(
        f"{gw.base}//api/v1/AddView?session={gw.session}",
        data=json.dumps(view).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"token {gw.session}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200 and json.loads(resp.read())["bStatus"] is True
    listed = admin.ok("GetView")
    assert listed["conf"] == [view] and {"demo", "clip2"} <= {s["strToken"] for s in listed["src"]}
    req.data = b"{not json"
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["bStatus"] is False
    admin.ok("DelView", token="v1abc")
    assert admin.ok("GetView")["conf"] == []
    assert admin.call("DelView", token="v1abc")[1]["bStatus"] is False


# ---------------------------------------------------------------------------------------------- system calls


def test_dashboard_calls(admin: Vendor) -> None:
    codec = admin.ok("GetCodecInfo")
    assert isinstance(codec["strCPUModel"], str) and codec["nCPUCore"] >= 1
    assert "h264" in codec["strSWDecoders"].split()
    summary = admin.ok("GetDeviceSummary")
    for key in ("nRTSPRTMPTotal", "nRTSPRTMPOnline", "nONVIFTotal", "nCloudTotal", "nHikDevTotal", "nDhDevOnline"):
        assert isinstance(summary[key], int), key
    assert summary["nRTSPRTMPTotal"] >= 2 and summary["nRTSPRTMPOnline"] >= 2


def test_vid_stream_status(admin: Vendor) -> None:
    status = admin.ok("GetVidStreamStatus", token="demo", stream="main")
    assert status["strVideoType"] == "H264" and status["nVideoWidth"] > 0 and status["nVideoHeight"] > 0
    assert 10 <= status["nVideoFPS"] <= 60 and status["nVideoBitrate"] > 10_000
    assert status["strAudioType"] == "AAC" and status["nAudioSampleRate"] > 0 and status["nAudioChannels"] >= 1
    assert admin.call("GetVidStreamStatus", token="demo", stream="nope")[1]["bStatus"] is False


# ---------------------------------------------------------------------------------------------- not supported


@pytest.mark.parametrize("name", ["AddDeviceHik", "SetGbConf", "UpLoadLic", "MapAddCam", "SetEnableLinkagent"])
def test_unsupported_actions(admin: Vendor, name: str) -> None:
    status, body = admin.call(name)
    assert status == 200 and body == {"bStatus": False, "strCode": "not supported by h5gate"}


@pytest.mark.parametrize(
    ("name", "key"),
    [("GetDevice", "dev"), ("GetGbDevice", "dev"), ("GetDeviceSrc", "src"),
     ("GetGbPlatform", "platform"), ("GetCamera", "cam"), ("SearchDeviceRecordByTime", "record")],
)  # fmt: skip
def test_unsupported_lists_are_empty(admin: Vendor, name: str, key: str) -> None:
    status, body = admin.call(name, token="x")
    assert status == 200 and body[key] == [] and body["strCode"] == "not supported by h5gate"


def test_cloud_lists_are_real_and_empty_without_edges(admin: Vendor) -> None:
    """Cloud edges are built (tests/test_cloud.py): with none registered the consoles' lists are empty."""
    assert admin.ok("GetCloudDevice") == {"dev": []}
    assert admin.ok("GetServerList") == {"server": []}
    status, body = admin.call("GetCloudDeviceSrc", token="nowhere")
    assert status == 200 and body["bStatus"] is False and "unknown cloud device" in body["strCode"]


def test_gpu_info_lists_nothing(admin: Vendor) -> None:
    body = admin.call("GetGPUInfo")[1]
    assert body["nvidia"] == [] and body["intel"] == []
