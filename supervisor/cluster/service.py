"""services.cluster: the node's view of the cluster, present whether or not the cluster is turned on.

Other chapters hold on to this one object: `redis` is the client while the cluster is on (None when
off), `online` says whether Redis answers now, `on_connect` steps run after every (re)connect (load what
is shared, announce what is ours) and `on_leave` steps run when the node leaves the cluster (the console
turned it off, or the server stops). SetRedisConf/SetEnableRedis change it at run time through `apply`.
The node's own work (membership, the shared source list, camera ownership) is node.py's, ticked here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from supervisor.cluster.conf import STORED, ClusterConf
from supervisor.cluster.link import RedisLink, Step, cancel
from supervisor.cluster.node import ClusterNode
from supervisor.conf_store import ConfStore
from supervisor.config import Settings
from supervisor.registry import Registry

log = logging.getLogger("h5gate.cluster")


class Cluster:
    def __init__(self, settings: Settings, store: ConfStore, host_id: str, registry: Registry) -> None:
        self.settings = settings
        self.store = store
        self.host_id = host_id
        self.registry = registry
        self.conf = ClusterConf.effective(settings, store.get(STORED), host_id)
        self.link: RedisLink | None = None
        self.node: ClusterNode | None = None
        self.on_connect: list[Step] = []
        self.on_leave: list[Callable[[], Awaitable[None]]] = []
        self.on_moved: list[Callable[[], Awaitable[None]]] = []  # sources moved between nodes (recordings follow)
        self._sources_loaded = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.link is not None

    @property
    def online(self) -> bool:
        return self.link is not None and self.link.online

    @property
    def redis(self) -> Redis | None:
        """The client while the cluster is on; its commands raise redis.exceptions.ConnectionError while offline."""
        return self.link.client if self.link is not None else None

    @property
    def node_id(self) -> str:
        return self.conf.node_id

    def peer(self, headers: Mapping[str, str]) -> str | None:
        """The node id of a request carrying the cluster secret (a relay from another node), else None."""
        return self.node.peer(headers) if self.node is not None and self.online else None

    def failed(self, error: BaseException) -> None:
        """A user of `redis` saw a command fail: the link re-checks the connection at once."""
        if self.link is not None:
            self.link.lost(error)

    def status(self) -> dict[str, Any]:
        link = self.link
        return {
            "enabled": link is not None,
            "online": link is not None and link.online,
            "error": link.last_error if link is not None else "",
            "connects": link.connects if link is not None else 0,
            "since": link.since if link is not None else 0.0,
            "nodes": sorted(self.node.members.nodes) if self.node is not None else [],
        }

    async def start(self) -> None:
        """Before the sources load: with the cluster on they load as relays, pulled here once a lease says so."""
        if self.conf.enable:
            self._open()

    def sources_loaded(self) -> None:
        """The registry holds this node's own sources now: joining may bring them into the cluster."""
        self._sources_loaded.set()

    async def stop(self) -> None:
        await self._close(shutdown=True)

    async def apply(self, conf: ClusterConf) -> None:
        """Store the console's values and follow them: join, leave, or reconnect when Redis or the node changed."""
        await self.store.set(STORED, conf.stored())
        old, self.conf = self.conf, conf
        if not conf.enable:
            await self._close()
        elif self.link is None:
            self._open()
        elif not old.same_link(conf):
            await self._close()
            self._open()
        else:
            self.link.conf = conf  # a new name or address: the next heartbeat says it
            if self.node is not None:
                self.node.conf = conf

    def _open(self) -> None:
        conf = self.conf
        link = RedisLink(conf)
        link.on_connect.append(self._connected)
        self.link = link
        node = self.node = ClusterNode(conf, self.registry, self.settings.stall_timeout)
        node.on_moved.append(self._moved)
        self.registry.placement = node
        link.start()
        self._ticker = asyncio.create_task(self._tick_forever(), name="cluster-tick")
        log.info("cluster: on, redis %s:%d, node %s at %s", conf.host, conf.port, conf.node_id, conf.address)

    async def _connected(self, client: Redis) -> None:
        await self._sources_loaded.wait()
        if self.node is not None:
            await self.node.join(client)
        for step in list(self.on_connect):
            await step(client)

    async def _moved(self) -> None:
        for step in list(self.on_moved):
            try:
                await step()
            except Exception:
                log.exception("cluster: a step after sources moved failed")

    async def _tick_forever(self) -> None:
        tick = min(1.0, max(0.25, self.conf.lease_seconds / 4))
        while True:
            await asyncio.sleep(tick)
            link, node = self.link, self.node
            if link is None or node is None or not link.online or link.client is None:
                continue
            try:
                await node.tick(link.client)
            except (RedisError, OSError) as e:
                log.warning("cluster: tick failed: %s", e)
                link.lost(e)
            except Exception:
                log.exception("cluster: tick failed")

    async def _close(self, shutdown: bool = False) -> None:
        link, self.link = self.link, None
        node, self.node = self.node, None
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            await cancel(ticker, "the cluster tick")
        if link is None:
            return
        online = link.online
        await link.halt()  # no connect step may run on after the leave steps (they would undo them)
        for step in list(self.on_leave):
            try:
                await step()
            except Exception:
                log.exception("cluster: a leave step failed")
        if node is not None:
            await node.leave(link.client if online else None, shutdown=shutdown)
        await link.stop()
        log.info("cluster: off")
