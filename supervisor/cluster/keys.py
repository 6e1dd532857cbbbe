"""The cluster's Redis keys, in one place (every key starts with h5gate:).

h5gate:secret            the cluster secret nodes show each other (SET NX by the first node to join)
h5gate:nodes             set of node ids ever seen; h5gate:node:<id> (JSON, PX lease) says one is alive
h5gate:sources           hash token -> source config (JSON); h5gate:sources:rev counts its changes
h5gate:deleted           hash token -> time.time() it was deleted (a node that was away drops its copy)
h5gate:lease:<token>     the node id pulling that camera (SET NX PX, renewed by its owner)
h5gate:online            hash token -> "1"/"0": the owner's bOnline, for the nodes that relay it
"""

from __future__ import annotations

PREFIX = "h5gate:"
SECRET = PREFIX + "secret"
NODES = PREFIX + "nodes"
SOURCES = PREFIX + "sources"
SOURCES_REV = PREFIX + "sources:rev"
DELETED = PREFIX + "deleted"
ONLINE = PREFIX + "online"


def node(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}"


def lease(token: str) -> str:
    return f"{PREFIX}lease:{token}"


def key(*parts: str) -> str:
    """Any other cluster key (other chapters' shared state): h5gate:<part>:<part>..."""
    return PREFIX + ":".join(parts)


def text(value: bytes | str) -> str:
    """A Redis reply as text (the client is made with decode_responses=False: replies are bytes)."""
    return value.decode() if isinstance(value, bytes) else value
