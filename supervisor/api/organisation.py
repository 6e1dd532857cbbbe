"""The device tree the vendor consoles draw: GetSrcCamera, regions, saved live views.

GetSrcCamera (and GetSrcWithoutDevice) list the cameras the live view's tree is built from, in
GetSrc's shape; GetRegion/AddRegion/DelRegion/AddRegionCam/DelRegionCam keep the region tree;
GetView/AddView (a POSTed JSON body)/DelView the saved layouts. Every list holds only the cameras the
caller's role may see.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from supervisor.api.common import (
    Chapter,
    endpoint,
    ok,
    param,
    param_token,
    require_camera,
    services,
)
from supervisor.api.sources import listed_sources
from supervisor.auth import User
from supervisor.errors import BadValue, NotFound
from supervisor.organisation import ROOT

MAX_VIEW_BYTES = 64 * 1024


def _organisation(request: Request) -> Any:
    org = services(request).organisation
    assert org is not None
    return org


@endpoint()
async def get_src_camera(request: Request, user: User) -> Any:
    """GetSrc's list for the live view's camera tree (h5gate has no SDK devices: every source is a camera)."""
    return {"src": listed_sources(request, user)}


@endpoint()
async def get_region(request: Request, user: User) -> Any:
    svc = services(request)
    token = param(request, "token", required=False, default=ROOT, maxlen=64)
    tree = _organisation(request).tree(token, lambda cam: svc.auth.sees(user, cam) and cam in svc.registry.sources)
    return {"root": tree, "src": listed_sources(request, user, filters=False)}


@endpoint(role="Administrator")
async def add_region(request: Request, user: User) -> Any:
    name = param(request, "name", maxlen=128)
    parent = param(request, "parent", required=False, default=ROOT, maxlen=64)
    region = await _organisation(request).add_region(name, parent)
    return ok("Add region successfully", strToken=region.token, strName=region.name)


@endpoint(role="Administrator")
async def del_region(request: Request, user: User) -> Any:
    await _organisation(request).del_region(param(request, "token", maxlen=64))
    return ok("Delete region successfully")


@endpoint(role="Administrator")
async def add_region_cam(request: Request, user: User) -> Any:
    cam = param_token(request, "srctoken")
    if services(request).registry.get(cam) is None:
        raise NotFound(f"no such source: {cam}")
    await _organisation(request).add_region_cam(param(request, "regiontoken", maxlen=64), cam)
    return ok("Add camera successfully")


@endpoint(role="Administrator")
async def del_region_cam(request: Request, user: User) -> Any:
    cam = param_token(request, "srctoken")
    await _organisation(request).del_region_cam(param(request, "regiontoken", maxlen=64), cam)
    return ok("Delete camera successfully")


@endpoint()
async def get_view(request: Request, user: User) -> Any:
    svc = services(request)
    views = []
    for view in _organisation(request).views.values():
        panes = [p for p in view["src"] if svc.auth.sees(user, p["strToken"])]
        views.append({**view, "src": panes})
    return {"conf": views, "src": listed_sources(request, user, filters=False)}


@endpoint(role="Operator")
async def add_view(request: Request, user: User) -> Any:
    """POST body: {strName, strToken, strLayoutType, src:[{strIndex, strToken, strStream}]} (GET: ?view=<json>)."""
    if request.method == "POST":
        body = await request.body()
    else:
        body = param(request, "view", maxlen=MAX_VIEW_BYTES).encode()
    if len(body) > MAX_VIEW_BYTES:
        raise BadValue("view too large")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        raise BadValue("the view must be JSON") from None
    for pane in data.get("src", []) if isinstance(data, dict) and isinstance(data.get("src"), list) else []:
        if isinstance(pane, dict) and isinstance(pane.get("strToken"), str):
            require_camera(request, user, pane["strToken"])
    view = await _organisation(request).add_view(data)
    return ok("Add view successfully", strToken=view["strToken"])


@endpoint(role="Operator")
async def del_view(request: Request, user: User) -> Any:
    await _organisation(request).del_view(param(request, "token", maxlen=64))
    return ok("Delete view successfully")


async def start(svc: Any) -> None:
    from supervisor.organisation import Organisation

    org = Organisation(svc.db)
    await org.load()
    svc.organisation = org
    svc.registry.on_delete.append(org.forget_cam)


routes = [
    Route("/api/v1/GetSrcCamera", get_src_camera),
    Route("/api/v1/GetSrcWithoutDevice", get_src_camera),
    Route("/api/v1/GetRegion", get_region),
    Route("/api/v1/AddRegion", add_region),
    Route("/api/v1/DelRegion", del_region),
    Route("/api/v1/AddRegionCam", add_region_cam),
    Route("/api/v1/DelRegionCam", del_region_cam),
    Route("/api/v1/GetView", get_view),
    Route("/api/v1/AddView", add_view, methods=["GET", "POST"]),
    Route("/api/v1/DelView", del_view),
]
chapter = Chapter("organisation", routes, start=start)
