"""ONVIF end to end: discovery, probe, ONVIF sources, PTZ, presets and device faults.

Everything runs against tools/virtual_onvif.py on 127.0.0.1 (discovery by unicast to its loopback
responder: nothing here multicasts), with a real GStreamer RTSP camera behind it that demands the same
credentials, so a source only comes online if the gateway injected them correctly.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from supervisor import onvif
from supervisor.api.onvif_fields import device_fields, profile_label
from supervisor.onvif import DeviceAddress, ProfileInfo
from tests.onvif_helpers import VirtualOnvif
from tools.harness.camera import GstCamera, free_port, wait_until
from tools.harness.gateway import Gateway
from workers import credentials

# URL syntax inside the credentials: percent-encoding has to hold all the way to the RTSP camera.
USER, PASSWORD = "ad min@x", "p@ss:w/rd%?#1"
TIMEOUT = 4.0  # the gateway's onvif_timeout in these tests
SECRET_FORMS = {PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD)}


def no_secret(text: str) -> bool:
    return not any(form in text for form in SECRET_FORMS)


# -- fixtures ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rtsp_cam() -> Iterator[GstCamera]:
    with GstCamera(user=USER, password=PASSWORD, width=320, height=180, fps=15, gop=15, bitrate=300) as cam:
        yield cam


@pytest.fixture(scope="module")
def vcam(rtsp_cam: GstCamera) -> Iterator[VirtualOnvif]:
    """A PTZ camera with WS-Security digest auth."""
    with VirtualOnvif(
        "--name",
        "PTZ Cam",
        "--rtsp-url-sub",
        rtsp_cam.url("h264_noaudio", credentials=False),
        rtsp_url=rtsp_cam.url("h264", credentials=False),
        user=USER,
        password=PASSWORD,
    ) as cam:
        yield cam


@pytest.fixture(scope="module")
def fixed_cam(rtsp_cam: GstCamera) -> Iterator[VirtualOnvif]:
    """A fixed camera (no PTZ, no imaging) that wants HTTP digest; the one whose faults get switched."""
    with VirtualOnvif(
        "--no-ptz",
        "--no-imaging",
        "--auth",
        "digest",
        "--name",
        "Fixed Cam",
        "--model",
        "Fixed-1",
        "--alt-rtsp-url",
        rtsp_cam.url("h264_pcma", credentials=False),
        rtsp_url=rtsp_cam.url("h264", credentials=False),
        user=USER,
        password=PASSWORD,
    ) as cam:
        yield cam


@pytest.fixture
def faults(fixed_cam: VirtualOnvif) -> Iterator[VirtualOnvif]:
    yield fixed_cam
    fixed_cam.fault("normal")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, vcam: VirtualOnvif, fixed_cam: VirtualOnvif) -> Iterator[Gateway]:
    env = {
        "H5GATE_ONVIF_DISCOVERY_TARGET": f"{vcam.discovery},{fixed_cam.discovery}",
        "H5GATE_ONVIF_TIMEOUT": str(TIMEOUT),
    }
    gateway = Gateway(tmp_path_factory.mktemp("onvif-gw"), extra_args=["--no-demo"], env=env).start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def ptz_src(gw: Gateway, vcam: VirtualOnvif) -> str:
    """An ONVIF source on the PTZ camera, profiles chosen automatically."""
    body = gw.ok(
        "AddSrcONVIF", token="onvif_ptz", name="PTZ", user=USER, password=PASSWORD, ip="127.0.0.1", port=vcam.port
    )
    assert body["bStatus"] is True, body
    return "onvif_ptz"


def device(cam: VirtualOnvif, password: str = PASSWORD, port: int | None = None) -> dict[str, object]:
    return {"ip": "127.0.0.1", "port": port or cam.port, "user": USER, "password": password}


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start


# -- pure functions ----------------------------------------------------------------------------------------
def test_credentials_are_percent_encoded_and_replace_existing() -> None:
    url = credentials.with_credentials("rtsp://old:pw@10.0.0.1:554/Streaming/101?transport=tcp", USER, PASSWORD)
    assert url == "rtsp://ad%20min%40x:p%40ss%3Aw%2Frd%25%3F%231@10.0.0.1:554/Streaming/101?transport=tcp"
    assert credentials.with_credentials("rtsp://[fe80::1]:554/a", "u", "") == "rtsp://u@[fe80::1]:554/a"
    assert credentials.with_credentials("rtsp://h/a", "", "x") == "rtsp://h/a"
    assert credentials.strip_credentials(url) == "rtsp://10.0.0.1:554/Streaming/101?transport=tcp"
    assert credentials.redact_url(url) == "rtsp://***@10.0.0.1:554/Streaming/101?transport=tcp"
    text = credentials.redact(f"failed {url} and {PASSWORD}", PASSWORD)
    assert no_secret(text) and "***" in text


def test_automatic_profiles_prefer_large_h264_main_and_small_sub() -> None:
    profiles = [
        ProfileInfo("jpeg", codec="JPEG", width=3840, height=2160),
        ProfileInfo("hd", codec="H264", width=1920, height=1080, fps=25),
        ProfileInfo("h265", codec="H265", width=2560, height=1440),
        ProfileInfo("cif", codec="H264", width=352, height=288),
        ProfileInfo("vga", codec="H264", width=640, height=480),
    ]
    main, sub = onvif.pick_profiles(profiles)
    assert (main.token, sub.token) == ("hd", "cif")
    assert [p.token for p in onvif.pick_profiles(profiles, "vga", "hd")] == ["vga", "hd"]
    only = [ProfileInfo("one", codec="H264", width=1280, height=720)]
    assert [p.token for p in onvif.pick_profiles(only)] == ["one", "one"]
    with pytest.raises(onvif.DeviceRefused, match="no profile 'nope'"):
        onvif.pick_profiles(profiles, "nope")
    assert (
        profile_label(ProfileInfo("t", codec="H264", width=1920, height=1080, fps=25, bitrate=3072))
        == "H264 1920 x 1080 25fps 3072bps"
    )


def test_discovery_targets_are_parsed_strictly() -> None:
    assert onvif.parse_targets("239.255.255.250:3702") == [onvif.DiscoveryTarget("239.255.255.250", 3702)]
    targets = onvif.parse_targets("127.0.0.1:4000, 239.255.255.250:3702@192.0.2.10")
    assert targets[1].interface == "192.0.2.10" and targets[1].multicast and not targets[0].multicast
    for bad in ("", "nohost:1", "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:1@eth0"):
        with pytest.raises(ValueError):
            onvif.parse_targets(bad)


def test_probe_matches_parsing_ignores_junk_and_unrelated_answers() -> None:
    answer = (
        b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" '
        b'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
        b'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"><e:Header><a:RelatesTo>urn:uuid:1'
        b"</a:RelatesTo></e:Header><e:Body><d:ProbeMatches><d:ProbeMatch><d:Scopes>"
        b"onvif://www.onvif.org/hardware/DS%202CD onvif://www.onvif.org/name/Gate</d:Scopes>"
        b"<d:XAddrs>http://[fe80::1]/onvif/device_service http://192.0.2.7:8080/onvif/dev</d:XAddrs>"
        b"</d:ProbeMatch></d:ProbeMatches></e:Body></e:Envelope>"
    )
    found = [device_fields(d) for d in onvif.parse_probe_matches(answer, "192.0.2.7", {"urn:uuid:1"})]
    assert found == [
        {"strIp": "192.0.2.7", "strPort": "8080", "strOnvifAddr": "/onvif/dev", "strModel": "DS 2CD", "strName": "Gate"}
    ]
    assert onvif.parse_probe_matches(answer, "192.0.2.7", {"urn:uuid:other"}) == []
    assert onvif.parse_probe_matches(b"\x00garbage<<", "192.0.2.7", {"urn:uuid:1"}) == []
    assert (
        onvif.parse_probe_matches(
            b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "192.0.2.7", set()
        )
        == []
    )


# -- the client module against the virtual camera ------------------------------------------------------------
async def test_client_discovers_on_loopback_and_skips_garbage(vcam: VirtualOnvif, faults: VirtualOnvif) -> None:
    faults.fault("garbage")
    found, took = await _timed_async(onvif.discover(f"{vcam.discovery},{faults.discovery}", 0.8))
    assert 0.7 < took < 2.0
    assert [(d.port, d.model) for d in found] == [(vcam.port, "H5G-Virtual-PTZ")]


async def test_client_probe_compensates_a_skewed_device_clock_and_sends_digests_only() -> None:
    with VirtualOnvif(
        "--clock-offset", "3600", "--clock-window", "30", "--discovery-bind", "off", user=USER, password=PASSWORD
    ) as cam:
        profiles = await onvif.probe(DeviceAddress("127.0.0.1", cam.port, user=USER, password=PASSWORD), 5)
        assert [p.token for p in profiles] == ["main", "sub"]
        counters = cam.status()["counters"]
        assert counters["password_text"] == 0 and counters["password_digest"] > 0


async def test_resolver_picks_profiles_injects_credentials_and_reuses_the_last_uri(
    vcam: VirtualOnvif, faults: VirtualOnvif, rtsp_cam: GstCamera
) -> None:
    from supervisor.api.onvif import OnvifState, resolve_url
    from supervisor.registry import SourceConfig

    state = OnvifState(onvif.DevicePool(3.0))
    cfg = SourceConfig(
        "r1",
        "r1",
        "H5_ONVIF",
        "",
        user=USER,
        password=PASSWORD,
        ip="127.0.0.1",
        port=str(faults.port),
        onvif_addr="/onvif/device_service",
    )
    try:
        sub = await resolve_url(state, cfg, "sub")
        assert sub == rtsp_cam.url("h264")  # the camera's URI with our credentials, percent-encoded
        assert (cfg.profile_main, cfg.profile_sub) == ("main", "sub")
        assert cfg.url_sub == rtsp_cam.url("h264", credentials=False)
        main = await resolve_url(state, cfg, "main")
        faults.fault("garbage")  # ONVIF broken, RTSP may still be fine: the last URI is reused
        assert await resolve_url(state, cfg, "main") == main
        other = SourceConfig(
            "r2", "r2", "H5_ONVIF", "", user=USER, password=PASSWORD, ip="127.0.0.1", port=str(faults.port)
        )
        with pytest.raises(onvif.DeviceBadAnswer):
            await resolve_url(state, other, "main")
    finally:
        await state.pool.close()


async def _timed_async(coro):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    result = await coro
    return result, time.monotonic() - start


# -- §5.4 through the gateway ------------------------------------------------------------------------------
def test_onvif_search_finds_the_virtual_cameras(gw: Gateway, vcam: VirtualOnvif, fixed_cam: VirtualOnvif) -> None:
    body, took = timed(gw.ok, "OnvifSearch", timeout=1)
    assert 0.9 < took < 4, took
    devices = {d["strPort"]: d for d in body["device"]}
    assert devices[str(vcam.port)] == {
        "strIp": "127.0.0.1",
        "strPort": str(vcam.port),
        "strOnvifAddr": "/onvif/device_service",
        "strModel": "H5G-Virtual-PTZ",
        "strName": "PTZ Cam",
    }
    assert devices[str(fixed_cam.port)]["strModel"] == "Fixed-1"
    status, body = gw.get("OnvifSearch", timeout=100)
    assert status == 400 and body["bStatus"] is False
    status, body = gw.get("OnvifProbe", user=USER, password=PASSWORD)
    assert status == 400 and body == {"bStatus": False, "strCode": "missing parameter: ip"}


def test_onvif_probe_lists_profiles_with_stream_urls(
    gw: Gateway, vcam: VirtualOnvif, fixed_cam: VirtualOnvif, rtsp_cam: GstCamera
) -> None:
    body = gw.ok("OnvifProbe", **device(vcam))
    profiles = {p["strToken"]: p for p in body["profile"]}
    assert set(profiles) == {"main", "sub"}
    main = profiles["main"]
    assert main["strName"] == "H264 1920 x 1080 25fps 4096bps"
    assert (main["strCodecName"], main["nWidth"], main["nHeight"], main["nFps"], main["nBandwidth"]) == (
        "H264",
        1920,
        1080,
        25,
        4096,
    )
    assert main["bGotUrl"] is True and main["strRtspUrl"] == rtsp_cam.url("h264", credentials=False)
    assert profiles["sub"]["strRtspUrl"].endswith("/h264_noaudio") and profiles["sub"]["nWidth"] == 640
    # the same through HTTP digest instead of WS-Security, with an explicit ONVIF path
    body = gw.ok("OnvifProbe", onvifaddr="/onvif/device_service", **device(fixed_cam))
    assert len(body["profile"]) == 2 and no_secret(str(body))


@pytest.mark.parametrize(
    "case",
    [
        "wrong password (ws-security)",
        "wrong password (http digest)",
        "refused login",
        "unreachable",
        "wrong onvif path",
        "garbage",
    ],
)
def test_probe_failures_are_distinct_quick_and_clean(
    gw: Gateway, vcam: VirtualOnvif, faults: VirtualOnvif, case: str
) -> None:
    params = device(vcam)
    expected = "login failed: wrong user name or password"
    if case == "wrong password (ws-security)":
        params = device(vcam, password="wrong-" + PASSWORD)
    elif case == "wrong password (http digest)":
        params = device(faults, password="wrong-" + PASSWORD)
    elif case == "refused login":
        faults.fault("refuse_login")
        params = device(faults)
    elif case == "unreachable":
        params, expected = device(vcam, port=free_port()), "can't connect device"
    elif case == "wrong onvif path":
        params = {**device(vcam), "onvifaddr": "/onvif/nothing"}
        expected = "no ONVIF service at this address (HTTP 404): check port and ONVIF path"
    else:
        faults.fault("garbage")
        params, expected = device(faults), "the device gave an invalid ONVIF answer"
    (status, body), took = timed(gw.get, "OnvifProbe", **params)
    assert took < TIMEOUT, took
    assert status in (400, 502) and body == {"bStatus": False, "strCode": expected}
    assert no_secret(gw.log())


def test_hanging_device_times_out_and_does_not_block_other_requests(gw: Gateway, faults: VirtualOnvif) -> None:
    faults.fault("slow", seconds=30)
    result: dict[str, object] = {}

    def run_probe() -> None:
        result["answer"], result["took"] = timed(gw.get, "OnvifProbe", **device(faults))

    worker = threading.Thread(target=run_probe)
    worker.start()
    time.sleep(0.3)
    for _ in range(5):  # the event loop keeps serving while the probe waits on the device
        _, took = timed(gw.ok, "GetSrc")
        assert took < 1.0, took  # a blocked loop would take the whole device timeout
    worker.join(TIMEOUT + 5)
    status, body = result["answer"]  # type: ignore[misc]
    assert status == 504 and body == {"bStatus": False, "strCode": f"the device did not answer within {TIMEOUT:g} s"}
    assert TIMEOUT - 0.2 < result["took"] < TIMEOUT + 2  # type: ignore[operator]


# -- ONVIF sources ---------------------------------------------------------------------------------------------
def test_onvif_source_streams_with_injected_credentials(
    gw: Gateway, vcam: VirtualOnvif, rtsp_cam: GstCamera, ptz_src: str
) -> None:
    src = gw.wait_online(ptz_src, timeout=40)
    assert src["nType"] == "H5_ONVIF"
    assert (src["strSrcIpAddress"], src["strSrcPort"], src["strOnvifAddr"]) == (
        "127.0.0.1",
        str(vcam.port),
        "/onvif/device_service",
    )
    assert (src["strOnvifProfileMain"], src["strOnvifProfileSub"], src["bOnvifProfileAuto"]) == ("main", "sub", True)
    assert src["strUrl"] == rtsp_cam.url("h264", credentials=False)
    assert src["strUser"] == USER and src["strPasswd"] == "*****"
    status, body = gw.get("AddSrcONVIF", token=ptz_src, **device(vcam))
    assert status == 409 and body["bStatus"] is False


def test_add_refuses_wrong_credentials_and_unknown_profiles(gw: Gateway, vcam: VirtualOnvif) -> None:
    status, body = gw.get("AddSrcONVIF", token="onvif_bad", **device(vcam, password="nope"))
    assert status == 400 and body["strCode"] == "login failed: wrong user name or password"
    status, body = gw.get("AddSrcONVIF", token="onvif_bad", main="Profile_9", **device(vcam))
    assert status == 400 and "no profile 'Profile_9'" in body["strCode"]
    assert gw.get("GetSrc", token="onvif_bad")[0] == 404
    for bad in ({"ip": "10.0.0.1; rm -rf /"}, {"port": "70000"}, {"onvifaddr": "no-slash"}):
        status, body = gw.get("AddSrcONVIF", token="onvif_bad", **{**device(vcam), **bad})
        assert status == 400 and body["bStatus"] is False, bad


def test_unreachable_device_is_added_and_stays_offline(gw: Gateway) -> None:
    _, took = timed(
        gw.ok, "AddSrcONVIF", token="onvif_down", ip="127.0.0.1", port=free_port(), user=USER, password=PASSWORD
    )
    assert took < TIMEOUT + 1
    src = gw.source("onvif_down")
    assert src["bOnline"] is False and src["nType"] == "H5_ONVIF"
    assert wait_until(lambda: "can't connect device" in gw.source("onvif_down")["strLastError"], 10)
    image = gw.request(f"/api/v1/GetImage?token=onvif_down&session={gw.session}")
    assert image[0] == 200 and image[1].get("x-h5gate-image") == "placeholder"
    gw.ok("DelSrc", token="onvif_down")


def test_failed_stream_is_re_resolved_and_follows_a_changed_uri(
    gw: Gateway, faults: VirtualOnvif, rtsp_cam: GstCamera
) -> None:
    faults.fault("drop_rtsp")  # the device hands out a stream URI that does not work
    gw.ok("AddSrcONVIF", token="onvif_moving", ip="127.0.0.1", port=faults.port, user=USER, password=PASSWORD)
    try:
        assert wait_until(lambda: gw.source("onvif_moving")["nRestarts"] >= 1, 15)
        assert gw.source("onvif_moving")["bOnline"] is False
        # offline: GetImage serves the camera's own snapshot (GetSnapshotUri, HTTP digest)
        status, headers, jpeg = gw.request(f"/api/v1/GetImage?token=onvif_moving&session={gw.session}")
        assert status == 200 and headers.get("x-h5gate-image") != "placeholder"
        assert jpeg == faults.snapshot()
        faults.fault("change_uri")  # now it serves a different, working URI: the restart must ask again
        src = gw.wait_online("onvif_moving", timeout=40)
        assert src["strUrl"] == rtsp_cam.url("h264_pcma", credentials=False)
        assert rtsp_cam.url("h264_pcma", credentials=False) in faults.status()["stream_uris_given"]
    finally:
        gw.ok("DelSrc", token="onvif_moving")


# -- PTZ and presets -------------------------------------------------------------------------------------------
EXPECTED_MOVES = {
    "up": (0, 1, 0),
    "down": (0, -1, 0),
    "left": (-1, 0, 0),
    "right": (1, 0, 0),
    "upleft": (-1, 1, 0),
    "upright": (1, 1, 0),
    "downleft": (-1, -1, 0),
    "downright": (1, -1, 0),
    "zoomin": (0, 0, 1),
    "zoomout": (0, 0, -1),
}


def _position(cam: VirtualOnvif) -> tuple[float, float, float]:
    ptz = cam.status()["ptz"]
    return ptz["pan"], ptz["tilt"], ptz["zoom"]


@pytest.mark.parametrize("action", list(EXPECTED_MOVES))
def test_ptz_move_changes_the_position_and_stop_stops(
    gw: Gateway, vcam: VirtualOnvif, ptz_src: str, action: str
) -> None:
    if action == "zoomout":  # zoom starts at its wide end: zoom in first so there is room to zoom out
        gw.ok("Ptz", token=ptz_src, action="zoomin", speed=1)
        time.sleep(0.3)
        gw.ok("Ptz", token=ptz_src, action="stop")
    before = _position(vcam)
    body = gw.ok("Ptz", token=ptz_src, action=action, speed=1)
    assert body == {"bStatus": True, "strCode": "PTZ successfully"}
    assert vcam.status()["ptz"]["moving"] is True
    time.sleep(0.3)
    gw.ok("Ptz", token=ptz_src, action="stop")
    after = _position(vcam)
    for axis, (b, a, sign) in enumerate(zip(before, after, EXPECTED_MOVES[action], strict=True)):
        delta = a - b
        if sign:
            assert delta * sign > 0.05, (action, axis, before, after)
        else:
            assert abs(delta) < 1e-6, (action, axis, before, after)
    assert vcam.status()["ptz"]["moving"] is False
    time.sleep(0.2)
    assert _position(vcam) == after  # stopped means stopped


def test_ptz_speed_scales_the_velocity(gw: Gateway, vcam: VirtualOnvif, ptz_src: str) -> None:
    gw.ok("Ptz", token=ptz_src, action="right", speed=0.25)
    assert vcam.status()["ptz"]["velocity"]["pan"] == pytest.approx(0.25)
    gw.ok("Ptz", token=ptz_src, action="stop")


def test_focus_and_iris_go_through_the_imaging_service(gw: Gateway, vcam: VirtualOnvif, ptz_src: str) -> None:
    start = vcam.status()["imaging"]
    gw.ok("Ptz", token=ptz_src, action="focusin", speed=1)
    time.sleep(0.3)
    gw.ok("Ptz", token=ptz_src, action="stop")
    after_in = vcam.status()["imaging"]
    assert after_in["focus"] > start["focus"] + 0.05 and after_in["focus_moving"] is False
    gw.ok("Ptz", token=ptz_src, action="focusout", speed=1)
    time.sleep(0.3)
    gw.ok("Ptz", token=ptz_src, action="stop")
    assert vcam.status()["imaging"]["focus"] < after_in["focus"] - 0.05
    gw.ok("Ptz", token=ptz_src, action="irisin", speed=0.5)
    opened = vcam.status()["imaging"]
    assert opened["iris"] == pytest.approx(min(0.0, start["iris"] + 3.0)) and opened["exposure_mode"] == "MANUAL"
    gw.ok("Ptz", token=ptz_src, action="irisout", speed=0.5)
    assert vcam.status()["imaging"]["iris"] == pytest.approx(opened["iris"] - 3.0)


def test_presets_set_go_delete(gw: Gateway, vcam: VirtualOnvif, ptz_src: str) -> None:
    body = gw.ok("SetPreset", token=ptz_src, presetname="Front door", presettoken="p1")
    assert body["bStatus"] is True and body["strToken"] == "p1"
    home = _position(vcam)
    assert {"strName": "Front door", "strToken": "p1"} in gw.ok("GetPresets", token=ptz_src)["preset"]
    gw.ok("Ptz", token=ptz_src, action="upright", speed=1)
    time.sleep(0.3)
    gw.ok("Ptz", token=ptz_src, action="stop")
    assert _position(vcam) != home
    gw.ok("Ptz", token=ptz_src, action="preset", preset="p1")
    assert _position(vcam) == pytest.approx(home, abs=1e-3)
    # a preset without a token gets one from the device
    created = gw.ok("SetPreset", token=ptz_src, presetname="Gate")["strToken"]
    assert {"strName": "Gate", "strToken": created} in gw.ok("GetPresets", token=ptz_src)["preset"]
    gw.ok("DelPreset", token=ptz_src, presettoken="p1")
    gw.ok("DelPreset", token=ptz_src, presettoken=created)
    assert [p for p in gw.ok("GetPresets", token=ptz_src)["preset"] if p["strToken"] in ("p1", created)] == []
    status, body = gw.get("DelPreset", token=ptz_src, presettoken="p1")
    assert status == 400 and body["strCode"].startswith("the device refused: No such preset")
    status, body = gw.get("Ptz", token=ptz_src, action="preset", preset="p1")
    assert status == 400 and body["bStatus"] is False


def test_ptz_bad_requests_and_sources_without_ptz(gw: Gateway, fixed_cam: VirtualOnvif, ptz_src: str) -> None:
    for params, code in [
        ({"action": "sideways"}, "invalid action"),
        ({"action": "up", "speed": "2"}, "speed out"),
        ({"action": "preset"}, "missing parameter: preset"),
        ({"action": "wiperon"}, "not supported"),
    ]:
        status, body = gw.get("Ptz", token=ptz_src, **params)
        assert status == 400 and code in body["strCode"], (params, body)
    assert gw.get("Ptz", token="nosuchsource", action="up")[0] == 404
    gw.ok("AddSrcONVIF", token="onvif_fixed", connecttype="H5_ONDEMAND", **device(fixed_cam))
    gw.ok("AddSrcRTSP", token="plain_rtsp", url="rtsp://127.0.0.1:9/none", connecttype="H5_ONDEMAND")
    try:
        for call, params in [
            ("Ptz", {"action": "up"}),
            ("Ptz", {"action": "stop"}),
            ("GetPresets", {}),
            ("SetPreset", {"presetname": "x"}),
            ("Ptz", {"action": "focusin"}),
        ]:
            status, body = gw.get(call, token="onvif_fixed", **params)
            assert status == 400 and body["strCode"].startswith("this camera has no"), (call, body)
        status, body = gw.get("Ptz", token="plain_rtsp", action="up")
        assert status == 400 and "not an ONVIF camera" in body["strCode"]
    finally:
        gw.ok("DelSrc", token="onvif_fixed")
        gw.ok("DelSrc", token="plain_rtsp")


def test_credentials_never_show_in_getsrc_or_logs(gw: Gateway, ptz_src: str) -> None:
    text = str(gw.ok("GetSrc"))
    assert no_secret(text) and "p%40ss" not in text
    log = gw.log()
    assert "onvif_ptz" in log and no_secret(log)
    assert not re.search(r"rtsp://[^\s/]*:[^\s/]*@", log), "a URL with credentials reached the log"
