"""Keep one worker running: run it, and when a run ends, run it again after a backoff, until stopped.

What a worker is does not matter here: an ffmpeg child, the WebRTC sidecar, or an asyncio task that pulls
RTSP itself are each one `run` coroutine that returns when the run ends, saying whether it was healthy (it
delivered for a while, so the next failure starts the backoff afresh). The supervisor keeps the state a
status report shows (online, last error, restarts, pid) and never gives up: a bug in one run is logged and
the next run starts anyway. A Watchdog turns "no progress for N seconds" into an exception the run handles.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("h5gate.supervise")

T = TypeVar("T")


@dataclass
class RunState:
    """What a status report says about a supervised worker; workers add their own fields by subclassing."""

    online: bool = False
    last_error: str = ""
    restarts: int = 0
    pid: int | None = None  # the current child process, if the worker has one
    started_at: float = 0.0  # time.monotonic() when the current run started its process


@dataclass
class Backoff:
    """Delay before the next run: `first` after a healthy run, doubling up to `limit` while runs fail."""

    first: float = 0.5
    limit: float = 30.0
    delay: float = 0.0

    def __post_init__(self) -> None:
        self.delay = self.delay or self.first

    def next(self, healthy: bool) -> float:
        """The delay to wait now, after a run that was (not) healthy; a failed run doubles the next one."""
        if healthy:
            self.delay = self.first
        delay = self.delay
        if not healthy:
            self.delay = min(delay * 2, self.limit)
        return delay


class Stalled(Exception):
    """A run made no progress within its watchdog's timeout."""


class Watchdog:
    """Notices a run that stopped making progress: fed on progress, expired after `timeout` seconds without.

    Use `within()` around a read that must complete in time, or `feed()` plus `expired` where progress is
    reported some other way (a pong).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.last = time.monotonic()

    def feed(self) -> None:
        self.last = time.monotonic()

    @property
    def idle(self) -> float:
        return time.monotonic() - self.last

    @property
    def expired(self) -> bool:
        return self.idle > self.timeout

    async def within(self, step: Awaitable[T]) -> T:
        """The result of `step`, which counts as progress; Stalled if it takes longer than the timeout."""
        try:
            result = await asyncio.wait_for(step, self.timeout)
        except TimeoutError:
            raise Stalled(f"no progress for {self.timeout:.0f}s") from None
        self.feed()
        return result


class Supervisor:
    """Runs `run` again and again until stopped, with backoff between runs and the state to report.

    `run` returns True if the run was healthy. `halt` (optional) ends the current run politely on stop
    (e.g. Child.stop); the run's task is cancelled after it either way. `on_end(healthy)` is called after
    every run, before the supervisor decides on the next one. `restart_now()` makes the next run start
    without backoff; the caller ends the current run itself (e.g. Child.kill).
    """

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[bool]],
        *,
        state: RunState | None = None,
        backoff: Backoff | None = None,
        halt: Callable[[], Awaitable[None]] | None = None,
        on_end: Callable[[bool], None] | None = None,
        logger: logging.Logger = log,
        level: int = logging.INFO,
    ) -> None:
        self.name = name  # for log lines and the task: "cam1: ffmpeg", "webrtc sidecar"
        self.state = state if state is not None else RunState()
        self.backoff = backoff if backoff is not None else Backoff()
        self.stopping = False
        self._run = run
        self._halt = halt
        self._on_end = on_end
        self._log = logger
        self._level = level
        self._now = False
        self._task: asyncio.Task[None] | None = None

    @property
    def restart_pending(self) -> bool:
        """Whether the run now ending is followed at once by the next (restart_now was called)."""
        return self._now

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self.stopping = False
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        self.stopping = True
        if self._halt is not None:
            await self._halt()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.state.online = False

    def restart_now(self) -> None:
        self._now = True

    async def _loop(self) -> None:
        st = self.state
        while not self.stopping:
            healthy = False
            try:
                healthy = await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug in one run must not end supervision for good
                st.last_error = f"internal error: {e}"
                self._log.exception("%s run failed", self.name)
            st.online = False
            if self._on_end is not None:
                self._on_end(healthy)
            if self.stopping:
                break
            st.restarts += 1
            if self._now:
                self._now = False
                continue
            delay = self.backoff.next(healthy)
            self._log.log(
                self._level,
                "%s ended (%s); restart %d in %.1fs",
                self.name,
                st.last_error or "no error",
                st.restarts,
                delay,
            )
            await asyncio.sleep(delay)
