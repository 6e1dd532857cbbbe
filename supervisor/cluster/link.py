"""The connection to the cluster's Redis: opened in the background, checked every second, reopened with backoff.

A node must start and serve its own API while Redis is away, so nothing waits on this at start-up: the
link connects in a task and says `online` once Redis answered PING. On every (re)connect it runs the
`on_connect` steps (join the cluster, resynchronise the source list ...): anything missed while away is
read again, not replayed. A lost connection is noticed by the next PING (or by any command failing) and
retried after 0.5 s, doubling to 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from supervisor.cluster.conf import ClusterConf

log = logging.getLogger("h5gate.cluster")

PING_SECONDS = 1.0
BACKOFF_MIN = 0.5
BACKOFF_MAX = 10.0
COMMAND_TIMEOUT = 3.0  # a Redis that stops answering fails commands instead of hanging the node
MAX_CONNECTIONS = 64  # a burst past this waits for a free connection (up to COMMAND_TIMEOUT), never fails at once

Step = Callable[[Redis], Awaitable[None]]


async def cancel(task: asyncio.Task[None], what: str, patience: float = 5.0) -> None:
    """Cancel a task and wait until it ended, cancelling again if it swallowed one (a step mid-command
    may: redis-py and connect steps of other chapters catch broadly); gives up after `patience` seconds."""
    deadline = time.monotonic() + patience
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
        if time.monotonic() > deadline and not task.done():
            log.error("cluster: %s did not stop when cancelled; left behind", what)
            return
    if not task.cancelled() and task.exception() is not None:
        log.warning("cluster: %s ended with %r", what, task.exception())


class RedisLink:
    """One Redis client for the node and the state of its connection (`online`, `last_error`, `connects`)."""

    def __init__(self, conf: ClusterConf) -> None:
        self.conf = conf
        self.client: Redis | None = None
        self.online = False
        self.last_error = ""
        self.connects = 0  # successful (re)connections
        self.since = 0.0  # time.time() of the last change of `online`
        self.on_connect: list[Step] = []
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    def _client(self) -> Redis:
        """A client on a blocking pool: redis-py's default pool raises at once when a burst of requests (each
        session check is a command) wants more connections than it holds, which would look like Redis gone."""
        conf = self.conf
        options: dict[str, Any] = {
            "host": conf.host,
            "port": conf.port,
            "password": conf.password or None,
            "socket_timeout": COMMAND_TIMEOUT,
            "socket_connect_timeout": COMMAND_TIMEOUT,
            "client_name": f"h5gate-{conf.node_id}"[:64],
            "retry": Retry(NoBackoff(), 0),  # no silent retries inside a command: the link's own backoff decides
        }
        if conf.ssl:
            options.update(connection_class=SSLConnection, ssl_cert_reqs=ssl_module.CERT_REQUIRED)  # verify the server
        pool = BlockingConnectionPool(max_connections=MAX_CONNECTIONS, timeout=COMMAND_TIMEOUT, **options)
        return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections

    def start(self) -> None:
        if self._task is None:
            self.client = self._client()
            self._task = asyncio.create_task(self._run(), name="cluster-link")

    async def halt(self) -> None:
        """Stop connecting and checking (a connect step still running is cancelled); the client stays open,
        so leave steps can still tell Redis goodbye."""
        task, self._task = self._task, None
        if task is not None:
            await cancel(task, "the redis link")

    async def stop(self) -> None:
        await self.halt()
        self._set(False, "")
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()

    def lost(self, error: BaseException) -> None:
        """Any user of the client reports a failed command: the link checks the connection at once."""
        if self.online:
            self._set(False, f"{error.__class__.__name__}: {error}")
            self._lost.set()

    def _set(self, online: bool, error: str) -> None:
        if online != self.online:
            self.since = time.time()
            if online:
                conf = self.conf
                log.info("cluster: connected to redis %s:%d as node %s", conf.host, conf.port, conf.node_id)
            else:
                log.warning("cluster: redis %s:%d lost: %s", self.conf.host, self.conf.port, error or "closed")
        self.online = online
        self.last_error = error

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        while True:
            client = self.client
            assert client is not None
            try:
                await client.ping()
                self._set(True, "")
                self.connects += 1
                for step in list(self.on_connect):
                    await step(client)
                delay = BACKOFF_MIN
                await self._watch(client)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                error = f"{e.__class__.__name__}: {e}"
                if self.online:
                    self._set(False, error)
                elif error != self.last_error:
                    log.warning("cluster: cannot reach redis %s:%d: %s", self.conf.host, self.conf.port, error)
                    self.last_error = error
            except Exception as e:  # a join step's own bug must not end the link for good
                log.exception("cluster: a connect step failed")
                self._set(False, f"{e.__class__.__name__}: {e}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _watch(self, client: Redis) -> None:
        """PING every second until one fails (raises) or a user reported a failed command."""
        self._lost.clear()
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), PING_SECONDS)
            except TimeoutError:
                await client.ping()
                continue
            raise ConnectionError(self.last_error or "a command failed")
