"""This node's part in the cluster while it is on: join, then a tick every second.

Join (on every connect to Redis, once the sources are loaded): learn the cluster secret, bring this
node's sources into the shared list and match it (catalog.py), say it is alive (members.py).
Each tick: heartbeat, read who is alive, follow the shared list, renew and take leases (ownership.py),
then move each source to where its lease says: pulled here, or relayed from its owner over the owner's
own /api/v1/h5swsapi (workers/relay_source.py + workers/relay_ws.py), hubs and their viewers kept.

Node-to-node authentication: a relay connection carries `X-H5gate-Node: <id>` and
`X-H5gate-Secret: <the cluster secret>`. The secret is 256 random bits made by the first node to join
(SET NX h5gate:secret) and read from Redis by the others: whoever can read the cluster's Redis is a
node. It opens live video of a source this node pulls, nothing else (no API calls, no playback).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from supervisor.cluster import keys
from supervisor.cluster.catalog import Catalog
from supervisor.cluster.conf import ClusterConf
from supervisor.cluster.members import Membership
from supervisor.cluster.ownership import Ownership
from supervisor.registry import Registry, SourceRuntime, StreamInput
from workers.hub import StreamHub
from workers.relay_source import RelayInput, UpstreamClosed
from workers.relay_ws import h5swsapi_url, ws_provider

log = logging.getLogger("h5gate.cluster")

NODE_HEADER = "x-h5gate-node"
SECRET_HEADER = "x-h5gate-secret"
RELAY_RESTART_MAX = 2.0  # a relay retries at least this often: an owner that moved is found again quickly


class ClusterNode:
    """registry.placement while on; `tick()` is called by the service every second while Redis answers."""

    def __init__(self, conf: ClusterConf, registry: Registry, stall_timeout: float) -> None:
        self.conf = conf
        self.registry = registry
        self.stall_timeout = stall_timeout
        self.members = Membership()
        self.ownership = Ownership(conf.node_id, conf.lease_seconds)
        self.catalog: Catalog | None = None
        self.secret = ""
        self.joined = False
        # after sources moved or the shared list changed (recordings follow: bRec, new owners)
        self.on_moved: list[Callable[[], Awaitable[None]]] = []
        self._published: dict[str, bool] = {}

    # -- registry.placement ----------------------------------------------------------------------------
    def local(self, token: str) -> bool:
        return self.ownership.owner(token) == self.conf.node_id

    def remote_input(self, runtime: SourceRuntime, profile: str, hub: StreamHub) -> StreamInput:
        token = runtime.config.token
        return RelayInput(
            f"{token}/{profile}",
            hub,
            self._provider(token, profile),
            stall_timeout=self.stall_timeout,
            restart_max=RELAY_RESTART_MAX,
            upstream=runtime.owner,
        )

    def _provider(self, token: str, profile: str) -> Callable[[], AsyncIterator[bytes]]:
        """Each connection goes to the source's owner as this node knows it at that moment."""

        async def messages() -> AsyncIterator[bytes]:
            owner = self.ownership.owner(token)
            node = self.members.nodes.get(owner) if owner else None
            if owner is None or node is None:
                raise UpstreamClosed("no node pulls this camera yet")
            if owner == self.conf.node_id:
                raise UpstreamClosed("pulled here now")
            url = h5swsapi_url(f"http://{node.address}", token, profile)
            headers = {NODE_HEADER: self.conf.node_id, SECRET_HEADER: self.secret}
            async for message in ws_provider(url, headers=headers)():
                yield message

        return messages

    # -- node-to-node authentication -------------------------------------------------------------------
    def peer(self, headers: Mapping[str, str]) -> str | None:
        """The id of the node presenting the cluster secret, or None."""
        given = headers.get(SECRET_HEADER, "")
        if not self.secret or not given:
            return None
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            return None
        return headers.get(NODE_HEADER, "?")[:64]

    # -- join and tick ---------------------------------------------------------------------------------
    async def join(self, client: Redis) -> None:
        await client.set(keys.SECRET, secrets.token_hex(32), nx=True)
        raw = await client.get(keys.SECRET)
        self.secret = keys.text(raw) if raw else ""
        self.catalog = Catalog(self.registry, client)
        self.registry.shared = self.catalog
        await self.members.beat(client, self.conf)
        await self.catalog.join()
        self.joined = True
        log.info("cluster: node %s joined (%d sources in the cluster)", self.conf.node_id, len(self.registry.sources))
        await self.tick(client)

    async def tick(self, client: Redis) -> None:
        if not self.joined or self.catalog is None:
            return
        await self.members.beat(client, self.conf)
        nodes = await self.members.read(client)
        changed = await self.catalog.sync()
        tokens = self.catalog.tokens()
        await self.ownership.tick(client, tokens, nodes)
        moved = await self._place(tokens)
        await self._share_online(client, tokens)
        if moved or changed:
            for step in list(self.on_moved):
                await step()

    async def _place(self, tokens: list[str]) -> bool:
        """Pull here what this node holds, relay the rest from its owner; True if any source moved."""
        moved = False
        for token in tokens:
            runtime = self.registry.get(token)
            if runtime is None:
                continue
            owner = self.ownership.owner(token) or ""
            before, runtime.owner = runtime.owner, owner
            if await self.registry.reseat(token, owner == self.conf.node_id):
                moved = True
            elif not runtime.local and owner and owner != before:
                for stream in runtime.streams.values():  # a new owner: reconnect to it now, not after a backoff
                    if isinstance(stream.process, RelayInput) and stream.running:
                        stream.process.set_provider(self._provider(token, stream.profile), upstream=owner)
                log.info("%s: now pulled by node %s", token, owner)
        return moved

    async def _share_online(self, client: Redis, tokens: list[str]) -> None:
        """Tell the others the bOnline of what this node pulls; learn theirs for what it relays."""
        changed: dict[FieldT, EncodableT] = {}
        for token in tokens:
            runtime = self.registry.get(token)
            if runtime is not None and runtime.local:
                online = runtime.main.process.online
                if self._published.get(token) != online:
                    changed[token] = "1" if online else "0"
                    self._published[token] = online
        if changed:
            await client.hset(keys.ONLINE, mapping=changed)
        for token in [t for t in self._published if t not in self.registry.sources or not self._local(t)]:
            del self._published[token]
        shared = await client.hgetall(keys.ONLINE)
        for token in tokens:
            runtime = self.registry.get(token)
            if runtime is not None and not runtime.local:
                raw = shared.get(token.encode())
                runtime.remote_online = None if raw is None else raw == b"1"

    def _local(self, token: str) -> bool:
        runtime = self.registry.get(token)
        return runtime is not None and runtime.local

    async def leave(self, client: Redis | None, *, shutdown: bool = False) -> None:
        """Leave the cluster: leases and heartbeat go at once (others take over now); unless the server is
        stopping, every source is pulled here again (a standalone gateway)."""
        self.joined = False
        self.registry.shared = None
        if client is not None:
            try:
                await asyncio.wait_for(self.ownership.release_all(client), 3.0)
                await asyncio.wait_for(self.members.leave(client, self.conf.node_id), 3.0)
            except (RedisError, OSError, TimeoutError) as e:
                log.warning("cluster: could not leave cleanly (%s); leases lapse on their own", e)
        self.ownership.owners.clear()
        self.registry.placement = None
        if shutdown:
            return
        for token in list(self.registry.sources):
            await self.registry.reseat(token, True)
            runtime = self.registry.get(token)
            if runtime is not None:
                runtime.owner, runtime.remote_online = "", None
