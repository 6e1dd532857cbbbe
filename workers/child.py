"""A supervised run's child process: its own process group, dead with the server, stopped as a group.

Every child (ffmpeg, the WebRTC sidecar) starts in a new session, so a signal to its group also reaches
what it forked, and with PR_SET_PDEATHSIG, so even a SIGKILLed server leaves no child behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from collections.abc import Mapping, Sequence

from workers.supervise import RunState

PR_SET_PDEATHSIG = 1


def set_pdeathsig() -> None:
    """Runs in the child before exec: die with the server even if the server is SIGKILLed."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


async def stop_group(proc: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    """SIGTERM a child's process group, SIGKILL it if it has not exited within `grace` seconds."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()


class Child:
    """The current process of a supervised worker (at most one at a time); keeps state.pid up to date."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.proc: asyncio.subprocess.Process | None = None

    async def spawn(
        self,
        *argv: str,
        stdin: int | None = asyncio.subprocess.DEVNULL,
        stdout: int | None = None,
        stderr: int | None = None,
        pass_fds: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
    ) -> asyncio.subprocess.Process:
        """Start argv in its own process group; None for stdout/stderr means the server's own."""
        self.proc = proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=pass_fds,
            env=env,
            start_new_session=True,
            preexec_fn=set_pdeathsig,
        )
        self.state.pid, self.state.started_at = proc.pid, time.monotonic()
        return proc

    def kill(self) -> None:
        """SIGKILL the group now: it is hung, or a restart must not wait for it to finish politely."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def stop(self, grace: float = 2.0) -> None:
        """SIGTERM the group, SIGKILL it after `grace` seconds."""
        if self.proc is not None:
            await stop_group(self.proc, grace)

    async def reap(self) -> None:
        """End of a run: stop the group if it still runs, collect its exit status, forget it."""
        proc = self.proc
        if proc is None:
            return
        await stop_group(proc)
        await proc.wait()
        self.proc = None
        self.state.pid = None
