"""Several h5gate nodes on loopback sharing one real redis-server: the cluster tests' fixture helper."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from tools.harness.camera import free_port
from tools.harness.gateway import Gateway
from tools.harness.redis import RedisServer

T = TypeVar("T")


def start_node(root: Path, name: str, server: RedisServer, lease: float = 4.0, **env: str) -> Gateway:
    """A node configured by its environment (as the config file would), reached by the others at 127.0.0.1:port."""
    port = free_port()
    settings = {
        "H5GATE_REDIS_ENABLE": "true",
        "H5GATE_REDIS_HOST": server.host,
        "H5GATE_REDIS_PORT": str(server.port),
        "H5GATE_NODE_ID": name,
        "H5GATE_NODE_NAME": f"Node {name}",
        "H5GATE_NODE_IP": f"127.0.0.1:{port}",
        "H5GATE_CLUSTER_LEASE_SECONDS": str(lease),
        **env,
    }
    return Gateway(root / name, extra_args=["--no-demo"], env=settings, port=port).start()


def wait_for(check: Callable[[], T], timeout: float = 15.0, what: str = "", every: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, KeyError, IndexError) as e:  # a node restarting, a source not there yet
            value = e
        if value and not isinstance(value, Exception):
            return value  # type: ignore[no-any-return]
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: last {value!r}")


def sources(gw: Gateway) -> dict[str, dict[str, Any]]:
    return {s["strToken"]: s for s in gw.ok("GetSrc")["src"]}


def lease(server: RedisServer, token: str) -> str | None:
    with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as r:
        value = r.get(f"h5gate:lease:{token}")
    return value.decode() if isinstance(value, bytes) else None
