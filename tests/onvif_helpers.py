"""tools/virtual_onvif.py as a context manager for tests: start, read its state, switch its faults."""

from __future__ import annotations

import json
import sys
import urllib.request
from typing import Any

from tools.harness.camera import HOST, TOOLS, _Tool


class VirtualOnvif(_Tool):
    """`with VirtualOnvif(rtsp_url=...) as cam: cam.status()["ptz"]`; discovery answers on loopback only."""

    name = "virtual_onvif"

    def __init__(
        self,
        *args: str,
        rtsp_url: str = "rtsp://127.0.0.1:9/none",
        user: str = "admin",
        password: str = "12345",
        timeout: float = 20.0,
    ) -> None:
        super().__init__()
        self.user, self.password = user, password
        cmd = [
            sys.executable,
            str(TOOLS / "virtual_onvif.py"),
            "--host",
            HOST,
            "--port",
            "0",
            "--discovery-bind",
            f"{HOST}:0",
            "--rtsp-url",
            rtsp_url,
            "--user",
            user,
            "--password",
            password,
            "--exit-with-parent",
            *args,
        ]
        self._spawn(cmd, timeout)
        try:
            fields = dict(part.split("=", 1) for part in self.ready_line.split()[1:])
            self.port = int(fields["port"])
            self.discovery = fields["discovery"]
            self.discovery_port = int(self.discovery.rsplit(":", 1)[1]) if ":" in self.discovery else 0
        except (KeyError, ValueError):
            self.stop()  # no context manager holds us yet: do not leave the camera running
            raise
        self.base = f"http://{HOST}:{self.port}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=5) as resp:
            return json.loads(resp.read())

    def status(self) -> dict[str, Any]:
        return self._get("/status")

    def fault(self, mode: str, seconds: float | None = None) -> None:
        extra = f"&seconds={seconds}" if seconds is not None else ""
        self._get(f"/fault?set={mode}{extra}")

    def snapshot(self) -> bytes:
        """The JPEG the camera serves (digest auth, as a real camera would want)."""
        manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
        manager.add_password(None, self.base, self.user, self.password)
        opener = urllib.request.build_opener(urllib.request.HTTPDigestAuthHandler(manager))
        with opener.open(f"{self.base}/snapshot.jpg?profile=main", timeout=5) as resp:
            return resp.read()
