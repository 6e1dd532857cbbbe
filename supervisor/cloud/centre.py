"""The centre's registry of edges: who is registered, whether online, and their sources as centre sources.

Each edge is known by its servertoken. Its sources become centre-side sources (nType H5_CLOUD) whose
token here is new (`<servertoken>.<original>`, or a hash where that is too long or taken) and stays the
same across restarts: the mapping, with the edges' last known names, addresses and sources, is kept in
the ConfStore, so after a restart of the centre every edge is listed (offline) before it reconnects and
roles or views that name an edge camera keep working.

An edge going offline leaves its sources listed (bOnline false); their viewers here are closed with the
offline code (their hubs are interrupted) and come back, through RelayInput's retries, when it returns.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from supervisor.api.common import TOKEN_RE
from supervisor.cloud.cloud_input import CloudInput, cloud_runtime
from supervisor.cloud.link import Link, LinkDown
from supervisor.cloud.protocol import Reply
from supervisor.errors import NotFound, Unavailable
from supervisor.registry import SourceConfig

if TYPE_CHECKING:
    from supervisor.services import Services

log = logging.getLogger("h5gate.cloud")

CLOUD_KIND = "H5_CLOUD"
STORE = "cloud_edges"


@dataclass
class EdgeSource:
    original: str
    name: str
    online: bool = False
    rec: bool = False
    kind: str = ""


@dataclass(eq=False)
class Edge:
    token: str
    name: str = ""
    ip: str = ""
    link: Link | None = None
    sources: dict[str, EdgeSource] = field(default_factory=dict)  # by the edge's own token
    tokens: dict[str, str] = field(default_factory=dict)  # the edge's token -> the centre's
    since: float = 0.0  # time.time() of the last connect

    @property
    def online(self) -> bool:
        return self.link is not None and self.link.down is None


class Centre:
    def __init__(self, services: Services) -> None:
        self.svc = services
        self.edges: dict[str, Edge] = {}
        self.by_token: dict[str, tuple[str, str]] = {}  # centre token -> (servertoken, original token)

    # -- persistence ---------------------------------------------------------------------------------
    async def load(self) -> None:
        stored = self.svc.conf.get(STORE)
        if not isinstance(stored, dict):
            return
        for token, entry in stored.items():
            if not (isinstance(entry, dict) and TOKEN_RE.match(token)):
                continue
            edge = self.edges[token] = Edge(token, str(entry.get("name", "")), str(entry.get("ip", "")))
            for item in entry.get("src", []):
                try:
                    source = EdgeSource(str(item["original"]), str(item["name"]), False, False, str(item["kind"]))
                    mapped = str(item["token"])
                except (KeyError, TypeError):
                    continue
                if TOKEN_RE.match(source.original) and TOKEN_RE.match(mapped):
                    self._add(edge, source, mapped)
        log.info("cloud: %d edges known", len(self.edges))

    async def save(self) -> None:
        value = {
            e.token: {
                "name": e.name,
                "ip": e.ip,
                "src": [
                    {"original": s.original, "name": s.name, "kind": s.kind, "token": e.tokens[s.original]}
                    for s in e.sources.values()
                ],
            }
            for e in self.edges.values()
        }
        await self.svc.conf.set(STORE, value)

    # -- links -----------------------------------------------------------------------------------------
    async def attach(self, token: str, name: str, ip: str, link: Link) -> Edge:
        """An edge said hello: it is online with this link (one that was still open is replaced)."""
        edge = self.edges.get(token)
        if edge is None:
            edge = self.edges[token] = Edge(token)
        old = edge.link
        edge.link, edge.name, edge.ip, edge.since = link, name or edge.name or token, ip, time.time()
        if old is not None and old.down is None:
            old.close("replaced by a new link from the same edge")
            log.warning("cloud: edge %s connected again: the old link is dropped", token)
        log.info("cloud: edge %s (%s) online from %s", token, edge.name, ip)
        await self.save()
        for original in edge.sources:  # streams that were waiting for it (viewers came back) connect now
            runtime = self.svc.registry.get(edge.tokens[original])
            for stream in runtime.streams.values() if runtime is not None else ():
                if isinstance(stream.process, CloudInput):
                    await stream.process.reconnect_now()
        return edge

    def detach(self, edge: Edge, link: Link, reason: str) -> None:
        """A link ended; if it was the edge's current one, the edge is offline and its viewers are told."""
        link.close(reason)
        if edge.link is not link:
            return
        edge.link = None
        for original in edge.sources:
            runtime = self.svc.registry.get(edge.tokens[original])
            if runtime is None:
                continue
            for stream in runtime.streams.values():
                stream.hub.interrupt(f"source offline: cloud edge {edge.token} is offline")
        log.warning("cloud: edge %s offline (%s)", edge.token, reason)

    # -- sources ---------------------------------------------------------------------------------------
    def _new_token(self, edge: str, original: str) -> str:
        token = f"{edge}.{original}"
        if len(token) > 64:
            token = f"{edge[:40]}.{hashlib.sha1(original.encode()).hexdigest()[:16]}"
        base, n = token, 1
        while token in self.svc.registry.sources or token in self.by_token:
            n += 1
            token = f"{base[:60]}-{n}"
        return token

    def _add(self, edge: Edge, source: EdgeSource, token: str | None = None) -> None:
        token = token or self._new_token(edge.token, source.original)
        cfg = SourceConfig(
            token,
            source.name,
            CLOUD_KIND,
            "",
            connect_type="H5_ONDEMAND",
            server_token=edge.token,
            original_token=source.original,
        )
        original = source.original

        def remote_online() -> bool:
            known = edge.sources.get(original)
            return edge.online and known is not None and known.online

        runtime = cloud_runtime(cfg, self.svc.settings, lambda: edge.link, remote_online)
        runtime.remote_record = source.rec
        self.svc.registry.attach(runtime)
        edge.sources[original] = source
        edge.tokens[original] = token
        self.by_token[token] = (edge.token, original)

    async def update_sources(self, edge: Edge, listed: Any) -> None:
        """The edge's current source list: new ones are added here, gone ones removed, the rest updated."""
        if not isinstance(listed, list):
            return
        seen: set[str] = set()
        changed = False
        for item in listed:
            if not isinstance(item, dict) or not TOKEN_RE.match(str(item.get("token", ""))):
                continue
            original = str(item["token"])
            seen.add(original)
            name = str(item.get("name", original))[:128] or original
            online, rec, kind = bool(item.get("online")), bool(item.get("rec")), str(item.get("kind", ""))[:32]
            known = edge.sources.get(original)
            if known is None:
                self._add(edge, EdgeSource(original, name, online, rec, kind))
                changed = True
                log.info("cloud: %s: source of edge %s listed as %s", original, edge.token, edge.tokens[original])
                continue
            runtime = self.svc.registry.get(edge.tokens[original])
            if known.name != name:
                known.name = name
                changed = True
                if runtime is not None:
                    runtime.config.name = name
            known.online, known.rec, known.kind = online, rec, kind
            if runtime is not None:
                runtime.remote_record = rec
        for original in [o for o in edge.sources if o not in seen]:
            token = edge.tokens.pop(original)
            del edge.sources[original]
            self.by_token.pop(token, None)
            await self.svc.registry.detach(token)
            changed = True
            log.info("cloud: %s: source gone from edge %s", token, edge.token)
        if changed:
            await self.save()

    # -- forwarding ------------------------------------------------------------------------------------
    def source_of(self, token: str) -> tuple[Edge, str] | None:
        """The edge and original token behind a centre token, or None for a local source."""
        found = self.by_token.get(token)
        if found is None:
            return None
        edge = self.edges.get(found[0])
        return (edge, found[1]) if edge is not None else None

    def online_edge(self, token: str) -> Edge:
        edge = self.edges.get(token)
        if edge is None:
            raise NotFound(f"unknown servertoken: no edge {token[:64]} is registered with this server")
        if not edge.online:
            raise Unavailable(f"cloud edge {token} is offline")
        return edge

    async def call(self, edge: Edge, path: str, query: list[tuple[str, str]]) -> Reply:
        link = edge.link
        if link is None or link.down is not None:
            raise Unavailable(f"cloud edge {edge.token} is offline")
        try:
            return await link.call(path, query)
        except LinkDown as e:
            raise Unavailable(f"cloud edge {edge.token} went offline: {e}") from None
        except TimeoutError:
            raise Unavailable(f"cloud edge {edge.token} did not answer {path} in time") from None
