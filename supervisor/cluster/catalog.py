"""The shared source list: every node has every source, whichever node a console added it on.

Writes go to Redis first (registry.shared): AddSrc* is HSETNX on h5gate:sources (so two nodes adding
the same token at once cannot both win), an edit is HSET, DelSrc is HDEL plus a tombstone in
h5gate:deleted; each bumps h5gate:sources:rev. A change that cannot reach Redis is refused with a reason,
so no node's list drifts on its own. Every node polls the revision each tick and, when it moved, reads
the whole hash and makes its registry match: cheaper to reason about than replaying messages, and a
node back from an outage (or joining for the first time) converges the same way.

What a node brings when it joins: its own sources that the cluster does not have are added to the list,
unless a tombstone says the cluster deleted that token after the node's copy was made.

Camera credentials travel in these configs: Redis must be private to the nodes (bind, AUTH, TLS).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from supervisor.cluster import keys
from supervisor.errors import Conflict, DomainError, Unavailable
from supervisor.registry import Registry, SourceConfig

log = logging.getLogger("h5gate.cluster")

UNREACHABLE = "cluster: Redis is unreachable, the shared source list cannot change now; try again"


def _config(raw: bytes | str) -> SourceConfig | None:
    try:
        return SourceConfig.from_json(keys.text(raw))
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


class Catalog:
    """registry.shared while the node is in the cluster, and the sync of the registry from Redis."""

    def __init__(self, registry: Registry, client: Redis) -> None:
        self.registry = registry
        self.client = client
        self.rev: int | None = None  # the revision the registry matches

    # -- writes (registry.shared) ------------------------------------------------------------------
    async def add(self, cfg: SourceConfig) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(keys.SOURCES, cfg.token, cfg.to_json())
                pipe.hdel(keys.DELETED, cfg.token)
                pipe.incr(keys.SOURCES_REV)
                added, _, _ = await pipe.execute()
        except (RedisError, OSError) as e:
            raise Unavailable(UNREACHABLE) from e
        if not added:
            raise Conflict(f"token already exists in the cluster: {cfg.token}")

    async def put(self, cfg: SourceConfig) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(keys.SOURCES, cfg.token, cfg.to_json())
                pipe.incr(keys.SOURCES_REV)
                await pipe.execute()
        except (RedisError, OSError) as e:
            raise Unavailable(UNREACHABLE) from e

    async def delete(self, token: str) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.SOURCES, token)
                pipe.hset(keys.DELETED, token, str(time.time()))
                pipe.incr(keys.SOURCES_REV)
                await pipe.execute()
        except (RedisError, OSError) as e:
            raise Unavailable(UNREACHABLE) from e

    # -- sync ------------------------------------------------------------------------------------------
    def tokens(self) -> list[str]:
        """The registry's sources that are the cluster's (not a cloud edge's, attached from elsewhere)."""
        return sorted(t for t, r in self.registry.sources.items() if not r.attached)

    async def join(self) -> None:
        """Bring this node's own sources into the cluster's list (unless deleted there since), then match it."""
        shared = await self.client.hgetall(keys.SOURCES)
        deleted = await self.client.hgetall(keys.DELETED)
        have = {keys.text(k) for k in shared}
        for token, runtime in list(self.registry.sources.items()):
            if token in have or runtime.attached:
                continue
            gone_at = deleted.get(token.encode())
            if gone_at is not None and float(gone_at) >= runtime.created:
                continue  # deleted by the cluster while this node was away: sync() drops it
            try:
                await self.add(runtime.config)
                log.info("%s: brought into the cluster's source list", token)
            except Conflict:
                pass  # another node added it a moment ago: its config wins
        self.rev = None
        await self.sync()

    async def sync(self) -> bool:
        """Make the registry match the shared list if its revision moved; True if it did."""
        rev = int(await self.client.get(keys.SOURCES_REV) or 0)
        if rev == self.rev:
            return False
        shared = await self.client.hgetall(keys.SOURCES)
        wanted: dict[str, SourceConfig] = {}
        for raw_token, raw in shared.items():
            cfg = _config(raw)
            if cfg is None or cfg.token != keys.text(raw_token):
                log.error("cluster: skipping an unreadable source %r", raw_token[:64])
                continue
            wanted[cfg.token] = cfg
        registry = self.registry
        for token in [t for t in self.tokens() if t not in wanted]:
            await self._apply(token, "deleted on another node", registry.delete(token, announce=False))
        for token, cfg in wanted.items():
            runtime = registry.get(token)
            if runtime is None:
                await self._apply(token, "added on another node", registry.add(cfg, announce=False))
            elif runtime.config != cfg:
                if dataclasses.replace(runtime.config, record=cfg.record) == cfg:
                    change = registry.update(token, announce=False, record=cfg.record)
                    await self._apply(token, "recording switched on another node", change)
                else:
                    await self._apply(token, "edited on another node", registry.replace(cfg, announce=False))
        self.rev = rev
        return True

    async def _apply(self, token: str, what: str, change: Awaitable[object]) -> None:
        try:
            await change
            log.info("%s: %s", token, what)
        except DomainError as e:  # a config this node cannot run (a file it does not have): say so, go on
            log.error("%s: %s, but not here: %s", token, what, e.message)
