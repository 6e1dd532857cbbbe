"""The cloud chapter's service: this server as an edge (its link to a centre) and as a centre (its edges).

Every server is both at once, as in H5Stream: the centre side costs nothing until an edge connects, and
the edge side runs only while cloud is enabled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.cloud import settings as cloud_settings
from supervisor.cloud.centre import Centre
from supervisor.cloud.edge import EdgeClient
from supervisor.cloud.settings import CloudConf

if TYPE_CHECKING:
    from supervisor.services import Services

CONF_KEY = "cloud"  # the SetCloudInfo form in the ConfStore (the consoles' field names)


class CloudService:
    def __init__(self, services: Services) -> None:
        self.svc = services
        self.edge = EdgeClient(services, self.conf)
        self.centre = Centre(services)

    @property
    def conf(self) -> CloudConf:
        return cloud_settings.current(self.svc.settings, self.svc.conf.get(CONF_KEY))

    async def start(self) -> None:
        await self.centre.load()
        self.edge.start()

    async def stop(self) -> None:
        await self.edge.stop()
        for edge in self.centre.edges.values():
            if edge.link is not None:
                edge.link.close("this server is stopping")

    async def set_conf(self, conf: CloudConf) -> None:
        await self.svc.conf.set(CONF_KEY, conf.form())
        await self.edge.configure(conf)
