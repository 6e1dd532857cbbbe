"""Real RTSP test cameras and a fault proxy for the test-suite (plain helper, not a conftest).

The camera needs Debian's /usr/bin/python3 (gi + gst-rtsp-server); the proxy is stdlib
only and runs under the venv interpreter. Both run as subprocesses in their own process
group so a crashed test can never leave an encoder burning CPU behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

TOOLS = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"
HOST = "127.0.0.1"


def free_port() -> int:
    """A currently free loopback TCP port (racy by nature; prefer port 0 where a tool supports it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class _Tool:
    """Subprocess in its own process group that announces itself with a READY line."""

    name = "tool"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.ready_line = ""
        self._stderr: list[str] = []

    def _spawn(self, cmd: list[str], timeout: float) -> None:
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # own process group: stop() kills everything it spawned
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        lines: list[str] = []
        got_line = threading.Event()
        threading.Thread(target=self._read_ready, args=(lines, got_line), daemon=True).start()
        got_line.wait(timeout)
        if not lines or not lines[0].startswith("READY"):
            self.stop()
            raise RuntimeError(
                f"{self.name} not READY within {timeout}s: cmd={cmd!r} stdout={lines!r} "
                f"stderr={''.join(self._stderr)[-2000:]!r}"
            )
        self.ready_line = lines[0].strip()

    def _read_ready(self, out: list[str], got_line: threading.Event) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        out.append(proc.stdout.readline())
        got_line.set()
        for _ in proc.stdout:  # keep draining so a chatty tool never blocks on a full pipe
            pass

    def _drain_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        for line in proc.stderr:
            self._stderr.append(line)
            del self._stderr[:-200]

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it if it lingers; safe to call twice."""
        proc = self.proc
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        _kill_group(proc.pid)  # the leader may be gone while others in its group are not
        self.proc = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class GstCamera(_Tool):
    """tools/gst_camera.py as a context manager: `with GstCamera() as cam: cam.url("h264")`."""

    name = "gst_camera"

    def __init__(
        self,
        port: int = 0,
        user: str | None = None,
        password: str | None = None,
        *,
        auth: str = "digest",
        width: int = 640,
        height: int = 360,
        fps: int = 25,
        gop: int = 25,
        bitrate: int = 1000,
        backchannel_dir: str | None = None,
        timeout: float = 20.0,
    ) -> None:
        super().__init__()
        self.user, self.password = user, password
        cmd = [
            SYSTEM_PYTHON, str(TOOLS / "gst_camera.py"), "--port", str(port),
            "--width", str(width), "--height", str(height), "--fps", str(fps),
            "--gop", str(gop), "--bitrate", str(bitrate),
        ]  # fmt: skip
        if user is not None:
            cmd += ["--user", user, "--password", password or "", "--auth", auth]
        if backchannel_dir is not None:
            cmd += ["--backchannel-dir", backchannel_dir]
        self._spawn(cmd, timeout)
        self.port = int(self.ready_line.rsplit(":", 1)[1])

    def url(self, mount: str = "h264", *, credentials: bool = True, port: int | None = None) -> str:
        """rtsp URL for a mount, with percent-encoded credentials when the camera has them."""
        auth = ""
        if credentials and self.user is not None:
            auth = f"{quote(self.user, safe='')}:{quote(self.password or '', safe='')}@"
        return f"rtsp://{auth}{HOST}:{port or self.port}/{mount.lstrip('/')}"


class FaultProxy(_Tool):
    """tools/rtsp_fault_proxy.py in front of a camera; `.set_mode("freeze")` etc."""

    name = "rtsp_fault_proxy"

    def __init__(self, upstream_port: int, camera: GstCamera | None = None, *, timeout: float = 10.0) -> None:
        super().__init__()
        self.camera = camera
        cmd = [
            sys.executable, str(TOOLS / "rtsp_fault_proxy.py"),
            "--listen", f"{HOST}:0", "--control", f"{HOST}:0", "--upstream", f"{HOST}:{upstream_port}",
        ]  # fmt: skip
        self._spawn(cmd, timeout)
        fields = dict(part.split("=", 1) for part in self.ready_line.split()[1:])
        self.port = int(fields["listen"].rsplit(":", 1)[1])
        self.control_port = int(fields["control"].rsplit(":", 1)[1])

    @classmethod
    def for_camera(cls, camera: GstCamera) -> FaultProxy:
        return cls(camera.port, camera)

    def _get(self, query: str) -> str:
        with urllib.request.urlopen(f"http://{HOST}:{self.control_port}/mode{query}", timeout=5) as resp:
            return resp.read().decode()

    def set_mode(self, mode: str, channel: int | None = None) -> None:
        """A mode or action; `channel` (an interleaved RTP channel) limits a clock fault to that stream."""
        self._get(f"?set={mode}" + (f"&channel={channel}" if channel is not None else ""))

    def status(self) -> dict[str, object]:
        return json.loads(self._get(""))

    def url(self, mount: str = "h264") -> str:
        """rtsp URL through the proxy (credentials of the camera if it has any)."""
        if self.camera is not None:
            return self.camera.url(mount, port=self.port)
        return f"rtsp://{HOST}:{self.port}/{mount.lstrip('/')}"


class SilentServer(_Tool):
    """`rtsp_fault_proxy.py --silent`: a port that accepts TCP and never answers."""

    name = "silent_server"

    def __init__(self, *, timeout: float = 10.0) -> None:
        super().__init__()
        self._spawn([sys.executable, str(TOOLS / "rtsp_fault_proxy.py"), "--silent"], timeout)
        self.port = int(self.ready_line.rsplit(":", 1)[1])

    def url(self, mount: str = "h264") -> str:
        return f"rtsp://{HOST}:{self.port}/{mount.lstrip('/')}"


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll until truthy or timeout, so tests wait on state rather than fixed sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
