"""The supervised-worker helper on its own: backoff between runs, restart at once, stall detection, and child
processes that run in their own group and die with their parent, with real processes and real timing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from workers.child import Child
from workers.supervise import Backoff, RunState, Stalled, Supervisor, Watchdog

ROOT = Path(__file__).resolve().parent.parent


def test_backoff_doubles_while_runs_fail_and_resets_after_a_healthy_one() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next(False) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.next(True) == 0.5
    assert backoff.next(False) == 0.5  # the first failure after a healthy run waits the least
    assert backoff.next(False) == 1.0


async def test_supervisor_restarts_failed_runs_with_backoff_survives_bugs_and_stops() -> None:
    starts: list[float] = []
    ended: list[bool] = []
    sup: Supervisor

    async def run() -> bool:
        starts.append(time.monotonic())
        n = len(starts)
        if n == 2:
            raise RuntimeError("boom")
        if n == 4:
            sup.restart_now()  # the next run must start at once
        if n == 6:
            await asyncio.sleep(30)  # stays up until stopped
        return False

    sup = Supervisor("t", run, backoff=Backoff(0.1, 0.4), on_end=ended.append)
    sup.start()
    for _ in range(200):
        if len(starts) == 6:
            break
        await asyncio.sleep(0.05)
    assert len(starts) == 6, starts
    assert sup.state.last_error == "internal error: boom"
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # after run 1: 0.1, run 2 (raised): 0.2, run 3: 0.4, run 4 asked for a restart at once, run 5: 0.4 (the cap)
    for gap, want in zip(gaps, [0.1, 0.2, 0.4, 0.0, 0.4], strict=True):
        assert want <= gap < want + 0.3, gaps
    assert sup.state.restarts == 5
    assert ended == [False] * 5
    await asyncio.wait_for(sup.stop(), 2)
    assert not sup.running and ended == [False] * 5  # a cancelled run is not a run that ended
    await asyncio.sleep(0.3)
    assert len(starts) == 6  # stopped for good


async def test_watchdog_raises_stalled_when_a_step_takes_too_long() -> None:
    dog = Watchdog(0.2)
    assert await dog.within(asyncio.sleep(0.05, result="ok")) == "ok"
    assert not dog.expired
    t0 = time.monotonic()
    with pytest.raises(Stalled):
        await dog.within(asyncio.sleep(5))
    assert 0.2 <= time.monotonic() - t0 < 1.0
    assert dog.expired and dog.idle >= 0.2
    dog.feed()
    assert not dog.expired


async def test_child_runs_in_its_own_group_and_stop_ends_the_whole_group() -> None:
    state = RunState()
    child = Child(state)
    proc = await child.spawn("sh", "-c", "sleep 30 & exec sleep 30")
    assert state.pid == proc.pid and state.started_at > 0
    assert os.getpgid(proc.pid) == proc.pid != os.getpgid(0)  # a group of its own
    await asyncio.sleep(0.2)
    grandchild = [p for p in psutil.Process(proc.pid).children() if p.name() == "sleep"]
    assert len(grandchild) == 1
    t0 = time.monotonic()
    await child.reap()  # SIGTERM to the group: sleep exits at once
    assert time.monotonic() - t0 < 1.5
    assert proc.returncode == -signal.SIGTERM and state.pid is None and child.proc is None
    grandchild[0].wait(2)  # the process it forked went with it
    assert not grandchild[0].is_running()


def test_a_child_dies_with_its_parent_even_when_the_parent_is_sigkilled() -> None:
    script = (
        "import asyncio\n"
        "from workers.child import Child\n"
        "from workers.supervise import RunState\n"
        "async def main():\n"
        "    proc = await Child(RunState()).spawn('sleep', '30')\n"
        "    print(proc.pid, flush=True)\n"
        "    await asyncio.sleep(30)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        child = psutil.Process(pid)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        parent.kill()  # SIGKILL: no cleanup code of the parent runs
        parent.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    break  # dead; whoever adopted it has not reaped it yet
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        else:
            child.kill()
            raise AssertionError("the child outlived its SIGKILLed parent")
    finally:
        parent.kill()
        parent.wait(5)
