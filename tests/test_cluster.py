"""The cluster on loopback: real h5gate nodes, one real redis-server, a real camera.

A source added on any node is on every node; exactly one node pulls it (its lease in Redis, bPulledHere
on one node only), the others serve it by relaying from that node; a delete anywhere removes it
everywhere; two nodes adding the same token cannot both win; node-to-node relays need the secret.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import websockets

from supervisor.cluster.ownership import assign
from tests.cluster_nodes import lease, sources, start_node, wait_for
from tests.wsclient import watch_sync
from tools.harness.camera import GstCamera
from tools.harness.gateway import Gateway
from tools.harness.redis import RedisServer


@pytest.fixture(scope="module")
def cam() -> Iterator[GstCamera]:
    with GstCamera(width=320, height=180, fps=15, gop=15, bitrate=300) as camera:
        yield camera


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Gateway, Gateway]]:
    root = tmp_path_factory.mktemp("pair")
    with RedisServer() as server:
        a = start_node(root, "a", server)
        b = start_node(root, "b", server)
        try:
            yield server, a, b
        finally:
            a.stop()
            b.stop()


def test_shared_list_one_puller_relay_and_delete(pair: tuple[RedisServer, Gateway, Gateway], cam: GstCamera) -> None:
    server, a, b = pair
    assert a.ok("AddSrcRTSP", token="c1", name="Cam one", url=cam.url("h264"))["bStatus"] is True
    listed = wait_for(lambda: sources(b).get("c1"), 5, "c1 on node b")
    assert listed["strName"] == "Cam one" and listed["nType"] == "H5_STREAM"

    def settled() -> tuple[str, Gateway, Gateway] | None:
        owner = lease(server, "c1")
        sa, sb = sources(a)["c1"], sources(b)["c1"]
        if owner not in ("a", "b") or sa["strNodeId"] != owner or sb["strNodeId"] != owner:
            return None
        if not (sa["bOnline"] and sb["bOnline"]):
            return None
        assert sa["bPulledHere"] is (owner == "a") and sb["bPulledHere"] is (owner == "b")
        return (owner, a, b) if owner == "a" else (owner, b, a)

    owner, puller, other = wait_for(settled, 20, "one node pulling c1, both saying bOnline")
    assert sources(other)["c1"]["strTransport"] == "relay"
    assert sources(puller)["c1"]["strTransport"] != "relay"

    # a viewer of the node that does not pull it gets the camera's picture, relayed once from the puller
    got = watch_sync(other.ws_url("c1"), frames=30, seconds=20)
    video = got.video()
    assert len(video) >= 30 and video[0].keyframe, (len(video), got.close_code, got.close_reason)
    assert got.mime.startswith('video/mp4; codecs="avc1')
    assert sources(puller)["c1"]["nViewers"] >= 1  # the relay is the puller's viewer

    # a delete on the other node removes it everywhere
    assert other.ok("DelSrc", token="c1")["bStatus"] is True
    wait_for(lambda: "c1" not in sources(puller), 5, "c1 gone from the puller")
    with redis.Redis(host=server.host, port=server.port) as r:
        assert not r.hexists("h5gate:sources", "c1") and r.hexists("h5gate:deleted", "c1")


def test_same_token_on_two_nodes(pair: tuple[RedisServer, Gateway, Gateway], cam: GstCamera) -> None:
    _, a, b = pair
    assert a.ok("AddSrcRTSP", token="dup", name="first", url=cam.url("h264"))["bStatus"] is True
    status, body = b.get("AddSrcRTSP", token="dup", name="second", url=cam.url("h264_noaudio"))
    assert status == 409 and body["bStatus"] is False and "already exists" in body["strCode"], body
    wait_for(lambda: sources(b).get("dup"), 5, "dup on b")
    assert sources(b)["dup"]["strName"] == "first" and sources(a)["dup"]["strName"] == "first"
    assert a.ok("DelSrc", token="dup")["bStatus"] is True
    wait_for(lambda: "dup" not in sources(b), 5, "dup gone from b")


def test_relay_needs_the_cluster_secret(pair: tuple[RedisServer, Gateway, Gateway], cam: GstCamera) -> None:
    server, a, b = pair
    assert a.ok("AddSrcRTSP", token="sec", name="sec", url=cam.url("h264"))["bStatus"] is True
    owner = wait_for(lambda: lease(server, "sec"), 10, "an owner")
    puller = a if owner == "a" else b

    async def try_headers(headers: dict[str, str]) -> int | None:
        url = f"{puller.ws_base}/api/v1/h5swsapi?{urllib.parse.urlencode({'token': 'sec'})}"
        try:
            async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
                await asyncio.wait_for(ws.recv(), 10)
                return None
        except websockets.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd else None

    # no session, a wrong secret: refused as any unauthenticated viewer
    assert asyncio.run(try_headers({"X-H5gate-Node": "x", "X-H5gate-Secret": "0" * 64})) == 4401
    with redis.Redis(host=server.host, port=server.port) as r:
        secret = r.get("h5gate:secret")
    assert secret and len(secret) == 64
    assert asyncio.run(try_headers({"X-H5gate-Node": "x", "X-H5gate-Secret": secret.decode()})) is None
    assert puller.ok("DelSrc", token="sec")["bStatus"] is True


def test_refused_while_redis_is_away(tmp_path: Path, cam: GstCamera) -> None:
    """A node that cannot reach Redis refuses to change the shared list (with a reason) and serves the rest."""
    with RedisServer() as server:
        gw = start_node(tmp_path, "solo", server)
        try:
            wait_for(lambda: gw.ok("ConnectRedisStatus")["bOnline"], 10, "online")
            assert gw.ok("AddSrcRTSP", token="kept", name="kept", url=cam.url("h264"))["bStatus"] is True
            wait_for(lambda: sources(gw)["kept"]["bPulledHere"] and sources(gw)["kept"]["bOnline"], 20, "pulled")
            server.kill()
            wait_for(lambda: not gw.ok("ConnectRedisStatus")["bOnline"], 10, "offline")
            status, body = gw.get("AddSrcRTSP", token="new", name="new", url=cam.url("h264"))
            assert status == 503 and "Redis is unreachable" in body["strCode"], body
            status, body = gw.get("DelSrc", token="kept")
            assert status == 503 and body["bStatus"] is False
            assert sources(gw)["kept"]["bOnline"] is True  # still pulled while Redis is away
            server.start()
            wait_for(lambda: gw.ok("ConnectRedisStatus")["bOnline"], 20, "online again")
            # back: its source list is shared again (Redis restarted empty: the node brings its own)
            wait_for(lambda: lease(server, "kept") == "solo", 10, "lease retaken")
            assert gw.ok("AddSrcRTSP", token="new", name="new", url=cam.url("h264"))["bStatus"] is True
        finally:
            gw.stop()


def test_assignment_is_balanced_and_moves_little() -> None:
    """The plan every node computes alike: at most ceil(T/N) per node; a node's death moves little else."""
    tokens = [f"cam{i}" for i in range(60)]
    nodes = ["n1", "n2", "n3", "n4"]
    plan = assign(tokens, nodes)
    assert assign(list(reversed(tokens)), list(reversed(nodes))) == plan  # order of the views does not matter
    assert sorted(sum(1 for o in plan.values() if o == n) for n in nodes) == [15, 15, 15, 15]
    after = assign(tokens, ["n1", "n2", "n4"])
    assert sorted(sum(1 for o in after.values() if o == n) for n in ("n1", "n2", "n4")) == [20, 20, 20]
    moved = [t for t in tokens if plan[t] != "n3" and after[t] != plan[t]]
    assert len(moved) <= 10, moved  # the dead node's 15 move; of the others, few
    assert assign([], nodes) == {} and assign(tokens, []) == {}


def test_a_node_that_stops_hands_over_at_once(tmp_path: Path, cam: GstCamera) -> None:
    """SIGTERM: the node gives its leases back as it leaves, so the other pulls its cameras within a tick or two."""
    with RedisServer() as server:
        a = start_node(tmp_path, "a", server, lease=10.0)  # a long lease: only the hand-over can be this quick
        b = start_node(tmp_path, "b", server, lease=10.0)
        try:
            for token in ("g0", "g1", "g2", "g3"):
                assert a.ok("AddSrcRTSP", token=token, name=token, url=cam.url("h264"))["bStatus"] is True

            def spread() -> dict[str, str | None] | None:
                owners = {t: lease(server, t) for t in ("g0", "g1", "g2", "g3")}
                return owners if sorted(str(o) for o in owners.values()) == ["a", "a", "b", "b"] else None

            owners = wait_for(spread, 30, "two sources each")
            leaving = [t for t, o in owners.items() if o == "a"]
            t0 = time.monotonic()
            a.stop()  # SIGTERM
            stopped = time.monotonic() - t0
            wait_for(lambda: all(sources(b)[t]["bPulledHere"] and sources(b)[t]["bOnline"] for t in leaving), 8, "b")
            print(f"\nhand-over on SIGTERM: {time.monotonic() - t0 - stopped:.1f}s after a had stopped")
            assert time.monotonic() - t0 - stopped < 5.0  # far less than the 10 s lease
            assert all(lease(server, t) == "b" for t in owners)
        finally:
            a.stop()
            b.stop()
