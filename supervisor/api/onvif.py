"""Manual §5.3/§5.4, ONVIF: OnvifSearch, OnvifProbe, AddSrcONVIF, Ptz, GetPresets, SetPreset, DelPreset.

Device work goes through the supervisor.onvif client library (async, deadline-bound), whose errors carry fixed,
credential-free messages; `device_errors()` turns them into domain errors (supervisor.errors), which
become `{"bStatus": false, "strCode": ...}` in api/common. The chapter's `start` registers
the URL resolver the registry calls before every ffmpeg (re)start, so a stream that fails is re-resolved
from the device and a camera that changes its stream URI is followed without anyone re-adding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from supervisor import errors
from supervisor.api.common import (
    ApiError,
    Chapter,
    camera_param,
    endpoint,
    ok,
    param,
    param_bool,
    param_number,
    param_token,
    services,
)
from supervisor.api.onvif_fields import device_fields, preset_fields, profile_fields
from supervisor.api.sources import CONNECT_ALIASES, RTSP_TYPE_ALIASES
from supervisor.onvif import (
    DEFAULT_ONVIF_ADDR,
    DeviceAddress,
    DeviceAuthError,
    DevicePool,
    DeviceRefused,
    DeviceTimeout,
    NotSupported,
    OnvifDevice,
    OnvifError,
    discover,
    pick_profiles,
    probe,
    start_prewarm,
)
from supervisor.registry import RTSP_TYPES, SourceConfig
from supervisor.services import Services
from workers.credentials import strip_credentials, with_credentials

log = logging.getLogger("h5gate.onvif")

HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*|\[?[0-9A-Fa-f:.]{2,45}\]?)$")
PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,255}$")
ONVIF_TOKEN_RE = re.compile(r"^\S{1,64}$")  # ONVIF ReferenceToken: up to 64 characters
SEARCH_DEFAULT_SECONDS = 10.0
SNAPSHOT_SECONDS = 5.0  # GetImage of an offline camera must not hang for the whole ONVIF timeout
# action -> (pan, tilt, zoom) direction of a ContinuousMove
MOVES = {
    "up": (0, 1, 0),
    "down": (0, -1, 0),
    "left": (-1, 0, 0),
    "right": (1, 0, 0),
    "upleft": (-1, 1, 0),
    "upright": (1, 1, 0),
    "downleft": (-1, -1, 0),
    "downright": (1, -1, 0),
    "zoomin": (0, 0, 1),
    "zoomout": (0, 0, -1),
}
UNSUPPORTED_ACTIONS = ("lighton", "lightoff", "wiperon", "wiperoff")


@dataclass
class OnvifState:
    """What the ONVIF chapter keeps per server: logged-in devices and the last good URI per stream."""

    pool: DevicePool
    last_uri: dict[tuple[str, str], tuple[DeviceAddress, str]] = field(default_factory=dict)
    prewarm: asyncio.Task[None] | None = None


def _state(request: Request) -> OnvifState:
    svc = services(request)
    if svc.onvif is None:  # the chapter's start() not run: build it now
        svc.onvif = OnvifState(DevicePool(_timeout(svc)))
    return svc.onvif


def _timeout(svc: Services) -> float:
    return float(svc.settings.onvif_timeout)


def domain_error(e: OnvifError) -> errors.DeviceError:
    """The domain family of a device failure, with the same safe message."""
    if isinstance(e, DeviceTimeout):
        return errors.DeviceTimeout(e.message)
    if isinstance(e, DeviceAuthError | DeviceRefused | NotSupported):
        return errors.DeviceRefused(e.message)
    return errors.DeviceError(e.message)


@contextlib.contextmanager
def device_errors() -> Iterator[None]:
    """OnvifError -> its domain error (see domain_error)."""
    try:
        yield
    except OnvifError as e:
        raise domain_error(e) from None


def address_of(cfg: SourceConfig) -> DeviceAddress:
    return DeviceAddress(cfg.ip, int(cfg.port or 80), cfg.onvif_addr or DEFAULT_ONVIF_ADDR, cfg.user, cfg.password)


def _device_params(request: Request) -> DeviceAddress:
    ip = param(request, "ip", maxlen=255, pattern=HOST_RE).strip("[]")
    port = int(param_number(request, "port", default=80, low=1, high=65535, integer=True))
    onvif_addr = param(request, "onvifaddr", required=False, default=DEFAULT_ONVIF_ADDR, maxlen=256)
    if not PATH_RE.match(onvif_addr):
        raise ApiError("invalid onvifaddr: a path such as /onvif/device_service")
    user = param(request, "user", required=False, maxlen=128)
    password = param(request, "password", required=False, maxlen=128)
    return DeviceAddress(ip, port, onvif_addr, user, password)


# -- registry hooks --------------------------------------------------------------------------------------
async def resolve_url(state: OnvifState, cfg: SourceConfig, which: str) -> str:
    """The RTSP URL (with credentials) of a source's main/sub profile, asked fresh from the device.

    Called before every ffmpeg (re)start. With automatic profiles the choice is re-made each time, so a
    reconfigured camera is followed. If the device does not answer, the last URI it gave is reused
    (its RTSP server may well be up while its ONVIF service is not).
    """
    addr = address_of(cfg)
    device = await state.pool.get(cfg.token, addr)
    try:
        profiles = await device.media.profiles(refresh=True)
        main, sub = pick_profiles(
            profiles, "" if cfg.profile_auto else cfg.profile_main, "" if cfg.profile_auto else cfg.profile_sub
        )
        chosen = sub if which == "sub" else main
        uri = await device.media.stream_uri(chosen.token)
    except OnvifError as e:
        last = state.last_uri.get((cfg.token, which))
        if last is None or last[0] != addr:
            raise
        log.warning("%s/%s: ONVIF resolution failed (%s); reusing the last stream URI", cfg.token, which, e.message)
        return with_credentials(last[1], cfg.user, cfg.password)
    clean = strip_credentials(uri)
    if cfg.profile_auto:
        cfg.profile_main, cfg.profile_sub = main.token, sub.token
    if which == "sub":
        cfg.url_sub = clean
    else:
        cfg.url = clean
    previous = state.last_uri.get((cfg.token, which))
    state.last_uri[(cfg.token, which)] = (addr, clean)
    if previous is None or previous[1] != clean:
        log.info("%s/%s: ONVIF profile %s -> %s", cfg.token, which, chosen.token, clean)
    return with_credentials(uri, cfg.user, cfg.password)


async def snapshot_fallback(state: OnvifState, cfg: SourceConfig) -> bytes | None:
    """The device's own snapshot (GetSnapshotUri) for GetImage while the stream is offline; never raises."""
    try:
        async with asyncio.timeout(min(SNAPSHOT_SECONDS, state.pool.timeout)):
            device = await state.pool.get(cfg.token, address_of(cfg))
            token = cfg.profile_main
            if not token:
                token = pick_profiles(await device.media.profiles())[0].token
            return await device.media.snapshot(token)
    except (OnvifError, TimeoutError) as e:
        log.info("%s: no ONVIF snapshot (%s)", cfg.token, getattr(e, "message", "timed out"))
        return None


async def start(svc: Services) -> None:
    """Before the sources load: register the H5_ONVIF hooks."""
    state = svc.onvif = OnvifState(DevicePool(_timeout(svc)))
    registry = svc.registry

    async def resolver(cfg: SourceConfig, which: str) -> str:
        return await resolve_url(state, cfg, which)

    async def fallback(cfg: SourceConfig) -> bytes | None:
        return await snapshot_fallback(state, cfg)

    registry.url_resolvers["H5_ONVIF"] = resolver
    registry.snapshot_fallbacks["H5_ONVIF"] = fallback
    state.prewarm = start_prewarm()


async def stop(svc: Services) -> None:
    state = svc.onvif
    if state is not None:
        if state.prewarm is not None:
            state.prewarm.cancel()
        await state.pool.close()


# -- §5.4 discovery and probe -------------------------------------------------------------------------
@endpoint(role="Administrator")
async def onvif_search(request: Request, user: Any) -> Any:
    seconds = param_number(request, "timeout", default=SEARCH_DEFAULT_SECONDS, low=0.2, high=60)
    settings = services(request).settings
    try:
        devices = await discover(settings.onvif_discovery_target, seconds)
    except ValueError as e:
        log.error("ONVIF search: bad onvif_discovery_target setting: %s", e)
        raise errors.Misconfigured("ONVIF search is misconfigured on this server (onvif_discovery_target)") from None
    except OSError as e:
        log.warning("ONVIF search via %s failed: %s", settings.onvif_discovery_target, e.strerror or e)
        raise errors.DeviceError(f"ONVIF search failed: {e.strerror or 'network error'}") from None
    return {"device": [device_fields(d) for d in devices]}


@endpoint(role="Administrator")
async def onvif_probe(request: Request, user: Any) -> Any:
    addr = _device_params(request)
    with device_errors():
        profiles = await probe(addr, _timeout(services(request)))
    return {"bStatus": True, "profile": [profile_fields(p) for p in profiles]}


# -- §5.3 ONVIF sources ----------------------------------------------------------------------------------
@endpoint(role="Administrator")
async def add_src_onvif(request: Request, user: Any) -> Any:
    token = param_token(request)
    name = param(request, "name", required=False, default=token, maxlen=128)
    addr = _device_params(request)
    main = param(request, "main", required=False, maxlen=64, pattern=ONVIF_TOKEN_RE)
    sub = param(request, "sub", required=False, maxlen=64, pattern=ONVIF_TOKEN_RE)
    connect = param(request, "connecttype", required=False, default="H5_ALWAYS", maxlen=16)
    rtsp_type = param(request, "rtsptype", required=False, default="H5_RTSP_AUTO", maxlen=16)
    rtsp_type = RTSP_TYPE_ALIASES.get(rtsp_type.lower(), rtsp_type)
    if rtsp_type not in RTSP_TYPES:
        raise ApiError(f"invalid rtsptype: use one of {', '.join(RTSP_TYPES)}")
    registry = services(request).registry
    if registry.get(token) is not None:
        raise errors.Conflict(f"token already exists: {token}")
    cfg = SourceConfig(
        token=token,
        name=name,
        kind="H5_ONVIF",
        url=addr.device_url,
        user=addr.user,
        password=addr.password,
        audio=param_bool(request, "audio", True),
        rtsp_type=rtsp_type,
        connect_type=CONNECT_ALIASES.get(connect.lower(), connect),
        ip=addr.ip,
        port=str(addr.port),
        onvif_addr=addr.onvif_addr,
        profile_main=main,
        profile_sub=sub,
        profile_auto=not main,
    )
    await _describe(request, cfg, addr)
    try:
        await registry.add(cfg)
    except BaseException:
        await _state(request).pool.drop(token)
        raise
    log.info(
        "%s: ONVIF source added (%s, profiles %s/%s%s)",
        token,
        addr.label,
        cfg.profile_main or "?",
        cfg.profile_sub or "?",
        ", auto" if cfg.profile_auto else "",
    )
    return ok("Add successfully")


@endpoint(role="Administrator")
async def update_src_onvif(request: Request, user: Any) -> Any:
    """Edit an ONVIF source: device address, credentials, profiles, name, audio; what is not given stays.

    An empty password keeps the stored one (GetSrc never shows it). Giving `main` (and `sub`) picks the
    profiles; `profileauto=true` goes back to automatic; neither keeps the current choice. The device is
    asked again, as on AddSrcONVIF, then the registry swaps the source under the same token.
    """
    token = param_token(request)
    registry = services(request).registry
    runtime = registry.get(token)
    if runtime is None:
        raise errors.NotFound(f"no such source: {token}")
    old: SourceConfig = runtime.config
    if old.kind != "H5_ONVIF":
        raise ApiError(f"source {token} is of type {old.kind}, not H5_ONVIF")
    ip = param(request, "ip", required=False, default=old.ip, maxlen=255, pattern=HOST_RE).strip("[]")
    port = int(param_number(request, "port", default=float(old.port or 80), low=1, high=65535, integer=True))
    onvif_addr = param(request, "onvifaddr", required=False, default=old.onvif_addr or DEFAULT_ONVIF_ADDR, maxlen=256)
    if not PATH_RE.match(onvif_addr):
        raise ApiError("invalid onvifaddr: a path such as /onvif/device_service")
    device_user = old.user if "user" not in request.query_params else param(request, "user", required=False, maxlen=128)
    password = param(request, "password", required=False, default=old.password, maxlen=128)
    addr = DeviceAddress(ip, port, onvif_addr, device_user, password)
    main = param(request, "main", required=False, maxlen=64, pattern=ONVIF_TOKEN_RE)
    sub = param(request, "sub", required=False, maxlen=64, pattern=ONVIF_TOKEN_RE)
    auto = not main and param_bool(request, "profileauto", old.profile_auto)
    if auto:
        sub = ""
    elif not main:  # keep the current manual choice
        main, sub = old.profile_main, old.profile_sub
    rtsp_type = param(request, "rtsptype", required=False, default=old.rtsp_type, maxlen=16)
    rtsp_type = RTSP_TYPE_ALIASES.get(rtsp_type.lower(), rtsp_type)
    if rtsp_type not in RTSP_TYPES:
        raise ApiError(f"invalid rtsptype: use one of {', '.join(RTSP_TYPES)}")
    connect = param(request, "connecttype", required=False, default=old.connect_type, maxlen=16)
    cfg = dataclasses.replace(
        old,
        name=param(request, "name", required=False, default=old.name, maxlen=128),
        url=addr.device_url,
        url_sub="",
        user=addr.user,
        password=addr.password,
        audio=param_bool(request, "audio", old.audio),
        rtsp_type=rtsp_type,
        connect_type=CONNECT_ALIASES.get(connect.lower(), connect),
        ip=addr.ip,
        port=str(addr.port),
        onvif_addr=addr.onvif_addr,
        profile_main=main,
        profile_sub=sub,
        profile_auto=auto,
    )
    await _state(request).pool.drop(token)  # the next use connects with the new address and credentials
    await _describe(request, cfg, addr)
    await registry.replace(cfg)
    log.info("%s: ONVIF source edited (%s)", token, addr.label)
    return ok("Update successfully")


async def _describe(request: Request, cfg: SourceConfig, addr: DeviceAddress) -> None:
    """Fill profile tokens and display URLs from the device; an unreachable device is added anyway.

    Wrong credentials or a profile token the device does not have are refused now, because they
    would never start working by themselves; a device that is merely down will be retried.
    """
    state = _state(request)
    device = await state.pool.get(cfg.token, addr)
    try:
        profiles = await device.media.profiles(refresh=True)
        main, sub = pick_profiles(profiles, cfg.profile_main, cfg.profile_sub)
        cfg.profile_main = main.token
        if cfg.profile_auto or cfg.profile_sub:
            cfg.profile_sub = sub.token
        cfg.url = strip_credentials(await device.media.stream_uri(main.token))
        if cfg.profile_sub and sub.token != main.token:
            cfg.url_sub = strip_credentials(await device.media.stream_uri(sub.token))
    except (DeviceAuthError, DeviceRefused) as e:
        await state.pool.drop(cfg.token)
        raise domain_error(e) from None
    except OnvifError as e:
        log.warning(
            "%s: ONVIF device %s not usable now (%s); adding it anyway, it will be retried",
            cfg.token,
            addr.label,
            e.message,
        )


def _onvif_source(request: Request, user: Any) -> SourceConfig:
    token = camera_param(request, user)
    runtime = services(request).registry.get(token)
    if runtime is None:
        raise errors.NotFound(f"no such source: {token}")
    cfg: SourceConfig = runtime.config
    if cfg.kind != "H5_ONVIF":
        raise ApiError("this source has no PTZ: it is not an ONVIF camera (add it with AddSrcONVIF)")
    return cfg


async def _device(request: Request, cfg: SourceConfig) -> OnvifDevice:
    return await _state(request).pool.get(cfg.token, address_of(cfg))


@endpoint(role="Operator")
async def ptz(request: Request, user: Any) -> Any:
    cfg = _onvif_source(request, user)
    action = param(request, "action", maxlen=16).lower()
    if action in UNSUPPORTED_ACTIONS:
        raise ApiError(f"action {action} is not supported for ONVIF cameras")
    if action not in MOVES and action not in ("stop", "preset", "focusin", "focusout", "irisin", "irisout"):
        raise ApiError(
            "invalid action: use up, down, left, right, upleft, upright, downleft, downright, "
            "zoomin, zoomout, stop, focusin, focusout, irisin, irisout or preset"
        )
    speed = param_number(request, "speed", default=0.5, low=0.0, high=1.0)
    preset = param(request, "preset", maxlen=64, pattern=ONVIF_TOKEN_RE) if action == "preset" else ""
    device = await _device(request, cfg)
    started = time.monotonic()
    with device_errors():
        if action in MOVES:
            pan, tilt, zoom = (speed * d for d in MOVES[action])
            await device.ptz.move(cfg.profile_main, pan, tilt, zoom)
        elif action == "stop":
            await device.stop(cfg.profile_main)
        elif action == "preset":
            await device.ptz.goto_preset(cfg.profile_main, preset)
        elif action.startswith("focus"):
            await device.imaging.focus(cfg.profile_main, speed if action == "focusin" else -speed)
        else:
            step = 1.0 + 4.0 * speed  # dB per click
            await device.imaging.iris(cfg.profile_main, step if action == "irisin" else -step)
    log.info(
        "%s: ptz %s%s (%.0f ms)", cfg.token, action, f" {preset}" if preset else "", (time.monotonic() - started) * 1000
    )
    return ok("PTZ successfully")


@endpoint()
async def get_presets(request: Request, user: Any) -> Any:
    cfg = _onvif_source(request, user)
    device = await _device(request, cfg)
    with device_errors():
        presets = await device.ptz.presets(cfg.profile_main)
    return {"bStatus": True, "preset": [preset_fields(p) for p in presets]}


@endpoint(role="Operator")
async def set_preset(request: Request, user: Any) -> Any:
    cfg = _onvif_source(request, user)
    name = param(request, "presetname", required=False, maxlen=64)
    token = param(request, "presettoken", required=False, maxlen=64, pattern=ONVIF_TOKEN_RE)
    device = await _device(request, cfg)
    with device_errors():
        new_token = await device.ptz.set_preset(cfg.profile_main, name, token)
    log.info("%s: preset %s set (%s)", cfg.token, new_token, name or "no name")
    return ok("Set preset successfully", strToken=new_token)


@endpoint(role="Operator")
async def del_preset(request: Request, user: Any) -> Any:
    cfg = _onvif_source(request, user)
    token = param(request, "presettoken", maxlen=64, pattern=ONVIF_TOKEN_RE)
    device = await _device(request, cfg)
    with device_errors():
        await device.ptz.remove_preset(cfg.profile_main, token)
    log.info("%s: preset %s deleted", cfg.token, token)
    return ok("Delete preset successfully")


routes = [
    Route("/api/v1/OnvifSearch", onvif_search),
    Route("/api/v1/OnvifProbe", onvif_probe),
    Route("/api/v1/AddSrcONVIF", add_src_onvif),
    Route("/api/v1/UpdateSrcONVIF", update_src_onvif),
    Route("/api/v1/Ptz", ptz),
    Route("/api/v1/GetPresets", get_presets),
    Route("/api/v1/SetPreset", set_preset),
    Route("/api/v1/DelPreset", del_preset),
]
chapter = Chapter("onvif", routes, start=start, stop=stop)
