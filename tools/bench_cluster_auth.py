"""What a session check costs: local (memory) against clustered (one Redis round trip, a Lua script).

    python tools/bench_cluster_auth.py [N]

Starts its own redis-server (tools/harness/redis.py) and a throw-away database; prints microseconds per
check done one after another and N at once (queued behind SharedAuth's cap of Redis operations in flight),
beside a bare Redis PING for scale.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis.asyncio as aioredis  # noqa: E402

from supervisor.auth import Auth  # noqa: E402
from supervisor.db import Database  # noqa: E402
from supervisor.shared_auth import SharedAuth  # noqa: E402
from tools.harness.redis import RedisServer  # noqa: E402


async def run(port: int, n: int) -> None:
    db = Database(Path(tempfile.mkdtemp()) / "bench.db")
    await db.open()
    auth = Auth(db)
    await auth.load()
    session, _ = await auth.login("admin", "12345", "bench")
    start = time.perf_counter()
    for _ in range(n):
        await auth.check(session)
    local = (time.perf_counter() - start) / n
    client = aioredis.Redis(port=port)
    await auth.attach(SharedAuth(client))
    session, _ = await auth.login("admin", "12345", "bench")
    start = time.perf_counter()
    for _ in range(n):
        await client.ping()
    ping = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for _ in range(n):
        await auth.check(session)
    clustered = (time.perf_counter() - start) / n
    start = time.perf_counter()
    users = await asyncio.gather(*(auth.check(session) for _ in range(n)))
    burst = (time.perf_counter() - start) / n
    assert all(u is not None for u in users) and auth.clustered
    print(
        f"check: local {local * 1e6:.0f} us; clustered {clustered * 1e6:.0f} us one after another, "
        f"{burst * 1e6:.0f} us each with {n} at once; redis PING {ping * 1e6:.0f} us"
    )
    await client.aclose()
    await db.close()


def main() -> None:
    logging.disable(logging.WARNING)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with RedisServer() as server:
        asyncio.run(run(server.port, n))


if __name__ == "__main__":
    main()
