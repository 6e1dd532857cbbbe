"""create_app(settings): the chapters in order, and the lifespan that builds the Services they share.

Like go2rtc's main.go calling each module's Init(), the wiring is a plain, ordered list (`CHAPTERS`): no
module is found by name or probed for hooks. The lifespan builds Services (database, auth, registry ...),
then calls every chapter's `start` in order, loads the sources, calls every `started` in order; at
shutdown every `stop` in the same order, then the sources stop and the database closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ExceptionHandler

from supervisor import rtmp_push, rtsp_serve
from supervisor.api import (
    audio,
    cloud,
    cluster,
    common,
    events,
    flv,
    hls,
    observe,
    onvif,
    organisation,
    records,
    rtc_push,
    settings_pages,
    sources,
    streams,
    system,
    transcoding,
    unsupported,
    users,
    webrtc,
)
from supervisor.api.paths import VendorPaths
from supervisor.auth import SESSION_FLUSH_SECONDS, USERS_POLL_SECONDS, Auth
from supervisor.conf_store import ConfStore
from supervisor.config import Settings
from supervisor.db import Database
from supervisor.metrics import RequestCounter, RequestCounts
from supervisor.registry import Registry
from supervisor.restart import Restarter
from supervisor.services import Services
from supervisor.version import version
from workers.ffmpeg import find_ffmpeg
from workers.snapshot import SnapshotCache

log = logging.getLogger("h5gate")

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
CONSOLE = "/console"  # h5gate's own console; `/` is the web root (a vendor console) when one is set
PAGES = {
    f"{CONSOLE}/": "index.html",
    f"{CONSOLE}/login": "login.html",
    f"{CONSOLE}/addcamera": "addcamera.html",
    f"{CONSOLE}/recordings": "recordings.html",
    f"{CONSOLE}/status": "status.html",
    f"{CONSOLE}/users": "users.html",
}
OLD_PAGES = {"/login": f"{CONSOLE}/login", "/addcamera": f"{CONSOLE}/addcamera", "/recordings": f"{CONSOLE}/recordings"}
# The manual's chapters, in the order their routes are matched and their steps run.
CHAPTERS: tuple[common.Chapter, ...] = (
    system.chapter,
    settings_pages.chapter,  # early: the stored settings apply before the other chapters start
    cluster.chapter,  # before users and sources: they share their state through it
    users.chapter,
    sources.chapter,
    organisation.chapter,
    streams.chapter,
    audio.chapter,
    hls.chapter,
    onvif.chapter,
    records.chapter,
    events.chapter,  # after records: it listens to the recorders
    webrtc.chapter,
    rtc_push.chapter,
    rtmp_push.chapter,
    flv.chapter,
    transcoding.chapter,
    rtsp_serve.chapter,
    observe.chapter,
    cloud.chapter,  # after records: it wraps playback for edge sources
    unsupported.chapter,
)


def _host_id(data_dir: Path) -> str:
    """A stable id for this installation (GetSystemInfo strHostId)."""
    path = data_dir / "host-id"
    if path.exists():
        return path.read_text().strip()
    value = str(uuid.uuid4())
    path.write_text(value)
    return value


def web_root(settings: Settings) -> Path | None:
    """The folder served at `/`, or None; a setting naming no folder stops the start with the reason."""
    if not settings.web_root:
        return None
    root = Path(settings.web_root).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"web_root {settings.web_root!r} is not a folder")
    return root


def create_app(settings: Settings, restarter: Restarter | None = None) -> Starlette:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    release = version()
    request_counts = RequestCounts()  # filled by the middleware, read by /metrics
    root = web_root(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.data_dir.chmod(0o700)  # the database, the key for camera secrets and recordings: owner only
        settings.media_store.mkdir(parents=True, exist_ok=True)
        db = Database(settings.db_path)
        await db.open()
        conf = ConfStore(db)
        auth = Auth(
            db,
            settings.login_timeout,
            settings.login_max_faults,
            settings.login_lock_seconds,
            conf,
            settings.login_fault_records,
        )
        await auth.load()
        ffmpeg = find_ffmpeg(settings.ffmpeg)
        log.info("using ffmpeg %s", ffmpeg)
        services = Services(
            settings=settings,
            version=release,
            host_id=await asyncio.to_thread(_host_id, settings.data_dir),
            ffmpeg=ffmpeg,
            db=db,
            auth=auth,
            registry=Registry(settings, db, ffmpeg),
            snapshots=SnapshotCache(ffmpeg, settings.image_cache_seconds),
            viewers=streams.Viewers(settings.send_timeout),
            run_info=system.RunInfo(),
            hls_viewers=streams.HlsViewers(max(15.0, 2.0 * settings.hls_duration * settings.hls_segment_num)),
            requests=request_counts,
            conf=conf,
            restart=restarter or Restarter(),
        )
        services.registry.on_delete.append(auth.forget_cam)  # a deleted camera leaves every role
        app.state.services = services
        services.app = app
        for chapter in CHAPTERS:
            await chapter.start(services)
        await services.registry.load()
        for chapter in CHAPTERS:
            await chapter.started(services)
        background = [asyncio.create_task(_expire_sessions(auth)), asyncio.create_task(_watch_users(auth))]
        # "listening on" comes from the CLI once the socket accepts connections (supervisor/cli.py).
        log.info("h5gate %s started, data in %s", release, settings.data_dir)
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await auth.flush_sessions()
            for chapter in CHAPTERS:
                await chapter.stop(services)
            await services.registry.stop_all()
            await db.close()
            log.info("h5gate stopped")

    async def page(request: Request) -> Response:
        path = request.url.path
        return templates.TemplateResponse(request, PAGES[path], {"version": release, "page": path, "base": CONSOLE})

    async def favicon(request: Request) -> Response:
        """Browsers ask every site for /favicon.ico whatever the page links; answer it rather than 404."""
        return FileResponse(TEMPLATES_DIR / "static" / "favicon.ico", media_type="image/x-icon")

    async def moved(request: Request) -> Response:
        """The console's old addresses (before the web root took `/`) still lead to its pages."""
        target = OLD_PAGES.get(request.url.path, f"{CONSOLE}/")
        query = request.url.query
        return RedirectResponse(target + (f"?{query}" if query else ""), status_code=307)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        answer = common.fail(exc.detail if exc.status_code != 404 else "not found", exc.status_code)
        return common.vendor_status(request, answer) if request.url.path.startswith("/api/") else answer

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return common.fail("internal error", 500)

    own_static = StaticFiles(directory=str(TEMPLATES_DIR / "static"))
    routes: list[Any] = [
        *(route for chapter in CHAPTERS for route in chapter.routes),
        *(Route(path, page) for path in PAGES),
        Route(CONSOLE, moved),
        *(Route(path, moved) for path in OLD_PAGES),
        Mount(f"{CONSOLE}/static", own_static, name="static"),
    ]
    if root is None or not (root / "favicon.ico").is_file():  # a web root's own icon wins
        routes.append(Route("/favicon.ico", favicon))
    if root is not None:  # the web root owns every other path, `/static/...` of a vendor console included
        routes.append(Mount("/", StaticFiles(directory=str(root), html=True), name="webroot"))
    else:
        routes += [Route("/", moved), Mount("/static", own_static, name="old-static")]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            Middleware(VendorPaths),  # first: every later layer sees the mended path
            Middleware(RequestCounter, counts=request_counts),
            Middleware(
                CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["Authorization"]
            ),
            Middleware(cloud.CloudForward),  # a call for a cloud edge goes over its link, not to the local route
        ],
        # Starlette calls each handler with the exception class it is registered for.
        exception_handlers={HTTPException: cast(ExceptionHandler, not_found), Exception: server_error},
    )
    return app


async def _expire_sessions(auth: Auth) -> None:
    """Every SESSION_FLUSH_SECONDS: drop idle sessions and old failure records, save renewed sessions."""
    while True:
        await asyncio.sleep(SESSION_FLUSH_SECONDS)
        try:
            dropped = auth.expire()
            if dropped:
                log.info("%d idle sessions expired", dropped)
            await auth.flush_sessions()
        except Exception:
            log.exception("session upkeep failed")


async def _watch_users(auth: Auth) -> None:
    """`h5gate passwd` writes the database from another process: pick its change up within a second."""
    while True:
        await asyncio.sleep(USERS_POLL_SECONDS)
        try:
            if await auth.reload_if_changed():
                log.info("users re-read: the database was changed by another process")
        except Exception:
            log.exception("re-reading users failed")
