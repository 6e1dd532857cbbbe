"""A real redis-server for tests and tools: a free 127.0.0.1 port, its own temp folder, nothing persisted.

Why a real server and not a mock: the cluster's correctness lives in Redis's own semantics (SET NX PX
leases expiring, key TTLs, what a dropped connection does); a fake would agree with whatever we wrote.
Debian's `redis-server` binary is used (`REDIS_SERVER` overrides the path). The server runs in its own
process group, bound to 127.0.0.1 only, with RDB and AOF off, and is killed with its group on stop.

    with RedisServer() as redis:
        redis.url        # redis://127.0.0.1:PORT/0
        redis.kill()     # SIGKILL, for a test of a lost Redis; redis.start() brings it back on the same port

tests/conftest.py wraps it as the `redis_server` fixture.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tools.harness.camera import HOST, free_port

REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")


class RedisServer:
    """One redis-server process; `port`, `url`, `host`; start() waits until it answers PING."""

    def __init__(self, port: int | None = None, *, password: str = "") -> None:
        self.port = port or free_port()
        self.host = HOST
        self.password = password
        self.dir = Path(tempfile.mkdtemp(prefix="h5gate-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        if self.proc is not None and self.proc.poll() is None:
            return self
        binary = shutil.which(REDIS_SERVER) or REDIS_SERVER
        cmd = [
            binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",  # no RDB snapshots
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log()}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {self.host}:{self.port}: {self.log()}")

    def ping(self) -> bool:
        """PING over a plain socket (RESP), so the harness needs no client library."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    if not s.recv(64).startswith(b"+OK"):
                        return False
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL (a Redis that dies); the folder stays, so start() can bring it back on the same port."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; safe to call twice."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is None:
            return
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(proc.pid, s)
            except ProcessLookupError:
                break
            try:
                proc.wait(5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
