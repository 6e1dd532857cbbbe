"""What every REST endpoint shares: session check, role check, parameter validation, JSON answers.

Each endpoint is `async def handler(request, user) -> dict | Response` wrapped by `endpoint(role)`.
Domain code raises supervisor.errors families and the API layer itself raises ApiError (a parameter it
rejects, a missing session); `endpoint()` turns either into `{"bStatus": false, "strCode": ...}` with the
family's status from `STATUS`, the one place statuses are decided, so no handler answers with a stack trace.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from supervisor import errors
from supervisor.api.caching import NO_STORE
from supervisor.api.paths import VENDOR_FORM
from supervisor.services import Services

log = logging.getLogger("h5gate.api")

# WebSocket close codes, for every socket route: 1000 normal, 1008 policy (a viewer too slow), 1011 server
# error, 1013 try again later; 4xxx are ours, modelled on the HTTP status a REST call would get.
CLOSE_FORMAT_CHANGED = 4000  # the source's codec changed: reconnect for a new SourceBuffer
CLOSE_BAD_REQUEST = 4400  # a refused request (bad value, nothing found for it) or bad signalling
CLOSE_UNAUTHORIZED = 4401
CLOSE_UNKNOWN = 4404  # unknown token or profile
CLOSE_UNSUPPORTED = 4415  # what was asked for cannot be served this way (codec, feature turned off)

ROLES = ("Viewer", "Operator", "Administrator")  # role kinds: each may do what the ones before it may
TOKEN_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


Hook = Callable[[Services], Awaitable[None]]


async def _nothing(services: Services) -> None:
    """A chapter step with nothing to do."""


@dataclass(frozen=True)
class Chapter:
    """One chapter of the manual as app.py wires it: its routes and its steps in the server's life.

    app.py lists the chapters in order and calls, for each in that order: `start` before the sources
    load (put its service into Services, register registry hooks), `started` once they are loaded
    (work that needs the sources: resuming recordings), and `stop` at shutdown, before the sources stop.
    """

    name: str
    routes: Sequence[BaseRoute]
    start: Hook = _nothing
    started: Hook = _nothing
    stop: Hook = _nothing


def services(conn: HTTPConnection) -> Services:
    """The server's shared services, for a request or a WebSocket."""
    found = conn.app.state.services
    assert isinstance(found, Services)
    return found


class ApiError(Exception):
    """A request the server will not carry out; `code` is the human message clients show."""

    def __init__(self, code: str, status: int = 400) -> None:
        super().__init__(code)
        self.code = code
        self.status = status


# Domain error family -> HTTP status; the first family an error belongs to wins (subclasses come first).
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (errors.BadValue, 400),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Busy, 429),
    (errors.Forbidden, 403),
    (errors.Unavailable, 503),
    (errors.StorageError, 507),
    (errors.DeviceTimeout, 504),
    (errors.DeviceRefused, 400),
    (errors.DeviceError, 502),
    (errors.Misconfigured, 500),
)


def answer(exc: errors.DomainError) -> JSONResponse:
    """The one HTTP answer to a domain error: its message, and its family's status."""
    status = next((code for family, code in STATUS if isinstance(exc, family)), 400)
    return fail(exc.message, status)


def ok(message: str, **extra: Any) -> dict[str, Any]:
    return {"bStatus": True, "strCode": message, **extra}


def fail(code: str, status: int = 400, **extra: Any) -> JSONResponse:
    """A refusal in the manual's form; never stored by a cache (a 404 for a part asked too early included)."""
    return JSONResponse({"bStatus": False, "strCode": code, **extra}, status_code=status, headers=NO_STORE)


# Which API calls change state, in one place (issue #11, cross-site requests). A call listed False only
# reads, and the console's cookie alone may authenticate it (a page embedding a snapshot, a player); every
# other call, and any call not listed here (new calls are actions until classified), changes something and
# needs the session in the query or the Authorization header, which another site cannot know, and must not
# come from another site's page (Sec-Fetch-Site, Origin). HEAD never runs an action.
CHANGES_STATE: dict[str, bool] = {
    # reads
    "GetSrc": False,
    "GetImage": False,
    "GetLoadingImage": False,
    "GetPresets": False,
    "GetSystemInfo": False,
    "GetRunInfo": False,
    "GetUserInfo": False,
    "GetRecordStatus": False,
    "GetRecordConf": False,
    "GetRecordDuration": False,
    "GetStorageInfo": False,
    "GetArchiveStatus": False,
    "Search": False,
    "GetSrcCamera": False,
    "GetSrcWithoutDevice": False,
    "GetVidStreamStatus": False,
    "GetCodecInfo": False,
    "GetDeviceSummary": False,
    "GetLicEndTime": False,
    "GetVersion": False,
    "GetUserList": False,
    "GetRoleList": False,
    "GetRoleInfo": False,
    "GetRegion": False,
    "GetView": False,
    "GetAnonymousView": False,
    "GetLoginLockStatus": False,
    "GetTransProfile": False,
    "GetTransProfileDefault": False,
    "Keepalive": False,  # renews the idle timer only
    "Login": False,  # takes no session (a cookie makes no difference to it)
    "GetRedisConf": False,
    "GetEnableRedis": False,
    "ConnectRedisStatus": False,
    # actions
    "Logout": True,
    "UpdateUser": True,
    "AddSrcRTSP": True,
    "AddSrcFile": True,
    "AddSrcONVIF": True,
    "DelSrc": True,
    "Ptz": True,
    "SetPreset": True,
    "DelPreset": True,
    "OnvifProbe": True,  # sends requests to addresses the caller names
    "OnvifSearch": True,
    "Record": True,
    "ManualRecordStart": True,
    "ManualRecordStop": True,
    "PathRecord": True,
    "Snapshot": True,
    "PathSnapshot": True,
    "SetRecord": True,
    "SetRecordSchedule": True,
    "SetRecordQuota": True,
    "SetRecordConf": True,
    "SetRecordDuration": True,
    "ReindexRecords": True,
    "Archive": True,
    "ExportClip": True,
    "CreateUser": True,
    "DeleteUser": True,
    "CreateRole": True,
    "DeleteRole": True,
    "AddCamToRole": True,
    "DelCamInRole": True,
    "AddRegion": True,
    "DelRegion": True,
    "AddRegionCam": True,
    "DelRegionCam": True,
    "AddView": True,
    "DelView": True,
    "SetAnonymousView": True,
    "SetLoginLockStatus": True,
    "Restart": True,
    "AddRTMPPush": True,
    "UpdateSrcRTSP": True,
    "UpdateSrcFile": True,
    "UpdateSrcONVIF": True,
    "AddTransProfile": True,
    "DelTransProfile": True,
    "SetTransProfileDefault": True,
    # anything else, the vendor's calls h5gate answers as unsupported (api/unsupported.py) included,
    # counts as an action: they answer the same with the session in the query
}


def changes_state(path: str) -> bool:
    """Whether the API call at this path changes state (unknown calls do, until classified above)."""
    return CHANGES_STATE.get(path.rstrip("/").rsplit("/", 1)[-1], True)


def explicit_session(conn: HTTPConnection) -> bool:
    """Whether the session came in the query or the Authorization header, not only as the cookie."""
    return bool(conn.query_params.get("session")) or conn.headers.get("authorization", "")[:6].lower() == "token "


def cross_site(conn: HTTPConnection) -> bool:
    """Whether the browser says this request comes from another site's page (Sec-Fetch-Site, Origin)."""
    if conn.headers.get("sec-fetch-site", "").lower() == "cross-site":
        return True
    origin = conn.headers.get("origin")
    if origin is None:
        return False  # not a browser, or a same-origin GET (browsers send no Origin then)
    host = conn.headers.get("host", "")
    return origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower())


def check_action(request: Request) -> None:
    """ApiError unless this request may carry out a state-changing call (see CHANGES_STATE)."""
    if not changes_state(request.url.path):
        return
    if request.method == "HEAD":
        raise ApiError("HEAD does not carry out actions: use GET", 405)
    if cross_site(request):
        raise ApiError("refused: this action comes from another site's page", 403)
    if not explicit_session(request) and request.cookies.get("h5gate_session"):
        raise ApiError("actions need the session in the query (session=) or an Authorization header", 403)


def session_of(conn: HTTPConnection) -> str | None:
    """The session may come as ?session=, as `Authorization: token <s>`, or as the console's cookie."""
    s = conn.query_params.get("session")
    if s:
        return s
    auth = conn.headers.get("authorization", "")
    if auth[:6].lower() == "token ":
        return auth[6:].strip() or None
    return conn.cookies.get("h5gate_session") or None


async def require_user(conn: HTTPConnection, role: str = "Viewer") -> Any:
    """The logged-in user of this request or ApiError(401/403); renews the session's idle timer."""
    auth = services(conn).auth
    user = await auth.check(session_of(conn))
    if user is None and auth.shared is not None and not auth.clustered:
        raise ApiError("session unknown to this node while the cluster's Redis is unreachable: log in again", 401)
    if user is None:
        raise ApiError("session is missing, invalid or expired", 401)
    if not auth.may(user, role):
        raise ApiError(f"this needs the {role} role", 403)
    return user


def require_camera(conn: HTTPConnection, user: Any, token: str) -> None:
    """errors.NotFound unless the user's role has camera `token`: to them, a camera they may not see is absent."""
    if not services(conn).auth.sees(user, token):
        raise errors.NotFound(f"no such source: {token}")


def camera_param(conn: HTTPConnection, user: Any, name: str = "token") -> str:
    """A required camera token parameter that the user's role may see."""
    token = param_token(conn, name)
    require_camera(conn, user, token)
    return token


def visible(conn: HTTPConnection, user: Any, tokens: Any) -> list[str]:
    """The tokens of `tokens` that the user's role may see, in order."""
    auth = services(conn).auth
    return [t for t in tokens if auth.sees(user, t)]


Handler = Callable[[Request, Any], Awaitable[dict[str, Any] | Response]]


def endpoint(role: str | None = "Viewer") -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler with auth (role=None: no session needed) and error-to-JSON translation."""

    def wrap(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def run(request: Request) -> Response:
            try:
                if role:
                    check_action(request)
                user = await require_user(request, role) if role else None
                result = await fn(request, user)
            except ApiError as e:
                return vendor_status(request, fail(e.code, e.status))
            except errors.DomainError as e:
                return vendor_status(request, answer(e))
            except Exception:
                log.exception("endpoint %s failed", request.url.path)
                return vendor_status(request, fail("internal error", 500))
            if not isinstance(result, Response):  # a session's JSON answer: never replayed by a cache
                result = JSONResponse(result, headers=NO_STORE)
            return vendor_status(request, result)

        return run

    return wrap


def vendor_status(conn: HTTPConnection, response: Response) -> Response:
    """A failure in the vendor consoles' request form answers 200 (bStatus false carries it), except 401.

    Their axios interceptor rejects every other non-200 answer, and the page then shows nothing instead
    of its own message ("wrong password", "add failed"); 401 is what sends them to their login page.
    """
    if conn.scope.get(VENDOR_FORM) and response.status_code >= 400 and response.status_code != 401:
        response.status_code = 200
    return response


def param(
    request: HTTPConnection,
    name: str,
    *,
    required: bool = True,
    default: str = "",
    maxlen: int = 256,
    pattern: re.Pattern[str] | None = None,
) -> str:
    """One query parameter as text, length- and character-checked."""
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise ApiError(f"missing parameter: {name}")
        return default
    if len(value) > maxlen:
        raise ApiError(f"parameter too long: {name} (at most {maxlen} characters)")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ApiError(f"control characters are not allowed in {name}")
    if pattern is not None and not pattern.match(value):
        raise ApiError(f"invalid value for {name}")
    return value


def param_token(request: HTTPConnection, name: str = "token", *, required: bool = True) -> str:
    value = param(request, name, required=required, maxlen=64)
    if value and not TOKEN_RE.match(value):
        raise ApiError(f"invalid {name}: use 1-64 letters, digits, '_', '-' or '.'")
    if value in (".", ".."):
        raise ApiError(f"invalid {name}")
    return value


def param_bool(request: HTTPConnection, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    low = value.lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise ApiError(f"invalid value for {name}: use true or false")


def param_number(
    request: HTTPConnection,
    name: str,
    *,
    default: float | None = None,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
) -> float:
    value = request.query_params.get(name)
    if value is None or value == "":
        if default is None:
            raise ApiError(f"missing parameter: {name}")
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise ApiError(f"invalid number for {name}") from None
    if number != number or (low is not None and number < low) or (high is not None and number > high):
        raise ApiError(f"{name} out of range ({low} to {high})")
    return number
