"""/metrics and /healthz on a real server with a real source, real viewers and a real recording."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wsclient import watch
from tools.harness.gateway import Gateway

TOKEN = "scrape-me-7f3a"
SAMPLE = re.compile(r"^([a-z_:][a-z0-9_:]*)(?:\{(.*)\})? (\S+)$")


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The Prometheus text format, strictly: every line a comment or `name{labels} value`."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge"), line
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        assert name in types, f"sample without TYPE: {line}"
        pairs = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', labels or ""))
        out[(name, pairs)] = float(value)
    return out


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics[(name, frozenset(labels.items()))]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = Gateway(tmp_path_factory.mktemp("observe"), env={"H5GATE_METRICS_TOKEN": TOKEN}).start()
    try:
        gateway.wait_online("demo", timeout=30)
        yield gateway
    finally:
        gateway.stop()


def scrape(gw: Gateway, **headers: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, head, body = gw.request("/metrics", {"Authorization": f"Bearer {TOKEN}", **headers})
    assert status == 200, body
    assert head["content-type"].startswith("text/plain; version=0.0.4")
    return parse(body.decode())


def test_metrics_with_a_source_and_a_ws_viewer(gw: Gateway) -> None:
    before = scrape(gw)
    assert value(before, "h5gate_source_viewers", token="demo", protocol="ws") == 0

    async def during() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        viewer = asyncio.create_task(watch(gw.ws_url("demo"), stop_after=9))
        await asyncio.sleep(6)  # the rate window is 5 s
        metrics = await asyncio.to_thread(scrape, gw)
        got = await viewer
        assert got.mime and len(got.video()) > 50  # the viewer really was receiving video
        return metrics

    m = asyncio.run(during())
    assert value(m, "h5gate_source_online", token="demo") == 1
    assert value(m, "h5gate_source_viewers", token="demo", protocol="ws") == 1
    assert value(m, "h5gate_source_viewers", token="demo", protocol="webrtc") == 0
    assert value(m, "h5gate_source_viewers", token="demo", protocol="hls") == 0
    assert value(m, "h5gate_ws_viewers") == 1
    # The demo clip is 25 fps; the machine is shared, so allow for a slow ffmpeg.
    assert 10 <= value(m, "h5gate_source_fps", token="demo") <= 40
    assert value(m, "h5gate_source_bitrate_bps", token="demo") > 50_000
    assert value(m, "h5gate_source_received_bytes_total", token="demo") > value(
        before, "h5gate_source_received_bytes_total", token="demo"
    )
    assert value(m, "h5gate_source_restarts_total", token="demo") == 0
    assert value(m, "h5gate_source_timeline_resets_total", token="demo") == gw.source("demo")["nTimelineResets"]
    assert value(m, "h5gate_ffmpeg_cpu_seconds_total", token="demo", profile="main") > 0
    assert value(m, "h5gate_ffmpeg_resident_memory_bytes", token="demo", profile="main") > 5e6
    assert value(m, "process_resident_memory_bytes") > 20e6
    assert value(m, "process_cpu_seconds_total") > 0
    assert value(m, "process_open_fds") > 5
    assert 0 <= value(m, "h5gate_event_loop_lag_seconds") < 1
    assert value(m, "h5gate_http_requests_total", status="200") >= 2
    assert value(m, "h5gate_websocket_connections_total", path="/api/v1/h5swsapi") >= 1
    assert value(m, "h5gate_info", version=value_label(m, "h5gate_info", "version")) == 1

    after = scrape(gw)  # the viewer left
    assert value(after, "h5gate_source_viewers", token="demo", protocol="ws") == 0


def value_label(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, label: str) -> str:
    for key_name, pairs in metrics:
        if key_name == name:
            return dict(pairs)[label]
    raise KeyError(name)


def test_hls_viewer_counts_while_it_reads_the_playlist(gw: Gateway) -> None:
    deadline = time.monotonic() + 20
    status = 0
    while time.monotonic() < deadline:
        status, _, _ = gw.request(f"/hls/v2/demo/hls.m3u8?session={gw.session}")
        if status == 200:
            break
        time.sleep(0.5)
    assert status == 200
    assert value(scrape(gw), "h5gate_source_viewers", token="demo", protocol="hls") == 1


def test_recording_bytes_grow_while_recording(gw: Gateway) -> None:
    assert value(scrape(gw), "h5gate_source_recording_bytes", token="demo") == 0
    gw.ok("ManualRecordStart", token="demo")
    try:
        deadline = time.monotonic() + 20
        size = 0.0
        while time.monotonic() < deadline and size < 100_000:
            time.sleep(1)
            size = value(scrape(gw), "h5gate_source_recording_bytes", token="demo")
        assert size >= 100_000
    finally:
        gw.ok("ManualRecordStop", token="demo")
    files = list((gw.data_dir / "mediastore" / "record" / "demo").rglob("*.mp4"))
    on_disk = sum(f.stat().st_size for f in files)
    assert abs(value(scrape(gw), "h5gate_source_recording_bytes", token="demo") - on_disk) <= 0.05 * on_disk


def test_metrics_refused_without_token_or_session(gw: Gateway) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        status, _, body = gw.request("/metrics", headers)
        assert status == 401, headers
        answer = json.loads(body)
        assert answer["bStatus"] is False and "token" in answer["strCode"]
    assert gw.request("/metrics?token=wrong")[0] == 401
    assert gw.request("/metrics?session=00000000-0000-0000-0000-000000000000")[0] == 401
    # The ways that work: the token as a query parameter, or a session in any of its forms.
    assert gw.request(f"/metrics?token={TOKEN}")[0] == 200
    assert gw.request(f"/metrics?session={gw.session}")[0] == 200
    assert gw.request("/metrics", {"Authorization": f"token {gw.session}"})[0] == 200
    # Refusals are counted too.
    assert value(scrape(gw), "h5gate_http_requests_total", status="401") >= 5


def test_no_token_configured_means_session_only(gateway: Gateway) -> None:
    assert gateway.request("/metrics", {"Authorization": "Bearer "})[0] == 401
    assert gateway.request("/metrics?token=")[0] == 401
    assert gateway.request(f"/metrics?session={gateway.session}")[0] == 200


def test_healthz_needs_no_login_and_says_only_ok(gw: Gateway) -> None:
    status, head, body = gw.request("/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert head["content-type"] == "application/json"


def test_healthz_says_not_ok_after_the_event_loop_stalled(gw: Gateway, tmp_path: Path) -> None:
    """Freeze the server (SIGSTOP) for 3 s with a health request waiting: it answers 503, then recovers."""
    assert gw.proc is not None
    answer: list[bytes] = []

    def ask() -> None:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            answer.append(data)

    os.kill(gw.proc.pid, signal.SIGSTOP)
    try:
        asker = threading.Thread(target=ask)
        asker.start()
        time.sleep(3)
    finally:
        os.kill(gw.proc.pid, signal.SIGCONT)
    asker.join(20)
    assert answer and answer[0].startswith(b"HTTP/1.1 503"), answer
    assert answer[0].endswith(b'{"status":"unavailable"}')
    time.sleep(1)
    status, _, body = gw.request("/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    lag = value(scrape(gw), "h5gate_event_loop_lag_max_seconds")
    assert 2.5 <= lag < 10, lag


def test_grafana_dashboard_uses_only_metrics_the_server_exports(gw: Gateway) -> None:
    """docs/grafana-dashboard.json must not chart a name the server never sends (a rename would blank it)."""
    dashboard = json.loads((Path(__file__).resolve().parents[1] / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"]]
    used = {name for e in exprs for name in re.findall(r"\b((?:h5gate|process)_[a-z_]+)\b", e)}
    status, _, body = gw.request("/metrics", {"Authorization": f"Bearer {TOKEN}"})
    exported = set(re.findall(r"^# TYPE (\S+) ", body.decode(), re.M))
    missing = used - exported
    assert len(used) >= 15 and not missing, missing


def test_webrtc_viewer_is_counted(tmp_path: Path) -> None:
    """A real aiortc viewer (in a private network namespace, where 127.0.0.1 is the only ICE address)."""
    from tools.harness.camera import wait_until
    from tools.harness.webrtc_viewer import RtcViewer, private_network

    with private_network():
        gateway = Gateway(tmp_path / "gw", env={"H5GATE_METRICS_TOKEN": TOKEN}).start()
        try:
            gateway.wait_online("demo", timeout=30)
            assert wait_until(lambda: gateway.ok("h5srtcapi/Status")["bServiceRunning"], 20)
            url = f"{gateway.ws_base}/api/v1/h5srtcapi?token=demo&profile=main&session={gateway.session}"

            async def watch_rtc() -> tuple[float, float]:
                viewer = RtcViewer(url)
                await viewer.start()
                try:
                    await viewer.wait_frames(10, timeout=20)
                    during = await asyncio.to_thread(scrape, gateway)
                finally:
                    await viewer.close()
                deadline = time.monotonic() + 10
                after = during
                while time.monotonic() < deadline:
                    after = await asyncio.to_thread(scrape, gateway)
                    if value(after, "h5gate_source_viewers", token="demo", protocol="webrtc") == 0:
                        break
                    await asyncio.sleep(0.3)
                return (
                    value(during, "h5gate_source_viewers", token="demo", protocol="webrtc"),
                    value(after, "h5gate_source_viewers", token="demo", protocol="webrtc"),
                )

            during, after = asyncio.run(watch_rtc())
            assert (during, after) == (1, 0)
            m = scrape(gateway)
            assert value(m, "h5gate_webrtc_sidecar_up") == 1
            assert value(m, "h5gate_source_viewers", token="demo", protocol="ws") == 0
        finally:
            gateway.stop()
