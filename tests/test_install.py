"""The README's first command, for real: install.sh builds a virtual environment from Debian's own Python
(not the developer's interpreter that runs pytest), installs this folder into it, and starts the server,
which plays the bundled demo from the installed package."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wsclient import watch
from tools.harness.camera import free_port
from tools.harness.gateway import ROOT

SYSTEM_PYTHON = "/usr/bin/python3"


class Installed:
    def __init__(self, prefix: Path, proc: subprocess.Popen[bytes], log: Path, port: int, data: Path) -> None:
        self.prefix, self.proc, self.log, self.port, self.data = prefix, proc, log, port, data

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=15) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """`bash install.sh -- <serve flags>` in a clean prefix; yields once the server says it is listening."""
    tmp = tmp_path_factory.mktemp("install")
    prefix, data, log = tmp / "opt-h5gate", tmp / "data", tmp / "install.log"
    port = free_port()
    # No trace of the developer's environment: no virtualenv, no pyenv, no H5GATE_* settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("H5GATE_", "PYENV", "VIRTUAL_ENV", "PYTHON")) and k != "PATH"
    }
    env.update(
        PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        PYTHON=SYSTEM_PYTHON,
        H5GATE_PREFIX=str(prefix),
        H5GATE_BIN_LINK=str(tmp / "home" / "bin" / "h5gate"),
        H5GATE_ONVIF_DISCOVERY_TARGET="127.0.0.1:9",  # tests never multicast
    )
    args = ["bash", str(ROOT / "install.sh"), "--", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 540  # a cold pip install of aiortc, av and friends
        while "listening on" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        yield Installed(prefix, proc, log, port, data)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(ROOT / "build", ignore_errors=True)


def test_venv_is_built_from_the_system_python(installed: Installed) -> None:
    cfg = (installed.prefix / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in cfg, cfg
    probe = "import sys, supervisor; print(sys.base_prefix); print(supervisor.__file__)"
    done = subprocess.run(
        [str(installed.prefix / "bin" / "python"), "-c", probe], cwd="/", capture_output=True, text=True, timeout=60
    )
    base, module = done.stdout.split()
    assert base == "/usr"
    # The server runs the installed copy, not this checkout.
    assert module.startswith(str(installed.prefix)) and not module.startswith(str(ROOT)), module


def test_installed_command_reports_its_version(installed: Installed) -> None:
    done = subprocess.run([str(installed.prefix / "bin" / "h5gate"), "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "h5gate 0.1.0", (done.stdout, done.stderr)
    link = Path(os.readlink(installed.log.parent / "home" / "bin" / "h5gate"))
    assert link == installed.prefix / "bin" / "h5gate"


def test_installed_server_plays_the_demo(installed: Installed) -> None:
    status, page = installed.get("/console/login")
    assert status == 200 and b"password" in page.lower()
    status, body = installed.get("/api/v1/Login?user=admin&password=12345")
    session = json.loads(body)["strSession"]
    deadline = time.monotonic() + 60
    demo: dict[str, object] = {}
    while time.monotonic() < deadline:
        demo = json.loads(installed.get(f"/api/v1/GetSrc?session={session}&token=demo")[1])["src"][0]
        if demo["bOnline"]:
            break
        time.sleep(0.3)
    assert demo["bOnline"] is True, demo
    url = f"ws://127.0.0.1:{installed.port}/api/v1/h5swsapi?token=demo&session={session}"
    got = asyncio.run(watch(url, frames=10, seconds=30))
    assert got.mime.startswith('video/mp4; codecs="avc1.'), got.mime
    assert got.inits and len(got.video()) >= 10, (got.close_code, got.close_reason)
    assert (installed.data / "h5gate.db").exists()


def test_service_unit_verifies_with_the_installed_path(installed: Installed, tmp_path: Path) -> None:
    """What install.sh --service writes: the unit with this prefix's binary, checked by systemd itself."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze (Debian's systemd package) is needed to check deploy/h5gate.service"
    unit = tmp_path / "h5gate.service"
    text = (ROOT / "deploy" / "h5gate.service").read_text()
    unit.write_text(text.replace("/opt/h5gate/bin/h5gate", str(installed.prefix / "bin" / "h5gate")))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "h5gate.service" not in done.stderr, done.stderr
    for option in ("User=h5gate", "StateDirectory=h5gate", "Restart=on-failure", "NoNewPrivileges=yes"):
        assert option in text
    # systemd's own score of the sandbox (0 = locked down, 10 = exposed); "OK" is below 4.
    done = subprocess.run(
        [analyze, "security", "--offline=true", str(unit)], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Overall exposure level for h5gate.service: ([0-9.]+)", done.stdout)
    assert found, done.stdout[-2000:] + done.stderr
    assert float(found.group(1)) <= 2.5, found.group(0)
