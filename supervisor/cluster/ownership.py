"""Which node pulls which camera: one lease key per source, taken with SET NX PX and renewed by its owner.

Every tick each node renews the leases it holds (only if still its own: a Lua compare-and-PEXPIRE) and
looks at the free ones. The node a source "belongs" to is chosen by rendezvous hashing with bounded
load: sources in token order each go to the node of highest hash(token+node id) that has fewer than
ceil(sources/nodes). Every node computes the same answer from the same list and the same alive nodes
without talking; no node gets more than its fair share; a dead node's cameras spread over the rest, and
a joining node takes about its share. That node takes a free lease at once; any other node takes it
when it has stayed free for two ticks and it holds less than its fair share, so a source is never left
unpulled because the node it prefers is slow or stuck.

Sources move between live nodes only to undo an overload: a node holding more than its fair share (a
node joined or came back, and has lived SETTLE_SECONDS) lets go (compare-and-DEL) of the ones planned
elsewhere, and their planned node takes them on its next tick. Adding a source never moves another.

A node killed with SIGKILL stops renewing: its leases lapse one lease period after its last tick and
the others take its cameras on their next tick (the takeover time is measured in docs/scaling.md).

A node that loses Redis keeps pulling what it holds (cameras stay live while Redis is away); when it is
back, a lease another node took meanwhile is given up and this node relays that camera instead.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from redis.asyncio import Redis

from supervisor.cluster import keys
from supervisor.cluster.members import Node

log = logging.getLogger("h5gate.cluster")

SETTLE_SECONDS = 10.0  # a node must be alive this long before sources move to it from a live owner
FREE_TICKS = 2  # a lease free this many ticks may be taken by any node under its fair share

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _weight(token: str, node_id: str) -> bytes:
    return hashlib.blake2b(f"{token}\0{node_id}".encode(), digest_size=8).digest()


def assign(tokens: list[str], nodes: list[str]) -> dict[str, str]:
    """Where each source belongs: rendezvous hashing, each node capped at ceil(len(tokens) / len(nodes))."""
    if not nodes:
        return {}
    cap = math.ceil(len(tokens) / len(nodes))
    load = dict.fromkeys(nodes, 0)
    out: dict[str, str] = {}
    for token in sorted(tokens):
        for node_id in sorted(nodes, key=lambda n: _weight(token, n), reverse=True):
            if load[node_id] < cap:
                out[token] = node_id
                load[node_id] += 1
                break
    return out


class Ownership:
    """This node's leases and its view of every source's owner, refreshed each tick."""

    def __init__(self, node_id: str, lease_seconds: float) -> None:
        self.node_id = node_id
        self.lease_ms = int(lease_seconds * 1000)
        self.owners: dict[str, str] = {}  # token -> owner node id (absent: free)
        self.held_since: dict[str, float] = {}  # tokens this node holds -> monotonic time it took them
        self.free_ticks: dict[str, int] = {}

    def owner(self, token: str) -> str | None:
        return self.owners.get(token)

    async def tick(self, client: Redis, tokens: list[str], nodes: dict[str, Node]) -> None:
        me = self.node_id
        lease_keys = [keys.lease(t) for t in tokens]
        values = await client.mget(lease_keys) if tokens else []
        owners = {t: keys.text(v) for t, v in zip(tokens, values, strict=True) if v}
        # renew ours (a lease that lapsed meanwhile, or that another node took, is ours no more)
        mine = [t for t in tokens if owners.get(t) == me]
        if mine:
            async with client.pipeline(transaction=False) as pipe:
                for t in mine:
                    pipe.eval(RENEW, 1, keys.lease(t), me, self.lease_ms)
                renewed = await pipe.execute()
            for t, ok in zip(mine, renewed, strict=True):
                if not ok:
                    owners.pop(t, None)
                    log.warning("%s: lease lost (lapsed or taken while this node was away)", t)
        alive = sorted(nodes)
        plan = assign(tokens, alive)
        now = time.monotonic()
        # take what is free and ours, or free for a while when we hold less than our share
        fair = math.ceil(len(tokens) / max(1, len(alive)))
        count = sum(1 for t in tokens if owners.get(t) == me)
        for t in tokens:
            if t in owners:
                self.free_ticks.pop(t, None)
                continue
            self.free_ticks[t] = self.free_ticks.get(t, 0) + 1
            ours = plan.get(t) == me
            if not ours and (self.free_ticks[t] <= FREE_TICKS or count >= fair):
                continue
            if await client.set(keys.lease(t), me, nx=True, px=self.lease_ms):
                owners[t] = me
                count += 1
                self.free_ticks.pop(t, None)
        # over our share (a node joined and settled): give back what is planned elsewhere
        wall = time.time()
        for t in tokens:
            if owners.get(t) != me or count <= fair:
                continue
            target = plan.get(t)
            if target is None or target == me or wall - nodes[target].joined < SETTLE_SECONDS:
                continue
            if now - self.held_since.get(t, now) < SETTLE_SECONDS:
                continue
            if await client.eval(RELEASE, 1, keys.lease(t), me):
                owners.pop(t, None)
                count -= 1
                log.info("%s: handed over to node %s (rebalance)", t, target)
        for t in tokens:
            if owners.get(t) == me:
                self.held_since.setdefault(t, now)
            else:
                self.held_since.pop(t, None)
        for t in list(self.free_ticks):
            if t not in owners and t not in tokens:
                del self.free_ticks[t]
        self.owners = owners

    async def release_all(self, client: Redis) -> None:
        """Leaving the cluster (shutdown, turned off): let the others take our cameras at once, not a lease later."""
        mine = [t for t, o in self.owners.items() if o == self.node_id]
        if mine:
            async with client.pipeline(transaction=False) as pipe:
                for t in mine:
                    pipe.eval(RELEASE, 1, keys.lease(t), self.node_id)
                await pipe.execute()
        self.owners = {t: o for t, o in self.owners.items() if o != self.node_id}
        self.held_since.clear()
