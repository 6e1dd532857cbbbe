"""/metrics (Prometheus) and /healthz: what an operator watches the gateway with.

/metrics needs the `metrics_token` (a scraper has no login) or a logged-in session; /healthz needs nothing
and says only "ok" or not, so it can be open to a load balancer without telling anyone anything.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import Counter
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from supervisor.api.common import Chapter, fail, services, session_of
from supervisor.metrics import Exposition, LoopLag, child_figures, process_figures
from supervisor.services import Services

log = logging.getLogger("h5gate.metrics")

RATE_WINDOW = 5.0  # seconds of arrivals that fps and bitrate are averaged over
HEALTH_DB_TIMEOUT = 2.0


async def _authorised(request: Request, svc: Services) -> bool:
    token = svc.settings.metrics_token
    if token:
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else request.query_params.get("token", "")
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True
    return await svc.auth.check(session_of(request)) is not None


def _rates(hub: Any, now: float) -> tuple[float, float]:
    """(video frames/s, bits/s) that arrived in the last RATE_WINDOW seconds, from the hub's ring.

    Both drop to 0 as soon as the source stops delivering, which a counter of media timestamps would not.
    """
    window = min(RATE_WINDOW, hub.ring_seconds)
    since = now - window
    frames = 0
    size = 0
    for frag in reversed(hub.ring):
        if frag.arrived < since:
            break
        size += len(frag.data)
        frames += frag.video
    return frames / window, size * 8 / window


async def metrics(request: Request) -> Response:
    svc = services(request)
    if not await _authorised(request, svc):
        return fail("metrics need the metrics token (Authorization: Bearer) or a session", 401)
    registry = svc.registry
    out = Exposition()
    now = time.monotonic()
    out.family("h5gate_info", "gauge", "Version of the running server.", [({"version": svc.version}, 1)])

    sources = sorted(registry.sources.items())
    ws_by_token: Counter[str] = svc.viewers.by_token
    rtc_by_token: Counter[str] = Counter()
    webrtc = svc.webrtc
    if webrtc is not None:
        for session in list(webrtc.sessions.values()):
            if session.playback is None:
                rtc_by_token[session.name.split("/", 1)[0]] += 1
    hls_by_token = svc.hls_viewers.by_token()
    rtsp_by_token = dict(svc.rtsp.by_token) if svc.rtsp is not None else {}
    usage: dict[str, dict[str, Any]] = {}
    recordings = svc.recordings
    if recordings is not None:
        try:
            usage = await recordings.usage()
        except Exception as e:  # the figures of the rest are still worth having
            log.warning("recording figures unavailable: %s", e)

    online, fps, bitrate, received, restarts, resets, skips = [], [], [], [], [], [], []
    viewers, rec_bytes, snap_bytes = [], [], []
    pids: dict[str, int] = {}
    for token, runtime in sources:
        label = {"token": token}
        main = runtime.main
        hub = main.hub
        frames_s, bits_s = _rates(hub, now)
        online.append((label, runtime.online))
        fps.append((label, round(frames_s, 3)))
        bitrate.append((label, round(bits_s)))
        received.append((label, sum(s.hub.bytes_in for s in runtime.streams.values())))
        restarts.append((label, sum(s.process.state.restarts for s in runtime.streams.values())))
        skips.append((label, sum(s.hub.skips for s in runtime.streams.values())))
        resets.append((label, sum(s.process.timeline.resets for s in runtime.streams.values())))
        for protocol, counts in (
            ("ws", ws_by_token),
            ("webrtc", rtc_by_token),
            ("hls", hls_by_token),
            ("rtsp", rtsp_by_token),
        ):
            viewers.append(({"token": token, "protocol": protocol}, counts.get(token, 0)))
        u = usage.get(token, {})
        rec_bytes.append((label, u.get("record", 0)))
        snap_bytes.append((label, u.get("snapshot", 0)))
        for profile, stream in runtime.streams.items():
            if stream.process.state.pid and stream.running:
                pids[f"{token}\0{profile}"] = stream.process.state.pid

    out.family("h5gate_source_online", "gauge", "1 while the source delivers media.", online)
    out.family("h5gate_source_fps", "gauge", f"Video frames per second received, over {RATE_WINDOW:g} s.", fps)
    out.family("h5gate_source_bitrate_bps", "gauge", f"Bits per second received, over {RATE_WINDOW:g} s.", bitrate)
    out.family("h5gate_source_received_bytes_total", "counter", "Media bytes received from the source.", received)
    out.family("h5gate_source_viewers", "gauge", "Live viewers by protocol (ws, webrtc, hls, rtsp).", viewers)
    out.family("h5gate_source_restarts_total", "counter", "Restarts of the source's ffmpeg.", restarts)
    out.family("h5gate_source_timeline_resets_total", "counter", "Source timestamp breaks re-anchored.", resets)
    out.family("h5gate_source_viewer_skips_total", "counter", "Viewers moved to the newest keyframe (too slow).", skips)
    out.family("h5gate_source_recording_bytes", "gauge", "Bytes of this source's recordings on disk.", rec_bytes)
    out.family("h5gate_source_snapshot_bytes", "gauge", "Bytes of this source's snapshots on disk.", snap_bytes)

    children = await asyncio.to_thread(child_figures, pids)
    out.family(
        "h5gate_ffmpeg_cpu_seconds_total",
        "counter",
        "CPU seconds of each source's running ffmpeg.",
        [({"token": k.split("\0")[0], "profile": k.split("\0")[1]}, v[0]) for k, v in sorted(children.items())],
    )
    out.family(
        "h5gate_ffmpeg_resident_memory_bytes",
        "gauge",
        "Resident memory of each source's running ffmpeg.",
        [({"token": k.split("\0")[0], "profile": k.split("\0")[1]}, v[1]) for k, v in sorted(children.items())],
    )

    proc = await asyncio.to_thread(process_figures)
    out.one("process_cpu_seconds_total", "counter", "CPU seconds of the server process.", proc["cpu"])
    out.one("process_resident_memory_bytes", "gauge", "Resident memory of the server process.", proc["rss"])
    if "fds" in proc:
        out.one("process_open_fds", "gauge", "Open file descriptors (sockets, pipes, files).", proc["fds"])
    if "max_fds" in proc:
        out.one("process_max_fds", "gauge", "Limit of open file descriptors.", proc["max_fds"])
    out.one("process_start_time_seconds", "gauge", "Start of the server process, Unix time.", proc["start"])
    out.one("process_threads", "gauge", "Threads of the server process.", proc["threads"])

    lag = svc.loop_lag
    assert lag is not None  # started with the chapter
    out.one("h5gate_event_loop_lag_seconds", "gauge", "How late the event loop woke a sleeping task, last.", lag.last)
    out.one(
        "h5gate_event_loop_lag_max_seconds", "gauge", "The largest event-loop lag in the last minute.", lag.recent_max()
    )
    out.one("h5gate_event_loop_lag_seconds_total", "counter", "Summed event-loop lag.", lag.total)

    requests = svc.requests
    out.family(
        "h5gate_http_requests_total",
        "counter",
        "HTTP responses by status code.",
        [({"status": code}, n) for code, n in sorted(requests.by_status.items())],
    )
    out.family(
        "h5gate_websocket_connections_total",
        "counter",
        "WebSocket handshakes by path.",
        [({"path": path}, n) for path, n in sorted(requests.websockets.items())],
    )
    out.one("h5gate_ws_viewers", "gauge", "Live WebSocket viewers, all sources.", svc.viewers.live)
    out.one(
        "h5gate_ws_slow_disconnects_total",
        "counter",
        "Viewers disconnected as too slow.",
        svc.viewers.slow_disconnects,
    )
    if webrtc is not None:
        out.one("h5gate_webrtc_sidecar_up", "gauge", "1 while the WebRTC sidecar runs.", webrtc.ready.is_set())
        out.one(
            "h5gate_webrtc_sidecar_restarts_total", "counter", "Restarts of the WebRTC sidecar.", webrtc.state.restarts
        )
    out.one("h5gate_sessions", "gauge", "Logged-in sessions.", await svc.auth.session_count())
    out.one("h5gate_login_fault_records", "gauge", "Failed-login records kept (bounded).", len(svc.auth.faults))
    return Response(out.render(), media_type=Exposition.CONTENT_TYPE, headers={"Cache-Control": "no-store"})


async def healthz(request: Request) -> Response:
    """200 {"status":"ok"} when the database answers and the event loop keeps time; else 503. Nothing more."""
    svc = services(request)
    healthy = svc.loop_lag is not None and svc.loop_lag.responsive()
    if healthy:
        try:
            await asyncio.wait_for(svc.db.fetchone("SELECT version FROM schema_version"), HEALTH_DB_TIMEOUT)
        except Exception as e:
            log.warning("health check: database did not answer: %s", str(e) or e.__class__.__name__)
            healthy = False
    if healthy:
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})
    return JSONResponse({"status": "unavailable"}, status_code=503, headers={"Cache-Control": "no-store"})


async def start(svc: Services) -> None:
    svc.loop_lag = LoopLag()
    svc.loop_lag.start()


async def stop(svc: Services) -> None:
    if svc.loop_lag is not None:
        await svc.loop_lag.stop()


routes = [Route("/metrics", metrics), Route("/healthz", healthz)]
chapter = Chapter("observe", routes, start=start, stop=stop)
