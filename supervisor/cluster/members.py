"""Node membership: each node says it is alive with a key that expires, and reads who else is.

A node writes h5gate:node:<id> (its name, the address its HTTP API is reached at, when it joined) with
a TTL of one lease period, every tick, and adds its id to h5gate:nodes. A node is alive while its key
exists: one killed with SIGKILL writes nothing more and is gone from everyone's view one lease later,
which is also when its camera leases run out (ownership.py), so the two agree.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from supervisor.cluster import keys
from supervisor.cluster.conf import ClusterConf


@dataclass(frozen=True)
class Node:
    id: str
    name: str
    address: str  # host:port of its HTTP/WebSocket API, for the other nodes
    joined: float  # time.time() it (re)joined; a node must have lived a while before cameras move to it


def node_json(conf: ClusterConf, joined: float) -> str:
    return json.dumps({"id": conf.node_id, "name": conf.name, "address": conf.address, "joined": joined})


def parse_node(raw: bytes | str | None) -> Node | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Node(str(data["id"]), str(data.get("name", "")), str(data["address"]), float(data.get("joined", 0)))
    except (ValueError, KeyError, TypeError):
        return None


class Membership:
    def __init__(self) -> None:
        self.joined = time.time()
        self.nodes: dict[str, Node] = {}  # alive at the last tick, this node included

    async def beat(self, client: Redis, conf: ClusterConf) -> None:
        lease_ms = int(conf.lease_seconds * 1000)
        async with client.pipeline(transaction=False) as pipe:
            pipe.set(keys.node(conf.node_id), node_json(conf, self.joined), px=lease_ms)
            pipe.sadd(keys.NODES, conf.node_id)
            await pipe.execute()

    async def read(self, client: Redis) -> dict[str, Node]:
        """Who is alive now; ids whose key has expired leave the set."""
        ids = sorted(keys.text(m) for m in await client.smembers(keys.NODES))
        if not ids:
            self.nodes = {}
            return self.nodes
        values = await client.mget([keys.node(i) for i in ids])
        alive: dict[str, Node] = {}
        gone = []
        for node_id, raw in zip(ids, values, strict=True):
            node = parse_node(raw)
            if node is None:
                gone.append(node_id)
            else:
                alive[node_id] = node
        if gone:
            await client.srem(keys.NODES, *gone)
        self.nodes = alive
        return alive

    async def leave(self, client: Redis, node_id: str) -> None:
        async with client.pipeline(transaction=False) as pipe:
            pipe.delete(keys.node(node_id))
            pipe.srem(keys.NODES, node_id)
            await pipe.execute()
