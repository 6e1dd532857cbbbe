"""Restart in place: the API asks, the server shuts down gracefully, and the process re-executes itself.

Restart (the consoles' header button) and a configuration restore need the whole server to start
again with what is now in the database. The same process id re-executes `h5gate` with its own
arguments (`os.execv`), so a service manager, a container or a test that started it sees no exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable

log = logging.getLogger("h5gate")

DELAY = 0.5  # seconds between the answer and the shutdown, so the client gets its answer


class Restarter:
    def __init__(self) -> None:
        self.requested = False
        self.reason = ""
        # how to end the server gracefully; the CLI sets it to its uvicorn server's should_exit. (A SIGTERM
        # would do too, but uvicorn raises it again once it has stopped, which kills the process.)
        self.shutdown: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM)

    def request(self, reason: str) -> None:
        """Shut down gracefully (as SIGTERM does) after DELAY; `exec_if_requested` then starts again."""
        if self.requested:
            return
        self.requested, self.reason = True, reason
        log.warning("restarting: %s", reason)
        asyncio.get_running_loop().call_later(DELAY, self.shutdown)

    def exec_if_requested(self) -> None:
        """Called once the server has stopped: re-execute this program with the same arguments."""
        if not self.requested:
            return
        log.warning("h5gate re-executing itself (%s)", self.reason)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.execv(sys.executable, [sys.executable, "-m", "supervisor.cli", *sys.argv[1:]])
