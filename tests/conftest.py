"""Shared fixtures: a running gateway with the demo source, and real test cameras."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.harness.camera import GstCamera  # noqa: E402
from tools.harness.gateway import Gateway  # noqa: E402
from tools.harness.redis import RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One server for the whole run, started fresh (so the demo source is added), admin logged in."""
    gw = Gateway(tmp_path_factory.mktemp("gateway")).start()
    try:
        gw.wait_online("demo", timeout=30)
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def fresh_gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A server of the test's own (for restarts, kills and faults), without the demo source."""
    gw = Gateway(tmp_path / "gw", extra_args=["--no-demo"]).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="session")
def camera() -> Iterator[GstCamera]:
    """The GStreamer RTSP server (a camera no one here wrote), shared by the whole run."""
    with GstCamera() as cam:
        yield cam


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server of the test's own (free 127.0.0.1 port, temp folder, nothing persisted)."""
    with RedisServer() as server:
        yield server
