"""The installed version, without importing the server (so `h5gate --version` answers at once)."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    try:
        return metadata.version("h5gate")
    except metadata.PackageNotFoundError:
        return "0.0.0+source"
