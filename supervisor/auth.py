"""Users, roles with per-camera rights, sessions, login lockout and anonymous viewing.

Passwords are stored as the lower-case hex MD5 the H5Stream consoles send (the vendor's own scheme, kept
so existing clients log in unchanged). Sessions live in memory with an idle timeout renewed by every
authenticated call; a restart logs everyone out, and clients see HTTP 401 and log in again.

A user belongs to one role (the vendor consoles' model). A role has a kind (Viewer < Operator <
Administrator: what its users may do) and a set of cameras (what they may list, watch, search, play
back and download). The three built-in roles, named after their kinds, see every camera; roles made
with CreateRole see only the cameras added to them; an Administrator sees everything.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass

from supervisor.conf_store import ConfStore
from supervisor.db import Database
from supervisor.errors import BadValue, Conflict, Forbidden, NotFound

log = logging.getLogger("h5gate.auth")

DEFAULT_USER, DEFAULT_PASSWORD = "admin", "12345"
ROLES = ("Viewer", "Operator", "Administrator")  # role kinds; each may do what the ones before it may
ANONYMOUS = ""  # the name of the user a session-less viewer acts as, when anonymous view is on


@dataclass
class Role:
    token: str
    kind: str  # one of ROLES
    cams: dict[str, str]  # camera token -> the name the console gave with it
    all_cams: bool = False  # the built-in roles see every camera, present and future

    @property
    def builtin(self) -> bool:
        return self.token in ROLES and self.all_cams

    def sees(self, cam: str) -> bool:
        return self.all_cams or self.kind == "Administrator" or cam in self.cams


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


@dataclass
class User:
    name: str
    password_md5: str
    role: str


@dataclass
class Session:
    user: str
    last_seen: float


@dataclass
class Faults:
    count: int = 0
    locked_until: float = 0.0


class Auth:
    def __init__(
        self,
        db: Database,
        timeout: int = 600,
        max_faults: int = 4,
        lock_seconds: int = 300,
        conf: ConfStore | None = None,
    ) -> None:
        self.db = db
        self.conf = conf or ConfStore(db)
        self.timeout = timeout
        self.max_faults = max_faults
        self.lock_seconds = lock_seconds
        self.users: dict[str, User] = {}
        self.roles: dict[str, Role] = {}
        self.sessions: dict[str, Session] = {}
        self.faults: dict[str, Faults] = {}

    async def load(self) -> None:
        await self.conf.load()
        rows = await self.db.fetchall("SELECT name, password_md5, role FROM users")
        self.users = {r["name"]: User(r["name"], r["password_md5"], r["role"]) for r in rows}
        await self._load_roles()
        if not self.users:
            await self.save_user(User(DEFAULT_USER, md5_hex(DEFAULT_PASSWORD), "Administrator"))
            log.info("created default user %s", DEFAULT_USER)
        self.warn_default_password()

    def warn_default_password(self) -> None:
        admin = self.users.get(DEFAULT_USER)
        if admin and admin.password_md5 == md5_hex(DEFAULT_PASSWORD):
            log.warning(
                "user %s still has the default password: change it (UpdateUser or `h5gate passwd`)", DEFAULT_USER
            )

    async def save_user(self, user: User) -> None:
        await self.db.execute(
            "INSERT INTO users (name, password_md5, role) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET password_md5 = excluded.password_md5, role = excluded.role",
            (user.name, user.password_md5, user.role),
        )
        self.users[user.name] = user

    @staticmethod
    def password_matches(user: User, given: str) -> bool:
        """Accept the plain password (the manual's example) or its MD5 (what the consoles send)."""
        given_md5 = given.lower() if len(given) == 32 else md5_hex(given)
        return hmac.compare_digest(given_md5, user.password_md5) or hmac.compare_digest(
            md5_hex(given), user.password_md5
        )

    @property
    def lock_enabled(self) -> bool:
        """Get/SetLoginLockStatus: whether repeated failures lock a user out (on unless turned off)."""
        return bool(self.conf.get("login_lock", True))

    async def set_lock_enabled(self, enabled: bool) -> None:
        await self.conf.set("login_lock", enabled)
        if not enabled:
            self.faults.clear()
        log.info("login lockout %s", "on" if enabled else "off")

    def login(self, name: str, password: str, client: str) -> tuple[str | None, Faults]:
        """A new session id, or None with the fault record (count and lock) of this user at this client.

        The consoles show "3 - nFaultTimes tries left" up to 3 failures and the lock after that, so a
        lock keeps the count that caused it until it ends.
        """
        key = f"{name}@{client}"
        faults = self.faults.setdefault(key, Faults())
        now = time.monotonic()
        if faults.locked_until > now:
            return None, faults
        if faults.locked_until:  # a lock that has run out starts the count again
            faults.count, faults.locked_until = 0, 0.0
        user = self.users.get(name)
        if user is None or not self.password_matches(user, password):
            if not self.lock_enabled:
                log.info("login failed for %s from %s", name, client)
                return None, Faults()
            faults.count += 1
            if faults.count >= self.max_faults:
                faults.locked_until = now + self.lock_seconds
                log.warning(
                    "login of %s from %s locked for %ds after %d failures",
                    name,
                    client,
                    self.lock_seconds,
                    faults.count,
                )
            else:
                log.info("login failed for %s from %s (%d)", name, client, faults.count)
            return None, faults
        self.faults.pop(key, None)
        session = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        self.sessions[session] = Session(name, now)
        log.info("login %s from %s", name, client)
        return session, faults

    def check(self, session: str | None) -> User | None:
        """The user of a live session (renewing its idle timer), or None."""
        if not session:
            return None
        entry = self.sessions.get(session)
        now = time.monotonic()
        if entry is None:
            return None
        if now - entry.last_seen > self.timeout:
            del self.sessions[session]
            return None
        user = self.users.get(entry.user)
        if user is None:
            del self.sessions[session]
            return None
        entry.last_seen = now
        return user

    def logout(self, session: str) -> bool:
        return self.sessions.pop(session, None) is not None

    def expire(self) -> int:
        """Drop idle sessions; run periodically so memory does not grow with abandoned logins."""
        now = time.monotonic()
        dead = [s for s, e in self.sessions.items() if now - e.last_seen > self.timeout]
        for s in dead:
            del self.sessions[s]
        return len(dead)

    async def change_password(self, name: str, new_md5: str, keep: str | None = None) -> None:
        """Set a new password; every other session of that user ends (the caller's `keep` stays)."""
        user = self.users[name]
        await self.save_user(User(name, new_md5.lower(), user.role))
        for sid in [s for s, e in self.sessions.items() if e.user == name and s != keep]:
            del self.sessions[sid]

    # ------------------------------------------------------------------ roles and camera rights

    async def _load_roles(self) -> None:
        rows = await self.db.fetchall("SELECT token, kind, all_cams FROM roles")
        roles = {r["token"]: Role(r["token"], r["kind"], {}, bool(r["all_cams"])) for r in rows}
        for kind in ROLES:  # the built-ins always exist (a database from before roles has none)
            if kind not in roles:
                roles[kind] = Role(kind, kind, {}, all_cams=True)
                await self.db.execute(
                    "INSERT OR IGNORE INTO roles (token, kind, all_cams) VALUES (?, ?, 1)", (kind, kind)
                )
        for row in await self.db.fetchall("SELECT role, cam, name FROM role_cams"):
            if row["role"] in roles:
                roles[row["role"]].cams[row["cam"]] = row["name"]
        self.roles = roles

    def role_of(self, user: User) -> Role:
        """The user's role; a role that has gone (deleted under a session) leaves the user a camera-less Viewer."""
        return self.roles.get(user.role) or Role(user.role, "Viewer", {})

    def kind_of(self, user: User) -> str:
        return self.role_of(user).kind

    def may(self, user: User, kind: str) -> bool:
        """Whether the user's role kind is at least `kind`."""
        return ROLES.index(self.kind_of(user)) >= ROLES.index(kind)

    def sees(self, user: User, cam: str) -> bool:
        """Whether the user may list, watch, search, play back and download camera `cam`."""
        return self.role_of(user).sees(cam)

    async def create_role(self, token: str, kind: str) -> Role:
        if kind not in ROLES:
            raise BadValue(f"invalid role type: use one of {', '.join(ROLES)}")
        if token in self.roles:
            raise Conflict(f"role already exists: {token}")
        await self.db.execute("INSERT INTO roles (token, kind, all_cams) VALUES (?, ?, 0)", (token, kind))
        role = self.roles[token] = Role(token, kind, {})
        log.info("role %s (%s) created", token, kind)
        return role

    async def delete_role(self, token: str) -> None:
        role = self.roles.get(token)
        if role is None:
            raise NotFound(f"no such role: {token}")
        if role.builtin:
            raise Forbidden(f"the built-in role {token} cannot be deleted")
        users = sorted(u.name for u in self.users.values() if u.role == token)
        if users:
            raise Conflict(f"role {token} still has users: {', '.join(users)}")
        await self.db.execute("DELETE FROM role_cams WHERE role = ?", (token,))
        await self.db.execute("DELETE FROM roles WHERE token = ?", (token,))
        del self.roles[token]
        log.info("role %s deleted", token)

    async def add_cam(self, token: str, cam: str, name: str) -> None:
        role = self.roles.get(token)
        if role is None:
            raise NotFound(f"no such role: {token}")
        await self.db.execute(
            "INSERT INTO role_cams (role, cam, name) VALUES (?, ?, ?) "
            "ON CONFLICT(role, cam) DO UPDATE SET name = excluded.name",
            (token, cam, name),
        )
        role.cams[cam] = name
        log.info("role %s: camera %s added", token, cam)

    async def del_cam(self, token: str, cam: str) -> None:
        role = self.roles.get(token)
        if role is None:
            raise NotFound(f"no such role: {token}")
        if cam not in role.cams:
            raise NotFound(f"camera {cam} is not in role {token}")
        await self.db.execute("DELETE FROM role_cams WHERE role = ? AND cam = ?", (token, cam))
        del role.cams[cam]
        log.info("role %s: camera %s removed", token, cam)

    async def forget_cam(self, cam: str) -> None:
        """A source was deleted: no role keeps it (a new source of the same token starts unlisted)."""
        await self.db.execute("DELETE FROM role_cams WHERE cam = ?", (cam,))
        for role in self.roles.values():
            role.cams.pop(cam, None)

    # ------------------------------------------------------------------ users

    async def create_user(self, name: str, password_md5: str, role: str) -> User:
        if name in self.users:
            raise Conflict(f"user already exists: {name}")
        if role not in self.roles:
            raise NotFound(f"no such role: {role}")
        user = User(name, password_md5.lower(), role)
        await self.save_user(user)
        log.info("user %s created (role %s)", name, role)
        return user

    async def delete_user(self, name: str, caller: str) -> None:
        user = self.users.get(name)
        if user is None:
            raise NotFound(f"no such user: {name}")
        if name == caller:
            raise Forbidden("you cannot delete your own user")
        if self.kind_of(user) == "Administrator" and not any(
            self.kind_of(u) == "Administrator" for u in self.users.values() if u.name != name
        ):
            raise Forbidden("the last Administrator cannot be deleted")
        await self.db.execute("DELETE FROM users WHERE name = ?", (name,))
        del self.users[name]
        for sid in [s for s, e in self.sessions.items() if e.user == name]:
            del self.sessions[sid]
        log.info("user %s deleted", name)

    # ------------------------------------------------------------------ anonymous view

    @property
    def anonymous_role(self) -> str | None:
        """Get/SetAnonymousView: the role a session-less viewer watches as, or None when it is off."""
        value = self.conf.get("anonymous_view")
        return value if isinstance(value, str) and value else None

    async def set_anonymous(self, role: str | None) -> None:
        if role is not None and role not in self.roles:
            raise NotFound(f"no such role: {role}")
        await self.conf.set("anonymous_view", role or "")
        log.info("anonymous view %s", f"on (role {role})" if role else "off")

    def viewer(self, session: str | None) -> User | None:
        """The user of a session, else the anonymous viewer when anonymous view is on, else None.

        Only the watching paths (live WebSocket/WebRTC/HLS, GetImage) take an anonymous viewer; every
        other call needs a session.
        """
        user = self.check(session)
        if user is not None:
            return user
        role = self.anonymous_role
        if role is None or role not in self.roles:
            return None
        return User(ANONYMOUS, "", role)
