"""Users, roles with per-camera rights, sessions, login lockout and anonymous viewing.

A client proves its password by sending it or its lower-case hex MD5 (the vendor's scheme, kept so
existing clients log in unchanged); the database keeps only a salted scrypt of that MD5
(supervisor/passwords.py). Sessions are kept in memory with an idle timeout renewed by every
authenticated call, and in the database as SHA-256 hashes, so a restart keeps everyone logged in
and a copy of the database holds no usable session. Users are re-read when another process
(`h5gate passwd`) changes the database, within a second. Failed-login records are bounded in number
and expire.

A user belongs to one role (the vendor consoles' model). A role has a kind (Viewer < Operator <
Administrator: what its users may do) and a set of cameras (what they may list, watch, search, play
back and download). The three built-in roles, named after their kinds, see every camera; roles made
with CreateRole see only the cameras added to them; an Administrator sees everything.

In a cluster (`attach`), users, roles, sessions and failed-login counts live in Redis instead
(supervisor/shared_auth.py says why and how), so every node answers the same for every session: sessions
are then asked of Redis on each check, users and roles are mirrored here and reloaded whenever the shared
version moves, and every change the cluster makes is also written to the local tables. So a node that
leaves the cluster, or starts without Redis, goes on with the users as the cluster last had them (a user
deleted in the cluster stays deleted), and its sessions are brought back from Redis when it leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from supervisor import passwords
from supervisor.conf_store import ConfStore
from supervisor.db import Database
from supervisor.errors import BadValue, Conflict, Forbidden, NotFound, Unavailable
from supervisor.shared_auth import DOWN, SHARED_CONF, SharedAuth, Snapshot, StoredRole, StoredUser

log = logging.getLogger("h5gate.auth")
T = TypeVar("T")

DEFAULT_USER, DEFAULT_PASSWORD = "admin", "12345"
ROLES = ("Viewer", "Operator", "Administrator")  # role kinds; each may do what the ones before it may
ANONYMOUS = ""  # the name of the user a session-less viewer acts as, when anonymous view is on
FAULT_EXPIRY_INTERVAL = 1.0  # seconds between sweeps of old failure records (done on a failed login)
SESSION_FLUSH_SECONDS = 30.0  # how often renewed sessions' last-seen times reach the database
USERS_POLL_SECONDS = 0.5  # how often the database is asked whether another process changed users

md5_hex = passwords.md5_hex


def session_hash(session: str) -> str:
    """What the database keeps of a session id: enough to recognise it, useless to present."""
    return hashlib.sha256(session.encode("utf-8")).hexdigest()


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


@dataclass
class User:
    name: str
    password_md5: str  # the stored form: scrypt of the MD5 (see passwords.py); save_user hashes a bare MD5
    role: str


@dataclass
class Session:
    user: str
    last_seen: float  # wall-clock seconds, so the idle timeout counts across a restart
    dirty: bool = False  # renewed since it was last written to the database


@dataclass
class Faults:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0  # monotonic time of the last failure (old records expire)


class Auth:
    def __init__(
        self,
        db: Database,
        timeout: int = 600,
        max_faults: int = 4,
        lock_seconds: int = 300,
        conf: ConfStore | None = None,
        max_fault_records: int = 4096,
    ) -> None:
        self.db = db
        self.conf = conf or ConfStore(db)
        self.timeout = timeout
        self.max_faults = max_faults
        self.lock_seconds = lock_seconds
        self.max_fault_records = max_fault_records  # failed-login records kept at most (user name@address)
        self.users: dict[str, User] = {}
        self.roles: dict[str, Role] = {}
        self.sessions: dict[str, Session] = {}  # SHA-256 of the session id -> session
        self.faults: OrderedDict[str, Faults] = OrderedDict()  # oldest failure first
        self._faults_swept = 0.0
        self._data_version = 0
        self.shared: SharedAuth | None = None  # the cluster's store while this node is in one (attach)
        self.shared_down = False  # the last call to the shared store failed: checks answer "unreachable"
        self._down_logged = False  # that was logged (one line per outage)
        self._shared_version = -1  # the shared users/roles version the mirror (users, roles) was read at
        self._mirror_lock = asyncio.Lock()
        self._local_users: dict[str, tuple[str, str]] = {}  # the users table as last written here (cluster mode)
        self._attached = False  # in sync with the cluster (share() makes a node of it, attach() syncs)
        # sessions made here while degraded -> the login value that made them (memory only, until attach
        # checks it against the cluster's password: see attach)
        self._born_local: dict[str, str] = {}

    async def load(self) -> None:
        await self.conf.load()
        await self.load_users()
        await self._load_roles()
        if not self.users:
            await self.save_user(User(DEFAULT_USER, md5_hex(DEFAULT_PASSWORD), "Administrator"))
            log.info("created default user %s", DEFAULT_USER)
        await self.load_sessions()
        self._data_version = await self.db.data_version()
        await self.warn_default_password()

    async def load_users(self) -> None:
        """Read the users; a row still holding a bare MD5 (before hashing) is hashed and written back."""
        rows = await self.db.fetchall("SELECT name, password_md5, role FROM users")
        users = {r["name"]: User(r["name"], r["password_md5"], r["role"]) for r in rows}
        for user in users.values():
            if not passwords.is_hashed(user.password_md5):
                await self.save_user(user)
                log.info("password of %s now stored as a salted hash", user.name)
        old, self.users = self.users, {**self.users, **users}
        for name in set(self.users) - set(users):
            del self.users[name]
        for name, user in self.users.items():  # a password changed elsewhere ends that user's sessions
            before = old.get(name)
            if before is not None and before.password_md5 != user.password_md5:
                await self._end_sessions(name)

    async def reload_if_changed(self) -> bool:
        """Re-read users if another connection committed since the last look (`h5gate passwd`)."""
        version = await self.db.data_version()
        if self.shared is not None and self.clustered:  # also follow the cluster, so the local copy is current
            with contextlib.suppress(Unavailable):  # _shared said it once; the link reconnects
                if version != self._data_version:
                    await self._push_local_changes(self.shared)
                    self._data_version = version
                    return True
                await self.refresh()
            return False
        if version == self._data_version:
            return False
        self._data_version = version
        before = {name: user.password_md5 for name, user in self.users.items()}
        await self.load_users()
        # A password an administrator just set (or a user just created) starts with a clean slate: failures
        # against the old password, or before the user existed, no longer count or lock.
        for name, user in self.users.items():
            if before.get(name) != user.password_md5:
                for key in [k for k in self.faults if k.rpartition("@")[0] == name]:
                    del self.faults[key]
        return True

    async def warn_default_password(self) -> None:
        admin = self.users.get(DEFAULT_USER)
        if admin is not None and await asyncio.to_thread(passwords.verify, admin.password_md5, DEFAULT_PASSWORD):
            log.warning(
                "user %s still has the default password: change it (UpdateUser or `h5gate passwd`)", DEFAULT_USER
            )

    async def save_user(self, user: User) -> None:
        if passwords.MD5_RE.match(user.password_md5):
            user.password_md5 = await asyncio.to_thread(passwords.hash_md5, user.password_md5)
        if self.shared is not None:
            self._need_cluster()
            await self._shared(self.shared.put_user(StoredUser(user.name, user.password_md5, user.role)))
            await self.refresh(force=True)
            return
        await self.db.execute(
            "INSERT INTO users (name, password_md5, role) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET password_md5 = excluded.password_md5, role = excluded.role",
            (user.name, user.password_md5, user.role),
        )
        self.users[user.name] = user
        self._data_version = await self.db.data_version()  # our own write is no news

    @staticmethod
    async def password_matches(user: User, given: str) -> bool:
        """Accept the plain password (the manual's example) or its MD5 (what the consoles send).

        The stored hash itself is not accepted: it is neither the password nor its MD5.
        """
        return await asyncio.to_thread(passwords.verify, user.password_md5, given)

    @property
    def lock_enabled(self) -> bool:
        """Get/SetLoginLockStatus: whether repeated failures lock a user out (on unless turned off)."""
        return bool(self.conf.get("login_lock", True))

    async def set_lock_enabled(self, enabled: bool) -> None:
        if self.shared is not None:  # for every node (see shared_auth.SHARED_CONF)
            self._need_cluster()
            await self._shared(self.shared.put_conf("login_lock", enabled))
            await self.refresh(force=True)
        await self.conf.set("login_lock", enabled)
        if not enabled:
            self.faults.clear()
            if self.shared is not None and self.clustered:  # the count is cluster-wide: off here lifts it
                await self._shared(self.shared.clear_user_faults())
        log.info("login lockout %s", "on" if enabled else "off")

    # ------------------------------------------------------------------ failed logins

    def _faults_of(self, key: str, now: float) -> Faults:
        """The failure record of name@client, kept in order of last failure; the oldest go past the cap."""
        if now - self._faults_swept >= FAULT_EXPIRY_INTERVAL:
            self._faults_swept = now
            self.expire_faults(now)
        faults = self.faults.pop(key, None) or Faults()
        self.faults[key] = faults
        while len(self.faults) > self.max_fault_records:  # a running lock goes last: flooding must not lift it
            unlocked = next((k for k, f in self.faults.items() if f.locked_until <= now), None)
            self.faults.pop(unlocked if unlocked is not None else next(iter(self.faults)))
        return faults

    def expire_faults(self, now: float | None = None) -> int:
        """Drop failure records with no lock running and no failure for lock_seconds: memory stays bounded."""
        now = time.monotonic() if now is None else now
        dead = [k for k, f in self.faults.items() if f.locked_until <= now and now - f.last > self.lock_seconds]
        for key in dead:
            del self.faults[key]
        return len(dead)

    async def login(self, name: str, password: str, client: str) -> tuple[str | None, Faults]:
        """A new session id, or None with the fault record (count and lock) of this user at this client.

        The consoles show "3 - nFaultTimes tries left" up to 3 failures and the lock after that, so a
        lock keeps the count that caused it until it ends.
        """
        if self.shared is not None and self.clustered:
            with contextlib.suppress(Unavailable):  # Redis just went away: this node's own login, degraded
                return await self._login_shared(self.shared, name, password, client)
        key = f"{name}@{client}"
        now = time.monotonic()
        known = self.faults.get(key)
        if known is not None and known.locked_until > now:
            return None, known
        if known is not None and known.locked_until:  # a lock that has run out starts the count again
            known.count, known.locked_until = 0, 0.0
        user = self.users.get(name)
        if user is None or not await self.password_matches(user, password):
            if not self.lock_enabled:
                log.info("login failed for %s from %s", name, client)
                return None, Faults()
            faults = self._faults_of(key, now)
            faults.count += 1
            faults.last = now
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
        if self.shared is not None and self.clustered:  # the node synced while the password was checked:
            return await self.login(name, password, client)  # the cluster's user and session, not ours
        self.faults.pop(key, None)
        session = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        entry = self.sessions[session_hash(session)] = Session(name, time.time())
        if self.shared is not None:  # degraded: attach takes it into the cluster if `password` is the cluster's
            self._born_local[session_hash(session)] = password
        await self.db.execute(
            "INSERT OR REPLACE INTO sessions (id_hash, user, last_seen) VALUES (?, ?, ?)",
            (session_hash(session), name, entry.last_seen),
        )
        log.info("login %s from %s", name, client)
        return session, Faults()

    async def open_session(self, name: str) -> str:
        """A session of user `name` made without a password: the cloud link's, for the calls of its centre that
        this server carries out (the centre is trusted by this server's own cloud settings, not by a login)."""
        if name not in self.users:
            raise KeyError(name)
        session = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        if self.shared is not None and self.clustered:
            await self._shared(self.shared.add_session(session_hash(session), name, self.timeout * 1000))
            return session
        entry = self.sessions[session_hash(session)] = Session(name, time.time())
        await self.db.execute(
            "INSERT OR REPLACE INTO sessions (id_hash, user, last_seen) VALUES (?, ?, ?)",
            (session_hash(session), name, entry.last_seen),
        )
        return session

    async def _login_shared(
        self, shared: SharedAuth, name: str, password: str, client: str
    ) -> tuple[str | None, Faults]:
        """login() in a cluster: the lock and the count are the cluster's, the session is made in Redis.

        The lock's end is handed back on this node's monotonic clock (Redis gives the time left), as the
        local path does, so Login's tLockTimeResidue reads the same on every node.
        """
        key = f"{name}@{client}"
        count, lock_ms = await self._shared(shared.faults(key))
        now = time.monotonic()
        if lock_ms:
            return None, Faults(count, now + lock_ms / 1000, now)
        await self.refresh()
        user = self.users.get(name)
        if user is None or not await self.password_matches(user, password):
            if not self.lock_enabled:
                log.info("login failed for %s from %s", name, client)
                return None, Faults()
            count, lock_ms = await self._shared(shared.fail(key, self.max_faults, self.lock_seconds * 1000))
            if lock_ms:
                log.warning(
                    "login of %s from %s locked cluster-wide for %ds after %d failures",
                    name,
                    client,
                    round(lock_ms / 1000),
                    count,
                )
            else:
                log.info("login failed for %s from %s (%d in the cluster)", name, client, count)
            return None, Faults(count, now + lock_ms / 1000 if lock_ms else 0.0, now)
        session = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        await self._shared(shared.clear_faults(key))
        await self._shared(shared.add_session(session_hash(session), name, self.timeout * 1000))
        log.info("login %s from %s", name, client)
        return session, Faults()

    # ------------------------------------------------------------------ the cluster's shared store

    @property
    def clustered(self) -> bool:
        """Users, roles and sessions are the cluster's now: in a cluster, in sync with it, Redis answering.

        A node in a cluster whose Redis is away (not yet reached at start, or lost) is degraded: it goes on
        with the users as the cluster last had them (its local copy), the cluster's sessions it last saw
        alive and the sessions made on it meanwhile (on it alone), and refuses to change users or roles,
        which it could not share. Why not refuse every login instead: a Redis restart must not log out the
        whole cluster, and a node must stay manageable while Redis is away (the console that would fix the
        Redis address needs a login). What it costs: during the outage, a user deleted, a password changed
        or a session ended elsewhere since (or just before) the outage began still works on this node.
        """
        return self.shared is not None and self._attached and not self.shared_down

    def _need_cluster(self) -> None:
        """Users and roles change only in the cluster while the node is in one (a local change would be lost)."""
        if self.shared is not None and not self.clustered:
            raise Unavailable(f"{DOWN}: users and roles cannot change until it answers")

    async def _shared(self, call: Awaitable[T]) -> T:
        """Await a call to the shared store, noting when it goes down or comes back (one log line each)."""
        try:
            result = await call
        except Unavailable:
            if not self._down_logged:
                self._down_logged = True
                log.warning(
                    "the cluster's user store (Redis) is unreachable: logins are local to this node until it returns"
                )
            self.shared_down = True
            raise
        if self._down_logged:
            log.info("the cluster's user store (Redis) is reachable again")
            self._down_logged = False
        self.shared_down = False
        return result

    def share(self, shared: SharedAuth) -> None:
        """Become a node of a cluster, degraded (see `clustered`) until `attach` has synchronised it."""
        if self.shared is None:
            self._local_users = {n: (u.password_md5, u.role) for n, u in self.users.items()}
            self._born_local.clear()
        self.shared = shared
        self._attached = False

    async def attach(self, shared: SharedAuth) -> None:
        """Synchronise with the cluster (on every (re)connect to Redis), then answer from it.

        The first node to join (Redis has no users) seeds the cluster with its users and roles, and its
        sessions come along. A node joining a cluster that has users takes the cluster's and overwrites
        its local tables with them: one set of users per cluster, no merge that would keep two passwords for
        one name. Its sessions made while away (degraded) come along only if the password they were made
        with is the cluster's password for that user too: no one gets into the cluster with a password it
        does not know. Users set with `h5gate passwd` meanwhile go up. After a reconnect this reloads what
        changed meanwhile, or seeds again a Redis that came back empty (from the cluster's users as this
        node last had them).
        """
        self.share(shared)
        await shared.fresh()
        stored_users = [StoredUser(u.name, u.password_md5, u.role) for u in self.users.values()]
        stored_roles = [StoredRole(r.token, r.kind, r.all_cams, dict(r.cams)) for r in self.roles.values()]
        seeded = await self._shared(shared.seed(stored_users, stored_roles, self.conf.snapshot()))
        if not seeded:
            await self._push_local_changes(shared)
        snap = await self._shared(shared.snapshot())
        carried: set[str] = set()
        while True:  # until no login came in meanwhile; then switch over with no await in between
            todo = [(h, e) for h, e in self.sessions.items() if h not in carried]
            if not todo:
                break
            now = time.time()
            for digest, entry in todo:
                carried.add(digest)
                stored = snap.users.get(entry.user)
                left = self.timeout - (now - entry.last_seen)
                given = self._born_local.get(digest)
                if stored is None or left <= 0:
                    continue
                if seeded or (given is not None and await self.password_matches(User("", stored.password, ""), given)):
                    await self._shared(shared.add_session(digest, entry.user, int(left * 1000)))
        self._apply(snap)
        self.sessions.clear()
        self._born_local.clear()
        self.faults.clear()
        self._attached = True
        await self.db.execute("DELETE FROM sessions")  # the cluster's sessions are in Redis, not here
        await self._write_local(snap.conf)
        log.info(
            "users, roles and sessions shared through Redis (%s; %d users)",
            "seeded from this node" if seeded else "the cluster's users",
            len(self.users),
        )

    async def detach(self, persist: bool = True) -> None:
        """Leave the cluster: back to the local tables, which hold the cluster's users as last seen.

        The cluster's live sessions (hashes, as the local table keeps them) come along when Redis still
        answers, so no one using this node is logged out by it leaving (or moving to another Redis, which
        it then seeds with them). `persist` (the console turned clustering off) writes them to the local
        table too; a node that stops keeps them in memory only, so its next start cannot bring back a
        session the cluster ended while it was down.
        """
        shared, self.shared = self.shared, None
        if shared is None:
            return
        attached, self._attached = self._attached, False
        self.shared_down = self._down_logged = False
        self._born_local.clear()
        live: list[tuple[str, str, int]] = []
        if attached:
            try:
                live = await shared.sessions()
            except Unavailable:
                log.warning("leaving the cluster with Redis unreachable: the cluster's sessions end on this node")
        now = time.time()
        rows = [(digest, user, now - (self.timeout - ttl / 1000)) for digest, user, ttl in live]
        if rows and persist:
            sql = "INSERT OR REPLACE INTO sessions (id_hash, user, last_seen) VALUES (?, ?, ?)"
            await self.db.executemany(sql, rows)
        await self.load_users()
        await self._load_roles()
        await self.load_sessions()
        self.sessions.update({d: Session(u, seen) for d, u, seen in rows if u in self.users})
        log.info("users and sessions are local again (%d users, %d sessions)", len(self.users), len(self.sessions))

    async def refresh(self, force: bool = False) -> None:
        """In a cluster: bring the users and roles mirror up to the shared version (one GET when current).

        Degraded (see `clustered`), the mirror stays as it is.
        """
        shared = self.shared
        if shared is None or not self.clustered:
            return
        version = None if force else await self._shared(shared.version())
        if version is not None and version == self._shared_version:
            return
        await self._reload_mirror(shared, version)

    async def _reload_mirror(self, shared: SharedAuth, seen: int | None) -> None:
        """Read the shared users and roles into memory and into the local tables (one reload at a time)."""
        async with self._mirror_lock:
            if seen is not None and seen == self._shared_version:  # another task reloaded meanwhile
                return
            snap = await self._shared(shared.snapshot())
            if not snap.users:  # Redis lost everything (flushed, or restarted without persistence): seed again
                log.warning("the cluster's Redis holds no users: seeding it again from this node's copy")
                users = [StoredUser(u.name, u.password_md5, u.role) for u in self.users.values()]
                roles = [StoredRole(r.token, r.kind, r.all_cams, dict(r.cams)) for r in self.roles.values()]
                await self._shared(shared.seed(users, roles, self.conf.snapshot()))
                snap = await self._shared(shared.snapshot())
            self._apply(snap)
            await self._write_local(snap.conf)

    def _apply(self, snap: Snapshot) -> None:
        users = {u.name: User(u.name, u.password, u.role) for u in snap.users.values()}
        roles = {r.token: Role(r.token, r.kind, dict(r.cams), r.all_cams) for r in snap.roles.values()}
        for kind in ROLES:  # the built-ins exist on every node, whatever Redis holds
            roles.setdefault(kind, Role(kind, kind, {}, all_cams=True))
        old, self.users, self.roles = self.users, users, roles
        self._shared_version = snap.version
        changed = {n for n, u in old.items() if n not in users or users[n].password_md5 != u.password_md5}
        for digest in [d for d, e in self.sessions.items() if e.user in changed]:  # kept for outages: see
            del self.sessions[digest]  # _check_shared

    async def _write_local(self, conf: dict[str, Any]) -> None:
        """The mirror into the local users and roles tables, in one transaction (see the module docstring),
        and the cluster's user switches (login lock, anonymous view) into the local settings, where the
        rest of the code reads them."""
        for name in SHARED_CONF:
            if name in conf and self.conf.get(name) != conf[name]:
                await self.conf.set(name, conf[name])
        users = [(u.name, u.password_md5, u.role) for u in self.users.values()]
        roles = [(r.token, r.kind, int(r.all_cams)) for r in self.roles.values()]
        cams = [(r.token, cam, name) for r in self.roles.values() for cam, name in r.cams.items()]
        await self.db.transaction(
            [
                ("DELETE FROM users", []),
                ("INSERT INTO users (name, password_md5, role) VALUES (?, ?, ?)", users),
                ("DELETE FROM role_cams", []),
                ("DELETE FROM roles", []),
                ("INSERT INTO roles (token, kind, all_cams) VALUES (?, ?, ?)", roles),
                ("INSERT INTO role_cams (role, cam, name) VALUES (?, ?, ?)", cams),
            ]
        )
        self._local_users = {u[0]: (u[1], u[2]) for u in users}
        self._data_version = await self.db.data_version()

    async def _push_local_changes(self, shared: SharedAuth) -> None:
        """`h5gate passwd` wrote the local table while in a cluster: send the users it set to the cluster.

        Only rows that differ from what this node last wrote there (or had when it joined) go up, so the
        tool still rescues a forgotten password on a clustered node, and the cluster's newer changes are
        not undone.
        """
        rows = await self.db.fetchall("SELECT name, password_md5, role FROM users")
        for row in rows:
            name, stored, role = row["name"], row["password_md5"], row["role"]
            before = self._local_users.get(name)
            if before == (stored, role):
                continue
            if passwords.MD5_RE.match(stored):
                stored = await asyncio.to_thread(passwords.hash_md5, stored)
            await self._shared(shared.put_user(StoredUser(name, stored, role)))
            if before is None or before[0] != row["password_md5"]:  # as locally: a new password ends the
                await self._shared(shared.end_sessions(name))  # other sessions and the failures against the old
                await self._shared(shared.clear_user_faults(name))
            self._local_users[name] = (row["password_md5"], role)
            log.info("user %s set on this node's database: sent to the cluster", name)

    # ------------------------------------------------------------------ sessions

    async def load_sessions(self) -> None:
        """Bring back the sessions a previous run left that are still inside the idle timeout."""
        now = time.time()
        await self.db.execute("DELETE FROM sessions WHERE last_seen < ?", (now - self.timeout,))
        rows = await self.db.fetchall("SELECT id_hash, user, last_seen FROM sessions")
        self.sessions = {r["id_hash"]: Session(r["user"], r["last_seen"]) for r in rows if r["user"] in self.users}
        if self.sessions:
            log.info("%d sessions kept from the last run", len(self.sessions))

    async def flush_sessions(self) -> None:
        """Write renewed sessions' last-seen times (every SESSION_FLUSH_SECONDS and at shutdown)."""
        dirty = [(e.last_seen, h) for h, e in self.sessions.items() if e.dirty]
        for entry in self.sessions.values():
            entry.dirty = False
        if dirty:
            await self.db.executemany("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", dirty)

    async def check(self, session: str | None) -> User | None:
        """The user of a live session (renewing its idle timer), or None.

        In a cluster the session is asked of Redis, and the same round trip says whether users or roles
        changed anywhere (then the mirror is reloaded before the answer). A node whose Redis is away knows
        the sessions it last saw alive there and those made on it meanwhile (see `clustered`).
        """
        if not session:
            return None
        if self.shared is not None and self.clustered:
            with contextlib.suppress(Unavailable):  # Redis just went away: only this node's own sessions
                return await self._check_shared(self.shared, session)
        key = session_hash(session)
        entry = self.sessions.get(key)
        now = time.time()
        if entry is None:
            return None
        if now - entry.last_seen > self.timeout:
            self._forget([key])
            return None
        user = self.users.get(entry.user)
        if user is None:
            self._forget([key])
            return None
        entry.last_seen = now
        entry.dirty = True
        return user

    async def _check_shared(self, shared: SharedAuth, session: str) -> User | None:
        """Redis's answer; what it said is kept in `sessions` (memory only) for while Redis is away.

        Why keep it: a Redis restart or a network blip must not log out everyone on every node. What it
        costs: while Redis is away, a session ended on another node just before (a logout) can still work
        on a node that saw it alive; password changes and deletions this node had seen end it here too.
        """
        digest = session_hash(session)
        name, version = await self._shared(shared.touch(digest, self.timeout * 1000))
        if version != self._shared_version:
            await self._reload_mirror(shared, None)
        user = self.users.get(name) if name is not None else None
        if user is None:
            self.sessions.pop(digest, None)
            if name is not None:  # its user was deleted: the session goes with it
                with contextlib.suppress(Unavailable):
                    await self._shared(shared.drop_session(digest))
            return None
        self.sessions[digest] = Session(user.name, time.time())
        return user

    async def session_count(self) -> int:
        """Live sessions: the cluster's (all nodes share them), or this node's."""
        if self.shared is not None and self.clustered:
            with contextlib.suppress(Unavailable):
                return await self._shared(self.shared.count_sessions())
        return len(self.sessions)

    async def user(self, name: str) -> User | None:
        """A user by name, as the cluster has it now (RTSP logins by password), or None."""
        with contextlib.suppress(Unavailable):
            await self.refresh()
        return self.users.get(name)

    def _forget(self, keys: list[str]) -> None:
        """Drop sessions from memory now and from the database soon (check() is not async)."""
        for key in keys:
            self.sessions.pop(key, None)
        if keys:
            rows = [(k,) for k in keys]
            asyncio.get_running_loop().create_task(self.db.executemany("DELETE FROM sessions WHERE id_hash = ?", rows))

    async def _end_sessions(self, name: str, keep: str | None = None) -> None:
        kept = session_hash(keep) if keep else None
        if self.shared is not None:
            if not self.clustered:  # `h5gate passwd` while Redis is away: here now, the cluster's at attach
                for digest in [h for h, e in self.sessions.items() if e.user == name and h != kept]:
                    del self.sessions[digest]
                return
            ended = await self._shared(self.shared.end_sessions(name, kept))
            if ended:
                log.info("%d sessions of %s ended on every node", ended, name)
            for digest in [h for h, e in self.sessions.items() if e.user == name and h != kept]:
                del self.sessions[digest]
            return
        self._forget([h for h, e in self.sessions.items() if e.user == name and h != kept])

    async def logout(self, session: str) -> bool:
        key = session_hash(session)
        if self.shared is not None and self.clustered:
            with contextlib.suppress(Unavailable):  # else it can only be one this node knows
                self.sessions.pop(key, None)
                return await self._shared(self.shared.drop_session(key))
        found = key in self.sessions
        self._forget([key])
        return found

    def expire(self) -> int:
        """Drop idle sessions and old failure records; run periodically so memory does not grow."""
        now = time.time()
        dead = [h for h, e in self.sessions.items() if now - e.last_seen > self.timeout]
        self._forget(dead)
        self.expire_faults()
        return len(dead)

    async def change_password(self, name: str, new_md5: str, keep: str | None = None) -> None:
        """Set a new password; every other session of that user ends (the caller's `keep` stays)."""
        user = self.users[name]
        await self.save_user(User(name, new_md5.lower(), user.role))
        await self._end_sessions(name, keep)

    async def set_password(self, name: str, md5: str, role: str | None) -> None:
        """`h5gate passwd`: set (or create) a user with this password; a running server sees it at once."""
        existing = self.users.get(name)
        await self.save_user(User(name, md5.lower(), role or (existing.role if existing else "Viewer")))

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
        await self.refresh()
        if token in self.roles:
            raise Conflict(f"role already exists: {token}")
        if self.shared is not None:
            self._need_cluster()
            if not await self._shared(self.shared.create_role(StoredRole(token, kind, False, {}))):
                raise Conflict(f"role already exists: {token}")
            await self.refresh(force=True)
            log.info("role %s (%s) created", token, kind)
            return self.roles[token]
        await self.db.execute("INSERT INTO roles (token, kind, all_cams) VALUES (?, ?, 0)", (token, kind))
        role = self.roles[token] = Role(token, kind, {})
        log.info("role %s (%s) created", token, kind)
        return role

    async def delete_role(self, token: str) -> None:
        await self.refresh()
        role = self.roles.get(token)
        if role is None:
            raise NotFound(f"no such role: {token}")
        if role.builtin:
            raise Forbidden(f"the built-in role {token} cannot be deleted")
        users = sorted(u.name for u in self.users.values() if u.role == token)
        if users:
            raise Conflict(f"role {token} still has users: {', '.join(users)}")
        if self.shared is not None:
            self._need_cluster()
            await self._shared(self.shared.delete_role(token))
            await self.refresh(force=True)
            log.info("role %s deleted", token)
            return
        await self.db.execute("DELETE FROM role_cams WHERE role = ?", (token,))
        await self.db.execute("DELETE FROM roles WHERE token = ?", (token,))
        del self.roles[token]
        log.info("role %s deleted", token)

    async def add_cam(self, token: str, cam: str, name: str) -> None:
        await self.refresh()
        role = self.roles.get(token)
        if role is None:
            raise NotFound(f"no such role: {token}")
        if self.shared is not None:
            self._need_cluster()
            if not await self._shared(self.shared.add_cam(token, cam, name)):
                raise NotFound(f"no such role: {token}")
            await self.refresh(force=True)
            log.info("role %s: camera %s added", token, cam)
            return
        await self.db.execute(
            "INSERT INTO role_cams (role, cam, name) VALUES (?, ?, ?) "
            "ON CONFLICT(role, cam) DO UPDATE SET name = excluded.name",
            (token, cam, name),
        )
        role.cams[cam] = name
        log.info("role %s: camera %s added", token, cam)

    async def del_cam(self, token: str, cam: str) -> None:
        await self.refresh()
        role = self.roles.get(token)
        if role is None:
            raise NotFound(f"no such role: {token}")
        if cam not in role.cams:
            raise NotFound(f"camera {cam} is not in role {token}")
        if self.shared is not None:
            self._need_cluster()
            if not await self._shared(self.shared.del_cam(token, cam)):
                raise NotFound(f"camera {cam} is not in role {token}")
            await self.refresh(force=True)
            log.info("role %s: camera %s removed", token, cam)
            return
        await self.db.execute("DELETE FROM role_cams WHERE role = ? AND cam = ?", (token, cam))
        del role.cams[cam]
        log.info("role %s: camera %s removed", token, cam)

    async def forget_cam(self, cam: str) -> None:
        """A source was deleted: no role keeps it (a new source of the same token starts unlisted)."""
        if self.shared is not None:
            try:
                self._need_cluster()
                await self._shared(self.shared.forget_cam(cam))
                await self.refresh(force=True)
            except Unavailable:  # the source is gone anyway; only its place in roles stays until re-added
                log.warning("camera %s stays in the cluster's roles: Redis is unreachable", cam)
            return
        await self.db.execute("DELETE FROM role_cams WHERE cam = ?", (cam,))
        for role in self.roles.values():
            role.cams.pop(cam, None)

    # ------------------------------------------------------------------ users

    async def create_user(self, name: str, password_md5: str, role: str) -> User:
        await self.refresh()
        if name in self.users:
            raise Conflict(f"user already exists: {name}")
        if role not in self.roles:
            raise NotFound(f"no such role: {role}")
        user = User(name, password_md5.lower(), role)
        if self.shared is not None:  # only if no node took the name meanwhile
            self._need_cluster()
            user.password_md5 = await asyncio.to_thread(passwords.hash_md5, user.password_md5)
            if not await self._shared(self.shared.put_user(StoredUser(name, user.password_md5, role), new=True)):
                raise Conflict(f"user already exists: {name}")
            await self.refresh(force=True)
        else:
            await self.save_user(user)
        log.info("user %s created (role %s)", name, role)
        return user

    async def delete_user(self, name: str, caller: str) -> None:
        await self.refresh()
        user = self.users.get(name)
        if user is None:
            raise NotFound(f"no such user: {name}")
        if name == caller:
            raise Forbidden("you cannot delete your own user")
        if self.kind_of(user) == "Administrator" and not any(
            self.kind_of(u) == "Administrator" for u in self.users.values() if u.name != name
        ):
            raise Forbidden("the last Administrator cannot be deleted")
        if self.shared is not None:  # its sessions end on every node with it
            self._need_cluster()
            await self._shared(self.shared.delete_user(name))
            await self.refresh(force=True)
            log.info("user %s deleted", name)
            return
        await self.db.execute("DELETE FROM users WHERE name = ?", (name,))
        del self.users[name]
        await self._end_sessions(name)
        log.info("user %s deleted", name)

    # ------------------------------------------------------------------ anonymous view

    @property
    def anonymous_role(self) -> str | None:
        """Get/SetAnonymousView: the role a session-less viewer watches as, or None when it is off."""
        value = self.conf.get("anonymous_view")
        return value if isinstance(value, str) and value else None

    async def set_anonymous(self, role: str | None) -> None:
        await self.refresh()
        if role is not None and role not in self.roles:
            raise NotFound(f"no such role: {role}")
        if self.shared is not None:  # for every node (see shared_auth.SHARED_CONF)
            self._need_cluster()
            await self._shared(self.shared.put_conf("anonymous_view", role or ""))
            await self.refresh(force=True)
        await self.conf.set("anonymous_view", role or "")
        log.info("anonymous view %s", f"on (role {role})" if role else "off")

    async def viewer(self, session: str | None) -> User | None:
        """The user of a session, else the anonymous viewer when anonymous view is on, else None.

        Only the watching paths (live WebSocket/WebRTC/HLS, GetImage) take an anonymous viewer; every
        other call needs a session.
        """
        user = await self.check(session)
        if user is not None:
            return user
        with contextlib.suppress(Unavailable):
            await self.refresh()  # the anonymous role's cameras as the cluster has them now
        role = self.anonymous_role
        if role is None or role not in self.roles:
            return None
        return User(ANONYMOUS, "", role)
