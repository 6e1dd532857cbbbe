"""Users, sessions and login lockout.

Passwords are stored as the lower-case hex MD5 the H5Stream consoles send (the vendor's own scheme, kept
so existing clients log in unchanged). Sessions live in memory with an idle timeout renewed by every
authenticated call; a restart logs everyone out, and clients see HTTP 401 and log in again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass

from supervisor.db import Database

log = logging.getLogger("h5gate.auth")

DEFAULT_USER, DEFAULT_PASSWORD = "admin", "12345"
ROLES = ("Viewer", "Operator", "Administrator")


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
    def __init__(self, db: Database, timeout: int = 600, max_faults: int = 5, lock_seconds: int = 300) -> None:
        self.db = db
        self.timeout = timeout
        self.max_faults = max_faults
        self.lock_seconds = lock_seconds
        self.users: dict[str, User] = {}
        self.sessions: dict[str, Session] = {}
        self.faults: dict[str, Faults] = {}

    async def load(self) -> None:
        rows = await self.db.fetchall("SELECT name, password_md5, role FROM users")
        self.users = {r["name"]: User(r["name"], r["password_md5"], r["role"]) for r in rows}
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

    def login(self, name: str, password: str, client: str) -> tuple[str | None, Faults]:
        """A new session id, or None with the fault record (count and lock) of this user at this client."""
        key = f"{name}@{client}"
        faults = self.faults.setdefault(key, Faults())
        now = time.monotonic()
        if faults.locked_until > now:
            return None, faults
        user = self.users.get(name)
        if user is None or not self.password_matches(user, password):
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
                faults.count = 0
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
