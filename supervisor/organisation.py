"""Regions (a tree of named folders holding cameras) and saved live views, as the vendor consoles keep them.

The region tree is what the consoles' live view and region settings draw; its root has the token
"root". A saved view is a layout ("2|2") and which camera/stream goes into which pane; it is kept as
the JSON the console posts, after checking its shape. Both are stored in the database.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from supervisor.db import Database
from supervisor.errors import BadValue, NotFound

log = logging.getLogger("h5gate.organisation")

ROOT = "root"
NAME_MAX = 128
TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LAYOUT_RE = re.compile(r"^\d{1,2}\|\d{1,2}$")
MAX_VIEW_PANES = 64


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > NAME_MAX or any(ord(c) < 32 for c in name):
        raise BadValue(f"invalid name: 1-{NAME_MAX} printable characters")
    return name


@dataclass
class Region:
    token: str
    name: str
    parent: str
    cams: list[str] = field(default_factory=list)


class Organisation:
    def __init__(self, db: Database, root_name: str = "Root") -> None:
        self.db = db
        self.root_name = root_name
        self.regions: dict[str, Region] = {}
        self.views: dict[str, dict[str, Any]] = {}

    async def load(self) -> None:
        self.regions = {ROOT: Region(ROOT, self.root_name, "")}
        for row in await self.db.fetchall("SELECT token, name, parent FROM regions ORDER BY created"):
            self.regions[row["token"]] = Region(row["token"], row["name"], row["parent"])
        for row in await self.db.fetchall("SELECT region, cam FROM region_cams ORDER BY rowid"):
            if row["region"] in self.regions:
                self.regions[row["region"]].cams.append(row["cam"])
        self.views = {}
        for row in await self.db.fetchall("SELECT token, config FROM views ORDER BY created"):
            try:
                self.views[row["token"]] = json.loads(row["config"])
            except ValueError:
                log.error("skipping an unreadable view %s", row["token"])

    # ------------------------------------------------------------------ regions

    def children(self, token: str) -> list[Region]:
        return [r for r in self.regions.values() if r.parent == token and r.token != ROOT]

    def region(self, token: str) -> Region:
        region = self.regions.get(token)
        if region is None:
            raise NotFound(f"no such region: {token}")
        return region

    def tree(self, token: str, visible: Any) -> dict[str, Any]:
        """A region and everything under it in the consoles' shape: {strName, strToken, cam, node}."""
        region = self.region(token)
        return {
            "strName": region.name,
            "strToken": region.token,
            "cam": [{"strToken": c} for c in region.cams if visible(c)],
            "node": [self.tree(child.token, visible) for child in self.children(token)],
        }

    async def add_region(self, name: str, parent: str) -> Region:
        name = check_name(name)
        self.region(parent)
        token = uuid.uuid4().hex[:16]
        await self.db.execute(
            "INSERT INTO regions (token, name, parent, created) VALUES (?, ?, ?, ?)", (token, name, parent, time.time())
        )
        region = self.regions[token] = Region(token, name, parent)
        log.info("region %s (%s) added under %s", token, name, parent)
        return region

    async def del_region(self, token: str) -> None:
        if token == ROOT:
            raise BadValue("the root region cannot be deleted")
        self.region(token)
        doomed = [token]
        for current in doomed:  # grows while walking: the whole subtree
            doomed.extend(child.token for child in self.children(current))
        for t in doomed:
            await self.db.execute("DELETE FROM region_cams WHERE region = ?", (t,))
            await self.db.execute("DELETE FROM regions WHERE token = ?", (t,))
            del self.regions[t]
        log.info("region %s deleted (%d with its subregions)", token, len(doomed))

    async def add_region_cam(self, region: str, cam: str) -> None:
        target = self.region(region)
        if cam in target.cams:
            return
        await self.db.execute("INSERT OR IGNORE INTO region_cams (region, cam) VALUES (?, ?)", (region, cam))
        target.cams.append(cam)

    async def del_region_cam(self, region: str, cam: str) -> None:
        target = self.region(region)
        if cam not in target.cams:
            raise NotFound(f"camera {cam} is not in region {region}")
        await self.db.execute("DELETE FROM region_cams WHERE region = ? AND cam = ?", (region, cam))
        target.cams.remove(cam)

    async def forget_cam(self, cam: str) -> None:
        """A source was deleted: it leaves every region (views keep their panes; the console skips unknowns)."""
        await self.db.execute("DELETE FROM region_cams WHERE cam = ?", (cam,))
        for region in self.regions.values():
            if cam in region.cams:
                region.cams.remove(cam)

    # ------------------------------------------------------------------ views

    @staticmethod
    def check_view(data: Any) -> dict[str, Any]:
        """The posted view, reduced to the fields the consoles use, each checked."""
        if not isinstance(data, dict):
            raise BadValue("a view is a JSON object")
        token = str(data.get("strToken") or uuid.uuid4().hex[:16])
        if not TOKEN_RE.match(token):
            raise BadValue("invalid strToken")
        layout = str(data.get("strLayoutType", "2|2"))
        if not LAYOUT_RE.match(layout):
            raise BadValue("invalid strLayoutType: use rows|cols such as 2|2")
        panes = data.get("src", [])
        if not isinstance(panes, list) or len(panes) > MAX_VIEW_PANES:
            raise BadValue(f"src must be a list of at most {MAX_VIEW_PANES} panes")
        src = []
        for pane in panes:
            if not isinstance(pane, dict) or not TOKEN_RE.match(str(pane.get("strToken", ""))):
                raise BadValue("each pane needs a valid strToken")
            stream = str(pane.get("strStream", "main"))
            if not TOKEN_RE.match(stream):
                raise BadValue("invalid strStream")
            src.append(
                {"strIndex": str(pane.get("strIndex", ""))[:16], "strToken": pane["strToken"], "strStream": stream}
            )
        return {
            "strName": check_name(str(data.get("strName", ""))),
            "strToken": token,
            "strLayoutType": layout,
            "src": src,
        }

    async def add_view(self, data: Any) -> dict[str, Any]:
        view = self.check_view(data)
        await self.db.execute(
            "INSERT INTO views (token, config, created) VALUES (?, ?, ?) "
            "ON CONFLICT(token) DO UPDATE SET config = excluded.config",
            (view["strToken"], json.dumps(view), time.time()),
        )
        self.views[view["strToken"]] = view
        log.info("view %s (%s) saved", view["strToken"], view["strName"])
        return view

    async def del_view(self, token: str) -> None:
        if token not in self.views:
            raise NotFound(f"no such view: {token}")
        await self.db.execute("DELETE FROM views WHERE token = ?", (token,))
        del self.views[token]
        log.info("view %s deleted", token)
