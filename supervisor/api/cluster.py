"""The cluster settings page (h5sweb's 集群管理): SetRedisConf, GetRedisConf, SetEnableRedis, GetEnableRedis,
ConnectRedisStatus.

h5sweb's Cluster.vue sends SetRedisConf?serverip=&serverport=&nodeid=&nodename=&nodeip=&ssl= and then
SetEnableRedis?enable=, reads GetRedisConf's strServerIp/nServerPort/strNodeId/strNodeName/strNodeIp/bSSL,
GetEnableRedis's enable and ConnectRedisStatus's bOnline. Values take effect at once (the node joins,
leaves or reconnects) and are kept for the next start; what they mean is in supervisor/cluster/conf.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from supervisor.api.common import Chapter, endpoint, ok, param, param_bool, param_number, services
from supervisor.auth import User
from supervisor.cluster.conf import NODE_ID, split_address
from supervisor.cluster.service import Cluster
from supervisor.errors import BadValue
from supervisor.services import Services

# what a page sends for a switch it never loaded (`'&ssl=' + undefined`): not a value, so the current one stays
UNSET = ("null", "undefined")


def _cluster(request: Request) -> Cluster:
    cluster = services(request).cluster
    assert cluster is not None  # the chapter's start made it
    return cluster


def _switch(request: Request, name: str, current: bool) -> bool:
    if request.query_params.get(name, "").strip().lower() in UNSET:
        return current
    return param_bool(request, name, current)


@endpoint(role="Administrator")
async def get_redis_conf(request: Request, user: User) -> Any:
    return {"bStatus": True, "strCode": "", **_cluster(request).conf.console()}


@endpoint(role="Administrator")
async def set_redis_conf(request: Request, user: User) -> Any:
    cluster = _cluster(request)
    conf = cluster.conf
    host = param(request, "serverip", required=False, default=conf.host, maxlen=253)
    try:
        host_only, port_in_host = split_address(host)
    except ValueError as e:
        raise BadValue(f"invalid serverip: {e}") from None
    if port_in_host:
        raise BadValue("invalid serverip: give the port as serverport")
    port = int(param_number(request, "serverport", default=conf.port, low=1, high=65535, integer=True))
    node_id = param(request, "nodeid", required=False, default=conf.node_id, maxlen=64)
    if not NODE_ID.match(node_id):
        raise BadValue("invalid nodeid: 1-64 letters, digits, '_', '-' or '.'")
    node_name = param(request, "nodename", required=False, default=conf.node_name, maxlen=64)
    node_ip = param(request, "nodeip", required=False, default=conf.node_ip, maxlen=260)
    if node_ip:
        try:
            split_address(node_ip)
        except ValueError as e:
            raise BadValue(f"invalid nodeip (where other nodes reach this one, IP or IP:PORT): {e}") from None
    ssl = _switch(request, "ssl", conf.ssl)
    new = dataclasses.replace(
        conf, host=host_only, port=port, node_id=node_id, node_name=node_name, node_ip=node_ip, ssl=ssl
    )
    await cluster.apply(new)
    return ok("Set redis config successfully")


@endpoint(role="Administrator")
async def get_enable_redis(request: Request, user: User) -> Any:
    return {"bStatus": True, "strCode": "", "enable": _cluster(request).conf.enable}


@endpoint(role="Administrator")
async def set_enable_redis(request: Request, user: User) -> Any:
    cluster = _cluster(request)
    if request.query_params.get("enable", "").strip().lower() in UNSET:
        raise BadValue("missing parameter: enable (true or false)")
    enable = param_bool(request, "enable", cluster.conf.enable)
    param(request, "enable")  # present, not just defaulted
    await cluster.apply(dataclasses.replace(cluster.conf, enable=enable))
    return ok("Cluster turned on" if enable else "Cluster turned off")


@endpoint(role="Administrator")
async def connect_redis_status(request: Request, user: User) -> Any:
    cluster = _cluster(request)
    status = cluster.status()
    return {
        "bStatus": True,
        "strCode": "",
        "bEnable": status["enabled"],
        "bOnline": status["online"],
        "strServerIp": cluster.conf.host,
        "nServerPort": cluster.conf.port,
        "strNodeId": cluster.node_id,
        "strError": status["error"],
        "nodes": status["nodes"],
    }


async def start(svc: Services) -> None:
    svc.cluster = Cluster(svc.settings, svc.conf, svc.host_id, svc.registry)
    await svc.cluster.start()


async def started(svc: Services) -> None:
    """The sources are loaded: the node may join now; recordings follow the cameras it comes to pull."""
    cluster = svc.cluster
    assert cluster is not None
    if svc.recordings is not None:
        cluster.on_moved.append(svc.recordings.reconcile)
    cluster.sources_loaded()


async def stop(svc: Services) -> None:
    if svc.cluster is not None:
        await svc.cluster.stop()


routes = [
    Route("/api/v1/GetRedisConf", get_redis_conf),
    Route("/api/v1/SetRedisConf", set_redis_conf, methods=["GET", "POST"]),
    Route("/api/v1/GetEnableRedis", get_enable_redis),
    Route("/api/v1/SetEnableRedis", set_enable_redis, methods=["GET", "POST"]),
    Route("/api/v1/ConnectRedisStatus", connect_redis_status),
]
chapter = Chapter("cluster", routes, start=start, started=started, stop=stop)
