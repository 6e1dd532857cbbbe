"""The `h5gate` command as a user meets it: real subprocesses, real sockets, their exit codes and their output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tools.harness.camera import free_port
from tools.harness.gateway import ROOT

CLI = [sys.executable, "-m", "supervisor.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("H5GATE_")}
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """Exit `code`, nothing on stdout, exactly one line on stderr naming `words`, no traceback."""
    lines = done.stderr.splitlines()
    assert done.returncode == code, (done.returncode, done.stderr)
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_version_flag_and_command() -> None:
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("h5gate ")
    number = done.stdout.split()[1]
    assert number[0].isdigit()
    assert run_cli("version").stdout.strip() == number


@pytest.mark.parametrize("port", ["99999", "0", "-1", "65536"])
def test_port_out_of_range_is_one_line_exit_2(port: str, tmp_path: Path) -> None:
    done = run_cli("--port", port, "--data-dir", str(tmp_path))
    assert_one_line_error(done, 2, "port", "1 and 65535", port)
    assert not (tmp_path / "h5gate.db").exists()  # refused before anything started


def test_port_from_environment_and_file_is_validated(tmp_path: Path) -> None:
    assert_one_line_error(run_cli(env={"H5GATE_PORT": "70000"}), 2, "port", "70000")
    assert_one_line_error(run_cli(env={"H5GATE_PORT": "eighty"}), 2, "H5GATE_PORT", "whole number")
    conf = tmp_path / "h5gate.toml"
    conf.write_text("port = 123456\n")
    assert_one_line_error(run_cli("--config", str(conf)), 2, "port", "123456")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('port = 8080\nhost = "a" "b"\n', ["not valid TOML", "line 2"]),
        ("prot = 8080\n", ["unknown settings", "prot"]),
        ('port = "8080"\n', ["port", "whole number"]),
        ("webrtc = 1\n", ["webrtc", "true or false"]),
        ('media_roots = "/srv"\n', ["media_roots", "list of strings"]),
        ('log_level = "LOUD"\n', ["log_level", "LOUD"]),
        ('hls = "v3"\n', ["hls", "v3"]),
        ("restart_min = 5\nrestart_max = 1\n", ["restart_max", "restart_min"]),
        ("webrtc_port_min = 6000\nwebrtc_port_max = 5000\n", ["webrtc_port_max"]),
        ("login_timeout = 0\n", ["login_timeout", "above 0"]),
        ("disk_auto_del_percent = 150\n", ["disk_auto_del_percent"]),
        ('web_root = "/no/such/folder"\n', ["web_root", "existing folder"]),
    ],
)
def test_bad_config_file_is_one_line_exit_2(tmp_path: Path, text: str, words: list[str]) -> None:
    conf = tmp_path / "h5gate.toml"
    conf.write_text(text)
    done = run_cli("--config", str(conf), "serve", "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(done, 2, *words)
    assert not (tmp_path / "data").exists()


def test_missing_config_file_and_bad_environment(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("--config", str(tmp_path / "nope.toml")), 2, "nope.toml", "cannot read")
    assert_one_line_error(run_cli(env={"H5GATE_CONFIG": str(tmp_path / "gone.toml")}), 2, "gone.toml", "cannot read")
    assert_one_line_error(run_cli(env={"H5GATE_WEBRTC": "maybe"}), 2, "H5GATE_WEBRTC", "true or false")
    assert_one_line_error(run_cli(env={"H5GATE_RTSP_TIMEOUT": "soon"}), 2, "H5GATE_RTSP_TIMEOUT", "number")


def test_missing_ffmpeg_binary_is_one_line_exit_2(tmp_path: Path) -> None:
    done = run_cli("serve", "--ffmpeg", str(tmp_path / "no-ffmpeg"), "--data-dir", str(tmp_path / "d"))
    assert_one_line_error(done, 2, "ffmpeg", "executable")
    assert not (tmp_path / "d").exists()


def test_unknown_flag_is_one_line_exit_2() -> None:
    assert_one_line_error(run_cli("--bogus"), 2, "--bogus")
    assert_one_line_error(run_cli("serve", "--bogus"), 2, "--bogus")


def _start(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "H5GATE_ONVIF_DISCOVERY_TARGET": "127.0.0.1:9"}
    with open(log_path, "wb") as log:
        return subprocess.Popen([*CLI, *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_flags_after_serve_and_listening_logged_once_bound(tmp_path: Path) -> None:
    """`h5gate serve --port P`: the flags after the command count, and "listening" means a connect succeeds."""
    port = free_port()
    log_path = tmp_path / "server.log"
    proc = _start(
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--no-demo"],
        log_path,
    )
    try:
        deadline = time.monotonic() + 40
        while "listening on http" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
        text = log_path.read_text()
        assert f"listening on http://127.0.0.1:{port}" in text, text
        # The moment the line is there, the server answers on that port.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/Login?user=admin&password=12345", timeout=10) as r:
            assert json.loads(r.read())["bStatus"] is True
        assert (tmp_path / "d" / "h5gate.db").exists()  # --data-dir after serve counted too
        assert text.count("listening on http") == 1
    finally:
        _stop(proc)


def test_flags_before_and_after_serve_merge(tmp_path: Path) -> None:
    """A flag before the command is not lost when others follow it."""
    port = free_port()
    log_path = tmp_path / "server.log"
    proc = _start(
        ["--port", str(port), "--data-dir", str(tmp_path / "d"), "serve", "--host", "127.0.0.1", "--no-demo"],
        log_path,
    )
    try:
        deadline = time.monotonic() + 40
        while "listening on http" not in log_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
        assert f"listening on http://127.0.0.1:{port}" in log_path.read_text()
        assert (tmp_path / "d" / "h5gate.db").exists()
    finally:
        _stop(proc)


def test_port_in_use_is_one_line_and_never_says_listening(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path))
    line = assert_one_line_error(done, 1, f"127.0.0.1:{port}", "in use")
    assert "listening" not in line
    assert not (tmp_path / "h5gate.db").exists()  # nothing started: no database, no sources, no ffmpeg


def test_passwd_after_command_flags(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "passwd", "ops", "--role", "Operator", "--data-dir", str(tmp_path)],
        input="longenough\n",
        text=True,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "h5gate.db").exists()
