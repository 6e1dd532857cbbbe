"""Users, roles, sessions and failed-login counts shared by the nodes of a cluster, in Redis.

Why Redis is the truth and not a cache: a load balancer may send a client's next request to any node, so
a session made on node A must be valid on node B at once, and a logout, a deleted user or a changed role on
one node must hold on every node at once. Anything only announced (pub/sub) leaves a window where the
message is still in flight when the client's next request lands, and loses news over a reconnect. So:

- A session is one Redis key named by the SHA-256 of its id (what the local database keeps, so Redis holds
  no usable session) whose value is the user name and whose expiry is the idle timeout, renewed by every
  use. Every node asks Redis on every authenticated request (one round trip, a script): Redis ends an idle
  session everywhere at once, and a logout is one DEL.
- Users (scrypt hashes only, as the local database keeps them) and roles live in Redis hashes, and every
  change bumps a version counter in the same transaction. A node keeps a mirror of them for its many
  synchronous reads (may, sees, the user list) and compares the version in the same round trip that checks
  a session: a node that sees a new version reloads the mirror before it answers. So a change on any node
  holds for the next request on every node, with no message to miss.
- A failed login counts in one Redis hash per user@client, whose expiry is the lock time after the last
  failure; reaching the limit marks it locked and stops counting, so the lock, the count and the record all
  end together (the local rules of supervisor/auth.py, counted cluster-wide).

Keys (prefix `h5gate:auth:`): `users` (name -> {"password", "role"}), `roles` (token -> {"kind", "all"}),
`role-cams` (`<role>\\n<cam>` -> camera name: a flat hash, so adding a camera is one HSET and two nodes
adding cameras to one role at once lose neither), `version`, `session:<sha256>`, `user-sessions:<name>` (a
set of that user's session hashes, to end them on delete or password change; dead members are pruned at the
next login), `faults:<user>@<client>`. One Redis server (not Redis Cluster): the scripts touch keys they
compute, which a sharded Redis would refuse.

This module knows Redis and the key layout only; supervisor/auth.py decides what a login or a right means.
Redis errors become errors.Unavailable with the reason, so callers answer bStatus false, never a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError

from supervisor.errors import Unavailable

if TYPE_CHECKING:
    from supervisor.auth import Auth
    from supervisor.cluster.service import Cluster

log = logging.getLogger("h5gate.auth")

PREFIX = "h5gate:auth:"
DOWN = "the cluster's shared user store (Redis) is unreachable"
# ConfStore values that are about users, so one console page sets them for every node (SetLoginLockStatus,
# SetAnonymousView): with a load balancer in front, the next request must not meet the old switch
SHARED_CONF = ("login_lock", "anonymous_view")
MAX_IN_FLIGHT = 32  # Redis operations of this store at once (see SharedAuth._call)

# KEYS: session, version. ARGV: idle timeout (ms). The session's user (renewed) and the users/roles version.
TOUCH = """
local user = redis.call('GET', KEYS[1])
if user then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {user, redis.call('GET', KEYS[2])}
"""
# KEYS: session, user-sessions. ARGV: user, timeout (ms), session key prefix, session hash.
ADD_SESSION = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
for _, h in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[3] .. h) == 0 then redis.call('SREM', KEYS[2], h) end
end
return 1
"""
# KEYS: user-sessions. ARGV: session key prefix, the hash to keep ('' for none). Ends a user's sessions.
END_SESSIONS = """
local n = 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if h ~= ARGV[2] then
    n = n + redis.call('DEL', ARGV[1] .. h)
    redis.call('SREM', KEYS[1], h)
  end
end
return n
"""
# KEYS: faults. ARGV: max faults, lock (ms). One more failure: {count, locked (0/1), ms left of the record}.
FAIL = """
if redis.call('HGET', KEYS[1], 'locked') then
  return {tonumber(redis.call('HGET', KEYS[1], 'count')), 1, redis.call('PTTL', KEYS[1])}
end
local n = redis.call('HINCRBY', KEYS[1], 'count', 1)
if n >= tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'locked', 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {n, n >= tonumber(ARGV[1]) and 1 or 0, redis.call('PTTL', KEYS[1])}
"""
# KEYS: roles, role-cams, version. ARGV: role, cam, name. 0 when the role is gone (deleted on another node).
ADD_CAM = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1] .. '\\n' .. ARGV[2], ARGV[3])
redis.call('INCR', KEYS[3])
return 1
"""
# KEYS: role-cams, version. ARGV: 'role' or 'cam', the value. Drops every camera of a role, or a camera
# from every role (a source deleted), in one step.
DROP_CAMS = """
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local role, cam = string.match(f, '^(.-)\\n(.*)$')
  if (ARGV[1] == 'role' and role == ARGV[2]) or (ARGV[1] == 'cam' and cam == ARGV[2]) then
    redis.call('HDEL', KEYS[1], f)
  end
end
redis.call('INCR', KEYS[2])
return 1
"""


@dataclass
class StoredUser:
    name: str
    password: str  # the scrypt string (passwords.hash_md5), never an MD5 or a password
    role: str


@dataclass
class StoredRole:
    token: str
    kind: str
    all_cams: bool
    cams: dict[str, str]


@dataclass
class Snapshot:
    """Users, roles and their switches as one transaction read them, and the version they are at."""

    users: dict[str, StoredUser]
    roles: dict[str, StoredRole]
    version: int
    conf: dict[str, Any]  # SHARED_CONF names -> JSON values (the login lock and anonymous view switches)


def _s(value: Any) -> str:
    """Redis answers bytes or str depending on the client's decode_responses: take either."""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _version(value: Any) -> int:
    return int(_s(value)) if value is not None else 0


class SharedAuth:
    """The Redis side of supervisor/auth.py: what the nodes of one cluster share about users and logins."""

    def __init__(
        self, redis: Redis, prefix: str = PREFIX, on_error: Callable[[BaseException], None] | None = None
    ) -> None:
        self.redis = redis
        self.p = prefix
        self.on_error = on_error  # told of every failed command (the cluster's link then re-checks at once)
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._touch = redis.register_script(TOUCH)
        self._add_session = redis.register_script(ADD_SESSION)
        self._end_sessions = redis.register_script(END_SESSIONS)
        self._fail = redis.register_script(FAIL)
        self._add_cam = redis.register_script(ADD_CAM)
        self._drop_cams = redis.register_script(DROP_CAMS)

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """One operation: at most MAX_IN_FLIGHT at once, Redis's errors as Unavailable (and told to on_error).

        Why the cap: redis-py's pool refuses (MaxConnectionsError) past its size (100) instead of waiting,
        so a burst of requests (hundreds of HLS viewers asking at once) would look like Redis going away,
        and the node would drop to degraded and its link reconnect. Queued here, they wait their turn
        (a check takes well under a millisecond on an idle loopback) and leave the pool room for the
        cluster's own commands.
        """
        try:
            async with self._in_flight:
                yield
        except (RedisError, OSError) as e:
            if isinstance(e, WatchError):
                raise
            if self.on_error is not None:
                self.on_error(e)
            raise Unavailable(f"{DOWN}: {e}") from e

    def _session(self, digest: str) -> str:
        return f"{self.p}session:{digest}"

    def _user_sessions(self, name: str) -> str:
        return f"{self.p}user-sessions:{name}"

    def _faults(self, key: str) -> str:
        return f"{self.p}faults:{key}"

    async def fresh(self) -> None:
        """Close the pool's idle connections: after Redis came back, each would fail once (the client does
        not retry), and a sync must not fail on a connection to the Redis that died."""
        async with self._call():
            await self.redis.connection_pool.disconnect(inuse_connections=False)

    # ------------------------------------------------------------------ users and roles

    async def seed(self, users: list[StoredUser], roles: list[StoredRole], conf: dict[str, Any]) -> bool:
        """Make this node's users and roles the cluster's, if the cluster has none yet (the first node to join).

        WATCH makes it all or nothing against another node seeding at the same moment: one wins, the other
        adopts what the winner wrote. True when this node seeded.
        """
        users_key = self.p + "users"
        async with self._call(), self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(users_key)
                if await pipe.exists(users_key):
                    await pipe.unwatch()
                    return False
                pipe.multi()
                pipe.hset(users_key, mapping={u.name: self._user_json(u) for u in users})
                pipe.delete(self.p + "roles", self.p + "role-cams")
                if roles:
                    pipe.hset(self.p + "roles", mapping={r.token: self._role_json(r) for r in roles})
                cams: dict[Any, Any] = {f"{r.token}\n{cam}": name for r in roles for cam, name in r.cams.items()}
                if cams:
                    pipe.hset(self.p + "role-cams", mapping=cams)
                values: dict[Any, Any] = {k: json.dumps(v) for k, v in conf.items() if k in SHARED_CONF}
                if values:
                    pipe.hset(self.p + "conf", mapping=values)
                pipe.incr(self.p + "version")
                await pipe.execute()
            except WatchError:
                return False
        return True

    async def snapshot(self) -> Snapshot:
        """Users, roles and the version, read in one transaction (a consistent picture)."""
        async with self._call(), self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.p + "users")
            pipe.hgetall(self.p + "roles")
            pipe.hgetall(self.p + "role-cams")
            pipe.get(self.p + "version")
            pipe.hgetall(self.p + "conf")
            raw_users, raw_roles, raw_cams, version, raw_conf = await pipe.execute()
        users: dict[str, StoredUser] = {}
        for name, value in raw_users.items():
            try:
                data = json.loads(_s(value))
                users[_s(name)] = StoredUser(_s(name), str(data["password"]), str(data["role"]))
            except (ValueError, KeyError, TypeError):
                log.warning("shared user %s is malformed in Redis: ignored", _s(name)[:64])
        roles: dict[str, StoredRole] = {}
        for token, value in raw_roles.items():
            try:
                data = json.loads(_s(value))
                roles[_s(token)] = StoredRole(_s(token), str(data["kind"]), bool(data["all"]), {})
            except (ValueError, KeyError, TypeError):
                log.warning("shared role %s is malformed in Redis: ignored", _s(token)[:64])
        for field, name in raw_cams.items():
            role, _, cam = _s(field).partition("\n")
            if role in roles and cam:
                roles[role].cams[cam] = _s(name)
        conf: dict[str, Any] = {}
        for name, value in raw_conf.items():
            with contextlib.suppress(ValueError):
                conf[_s(name)] = json.loads(_s(value))
        return Snapshot(users, roles, _version(version), conf)

    async def version(self) -> int:
        async with self._call():
            return _version(await self.redis.get(self.p + "version"))

    @staticmethod
    def _user_json(user: StoredUser) -> str:
        return json.dumps({"password": user.password, "role": user.role})

    @staticmethod
    def _role_json(role: StoredRole) -> str:
        return json.dumps({"kind": role.kind, "all": role.all_cams})

    async def put_conf(self, name: str, value: Any) -> None:
        async with self._call(), self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.p + "conf", name, json.dumps(value))
            pipe.incr(self.p + "version")
            await pipe.execute()

    async def put_user(self, user: StoredUser, *, new: bool = False) -> bool:
        """Write a user (a new one only if the name is free, when `new`); False when the name was taken."""
        async with self._call(), self.redis.pipeline(transaction=True) as pipe:
            if new:
                pipe.hsetnx(self.p + "users", user.name, self._user_json(user))
            else:
                pipe.hset(self.p + "users", user.name, self._user_json(user))
            pipe.incr(self.p + "version")
            written, _ = await pipe.execute()
        return bool(written) or not new

    async def delete_user(self, name: str) -> None:
        """Remove a user and end every session of theirs on every node."""
        async with self._call():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.p + "users", name)
                pipe.incr(self.p + "version")
                await pipe.execute()
            await self._end_sessions(keys=[self._user_sessions(name)], args=[self.p + "session:", ""])

    async def create_role(self, role: StoredRole) -> bool:
        """False when a role of that token exists already (made on any node)."""
        async with self._call(), self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.p + "roles", role.token, self._role_json(role))
            pipe.incr(self.p + "version")
            written, _ = await pipe.execute()
        return bool(written)

    async def delete_role(self, token: str) -> None:
        async with self._call():
            await self.redis.hdel(self.p + "roles", token)
            await self._drop_cams(keys=[self.p + "role-cams", self.p + "version"], args=["role", token])

    async def add_cam(self, role: str, cam: str, name: str) -> bool:
        """False when the role is gone."""
        async with self._call():
            keys = [self.p + "roles", self.p + "role-cams", self.p + "version"]
            return bool(await self._add_cam(keys=keys, args=[role, cam, name]))

    async def del_cam(self, role: str, cam: str) -> bool:
        """False when the camera was not in the role."""
        async with self._call(), self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.p + "role-cams", f"{role}\n{cam}")
            pipe.incr(self.p + "version")
            removed, _ = await pipe.execute()
        return bool(removed)

    async def forget_cam(self, cam: str) -> None:
        async with self._call():
            await self._drop_cams(keys=[self.p + "role-cams", self.p + "version"], args=["cam", cam])

    # ------------------------------------------------------------------ sessions

    async def add_session(self, digest: str, user: str, ttl_ms: int) -> None:
        async with self._call():
            keys = [self._session(digest), self._user_sessions(user)]
            await self._add_session(keys=keys, args=[user, max(1, ttl_ms), self.p + "session:", digest])

    async def touch(self, digest: str, timeout_ms: int) -> tuple[str | None, int]:
        """(the session's user or None, the users/roles version), renewing the session's idle timer."""
        async with self._call():
            user, version = await self._touch(keys=[self._session(digest), self.p + "version"], args=[timeout_ms])
        return (_s(user) if user is not None else None), _version(version)

    async def drop_session(self, digest: str) -> bool:
        async with self._call():
            return bool(await self.redis.delete(self._session(digest)))

    async def end_sessions(self, user: str, keep: str | None = None) -> int:
        """End the user's sessions on every node, but `keep` (a session hash): the number ended."""
        async with self._call():
            args = [self.p + "session:", keep or ""]
            return int(await self._end_sessions(keys=[self._user_sessions(user)], args=args))

    async def sessions(self) -> list[tuple[str, str, int]]:
        """Every live session: (hash, user, ms left). For a node leaving the cluster, and the sessions gauge."""
        out: list[tuple[str, str, int]] = []
        start = len(self.p + "session:")
        async with self._call():
            keys = [_s(k) async for k in self.redis.scan_iter(match=self.p + "session:*", count=500)]
            for i in range(0, len(keys), 500):
                async with self.redis.pipeline(transaction=False) as pipe:
                    for key in keys[i : i + 500]:
                        pipe.get(key)
                        pipe.pttl(key)
                    answers = await pipe.execute()
                for key, user, ttl in zip(keys[i : i + 500], answers[::2], answers[1::2], strict=True):
                    if user is not None and int(ttl) > 0:
                        out.append((key[start:], _s(user), int(ttl)))
        return out

    async def count_sessions(self) -> int:
        async with self._call():
            return sum([1 async for _ in self.redis.scan_iter(match=self.p + "session:*", count=1000)])

    # ------------------------------------------------------------------ failed logins

    async def faults(self, key: str) -> tuple[int, int]:
        """(failures counted, ms left of a running lock or 0) of user@client."""
        async with self._call(), self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self._faults(key), ["count", "locked"])
            pipe.pttl(self._faults(key))
            (count, locked), ttl = await pipe.execute()
        return int(_s(count)) if count is not None else 0, max(0, int(ttl)) if locked is not None else 0

    async def fail(self, key: str, max_faults: int, lock_ms: int) -> tuple[int, int]:
        """Count one more failure of user@client: (failures, ms left of the lock, 0 when not locked)."""
        async with self._call():
            count, locked, ttl = await self._fail(keys=[self._faults(key)], args=[max_faults, lock_ms])
        return int(count), max(0, int(ttl)) if int(locked) else 0

    async def clear_faults(self, key: str) -> None:
        async with self._call():
            await self.redis.delete(self._faults(key))

    async def clear_user_faults(self, name: str | None = None) -> None:
        """Forget the failures of one user at every client (a password just set), or of everyone (lock off)."""
        pattern = self._faults(_glob_escape(name) + "@*" if name is not None else "*")
        async with self._call():
            keys = [k async for k in self.redis.scan_iter(match=pattern, count=500)]
            if keys:
                await self.redis.delete(*keys)


def _glob_escape(text: str) -> str:
    """A literal for Redis's MATCH: user names are plain (USER_RE), but never let one act as a pattern."""
    return "".join("\\" + c if c in "*?[]\\^" else c for c in text)


def follow(cluster: Cluster, auth: Auth) -> None:
    """Make `auth` follow the cluster: attach on every (re)connect to Redis, detach when the node leaves.

    Called once at start (users chapter). A node started with the cluster on is a (degraded) node of it
    from its first request (Auth.share), so nothing it does meanwhile is lost when it syncs. When it
    leaves (turned off, or moved to another Redis), the cluster's sessions stay good on it; only when
    clustering was turned off are they written to its own table (see Auth.detach).
    """

    async def leave() -> None:
        await auth.detach(persist=not cluster.conf.enable)

    async def connected(client: Redis) -> None:
        try:
            await auth.attach(SharedAuth(client, on_error=cluster.failed))
        except Unavailable as e:  # the link's own kind of failure: it logs once and retries with backoff
            raise RedisConnectionError(e.message) from e

    async def catch_up(client: Redis) -> None:
        try:
            await connected(client)
        except RedisConnectionError as e:  # the link reconnects, and runs `connected` then
            cluster.failed(e)

    cluster.on_connect.append(connected)
    cluster.on_leave.append(leave)
    client = cluster.redis
    if client is not None:
        auth.share(SharedAuth(client, on_error=cluster.failed))
        if cluster.online:  # it connected before this step was there: its connect steps have run already
            _tasks.add(task := asyncio.get_running_loop().create_task(catch_up(client)))
            task.add_done_callback(_tasks.discard)


_tasks: set[asyncio.Task[None]] = set()  # held until done (the loop keeps only weak references)
