"""Users and roles as the vendor consoles manage them: users, roles with cameras, anonymous view, lockout.

GetUserList, CreateUser, DeleteUser, UpdateUser, GetUserInfo; GetRoleList, GetRoleInfo, CreateRole,
DeleteRole, AddCamToRole, DelCamInRole; Get/SetAnonymousView; Get/SetLoginLockStatus. Field names are
the ones the consoles' user pages read (h5sweb views/settings/user/*.vue, h5sconsole settings/usersetting.vue).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from supervisor import shared_auth
from supervisor.api.common import Chapter, endpoint, ok, param, param_bool, param_token, services, session_of
from supervisor.auth import ROLES, Role, User
from supervisor.errors import BadValue, Forbidden, NotFound
from supervisor.services import Services

MD5_RE = re.compile(r"^[0-9a-fA-F]{32}$")
USER_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
ROLE_RE = re.compile(r"^[A-Za-z0-9_.@ -]{1,64}$")


def _permission(kind: str) -> dict[str, bool]:
    """The consoles' role columns: bConfig (settings pages) and bOperate (PTZ, recording, snapshots)."""
    return {"bConfig": kind == "Administrator", "bOperate": kind in ("Administrator", "Operator")}


def _role_summary(role: Role) -> dict[str, Any]:
    return {
        "strRoleToken": role.token,
        "strRole": role.kind,
        "permission": _permission(role.kind),
        "bAllCams": role.all_cams or role.kind == "Administrator",
        "bBuiltin": role.builtin,
    }


def _user_summary(request: Request, user: User) -> dict[str, Any]:
    role = services(request).auth.role_of(user)
    return {"strUser": user.name, "strRole": role.token, "strRoleToken": role.token, "strUserType": role.kind}


def _role_param(request: Request, name: str = "roletoken") -> str:
    return param(request, name, pattern=ROLE_RE, maxlen=64)


@endpoint(role="Administrator")
async def get_user_list(request: Request, user: User) -> Any:
    users = services(request).auth.users.values()
    return {"users": [_user_summary(request, u) for u in sorted(users, key=lambda u: u.name)]}


@endpoint()
async def get_user_info(request: Request, user: User) -> Any:
    name = param(request, "user", required=False, default=user.name, pattern=USER_RE, maxlen=64)
    auth = services(request).auth
    if name != user.name and not auth.may(user, "Administrator"):
        raise Forbidden("only an Administrator may read another user")
    target = auth.users.get(name)
    if target is None:
        raise NotFound(f"no such user: {name}")
    return _user_summary(request, target)


@endpoint(role="Administrator")
async def create_user(request: Request, user: User) -> Any:
    name = param(request, "user", pattern=USER_RE, maxlen=64)
    password = param(request, "password", pattern=MD5_RE, maxlen=32)
    role = param(request, "roletoken", required=False, default="Viewer", pattern=ROLE_RE, maxlen=64)
    await services(request).auth.create_user(name, password, role)
    return ok("Create user successfully")


@endpoint(role="Administrator")
async def delete_user(request: Request, user: User) -> Any:
    name = param(request, "user", pattern=USER_RE, maxlen=64)
    await services(request).auth.delete_user(name, caller=user.name)
    return ok("Delete user successfully")


@endpoint()
async def update_user(request: Request, user: User) -> Any:
    """A new password (the user's own needs the old one; an Administrator may reset anyone's), or a new role."""
    name = param(request, "user", pattern=USER_RE, maxlen=64)
    auth = services(request).auth
    admin = auth.may(user, "Administrator")
    if name != user.name and not admin:
        raise Forbidden("only an Administrator may change another user")
    target = auth.users.get(name)
    if target is None:
        raise NotFound(f"no such user: {name}")
    role = param(request, "roletoken", required=False, pattern=ROLE_RE, maxlen=64)
    new = param(request, "newpassword", required=not role, pattern=MD5_RE, maxlen=32)
    if new:
        old = param(request, "oldpassword", required=name == user.name, maxlen=64)
        if name == user.name and not await auth.password_matches(target, old):
            raise Forbidden("old password is wrong")
        await auth.change_password(name, new, keep=session_of(request))
        await auth.warn_default_password()
    if role:
        if not admin:
            raise Forbidden("only an Administrator may change a user's role")
        if role not in auth.roles:
            raise NotFound(f"no such role: {role}")
        await auth.save_user(User(name, auth.users[name].password_md5, role))
    return ok("Update user successfully")


@endpoint(role="Administrator")
async def get_role_list(request: Request, user: User) -> Any:
    roles = services(request).auth.roles.values()
    return {"roles": [_role_summary(r) for r in sorted(roles, key=lambda r: (not r.builtin, r.token))]}


@endpoint(role="Administrator")
async def get_role_info(request: Request, user: User) -> Any:
    token = _role_param(request)
    svc = services(request)
    role = svc.auth.roles.get(token)
    if role is None:
        raise NotFound(f"no such role: {token}")
    if role.all_cams or role.kind == "Administrator":
        cams = [{"strCamName": r.config.name, "strCamToken": t} for t, r in svc.registry.sources.items()]
    else:
        cams = [{"strCamName": name or token_, "strCamToken": token_} for token_, name in role.cams.items()]
    return {**_role_summary(role), "cams": cams}


@endpoint(role="Administrator")
async def create_role(request: Request, user: User) -> Any:
    token = _role_param(request)
    kind = param(request, "role", required=False, default="Viewer", maxlen=32)
    if kind not in ROLES:
        raise BadValue(f"invalid role: use one of {', '.join(ROLES)}")
    await services(request).auth.create_role(token, kind)
    return ok("Create role successfully")


@endpoint(role="Administrator")
async def delete_role(request: Request, user: User) -> Any:
    await services(request).auth.delete_role(_role_param(request))
    return ok("Delete role successfully")


@endpoint(role="Administrator")
async def add_cam_to_role(request: Request, user: User) -> Any:
    token = _role_param(request)
    cam = param_token(request, "camtoken")
    svc = services(request)
    source = svc.registry.get(cam)
    if source is None:
        raise NotFound(f"no such source: {cam}")
    name = param(request, "cam", required=False, default=source.config.name, maxlen=128)
    await svc.auth.add_cam(token, cam, name)
    return ok("Add camera successfully")


@endpoint(role="Administrator")
async def del_cam_in_role(request: Request, user: User) -> Any:
    await services(request).auth.del_cam(_role_param(request), param_token(request, "camtoken"))
    return ok("Delete camera successfully")


@endpoint(role="Administrator")
async def get_anonymous_view(request: Request, user: User) -> Any:
    role = services(request).auth.anonymous_role
    return {"bAnonymousView": role is not None, "strRoleToken": role or ""}


@endpoint(role="Administrator")
async def set_anonymous_view(request: Request, user: User) -> Any:
    """enable=true lets viewers without a session watch the cameras of `roletoken` (default Viewer: all)."""
    enable = param_bool(request, "enable", False)
    auth = services(request).auth
    role = param(request, "roletoken", required=False, default=auth.anonymous_role or "Viewer", pattern=ROLE_RE)
    await auth.set_anonymous(role if enable else None)
    return ok("Set anonymous view successfully")


@endpoint(role="Administrator")
async def get_login_lock_status(request: Request, user: User) -> Any:
    auth = services(request).auth
    return {"bLoginLockStatus": auth.lock_enabled, "nMaxFaults": auth.max_faults, "nLockSeconds": auth.lock_seconds}


@endpoint(role="Administrator")
async def set_login_lock_status(request: Request, user: User) -> Any:
    await services(request).auth.set_lock_enabled(param_bool(request, "enable", True))
    return ok("Set login lock status successfully")


routes = [
    Route("/api/v1/GetUserList", get_user_list),
    Route("/api/v1/GetUserInfo", get_user_info),
    Route("/api/v1/CreateUser", create_user),
    Route("/api/v1/DeleteUser", delete_user),
    Route("/api/v1/UpdateUser", update_user),
    Route("/api/v1/GetRoleList", get_role_list),
    Route("/api/v1/GetRoleInfo", get_role_info),
    Route("/api/v1/CreateRole", create_role),
    Route("/api/v1/DeleteRole", delete_role),
    Route("/api/v1/AddCamToRole", add_cam_to_role),
    Route("/api/v1/DelCamInRole", del_cam_in_role),
    Route("/api/v1/GetAnonymousView", get_anonymous_view),
    Route("/api/v1/SetAnonymousView", set_anonymous_view),
    Route("/api/v1/GetLoginLockStatus", get_login_lock_status),
    Route("/api/v1/SetLoginLockStatus", set_login_lock_status),
]


async def start(svc: Services) -> None:
    if svc.cluster is not None:  # users, roles and sessions are the cluster's while the node is in one
        shared_auth.follow(svc.cluster, svc.auth)


chapter = Chapter("users", routes, start=start)
