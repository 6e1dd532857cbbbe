"""The pieces of /metrics that do not know the API: the Prometheus text format, the event-loop lag monitor,
the process figures and the HTTP request counter.

Why no prometheus_client: every figure here already lives in an object the server keeps (a hub's byte
counter, a process's restart count, the viewer sets) and is read at scrape time; prometheus_client would
either hold a second copy of each value or need a custom collector around the same reads, and its global
default registry outlives the app instances the tests create. The text format is a few lines to write.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import psutil


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(round(float(value), 6))


class Exposition:
    """Prometheus text exposition format 0.0.4: one HELP and TYPE line per family, then its samples."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._families: set[str] = set()

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        """Add a family (kind: counter or gauge) with its samples; each sample is (labels, value)."""
        assert name not in self._families, name
        self._families.add(name)
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [({}, value)])

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"


class LoopLag:
    """Measures how late the event loop wakes a task: sleep `interval`, see how much longer it took.

    A slow handler or blocking call on the loop delays every viewer's video; this is the number that shows
    it. It also tells /healthz whether the loop still runs at all (the last tick's age).
    """

    def __init__(self, interval: float = 0.25, window: float = 60.0) -> None:
        self.interval = interval
        self.last = 0.0
        self.last_tick = time.monotonic()
        self.total = 0.0  # summed lag, for a rate in Prometheus
        self.ticks = 0
        self._recent: deque[tuple[float, float]] = deque(maxlen=max(1, int(window / interval)))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            lag = max(0.0, now - before - self.interval)
            self.last, self.last_tick = lag, now
            self.total += lag
            self.ticks += 1
            self._recent.append((now, lag))

    def recent_max(self) -> float:
        return max((lag for _, lag in self._recent), default=0.0)

    def responsive(self, limit: float = 2.0) -> bool:
        """The monitor ran within `limit` seconds and its last wake-up was less than `limit` late."""
        running = self._task is not None and not self._task.done()
        return running and time.monotonic() - self.last_tick < self.interval + limit and self.last < limit


class RequestCounts:
    """What RequestCounter has seen; created with the app so /metrics can read it."""

    def __init__(self) -> None:
        self.by_status: Counter[str] = Counter()
        self.websockets: Counter[str] = Counter()


class RequestCounter:
    """ASGI middleware: HTTP responses by status code, WebSocket handshakes by path.

    For WebSockets it only counts the handshake and never wraps `send`: a wrapper there would run for every
    video fragment to every viewer, the hottest path in the server.
    """

    def __init__(self, app: Any, counts: RequestCounts) -> None:
        self.app = app
        self.by_status = counts.by_status
        self.websockets = counts.websockets

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "websocket":
            path = scope.get("path", "")
            self.websockets[path if path in WS_PATHS else "other"] += 1
            return await self.app(scope, receive, send)
        if kind != "http":
            return await self.app(scope, receive, send)
        counted = False

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal counted
            if message["type"] == "http.response.start" and not counted:
                counted = True
                self.by_status[str(message["status"])] += 1
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not counted:
                self.by_status["500"] += 1
            raise


# Label values are bounded: a client cannot grow the metrics by inventing paths.
WS_PATHS = (
    "/api/v1/h5swsapi",
    "/h5swsapi",
    "/api/v1/h5swscmnapi",
    "/api/v1/h5srtcapi",
    "/api/v1/h5srtcapi2",
    "/h5srtcapi",
)


def process_figures(pid: int | None = None) -> dict[str, float]:
    """CPU seconds, resident memory, open and allowed file descriptors, threads, start time (blocking: /proc)."""
    proc = psutil.Process(pid or os.getpid())
    with proc.oneshot():
        cpu = proc.cpu_times()
        figures: dict[str, float] = {
            "cpu": cpu.user + cpu.system,
            "rss": float(proc.memory_info().rss),
            "threads": float(proc.num_threads()),
            "start": proc.create_time(),
        }
        with contextlib.suppress(psutil.Error, AttributeError):
            figures["fds"] = float(proc.num_fds())
    with contextlib.suppress(OSError, ValueError):
        import resource

        figures["max_fds"] = float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return figures


def child_figures(pids: dict[str, int]) -> dict[str, tuple[float, float]]:
    """(CPU seconds, RSS bytes) of each named child process that is still there (blocking: /proc)."""
    out: dict[str, tuple[float, float]] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                cpu = proc.cpu_times()
                out[name] = (cpu.user + cpu.system, float(proc.memory_info().rss))
        except psutil.Error:
            continue
    return out
