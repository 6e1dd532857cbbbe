"""Users, roles, sessions and the login lock shared through a real redis-server by the nodes of a cluster.

Two nodes here are two Auth objects, each on its own SQLite database, sharing one Redis: what one does,
the other must see at its very next call (no sleep between them), as two gateways behind a load balancer.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from supervisor import passwords
from supervisor.auth import Auth, User, md5_hex, session_hash
from supervisor.db import Database
from supervisor.errors import Conflict, NotFound, Unavailable
from supervisor.shared_auth import SharedAuth
from tools.harness.gateway import Gateway
from tools.harness.redis import RedisServer


class Node:
    """One node's auth: its own database, the shared Redis (attach: what the cluster's link does on connect)."""

    def __init__(self, path: Path, port: int, timeout: int = 600) -> None:
        self.db = Database(path)
        self.port = port
        self.timeout = timeout
        self.redis: aioredis.Redis | None = None
        self.auth: Auth | None = None

    async def start(self, join: bool = True) -> Auth:
        await self.db.open()
        self.auth = Auth(self.db, timeout=self.timeout, max_faults=4, lock_seconds=3)
        await self.auth.load()
        if join:
            await self.join()
        return self.auth

    async def join(self) -> None:
        assert self.auth is not None
        # no retries with backoff (redis-py's default): a test of an outage must not wait out the backoff
        self.redis = aioredis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        await self.auth.attach(SharedAuth(self.redis))

    async def stop(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.close()


@pytest.fixture
async def nodes(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[tuple[Auth, Auth]]:
    a, b = Node(tmp_path / "a.db", redis_server.port), Node(tmp_path / "b.db", redis_server.port)
    try:
        yield await a.start(), await b.start()
    finally:
        await a.stop()
        await b.stop()


async def test_a_login_on_one_node_is_good_on_the_other_at_once_and_logout_ends_it_everywhere(
    nodes: tuple[Auth, Auth],
) -> None:
    a, b = nodes
    session, _ = await a.login("admin", md5_hex("12345"), "10.0.0.1")
    assert session is not None
    user = await b.check(session)  # no wait: the very next request may land on B
    assert user is not None and user.name == "admin"
    assert await a.check(session) is not None
    assert await b.logout(session)
    assert await a.check(session) is None
    assert await b.check(session) is None
    assert await a.check("not-a-session") is None


async def test_users_made_changed_and_deleted_on_one_node_hold_on_the_other(nodes: tuple[Auth, Auth]) -> None:
    a, b = nodes
    await b.create_user("carol", md5_hex("carol-pw"), "Viewer")
    session, _ = await a.login("carol", md5_hex("carol-pw"), "10.0.0.2")  # made on B, logs in on A
    assert session is not None
    other, _ = await b.login("carol", "carol-pw", "10.0.0.3")
    assert other is not None
    with pytest.raises(Conflict):  # the name is taken cluster-wide
        await a.create_user("carol", md5_hex("x"), "Viewer")

    # a role made on A with one camera: B's rights follow at its next check
    await a.create_role("lobby", "Viewer")
    await a.add_cam("lobby", "cam1", "Lobby door")
    viewer = await b.check(session)
    assert viewer is not None and b.sees(viewer, "cam2")  # still the built-in Viewer: every camera
    await a.save_user(User("carol", a.users["carol"].password_md5, "lobby"))
    viewer = await b.check(session)
    assert viewer is not None and viewer.role == "lobby"
    assert b.sees(viewer, "cam1") and not b.sees(viewer, "cam2")
    assert b.roles["lobby"].cams == {"cam1": "Lobby door"}
    await b.del_cam("lobby", "cam1")
    await a.check(session)
    assert not a.sees(viewer, "cam1")
    with pytest.raises(NotFound):
        await a.del_cam("lobby", "cam1")
    await a.add_cam("lobby", "cam3", "")
    await b.forget_cam("cam3")  # a source deleted on B leaves the role on A too
    await a.check(session)
    assert a.roles["lobby"].cams == {}

    # a password changed on B ends carol's other sessions on A; the new one works on A, the old not
    await b.change_password("carol", md5_hex("new-pw"), keep=other)
    assert await a.check(session) is None
    assert await a.check(other) is not None
    assert (await a.login("carol", "carol-pw", "10.0.0.2"))[0] is None
    assert (await a.login("carol", "new-pw", "10.0.0.2"))[0] is not None

    # deleted on A: every session of carol dies on B, and she cannot log in on B
    await a.delete_user("carol", caller="admin")
    assert await b.check(other) is None
    assert (await b.login("carol", "new-pw", "10.0.0.2"))[0] is None
    assert "carol" not in b.users
    await b.delete_role("lobby")
    await a.refresh()
    assert "lobby" not in a.roles
    with pytest.raises(NotFound):
        await a.add_cam("lobby", "cam1", "")


async def test_a_deleted_users_session_dies_even_if_its_index_was_lost(
    nodes: tuple[Auth, Auth], redis_server: RedisServer
) -> None:
    """The per-user set only speeds the ending up: a check refuses a session whose user is gone anyway."""
    a, b = nodes
    await a.create_user("dave", md5_hex("dave-pw"), "Operator")
    session, _ = await a.login("dave", "dave-pw", "10.0.0.4")
    assert session is not None
    r = aioredis.Redis(port=redis_server.port)
    await r.delete("h5gate:auth:user-sessions:dave")
    await b.delete_user("dave", caller="admin")
    assert await r.exists(f"h5gate:auth:session:{session_hash(session)}") == 1
    assert await a.check(session) is None
    assert await r.exists(f"h5gate:auth:session:{session_hash(session)}") == 0  # and the check removed it
    await r.aclose()


async def test_sessions_expire_everywhere_after_the_idle_timeout_and_use_on_either_node_renews(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a_node, b_node = Node(tmp_path / "a.db", redis_server.port, 2), Node(tmp_path / "b.db", redis_server.port, 2)
    a, b = await a_node.start(), await b_node.start()
    try:
        session, _ = await a.login("admin", "12345", "10.0.0.5")
        idle, _ = await b.login("admin", "12345", "10.0.0.5")
        for _ in range(3):  # 3 s of use, alternating nodes: each use renews for both
            await asyncio.sleep(0.75)
            assert await b.check(session) is not None
            await asyncio.sleep(0.75)
            assert await a.check(session) is not None
        assert await a.check(idle) is None and await b.check(idle) is None  # unused for 4.5 s > 2 s
        await asyncio.sleep(2.5)
        assert await b.check(session) is None and await a.check(session) is None
    finally:
        await a_node.stop()
        await b_node.stop()


async def test_the_login_lock_counts_failures_on_every_node(nodes: tuple[Auth, Auth]) -> None:
    a, b = nodes
    client = "192.0.2.9"
    for i, node in enumerate((a, b, a)):
        session, faults = await node.login("admin", "wrong", client)
        assert session is None and faults.count == i + 1 and faults.locked_until == 0
    session, faults = await b.login("admin", "wrong", client)  # the 4th failure, on B: locked
    assert session is None and faults.count == 4
    residue = faults.locked_until - time.monotonic()
    assert 2.0 < residue <= 3.0
    for node in (a, b):  # locked on both, even with the right password
        session, faults = await node.login("admin", "12345", client)
        assert session is None and faults.count == 4 and faults.locked_until > time.monotonic()
    assert (await a.login("admin", "12345", "192.0.2.10"))[0] is not None  # another client is not locked
    await asyncio.sleep(3.2)  # the lock ends, with its count
    session, faults = await a.login("admin", "wrong", client)
    assert session is None and faults.count == 1
    assert (await b.login("admin", "12345", client))[0] is not None  # a good login clears the count
    assert (await a.login("admin", "wrong", client))[1].count == 1
    await b.set_lock_enabled(False)  # turning the lock off on one node: off on all, and the counts go
    for node in (a, b, a, b, a):
        assert (await node.login("admin", "wrong", client))[1].count == 0
    assert (await b.login("admin", "12345", client))[0] is not None


async def test_the_anonymous_view_switch_set_on_one_node_holds_on_the_other(nodes: tuple[Auth, Auth]) -> None:
    a, b = nodes
    assert await b.viewer(None) is None
    await a.create_role("public", "Viewer")
    await a.add_cam("public", "lobby", "")
    await a.set_anonymous("public")
    viewer = await b.viewer(None)  # the next session-less request on B
    assert viewer is not None and viewer.role == "public" and b.sees(viewer, "lobby") and not b.sees(viewer, "x")
    assert b.anonymous_role == "public"
    await b.set_anonymous(None)
    assert await a.viewer(None) is None
    rows = await a.db.fetchall("SELECT value FROM conf WHERE name = 'anonymous_view'")
    assert [r["value"] for r in rows] == ['""']  # the local copy follows (a node leaving keeps it)


async def test_redis_holds_no_usable_session_or_password(nodes: tuple[Auth, Auth], redis_server: RedisServer) -> None:
    a, b = nodes
    await a.create_user("erin", md5_hex("erin-pw"), "Viewer")
    session, _ = await b.login("erin", "erin-pw", "10.0.0.6")
    assert session is not None
    r = aioredis.Redis(port=redis_server.port)
    dump = b""
    for key in [k async for k in r.scan_iter()]:
        dump += key + b"\n"
        kind = await r.type(key)
        if kind == b"string":
            dump += (await r.get(key)) or b""
        elif kind == b"hash":
            for f, v in (await r.hgetall(key)).items():
                dump += f + b"=" + v + b"\n"
        elif kind == b"set":
            dump += b",".join(await r.smembers(key))
    await r.aclose()
    assert session.encode() not in dump
    assert session_hash(session).encode() in dump  # what is kept: the hash, as the local table keeps it
    for secret in ("erin-pw", md5_hex("erin-pw"), "12345", md5_hex("12345")):
        assert secret.encode() not in dump
    assert b'"password": "scrypt$' in dump
    assert passwords.verify(a.users["erin"].password_md5, "erin-pw")


async def test_with_redis_away_a_node_is_its_own_then_syncs_when_it_returns(
    nodes: tuple[Auth, Auth], redis_server: RedisServer
) -> None:
    """Degraded: the cluster's sessions the node saw alive still work, its own new logins work on it alone,
    users cannot change; when Redis answers again (attach, as the link does on reconnect) the node's
    sessions made with the cluster's password join the cluster."""
    a, b = nodes
    await a.create_user("hugo", md5_hex("hugo-pw"), "Viewer")
    cluster_session, _ = await a.login("admin", "12345", "10.0.0.7")
    assert cluster_session is not None and a.clustered
    seen, _ = await a.login("hugo", "hugo-pw", "10.0.0.7")
    assert await b.check(seen) is not None  # B saw it alive in Redis
    await b.reload_if_changed()  # the server's poll (every 0.5 s) keeps B's copy of the users current
    assert "hugo" in b.users
    redis_server.kill()
    assert await b.check(cluster_session) is None and not b.clustered  # B never saw that one
    assert await b.check(seen) is not None  # a Redis outage does not log out what B knew alive
    own, _ = await b.login("hugo", "hugo-pw", "10.0.0.7")  # the users as the cluster last had them
    assert own is not None
    user = await b.check(own)
    assert user is not None and user.name == "hugo"
    assert await a.check(own) is None  # B's alone while Redis is away
    with pytest.raises(Unavailable, match="unreachable"):
        await b.create_user("ivan", md5_hex("x"), "Viewer")
    with pytest.raises(Unavailable):
        await b.change_password("hugo", md5_hex("other"))

    # Redis back, empty (no persistence): the first node to sync seeds it again from its copy of the users
    await asyncio.to_thread(redis_server.start)
    assert not a.clustered  # A failed too (its check above): both wait for their link's reconnect
    for node in (b, a):
        assert node.shared is not None
        await node.attach(SharedAuth(node.shared.redis))
    assert b.clustered and set(b.users) == {"admin", "hugo"}
    user = await a.check(own)  # B's session, made with hugo's cluster password, now good everywhere
    assert user is not None and user.name == "hugo"
    assert await a.check(cluster_session) is None  # what Redis lost is lost


async def test_the_first_node_seeds_the_cluster_a_joining_node_takes_its_users_and_leaving_keeps_them(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a_node, b_node = Node(tmp_path / "a.db", redis_server.port), Node(tmp_path / "b.db", redis_server.port)
    a = await a_node.start(join=False)
    b = await b_node.start(join=False)
    try:
        await a.create_user("anna", md5_hex("anna-pw"), "Operator")
        await b.create_user("bob", md5_hex("bob-pw"), "Viewer")  # B's own user, before it joins
        await b.create_role("b-only", "Viewer")
        kept, _ = await a.login("anna", "anna-pw", "10.0.0.8")  # A's session from before the cluster
        dropped, _ = await b.login("admin", "12345", "10.0.0.8")  # B's admin is not the cluster's admin
        await a_node.join()
        await b_node.join()
        assert set(b.users) == {"admin", "anna"} and "b-only" not in b.roles
        assert (await b.check(kept)) is not None  # A's session carried into the cluster, good on B
        assert (await b.check(dropped)) is None
        assert (await b.login("bob", "bob-pw", "10.0.0.8"))[0] is None

        # B's own table now holds the cluster's users: a deletion in the cluster survives B leaving it
        await a.delete_user("anna", caller="admin")
        session, _ = await a.login("admin", "12345", "10.0.0.8")
        await b.check(session)  # B sees the new version (and writes its table)
        await b.detach()
        assert set(b.users) == {"admin"}
        rows = await b_node.db.fetchall("SELECT name FROM users")
        assert {r["name"] for r in rows} == {"admin"}
        assert await b.check(session) is not None  # the cluster's sessions came home with B
        assert await b.check(kept) is None
    finally:
        await a_node.stop()
        await b_node.stop()


async def test_a_password_set_with_the_passwd_tool_on_a_clustered_node_reaches_the_cluster(
    nodes: tuple[Auth, Auth], tmp_path: Path
) -> None:
    """`h5gate passwd` writes a node's local database from another process; in a cluster it must still rescue."""
    a, b = nodes
    session, _ = await a.login("admin", "12345", "10.0.0.9")
    for _ in range(2):
        await b.login("admin", "wrong", "10.0.0.9")
    other = Database(a.db.path)  # another connection, as the tool is another process
    await other.open()
    tool = Auth(other)
    await tool.load()
    await tool.save_user(User("admin", md5_hex("rescued"), "Administrator"))
    await other.close()
    assert await a.reload_if_changed()
    assert (await b.login("admin", "rescued", "10.0.0.9"))[0] is not None
    assert (await b.login("admin", "12345", "10.0.0.9"))[1].count == 1  # earlier failures were cleared
    assert await b.check(session) is None  # the old password's sessions ended everywhere


async def test_stored_hashes_are_the_same_on_every_node(nodes: tuple[Auth, Auth]) -> None:
    a, b = nodes
    await a.create_user("gina", md5_hex("gina-pw"), "Viewer")
    await b.refresh()
    assert a.users["gina"].password_md5 == b.users["gina"].password_md5
    assert a.users["gina"].password_md5.startswith("scrypt$")
    digest = hashlib.sha256(b"x").hexdigest()
    assert session_hash("x") == digest


async def test_logins_made_before_the_first_sync_join_the_cluster_only_with_the_clusters_password(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A node started in a cluster answers logins before Redis does (its link connects in the background)."""
    a_node, b_node = Node(tmp_path / "a.db", redis_server.port), Node(tmp_path / "b.db", redis_server.port)
    a = await a_node.start()
    await a.create_user("jane", md5_hex("jane-cluster-pw"), "Viewer")
    b = await b_node.start(join=False)
    try:
        await b.create_user("jane", md5_hex("jane-local-pw"), "Viewer")
        b_node.redis = aioredis.Redis(port=redis_server.port)
        b.share(SharedAuth(b_node.redis))  # a node of the cluster, not yet synced
        assert not b.clustered
        admin, _ = await b.login("admin", "12345", "10.0.0.11")  # the same password as the cluster's admin
        jane_local, _ = await b.login("jane", "jane-local-pw", "10.0.0.11")  # not the cluster's password
        assert admin is not None and jane_local is not None
        with pytest.raises(Unavailable):
            await b.create_role("early", "Viewer")
        await b.attach(SharedAuth(b_node.redis))
        assert b.clustered
        assert (await a.check(admin)) is not None
        assert (await b.check(jane_local)) is None and (await a.check(jane_local)) is None
        assert (await b.login("jane", "jane-cluster-pw", "10.0.0.11"))[0] is not None
        rows = await b_node.db.fetchall("SELECT id_hash FROM sessions")
        assert rows == []  # the cluster's sessions live in Redis only
    finally:
        await a_node.stop()
        await b_node.stop()


# ---------------------------------------------------------------------------------------------------------------
# Two real gateways sharing one real Redis, as behind a load balancer: each request may land on either.


def _wait(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: last {value!r}")


def _login(gw: Gateway, user: str, password: str) -> dict[str, Any]:
    status, body = gw.get("Login", session=None, user=user, password=password)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def _session(gw: Gateway, user: str, password: str) -> str:
    body = _login(gw, user, password)
    assert body["bStatus"] is True, body
    return str(body["strSession"])


def _status(gw: Gateway, session: str, call: str = "Keepalive", **params: Any) -> int:
    return gw.get(call, session=session, **params)[0]


def _synced(a: Gateway, b: Gateway) -> bool:
    """A session made on one node is good on the other: both nodes are attached to the cluster's users."""
    try:
        return _status(b, _session(a, "admin", "12345")) == 200 and _status(a, _session(b, "admin", "12345")) == 200
    except AssertionError:
        return False


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Gateway, Gateway]]:
    gws = []
    try:
        for name in ("node-a", "node-b"):
            env = {"H5GATE_REDIS_ENABLE": "true", "H5GATE_REDIS_PORT": str(redis_server.port), "H5GATE_NODE_ID": name}
            gws.append(Gateway(tmp_path / name, extra_args=["--no-demo"], env=env).start())
        a, b = gws
        _wait(lambda: _synced(a, b), what="both nodes on the cluster's users")
        yield a, b
    finally:
        for gw in gws:
            gw.stop()


def test_two_gateways_share_logins_users_roles_and_logouts(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    md5 = md5_hex
    # the harness's own admin logins (made before the nodes synced, with the cluster's password) carried over
    assert _status(b, a.session) == 200 and _status(a, b.session) == 200

    # login on A, the very next request on B
    session = _session(a, "admin", "12345")
    assert _status(b, session, "GetUserList") == 200

    # a user made on B logs in on A at once; its session is good on B
    assert b.ok("CreateUser", user="lena", password=md5("lena-pw"), roletoken="Viewer")["bStatus"] is True
    lena = _session(a, "lena", md5("lena-pw"))
    assert _status(b, lena) == 200
    assert _status(b, lena, "GetUserList") == 403  # a Viewer, on B too
    assert a.get("CreateUser", user="lena", password=md5("x"))[1]["strCode"] == "user already exists: lena"

    # a role made on A, lena moved into it on B: A answers with the new role at once
    assert a.ok("CreateRole", roletoken="night-shift", role="Operator")["bStatus"] is True
    assert b.ok("UpdateUser", user="lena", roletoken="night-shift")["bStatus"] is True
    info = a.ok("GetUserInfo", session=lena)
    assert (info["strRoleToken"], info["strUserType"]) == ("night-shift", "Operator")
    roles = {r["strRoleToken"] for r in b.ok("GetRoleList")["roles"]}
    assert "night-shift" in roles

    # a password set on A ends lena's sessions on B; the old password fails on B, the new one works there
    other = _session(b, "lena", md5("lena-pw"))
    assert a.ok("UpdateUser", user="lena", newpassword=md5("lena-new"))["bStatus"] is True
    assert _status(b, lena) == 401 and _status(b, other) == 401 and _status(a, other) == 401
    assert _login(b, "lena", md5("lena-pw"))["bStatus"] is False
    lena = _session(b, "lena", md5("lena-new"))

    # deleted on A: dead on B at once, and no login on B
    assert a.ok("DeleteUser", user="lena")["bStatus"] is True
    assert _status(b, lena) == 401
    assert _login(b, "lena", md5("lena-new"))["bStatus"] is False
    assert b.ok("DeleteRole", roletoken="night-shift")["bStatus"] is True
    assert "night-shift" not in {r["strRoleToken"] for r in a.ok("GetRoleList")["roles"]}

    # logout on B of a session made on A
    assert _status(b, session, "Logout") == 200
    assert _status(a, session) == 401

    # the lock counts failures on both nodes: 2 on A and 2 on B lock the user on both
    assert a.ok("CreateUser", user="mika", password=md5("mika-pw"))["bStatus"] is True
    for i, gw in enumerate((a, b, a, b)):
        body = _login(gw, "mika", "wrong")
        assert body["bStatus"] is False and body["nFaultTimes"] == i + 1, body
    assert body["tLockTimeResidue"] > 0
    for gw in (a, b):
        body = _login(gw, "mika", "mika-pw")
        assert body["bStatus"] is False and body["strCode"] == "login locked, try again later", body


def test_a_gateway_that_leaves_the_cluster_keeps_its_sessions_and_the_clusters_users(
    pair: tuple[Gateway, Gateway],
) -> None:
    a, b = pair
    assert a.ok("CreateUser", user="nora", password=md5_hex("nora-pw"))["bStatus"] is True
    nora = _session(a, "nora", "nora-pw")
    assert b.ok("SetEnableRedis", enable="false")["bStatus"] is True  # B's admin session survives its leaving
    _wait(lambda: _status(b, nora) == 200, what="the cluster's session good on B alone")
    assert b.ok("GetEnableRedis")["enable"] is False
    assert "nora" in {u["strUser"] for u in b.ok("GetUserList")["users"]}  # the cluster's users, kept
    assert b.ok("DeleteUser", user="nora")["bStatus"] is True  # now B's own business: not the cluster's
    assert _status(a, nora) == 200
    assert _status(b, nora) == 401
    assert _login(a, "nora", "nora-pw")["bStatus"] is True

    # back in: B takes the cluster's users again (nora is back on B), its own deletion did not reach the cluster
    assert b.ok("SetEnableRedis", enable="true")["bStatus"] is True
    _wait(lambda: _status(b, nora) == 200, what="B back in the cluster")
    assert "nora" in {u["strUser"] for u in b.ok("GetUserList")["users"]}


def test_the_passwd_tool_on_one_gateways_data_rescues_the_password_on_every_node(
    pair: tuple[Gateway, Gateway],
) -> None:
    a, b = pair
    old = _session(b, "admin", "12345")
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "passwd", "admin", "--data-dir", str(a.data_dir)],
        input="rescued-pw\n",
        text=True,
        capture_output=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # A notices its database changed (within a second) and sends the user up: B takes the new password
    _wait(lambda: _login(b, "admin", "rescued-pw")["bStatus"], what="the rescued password on B")
    assert _login(b, "admin", "12345")["bStatus"] is False
    assert _status(b, old) == 401  # a new password ends the other sessions, on every node


def test_a_restarted_gateway_finds_the_clusters_sessions(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    session = _session(a, "admin", "12345")
    b.stop()
    b.start()
    _wait(lambda: _status(b, session) == 200, what="A's session good on the restarted B")
    rows = sqlite3.connect(b.data_dir / "h5gate.db").execute("SELECT count(*) FROM sessions").fetchone()
    assert rows[0] == 0  # sessions live in Redis while in a cluster, not in a node's own table


async def test_a_burst_of_checks_waits_its_turn_instead_of_looking_like_redis_gone(nodes: tuple[Auth, Auth]) -> None:
    """redis-py's pool (100 connections) refuses past its size; 500 requests at once must all be answered."""
    a, b = nodes
    session, _ = await a.login("admin", "12345", "10.0.0.12")
    users = await asyncio.gather(*(b.check(session) for _ in range(500)))
    assert all(u is not None and u.name == "admin" for u in users)
    assert b.clustered and not b.shared_down


async def test_a_password_set_with_the_tool_while_redis_is_away_reaches_the_cluster_when_it_returns(
    nodes: tuple[Auth, Auth], redis_server: RedisServer
) -> None:
    a, b = nodes
    redis_server.kill()
    assert await a.check("anything") is None
    assert (await a.login("admin", "12345", "10.0.0.13"))[0] is not None  # degraded now: a's own login
    assert not a.clustered
    other = Database(a.db.path)
    await other.open()
    tool = Auth(other)
    await tool.load()
    await tool.save_user(User("admin", md5_hex("while-away"), "Administrator"))
    await other.close()
    assert await a.reload_if_changed()  # taken here at once (no error while Redis is away) ...
    assert (await a.login("admin", "while-away", "10.0.0.13"))[0] is not None
    assert (await a.login("admin", "12345", "10.0.0.13"))[0] is None
    await asyncio.to_thread(redis_server.start)  # ... and by the cluster when Redis is back (kept its data? no:
    for node in (b, a):  # empty, so the first to sync seeds; B first, with the old password ...
        assert node.shared is not None
        await node.attach(SharedAuth(node.shared.redis))
    # ... and A's sync sends up what the tool set: the cluster takes the rescued password
    assert (await b.login("admin", "while-away", "10.0.0.14"))[0] is not None
    assert (await b.login("admin", "12345", "10.0.0.14"))[0] is None


def test_a_roles_cameras_set_on_one_gateway_are_the_rights_on_the_other(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Per-camera rights: each node has the demo camera; a role's cameras changed on one node decide what
    its users list and get pictures of on the other, at the next request."""
    gws = []
    try:
        for name in ("cam-a", "cam-b"):
            env = {"H5GATE_REDIS_ENABLE": "true", "H5GATE_REDIS_PORT": str(redis_server.port), "H5GATE_NODE_ID": name}
            gws.append(Gateway(tmp_path / name, env=env).start())
        a, b = gws
        _wait(lambda: _synced(a, b), what="both nodes on the cluster's users")
        assert a.ok("CreateRole", roletoken="door", role="Viewer")["bStatus"] is True
        assert a.ok("CreateUser", user="otto", password=md5_hex("otto-pw"), roletoken="door")["bStatus"] is True
        otto = _session(b, "otto", "otto-pw")
        assert b.ok("GetSrc", session=otto)["src"] == []
        assert b.get("GetImage", session=otto, token="demo")[0] == 404  # a camera not of the role is absent

        assert a.ok("AddCamToRole", roletoken="door", camtoken="demo")["bStatus"] is True
        assert [s["strToken"] for s in b.ok("GetSrc", session=otto)["src"]] == ["demo"]
        b.wait_online("demo", timeout=30)
        status, _, body = b.request(f"/api/v1/GetImage?token=demo&session={otto}", timeout=30)
        assert status == 200 and body[:2] == b"\xff\xd8"  # a JPEG of the camera, on B, by A's grant
        cams = b.ok("GetRoleInfo", roletoken="door")["cams"]
        assert [c["strCamToken"] for c in cams] == ["demo"]

        assert b.ok("DelCamInRole", roletoken="door", camtoken="demo")["bStatus"] is True
        assert a.ok("GetSrc", session=otto)["src"] == []
        assert a.get("GetImage", session=otto, token="demo")[0] == 404
    finally:
        for gw in gws:
            gw.stop()


async def test_two_nodes_joining_an_empty_cluster_at_once_agree_on_one_set_of_users(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a_node, b_node = Node(tmp_path / "a.db", redis_server.port), Node(tmp_path / "b.db", redis_server.port)
    a, b = await a_node.start(join=False), await b_node.start(join=False)
    try:
        await a.create_user("only-a", md5_hex("pw-a"), "Viewer")
        await b.create_user("only-b", md5_hex("pw-b"), "Viewer")
        await asyncio.gather(a_node.join(), b_node.join())  # WATCH/MULTI: one seeds, the other adopts
        assert set(a.users) == set(b.users) and len({"only-a", "only-b"} & set(a.users)) == 1
        assert a.users["admin"].password_md5 == b.users["admin"].password_md5
    finally:
        await a_node.stop()
        await b_node.stop()
