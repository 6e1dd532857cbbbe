"""The cluster's settings calls (h5sweb's cluster page) against a real gateway and a real redis-server.

SetRedisConf + SetEnableRedis make a running node join at once (Redis sees its named client), the
values survive a restart, ConnectRedisStatus follows Redis going away and coming back (reconnect with
backoff), bad values are refused with a reason, and the config file/environment can do the same.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tools.harness.gateway import Gateway
from tools.harness.redis import RedisServer


def vendor(gw: Gateway, call: str, **params: Any) -> dict[str, Any]:
    """The console's own form: //api/v1/<Name>?...&session= (failures answer 200 with bStatus false)."""
    query = urllib.parse.urlencode({**params, "session": gw.session})
    status, _, body = gw.request(f"//api/v1/{call}?{query}", headers={"Authorization": f"token {gw.session}"})
    assert status == 200, (call, status, body)
    answer = json.loads(body)
    assert isinstance(answer, dict)
    return answer


def wait_for(check: Any, timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: last {value!r}")


def client_names(server: RedisServer) -> list[str]:
    with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as r:
        return [c["name"] for c in r.client_list() if c.get("name")]


def lease_of(server: RedisServer, token: str) -> str | None:
    with redis.Redis(host=server.host, port=server.port, socket_timeout=2) as r:
        value = r.get(f"h5gate:lease:{token}")
    return value.decode() if isinstance(value, bytes) else None


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path / "gw", extra_args=["--no-demo"]).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One node for the tests that only read or are refused."""
    gw = Gateway(tmp_path_factory.mktemp("shared"), extra_args=["--no-demo"]).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_console_joins_and_leaves(node: Gateway, redis_server: RedisServer) -> None:
    conf = vendor(node, "GetRedisConf")
    assert conf["bStatus"] is True and conf["enable"] is False and conf["bSSL"] is False
    assert {"strServerIp", "nServerPort", "strNodeId", "strNodeName", "strNodeIp"} <= set(conf)
    assert vendor(node, "GetEnableRedis")["enable"] is False
    assert vendor(node, "ConnectRedisStatus")["bOnline"] is False

    # exactly what Cluster.vue sends (ssl never loaded -> "null": the current value stays)
    answer = vendor(
        node,
        "SetRedisConf",
        serverport=str(redis_server.port),
        nodeid="node-a",
        nodename="Node A",
        nodeip="127.0.0.1:" + str(node.port),
        serverip="127.0.0.1",
        ssl="null",
    )
    assert answer["bStatus"] is True, answer
    assert vendor(node, "ConnectRedisStatus")["bOnline"] is False  # configured, not yet on
    assert vendor(node, "SetEnableRedis", enable="true")["bStatus"] is True
    wait_for(lambda: vendor(node, "ConnectRedisStatus")["bOnline"], what="bOnline true")
    assert "h5gate-node-a" in client_names(redis_server)
    conf = vendor(node, "GetRedisConf")
    assert conf["strServerIp"] == "127.0.0.1" and conf["nServerPort"] == redis_server.port
    assert conf["strNodeId"] == "node-a" and conf["strNodeName"] == "Node A" and conf["bSSL"] is False
    assert conf["strNodeIp"] == f"127.0.0.1:{node.port}" and conf["enable"] is True
    assert vendor(node, "GetEnableRedis")["enable"] is True

    # kept across a restart: the node comes back connected
    node.stop()
    node.start()
    wait_for(lambda: vendor(node, "ConnectRedisStatus")["bOnline"], what="bOnline after restart")
    assert vendor(node, "GetRedisConf")["strNodeId"] == "node-a"

    # a source of its own: pulled here (the only node), its lease in Redis
    assert node.ok("AddSrcFile", token="clip", name="clip", url="demo.mp4")["bStatus"] is True
    wait_for(lambda: (src := node.source("clip"))["bPulledHere"] and src["strNodeId"] == "node-a", what="owned")
    assert lease_of(redis_server, "clip") == "node-a"

    assert vendor(node, "SetEnableRedis", enable="false")["bStatus"] is True
    status = vendor(node, "ConnectRedisStatus")
    assert status["bOnline"] is False and status["bEnable"] is False
    wait_for(lambda: "h5gate-node-a" not in client_names(redis_server), what="the client gone from redis")
    # left the cluster: its lease given back at once, the source pulled here as a standalone gateway
    assert lease_of(redis_server, "clip") is None
    src = node.wait_online("clip")
    assert src["bPulledHere"] is True and src["strNodeId"] == "" and src["strTransport"] != "relay"


def test_redis_lost_and_back(node: Gateway, redis_server: RedisServer) -> None:
    assert vendor(node, "SetRedisConf", serverip="127.0.0.1", serverport=redis_server.port, nodeid="n1")["bStatus"]
    assert vendor(node, "SetEnableRedis", enable="true")["bStatus"]
    wait_for(lambda: vendor(node, "ConnectRedisStatus")["bOnline"], what="online")
    redis_server.kill()
    status = wait_for(
        lambda: (s := vendor(node, "ConnectRedisStatus"))["bOnline"] is False and s, timeout=5, what="offline"
    )
    assert status["strError"]  # says why
    redis_server.start()  # the same port
    wait_for(lambda: vendor(node, "ConnectRedisStatus")["bOnline"], timeout=15, what="online again")
    assert "h5gate-n1" in client_names(redis_server)


def test_a_node_moved_to_another_redis(node: Gateway, redis_server: RedisServer) -> None:
    assert vendor(node, "SetRedisConf", serverip="127.0.0.1", serverport=redis_server.port, nodeid="n1")["bStatus"]
    assert vendor(node, "SetEnableRedis", enable="true")["bStatus"]
    wait_for(lambda: "h5gate-n1" in client_names(redis_server), what="on the first redis")
    with RedisServer() as other:
        assert vendor(node, "SetRedisConf", serverport=other.port, nodeid="n2")["bStatus"]
        wait_for(lambda: "h5gate-n2" in client_names(other), what="on the second redis")
        # another cluster: its users and sessions are that cluster's (supervisor/shared_auth.py); log in there
        status, body = node.get("Login", user="admin", password="12345", session=None)
        assert status == 200 and body["bStatus"], body
        node.session = body["strSession"]
        assert "h5gate-n1" not in client_names(redis_server)
        assert vendor(node, "ConnectRedisStatus")["bOnline"] is True


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"serverport": "0"}, "serverport out of range"),
        ({"serverport": "99999"}, "serverport out of range"),
        ({"serverport": "abc"}, "invalid number for serverport"),
        ({"nodeid": "a b"}, "invalid nodeid"),
        ({"nodeid": "x" * 65}, "parameter too long: nodeid"),
        ({"nodeip": "1.2.3.4:70000"}, "invalid nodeip"),
        ({"nodeip": "-bad-"}, "invalid nodeip"),
        ({"serverip": "a\nb"}, "control characters"),
        ({"serverip": "127.0.0.1:6379"}, "give the port as serverport"),
        ({"ssl": "maybe"}, "invalid value for ssl"),
    ],
)
def test_bad_values_refused(shared: Gateway, params: dict[str, str], reason: str) -> None:
    before = vendor(shared, "GetRedisConf")
    answer = vendor(shared, "SetRedisConf", **params)
    assert answer["bStatus"] is False and reason in answer["strCode"], answer
    assert vendor(shared, "GetRedisConf") == before
    status, body = shared.get("SetRedisConf", **params)  # the plain form: a 400, never a 500
    assert status == 400 and body["bStatus"] is False


def test_enable_needs_a_value_and_admin(shared: Gateway) -> None:
    node = shared
    for value in ("", "null", "perhaps"):
        assert vendor(node, "SetEnableRedis", enable=value)["bStatus"] is False
    assert vendor(node, "GetEnableRedis")["enable"] is False
    status, body = node.get("GetRedisConf", session=None)
    assert status == 401 and body["bStatus"] is False


def test_config_file_settings(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {
        "H5GATE_REDIS_ENABLE": "true",
        "H5GATE_REDIS_HOST": "127.0.0.1",
        "H5GATE_REDIS_PORT": str(redis_server.port),
        "H5GATE_NODE_ID": "from-env",
        "H5GATE_NODE_NAME": "Env node",
    }
    gw = Gateway(tmp_path / "gw", extra_args=["--no-demo"], env=env).start()
    try:
        wait_for(lambda: vendor(gw, "ConnectRedisStatus")["bOnline"], what="online from settings")
        conf = vendor(gw, "GetRedisConf")
        assert conf["strNodeId"] == "from-env" and conf["strNodeName"] == "Env node" and conf["enable"] is True
        assert "h5gate-from-env" in client_names(redis_server)
    finally:
        gw.stop()


def test_a_node_starts_without_redis(tmp_path: Path) -> None:
    """Redis away at start-up: the node serves its API and says why it is offline."""
    from tools.harness.camera import free_port

    env = {"H5GATE_REDIS_ENABLE": "true", "H5GATE_REDIS_PORT": str(free_port())}
    gw = Gateway(tmp_path / "gw", extra_args=["--no-demo"], env=env).start()
    try:
        status = wait_for(lambda: (s := vendor(gw, "ConnectRedisStatus"))["strError"] and s, what="an error")
        assert status["bOnline"] is False and status["bEnable"] is True
        assert gw.ok("GetSrc")["src"] == []
    finally:
        gw.stop()
