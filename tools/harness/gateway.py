"""Run the real h5gate server as a subprocess for tests, and talk to it over real HTTP."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tools.harness.camera import free_port

ROOT = Path(__file__).resolve().parents[2]


class Gateway:
    """One h5gate process on 127.0.0.1 with its own data directory; `.session` is a logged-in admin."""

    def __init__(
        self,
        data_dir: Path,
        *,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        rtsp_port: int = 0,
        limit_files: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_base = f"ws://127.0.0.1:{self.port}"
        self.extra_args = extra_args or []
        self.rtsp_port = rtsp_port  # RTSP re-serve; 0 = off (the harness default, see start())
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.session = ""
        self.log_path = data_dir / "server.log"
        self.limit_files = limit_files  # RLIMIT_NOFILE of the server process (a test of fd exhaustion)

    def start(self, timeout: float = 30.0) -> Gateway:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Tests never multicast: ONVIF discovery goes to a dead loopback port unless a test says otherwise.
        # Nor do they open the RTMP, HTTP-FLV and RTSP ports (fixed defaults would collide between parallel
        # servers) unless asked (rtsp_port=).
        env = {
            **os.environ,
            "H5GATE_ONVIF_DISCOVERY_TARGET": "127.0.0.1:9",
            "H5GATE_RTMP_PORT": "0",
            "H5GATE_FLV_PORT": "0",
            "H5GATE_RTSP_PORT": str(self.rtsp_port),
            **self.env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "supervisor.cli",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *self.extra_args,
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._limits if self.limit_files else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"h5gate exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, body = self.get("Login", user="admin", password="12345", session=None)
                if status == 200 and body.get("bStatus"):
                    self.session = body["strSession"]
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"h5gate did not come up:\n{self.log()}")

    def _limits(self) -> None:
        assert self.limit_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.limit_files, self.limit_files))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def url(self, call: str, /, **params: Any) -> str:
        return f"{self.base}/api/v1/{call}?{urllib.parse.urlencode(params)}"

    def request(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 15.0
    ) -> tuple[int, dict[str, str], bytes]:
        """GET an absolute path; returns (status, lower-cased headers, body), also for 4xx/5xx answers."""
        req = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()

    def get(self, call: str, /, session: str | None | bool = True, **params: Any) -> tuple[int, Any]:
        """Call /api/v1/<name>; session=True uses the admin session, None/False sends none."""
        if session is True:
            params["session"] = self.session
        elif session:
            params["session"] = session
        status, _, body = self.request(f"/api/v1/{call}?{urllib.parse.urlencode(params)}")
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def ok(self, call: str, /, **params: Any) -> Any:
        status, body = self.get(call, **params)
        assert status == 200, (call, status, body)
        return body

    def source(self, token: str) -> dict[str, Any]:
        return self.ok("GetSrc", token=token)["src"][0]

    def wait_online(self, token: str, online: bool = True, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        src: dict[str, Any] = {}
        while time.monotonic() < deadline:
            src = self.source(token)
            if src["bOnline"] is online:
                return src
            time.sleep(0.2)
        raise AssertionError(f"{token} did not become {'online' if online else 'offline'}: {src}")

    def ws_url(self, token: str, session: str | None = None, **params: str) -> str:
        query = urllib.parse.urlencode({"token": token, "session": session or self.session, **params})
        return f"{self.ws_base}/api/v1/h5swsapi?{query}"
