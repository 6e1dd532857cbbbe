"""services.cluster: the node's view of the cluster, present whether or not the cluster is turned on.

Other chapters hold on to this one object: `redis` is the client while the cluster is on (None when
off), `online` says whether Redis answers now, `on_connect` steps run after every (re)connect (load what
is shared, announce what is ours) and `on_leave` steps run when the node leaves the cluster (the console
turned it off, or the server stops). SetRedisConf/SetEnableRedis change it at run time through `apply`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from supervisor.cluster.conf import STORED, ClusterConf
from supervisor.cluster.link import RedisLink, Step
from supervisor.conf_store import ConfStore
from supervisor.config import Settings

log = logging.getLogger("h5gate.cluster")

PREFIX = "h5gate:"  # every key the cluster writes starts with this


def key(*parts: str) -> str:
    """A cluster key: h5gate:<part>:<part>..."""
    return PREFIX + ":".join(parts)


class Cluster:
    def __init__(self, settings: Settings, store: ConfStore, host_id: str) -> None:
        self.settings = settings
        self.store = store
        self.host_id = host_id
        self.conf = ClusterConf.effective(settings, store.get(STORED), host_id)
        self.link: RedisLink | None = None
        self.on_connect: list[Step] = []
        self.on_leave: list[Callable[[], Awaitable[None]]] = []

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
        }

    async def start(self) -> None:
        if self.conf.enable:
            self._open()

    async def stop(self) -> None:
        await self._close()

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

    def _open(self) -> None:
        link = RedisLink(self.conf)
        link.on_connect.append(self._connected)
        self.link = link
        link.start()
        conf = self.conf
        log.info("cluster: on, redis %s:%d, node %s at %s", conf.host, conf.port, conf.node_id, conf.address)

    async def _connected(self, client: Redis) -> None:
        for step in list(self.on_connect):
            await step(client)

    async def _close(self) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        for step in list(self.on_leave):
            try:
                await step()
            except Exception:
                log.exception("cluster: a leave step failed")
        await link.stop()
        log.info("cluster: off")
