"""create_app(settings): routes, and the lifespan that owns the database, registry and background jobs."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import uuid
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from supervisor.api import common, sources, streams, system
from supervisor.auth import Auth
from supervisor.config import Settings
from supervisor.db import Database
from supervisor.registry import Registry
from workers.ffmpeg import find_ffmpeg
from workers.snapshot import SnapshotCache

log = logging.getLogger("h5gate")

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
# Optional API chapters; each exposes `routes` and may expose `install(app)` (before the sources load),
# `started(app)` (after) and `uninstall(app)`.
PAGES = {"/": "index.html", "/login": "login.html", "/addcamera": "addcamera.html", "/recordings": "recordings.html"}
OPTIONAL_MODULES = ("supervisor.api.onvif", "supervisor.api.records", "supervisor.api.webrtc")


def version() -> str:
    try:
        return metadata.version("h5gate")
    except metadata.PackageNotFoundError:
        return "0.0.0+source"


def _host_id(data_dir: Path) -> str:
    """A stable id for this installation (GetSystemInfo strHostId)."""
    path = data_dir / "host-id"
    if path.exists():
        return path.read_text().strip()
    value = str(uuid.uuid4())
    path.write_text(value)
    return value


def _optional_modules() -> list[Any]:
    found = []
    for name in OPTIONAL_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    return found


def create_app(settings: Settings) -> Starlette:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    extra = _optional_modules()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = app.state
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.media_store.mkdir(parents=True, exist_ok=True)
        db = Database(settings.db_path)
        await db.open()
        state.db = db
        state.auth = Auth(db, settings.login_timeout, settings.login_max_faults, settings.login_lock_seconds)
        await state.auth.load()
        ffmpeg = find_ffmpeg(settings.ffmpeg)
        log.info("using ffmpeg %s", ffmpeg)
        state.ffmpeg = ffmpeg
        state.host_id = await asyncio.to_thread(_host_id, settings.data_dir)
        state.registry = Registry(settings, db, ffmpeg)
        state.snapshots = SnapshotCache(ffmpeg, settings.image_cache_seconds)
        state.viewers = streams.Viewers(settings.send_timeout)
        state.run_info = system.RunInfo()
        state.background = []
        for module in extra:
            if hasattr(module, "install"):
                await module.install(app)
        await state.registry.load()
        for module in extra:
            if hasattr(module, "started"):
                await module.started(app)
        state.background.append(asyncio.create_task(_expire_sessions(state.auth)))
        log.info(
            "h5gate %s listening on %s:%d, data in %s", state.version, settings.host, settings.port, settings.data_dir
        )
        try:
            yield
        finally:
            for task in state.background:
                task.cancel()
            for module in extra:
                if hasattr(module, "uninstall"):
                    await module.uninstall(app)
            await state.registry.stop_all()
            await db.close()
            log.info("h5gate stopped")

    async def page(request: Request) -> Response:
        path = request.url.path
        return templates.TemplateResponse(request, PAGES[path], {"version": request.app.state.version, "page": path})

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return common.fail(exc.detail if exc.status_code != 404 else "not found", exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return common.fail("internal error", 500)

    routes: list[Any] = [
        *system.routes,
        *sources.routes,
        *streams.routes,
        *(r for module in extra for r in module.routes),
        *(Route(path, page) for path in PAGES),
        Mount("/static", StaticFiles(directory=str(TEMPLATES_DIR / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(
                CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["Authorization"]
            )
        ],
        exception_handlers={HTTPException: not_found, Exception: server_error},
    )
    app.state.settings = settings
    app.state.version = version()
    return app


async def _expire_sessions(auth: Auth) -> None:
    while True:
        await asyncio.sleep(60)
        dropped = auth.expire()
        if dropped:
            log.info("%d idle sessions expired", dropped)
