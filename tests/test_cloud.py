"""Cloud edges (manual §5.6): a centre and two edges, each edge behind a NAT the centre cannot reach through.

Three h5gate processes, each in its own network namespace (tools/harness/netns.py): the centre on
192.0.2.1, two edges on 10.1.0.2 and 10.2.0.2 behind a router that masquerades them as 192.0.2.254. The
centre has no route to either edge, so everything it does with an edge (forwarded calls, live video,
recordings, images) must go through the link the edge opened. Each edge has a real GStreamer RTSP camera
inside its own namespace (127.0.0.1 there), which nothing outside that namespace can reach at all; edge 1
also has the virtual ONVIF PTZ camera. Edge 1 is configured by its config settings (H5GATE_CLOUD_*), edge
2 by SetCloudInfo as the consoles send it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import websockets

from tests.onvif_helpers import VirtualOnvif
from tests.test_records import iso_time, manual_time
from tools.harness.camera import GstCamera, wait_until
from tools.harness.gateway import Gateway
from tools.harness.netns import CENTRE_IP, ROUTER_IP, NatNetwork, edge_ip
from tools.harness.webrtc_viewer import RtcViewer
from workers.fmp4 import boxes, parse_fragment, parse_init

ADMIN_MD5 = hashlib.md5(b"12345").hexdigest()
KEEPALIVE = 1  # seconds: the centre drops a silent edge after 3 of them + 2
ONVIF_USER, ONVIF_PASSWORD = "onvif", "secret"
IDLE_SECONDS = 3  # the centre stops taking an edge camera's stream this long after its last viewer left


@dataclass
class Edge:
    n: int
    ns: str
    gw: Gateway
    cam: GstCamera
    onvif: VirtualOnvif | None = None
    extra: list[Any] = field(default_factory=list)


@pytest.fixture(scope="module")
def net() -> Iterator[NatNetwork]:
    with NatNetwork(edges=2) as network, network.enter(network.centre):
        yield network


@pytest.fixture(scope="module")
def centre(net: NatNetwork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {"H5GATE_CLOUD_IDLE_SECONDS": str(IDLE_SECONDS), "H5GATE_HLS_IDLE_SECONDS": "5"}
    gw = Gateway(tmp_path_factory.mktemp("centre"), extra_args=["--no-demo", "--host", "0.0.0.0"], env=env)
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def _edge_gateway(net: NatNetwork, n: int, data: Any, env: dict[str, str]) -> Gateway:
    env = {"H5GATE_RECORD_FILE_SECONDS": "2", "H5GATE_PRE_RECORD_SECONDS": "0", **env}
    return Gateway(data, extra_args=["--no-demo", "--host", "0.0.0.0"], env=env).start()


@pytest.fixture(scope="module")
def edge1(net: NatNetwork, centre: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """Registered by its config settings; a camera and an ONVIF PTZ camera beside it."""
    env = {
        "H5GATE_CLOUD_ENABLE": "true",
        "H5GATE_CLOUD_SERVER_TOKEN": "site1",
        "H5GATE_CLOUD_SERVER_NAME": "Site one",
        "H5GATE_CLOUD_IP": CENTRE_IP,
        "H5GATE_CLOUD_PORT": str(centre.port),
        "H5GATE_CLOUD_USER": "admin",
        "H5GATE_CLOUD_PASSWORD": ADMIN_MD5,
        "H5GATE_CLOUD_KEEPALIVE": str(KEEPALIVE),
    }
    with net.enter(net.edges[0]):
        cam = GstCamera()
        onvif = VirtualOnvif(
            "--name", "Gate", rtsp_url=cam.url("h264", credentials=False), user=ONVIF_USER, password=ONVIF_PASSWORD
        ).__enter__()
        env["H5GATE_ONVIF_DISCOVERY_TARGET"] = onvif.discovery  # WS-Discovery by unicast, inside the edge's namespace
        gw = _edge_gateway(net, 1, tmp_path_factory.mktemp("edge1"), env)
    edge = Edge(1, net.edges[0], gw, cam, onvif)
    try:
        yield edge
    finally:
        gw.stop()
        onvif.stop()
        cam.stop()


@pytest.fixture(scope="module")
def edge2(net: NatNetwork, centre: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    """Registered by SetCloudInfo, the consoles' form (password as MD5)."""
    with net.enter(net.edges[1]):
        cam = GstCamera()
        gw = _edge_gateway(net, 2, tmp_path_factory.mktemp("edge2"), {})
        form = {
            "enable": "true",
            "servername": "Site two",
            "servertoken": "site2",
            "cloudip": CENTRE_IP,
            "cloudport": centre.port,
            "ssl": "false",
            "user": "admin",
            "keepalivetime": KEEPALIVE,
            "edgetranscoding": "false",
        }
        gw.ok("SetCloudInfo", password=hashlib.md5(b"wrong").hexdigest(), **form)  # the centre refuses it
        assert wait_until(lambda: "wrong user or password" in gw.ok("GetCloudClientInfo")["strLastError"], 20)
        assert gw.ok("GetCloudClientInfo")["bOnline"] is False
        with net.enter(net.centre):  # a centre user who is no Administrator may not register an edge
            centre.ok("CreateUser", user="watcher", password=ADMIN_MD5, roletoken="Viewer")
        gw.ok("SetCloudInfo", password=ADMIN_MD5, **{**form, "user": "watcher"})
        assert wait_until(lambda: "not an Administrator" in gw.ok("GetCloudClientInfo")["strLastError"], 20)
        body = gw.ok("SetCloudInfo", password=ADMIN_MD5, **form)
        assert body["bStatus"] is True, body
    edge = Edge(2, net.edges[1], gw, cam)
    try:
        yield edge
    finally:
        gw.stop()
        cam.stop()


def on_edge(net: NatNetwork, edge: Edge, call: str, **params: Any) -> Any:
    """A call to an edge's own API, made from inside its namespace (the centre's cannot reach it)."""
    with net.enter(edge.ns):
        return edge.gw.ok(call, **params)


def edge_online(net: NatNetwork, edge: Edge) -> bool:
    return bool(on_edge(net, edge, "GetCloudClientInfo")["bOnline"])


def servers(centre: Gateway) -> dict[str, dict[str, Any]]:
    return {s["strServerToken"]: s for s in centre.ok("GetServerList")["server"]}


def wait_edges_online(centre: Gateway, *tokens: str, online: bool = True, timeout: float = 30.0) -> None:
    def ready() -> bool:
        listed = servers(centre)
        return all(t in listed and listed[t]["bOnline"] is online for t in tokens)

    assert wait_until(ready, timeout), servers(centre)


def centre_src(centre: Gateway, token: str) -> dict[str, Any]:
    found = [s for s in centre.ok("GetSrc")["src"] if s["strToken"] == token]
    assert found, f"{token} not listed by the centre"
    return found[0]


def add_camera(net: NatNetwork, centre: Gateway, edge: Edge, token: str) -> str:
    """AddSrcRTSP on the centre with servertoken: the camera exists only inside the edge's namespace."""
    body = centre.ok("AddSrcRTSP", servertoken=f"site{edge.n}", token=token, name=f"Cam {edge.n}", url=edge.cam.url())
    assert body["bStatus"] is True, body
    assert (body["strServerToken"], body["strOriginalToken"]) == (f"site{edge.n}", token)
    assert wait_until(lambda: centre_src(centre, body["strToken"])["bOnline"], 30), centre_src(centre, body["strToken"])
    return str(body["strToken"])


@dataclass
class Watched:
    messages: int = 0
    mime: str = ""
    init: Any = None
    video_tfdts: list[int] = field(default_factory=list)
    keyframes: int = 0
    close_code: int | None = None
    close_reason: str = ""
    closed_at: float = 0.0
    opened_at: float = 0.0
    first_frame: float = 0.0  # seconds from connecting to the first video fragment


def _count(watched: Watched, message: bytes) -> None:
    watched.messages += 1
    if watched.messages == 1:
        watched.mime = message.decode()
        return
    if message[4:8] == b"ftyp":
        watched.init = parse_init(message)
        return
    assert watched.init is not None, "a fragment before the init segment"
    video = watched.init.video.track_id
    moof = -1
    for kind, pos, _, size in boxes(message):
        if kind == b"moof":
            moof = pos
        elif kind == b"mdat" and moof >= 0:
            info = parse_fragment(message[moof : pos + size])
            if info.track_id == video:
                if not watched.video_tfdts:
                    watched.first_frame = time.monotonic() - watched.opened_at
                watched.video_tfdts.append(info.tfdt)
                watched.keyframes += info.keyframe
            moof = -1


async def watch(url: str, seconds: float, until_closed: bool = False) -> Watched:
    """A WS viewer: what it got in `seconds` (or until the server closed it, when `until_closed`)."""
    watched = Watched(opened_at=time.monotonic())
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        deadline = time.monotonic() + seconds
        try:
            while until_closed or time.monotonic() < deadline:
                message = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
                assert isinstance(message, bytes)
                _count(watched, message)
        except websockets.ConnectionClosed:
            watched.closed_at = time.monotonic()
        except TimeoutError:
            pass
        watched.close_code, watched.close_reason = ws.close_code, ws.close_reason or ""
    return watched


def frames_ok(watched: Watched, at_least: int) -> None:
    assert watched.mime.startswith('video/mp4; codecs="avc1'), watched.mime
    assert watched.init is not None and watched.init.video is not None
    assert len(watched.video_tfdts) >= at_least, (len(watched.video_tfdts), watched)
    assert watched.keyframes >= 1
    steps = [b - a for a, b in zip(watched.video_tfdts, watched.video_tfdts[1:], strict=False)]
    assert all(step > 0 for step in steps), "video decode times must go forward"


# ---------------------------------------------------------------------------------------------------------


def test_edges_connect_out_through_the_nat_and_the_centre_cannot_reach_them(
    net: NatNetwork, centre: Gateway, edge1: Edge, edge2: Edge
) -> None:
    wait_edges_online(centre, "site1", "site2")
    listed = servers(centre)
    assert listed["site1"]["strServerIp"] == listed["site2"]["strServerIp"] == ROUTER_IP  # seen through the NAT
    assert listed["site1"]["strServerName"] == "Site one" and listed["site2"]["strServerName"] == "Site two"
    for edge in (edge1, edge2):
        assert wait_until(partial(edge_online, net, edge), 10)
        info = on_edge(net, edge, "GetCloudClientInfo")
        assert info["strCloudIp"] == CENTRE_IP, info
        assert info["strServerToken"] == f"site{edge.n}" and info["strPasswd"] == "******"
        assert info["nKeepaliveTime"] == KEEPALIVE and info["strUser"] == "admin"
    # the proof: from the centre's namespace (this thread's), no route to an edge, no connection to it
    for edge in (edge1, edge2):
        route = subprocess.run(["ip", "route", "get", edge_ip(edge.n)], capture_output=True, text=True)
        assert route.returncode != 0 and "unreachable" in route.stderr, (route.stdout, route.stderr)
        with pytest.raises(OSError) as refused:
            socket.create_connection((edge_ip(edge.n), edge.gw.port), timeout=3).close()
        assert refused.value.errno is not None  # ENETUNREACH: not a timeout, there is no way at all
    # ... while from inside an edge's namespace the centre answers
    with net.enter(edge1.ns):
        socket.create_connection((CENTRE_IP, centre.port), timeout=3).close()


def test_calls_with_servertoken_run_on_the_edge(net: NatNetwork, centre: Gateway, edge1: Edge, edge2: Edge) -> None:
    wait_edges_online(centre, "site1", "site2")
    token = add_camera(net, centre, edge1, "cam")
    assert token == "site1.cam"
    on_edge_src = on_edge(net, edge1, "GetSrc", token="cam")["src"][0]
    assert on_edge_src["strUrl"] == edge1.cam.url() and on_edge_src["nType"] == "H5_STREAM"
    src = centre_src(centre, token)
    assert (src["nType"], src["strServerToken"], src["strOriginalToken"], src["strName"]) == (
        "H5_CLOUD", "site1", "cam", "Cam 1"
    )  # fmt: skip
    devices = {d["strToken"]: d for d in centre.ok("GetCloudDevice")["dev"]}
    assert devices["site1"]["strName"] == "Site one" and devices["site1"]["strIp"] == ROUTER_IP
    assert set(devices) >= {"site1", "site2"}
    listed = centre.ok("GetCloudDeviceSrc", token="site1")["src"]
    assert [s["strToken"] for s in listed] == ["site1.cam"] and listed[0]["nType"] == "H5_CLOUD"

    # an unknown servertoken, or a token that is not on the named edge: refused with the reason
    status, body = centre.get("AddSrcRTSP", servertoken="nowhere", token="x", name="x", url=edge1.cam.url())
    assert status == 404 and body["bStatus"] is False and "unknown servertoken" in body["strCode"], body
    status, _, raw = centre.request(f"//api/v1/OnvifSearch?servertoken=nowhere&session={centre.session}")
    assert status == 200 and b'"bStatus":false' in raw and b"unknown servertoken" in raw  # the consoles' form
    status, body = centre.get("ManualRecordStart", servertoken="site2", token=token)
    assert status == 400 and body["bStatus"] is False and "not on edge site2" in body["strCode"], body
    assert centre.get("DelSrc", servertoken="site1", token="cam2")[1]["bStatus"] is False  # the edge's own answer

    # camera rights hold for edge cameras, whichever token names them: a role with one local camera only
    centre.ok("AddSrcRTSP", token="local", name="Local", url="rtsp://127.0.0.1:9/none", connecttype="ondemand")
    centre.ok("CreateRole", roletoken="guards", role="Operator")
    centre.ok("AddCamToRole", roletoken="guards", camtoken="local")
    centre.ok("CreateUser", user="guard", password=ADMIN_MD5, roletoken="guards")
    guard = centre.ok("Login", session=None, user="guard", password=ADMIN_MD5)["strSession"]
    window = {"type": "record", "start": manual_time(time.time() - 60), "end": iso_time(time.time())}
    for params in ({"token": token}, {"servertoken": "site1", "token": "cam"}):
        status, body = centre.get("Search", session=guard, **params, **window)
        assert status == 404 and body["bStatus"] is False, (params, body)
    status, body = centre.get("Search", session=guard, servertoken="site1", **window)
    assert status == 403 and "Administrator" in body["strCode"], body
    centre.ok("AddCamToRole", roletoken="guards", camtoken=token)
    assert centre.ok("Search", session=guard, token=token, **window)["record"] == []
    status, body = centre.get("DelSrc", session=guard, token=token)
    assert status == 403 and body["bStatus"] is False  # an Operator deletes nothing, here or on an edge
    centre.ok("DelSrc", token="local")

    # ONVIF: probe and add a camera that only the edge can reach, then PTZ it from the centre
    assert edge1.onvif is not None
    found = centre.ok("OnvifSearch", servertoken="site1", timeout=1)["device"]
    assert [(d["strIp"], d["strPort"], d["strName"]) for d in found] == [("127.0.0.1", str(edge1.onvif.port), "Gate")]
    assert centre.ok("OnvifSearch", timeout=1)["device"] == []  # the centre's own search finds nothing of the edge's
    device: dict[str, Any] = {
        "ip": "127.0.0.1",
        "port": edge1.onvif.port,
        "user": ONVIF_USER,
        "password": ONVIF_PASSWORD,
    }
    probed = centre.ok("OnvifProbe", servertoken="site1", **device)
    assert {p["strToken"] for p in probed["profile"]} == {"main", "sub"}, probed
    status, local = centre.get("OnvifProbe", **device)  # without servertoken: the centre's own, which fails
    assert local["bStatus"] is False, local
    added = centre.ok("AddSrcONVIF", servertoken="site1", token="ptz", name="PTZ", **device)
    assert added["strToken"] == "site1.ptz", added
    moved = centre.ok("Ptz", token="site1.ptz", action="right", speed=1)
    assert moved == {"bStatus": True, "strCode": "PTZ successfully"}, moved
    with net.enter(edge1.ns):
        ptz = edge1.onvif.status()["ptz"]
    assert ptz["moving"] is True and ptz["velocity"]["pan"] > 0, ptz
    centre.ok("Ptz", token="site1.ptz", action="stop")
    with net.enter(edge1.ns):
        assert edge1.onvif.status()["ptz"]["moving"] is False
    centre.ok("DelSrc", token="site1.ptz")
    assert "ptz" not in {s["strToken"] for s in on_edge(net, edge1, "GetSrc")["src"]}
    assert wait_until(lambda: "site1.ptz" not in {s["strToken"] for s in centre.ok("GetSrc")["src"]}, 5)


async def test_live_video_of_an_edge_camera_crosses_the_link_once(
    net: NatNetwork, centre: Gateway, edge1: Edge
) -> None:
    token = "site1.cam" if "site1.cam" in {s["strToken"] for s in centre.ok("GetSrc")["src"]} else None
    token = token or add_camera(net, centre, edge1, "cam")
    before = on_edge(net, edge1, "h5swsapi/Status")["nTotalConnects"]
    viewers = await asyncio.gather(*(watch(centre.ws_url(token), 6.0) for _ in range(3)))
    for watched in viewers:
        frames_ok(watched, at_least=50)  # 25 fps camera: 6 s minus the start, with room for a loaded machine
    print(f"first picture through the link (stream not yet relayed): {max(v.first_frame for v in viewers):.2f}s")
    after = on_edge(net, edge1, "h5swsapi/Status")["nTotalConnects"]
    assert after - before == 1, "three centre viewers, one stream over the link"
    status = centre.ok("h5swsapi/Status")
    assert status["nTotalConnects"] >= 3

    # HLS on the centre, made from the same relayed hub
    def playlist() -> bytes:
        code, _, body = centre.request(f"/hls/v2/{token}/hls.m3u8?session={centre.session}")
        return body if code == 200 and b"#EXTINF" in body else b""

    assert await asyncio.to_thread(wait_until, lambda: bool(playlist()), 30)
    lines = playlist().decode().splitlines()
    segment = next(line for line in reversed(lines) if line and not line.startswith("#"))
    path = f"/hls/v2/{token}/{segment}" if not segment.startswith("/") else segment
    code, _, data = centre.request(path + ("&" if "?" in path else "?") + f"session={centre.session}")
    assert code == 200 and b"moof" in data and b"mdat" in data, (code, path, data[:100])

    # WebRTC on the centre, from the same hub
    rtc = RtcViewer(f"{centre.ws_base}/api/v1/h5srtcapi?token={token}&profile=main&session={centre.session}")
    try:
        await rtc.start(timeout=20)
        await rtc.wait_frames(25, timeout=20)
        assert rtc.codecs[0] == "H264" and all(data[:3] in (b"\0\0\1", b"\0\0\0") for _, data in rtc.video[:25])
        stamps = [t for t, _ in rtc.video[:25]]
        assert stamps == sorted(stamps) and stamps[-1] > stamps[0]
    finally:
        await rtc.close()
    assert on_edge(net, edge1, "h5swsapi/Status")["nTotalConnects"] - before == 1  # HLS, WebRTC: no second stream
    # nobody watches any more: the stream over the link stops (HLS keeps it while its playlist was fetched lately)
    assert await asyncio.to_thread(
        wait_until, lambda: on_edge(net, edge1, "h5swsapi/Status")["nConnectCount"] == 0, 60
    ), on_edge(net, edge1, "h5swsapi/Status")


async def test_image_recording_search_and_playback_through_the_link(
    net: NatNetwork, centre: Gateway, edge1: Edge
) -> None:
    token = "site1.cam" if "site1.cam" in {s["strToken"] for s in centre.ok("GetSrc")["src"]} else None
    token = token or add_camera(net, centre, edge1, "cam")
    code, headers, jpeg = centre.request(f"/api/v1/GetImage?token={token}&session={centre.session}")
    assert code == 200 and headers["content-type"] == "image/jpeg" and jpeg[:2] == b"\xff\xd8", (code, headers)
    started = time.time()
    body = centre.ok("ManualRecordStart", token=token)
    assert body["bStatus"] is True, body
    await asyncio.sleep(5)
    assert centre.ok("ManualRecordStop", token=token)["bStatus"] is True
    found: list[dict[str, Any]] = []

    def search() -> bool:
        found[:] = centre.ok(
            "Search", token=token, type="record", start=manual_time(started - 60), end=iso_time(time.time() + 60)
        )["record"]
        return bool(found) and all(r.get("strEndTime") for r in found)

    assert await asyncio.to_thread(wait_until, search, 15), found
    assert {r["strToken"] for r in found} == {token}  # the edge's token shown as the centre's
    assert all(r["strOriginalToken"] == "cam" and r["strServerToken"] == "site1" for r in found)
    rest = found[0]["strPath"].split("/", 4)[4]  # /cloudstore/record/<centre token>/<the edge's dated path>
    on_disk = edge1.gw.data_dir / "mediastore" / "record" / "cam" / rest
    assert on_disk.is_file() and on_disk.stat().st_size > 10_000  # recorded on the edge, not on the centre
    assert not (centre.data_dir / "mediastore" / "record" / "cam").exists()
    # downloaded from the centre by the strPath its Search gave: the edge's file, byte for byte, over the link
    assert all(r["strPath"].startswith(f"/cloudstore/record/{token}/") for r in found), found
    code, headers, data = centre.request(f"{found[0]['strPath']}?session={centre.session}")
    assert code == 200 and headers["content-type"] == "video/mp4", (code, headers, data[:300])
    assert data == on_disk.read_bytes()
    code, _, _ = centre.request(f"/cloudstore/record/{token}/../../etc/passwd?session={centre.session}")
    assert code in (400, 404)
    assert centre.request(found[0]["strPath"])[0] == 401  # behind the session, as /mediastore is

    url = centre.ws_url(
        token, playback="true", serverpb="true", begintime=manual_time(started - 5), endtime=iso_time(time.time())
    )
    played, events = await play(url, 20.0)
    frames_ok(played, at_least=50)  # 5 s recorded at 25 fps
    assert "H5S_EVENT_PB_TIME" in events and events[-1] == "H5S_EVENT_PB_END", events  # the edge's text messages

    # the same recording over WebRTC from the centre: the edge plays it, the centre's sidecar sends it
    query = url.split("?", 1)[1]
    rtc = RtcViewer(f"{centre.ws_base}/api/v1/h5srtcapi?{query}&profile=main")
    try:
        await rtc.start(timeout=20)
        await rtc.ws.send(json.dumps({"cmd": "H5_START"}))
        await rtc.wait_frames(40, timeout=15)
        assert any(m.get("type") == "H5S_EVENT_PB_TIME" for m in rtc.messages), rtc.messages
        stamps = [t for t, _ in rtc.video]
        assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    finally:
        await rtc.close()


async def play(url: str, seconds: float) -> tuple[Watched, list[str]]:
    """A playback player: H5_START once the init came (the command crosses the link up), read until the end."""
    watched, events = Watched(), []
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and "H5S_EVENT_PB_END" not in events:
            message = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
            if isinstance(message, str):
                events.append(json.loads(message)["type"])
                continue
            _count(watched, message)
            if watched.messages == 2:
                await ws.send(json.dumps({"cmd": "H5_START"}))
    return watched, events


async def test_an_offline_edge_closes_its_viewers_and_they_resume_when_it_returns(
    net: NatNetwork, centre: Gateway, edge2: Edge
) -> None:
    wait_edges_online(centre, "site2")
    with net.enter(edge2.ns):  # added on the edge itself: the centre learns of it from the edge's list
        edge2.gw.ok("AddSrcRTSP", token="door", name="Door", url=edge2.cam.url())
    assert await asyncio.to_thread(wait_until, lambda: any(
        s["strToken"] == "site2.door" and s["bOnline"] for s in centre.ok("GetSrc")["src"]), 30)  # fmt: skip
    viewer = asyncio.create_task(watch(centre.ws_url("site2.door"), 60.0, until_closed=True))
    await asyncio.sleep(3)
    cut = time.monotonic()
    net.link(2, up=False)  # the edge's cable is pulled: no reset, no FIN, only silence
    try:
        watched = await asyncio.wait_for(viewer, 30)
        took = watched.closed_at - cut
        assert watched.close_code == 1013 and "offline" in watched.close_reason, watched
        assert took < 3 * KEEPALIVE + 2 + 3, f"viewer closed {took:.1f}s after the cut"
        print(f"viewer closed with 1013 {took:.1f}s after the edge's cable was cut (keepalive {KEEPALIVE}s)")
        frames_ok(watched, at_least=40)
        assert servers(centre)["site2"]["bOnline"] is False
        assert centre_src(centre, "site2.door")["bOnline"] is False
        status, body = centre.get("ManualRecordStart", token="site2.door")
        assert status == 503 and body["bStatus"] is False and "offline" in body["strCode"], body
        rejected = await watch(centre.ws_url("site2.door"), 15.0, until_closed=True)
        assert rejected.close_code == 1013 and rejected.video_tfdts == [], rejected
    finally:
        net.link(2, up=True)
    back = time.monotonic()
    await asyncio.to_thread(wait_edges_online, centre, "site2", timeout=60)
    resumed = await watch(centre.ws_url("site2.door"), 4.0)
    frames_ok(resumed, at_least=30)
    print(f"edge back online and watched {time.monotonic() - back:.1f}s after its cable came back")


def test_a_restarted_centre_keeps_its_edges_and_their_tokens(net: NatNetwork, centre: Gateway, edge1: Edge) -> None:
    wait_edges_online(centre, "site1")
    token = "site1.cam" if "site1.cam" in {s["strToken"] for s in centre.ok("GetSrc")["src"]} else None
    token = token or add_camera(net, centre, edge1, "cam")
    centre.stop()
    down = time.monotonic()
    centre.start()
    listed = servers(centre)  # known from before the restart, before the edge is back
    assert "site1" in listed and centre_src(centre, token)["strOriginalToken"] == "cam"
    wait_edges_online(centre, "site1", timeout=40)  # the edge reconnects by itself (backoff from 1 s)
    back = time.monotonic() - down
    assert wait_until(lambda: centre_src(centre, token)["bOnline"], 10)
    watched = asyncio.run(watch(centre.ws_url(token), 3.0))
    frames_ok(watched, at_least=30)
    print(f"edge back on the restarted centre {back:.1f}s after it stopped")
