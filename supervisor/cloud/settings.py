"""This server's registration with a centre: the SetCloudInfo form, or the config file's cloud_* settings.

The form, once saved (ConfStore section "cloud", the consoles' field names), wins over the config file,
as the consoles' other settings pages do; until then the config file's values are shown and used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supervisor.cloud.protocol import LINK_PATH
from supervisor.config import Settings


@dataclass(frozen=True)
class CloudConf:
    enable: bool = False
    server_name: str = ""
    server_token: str = ""
    cloud_ip: str = ""
    cloud_port: int = 8080
    ssl: bool = False
    user: str = ""
    password: str = ""  # MD5 hex of the centre user's password
    keepalive: int = 3
    edge_transcoding: bool = False

    @classmethod
    def from_settings(cls, s: Settings) -> CloudConf:
        return cls(
            s.cloud_enable,
            s.cloud_server_name,
            s.cloud_server_token,
            s.cloud_ip,
            s.cloud_port,
            s.cloud_ssl,
            s.cloud_user,
            s.cloud_password.lower(),
            s.cloud_keepalive,
            s.cloud_edge_transcoding,
        )

    @classmethod
    def from_form(cls, form: dict[str, Any]) -> CloudConf:
        """From the stored form (the consoles' field names, as GetCloudClientInfo shows them)."""
        return cls(
            bool(form.get("bEnable")),
            str(form.get("strServerName", "")),
            str(form.get("strServerToken", "")),
            str(form.get("strCloudIp", "")),
            int(form.get("strCloudPort") or 8080),
            bool(form.get("bSSL")),
            str(form.get("strUser", "")),
            str(form.get("strPasswd", "")).lower(),
            int(form.get("nKeepaliveTime") or 3),
            bool(form.get("bEdgeTranscoding")),
        )

    def form(self) -> dict[str, Any]:
        return {
            "bEnable": self.enable,
            "strServerName": self.server_name,
            "strServerToken": self.server_token,
            "strCloudIp": self.cloud_ip,
            "strCloudPort": str(self.cloud_port),
            "bSSL": self.ssl,
            "strUser": self.user,
            "strPasswd": self.password,
            "nKeepaliveTime": self.keepalive,
            "bEdgeTranscoding": self.edge_transcoding,
        }

    @property
    def usable(self) -> str:
        """Why the link cannot be tried with these values ("" when it can)."""
        if not self.enable:
            return "cloud is disabled"
        missing = [n for n, v in (("servertoken", self.server_token), ("cloudip", self.cloud_ip)) if not v]
        missing += [n for n, v in (("user", self.user), ("password", self.password)) if not v]
        return f"missing {', '.join(missing)}" if missing else ""

    @property
    def url(self) -> str:
        host = f"[{self.cloud_ip}]" if ":" in self.cloud_ip else self.cloud_ip
        return f"{'wss' if self.ssl else 'ws'}://{host}:{self.cloud_port}{LINK_PATH}"


def current(settings: Settings, stored: Any) -> CloudConf:
    """The registration in force: the saved form when there is one, else the config file's."""
    if isinstance(stored, dict):
        return CloudConf.from_form(stored)
    return CloudConf.from_settings(settings)
