"""The Redis store's keys: a tenant's reservations expire from one set, and what an earlier
version left in a line's own expiry set is adopted, not lost (a rolling upgrade)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway.cost.windows import HOUR
from gateway.store.base import Line
from gateway.store.redis import RedisStore

T0 = 1_700_000_000.0


def line(amount: int, key: str = "{t}:b:x:tokens", limit: int = 100) -> Line:
    return Line(key, HOUR, limit, amount)


@pytest.fixture(params=["redis", "redis-cluster"])
async def opened(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisStore, Any]]:
    """A store and a plain client on the same emptied server."""
    url = request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    if request.param == "redis":
        client: Any = aioredis.Redis.from_url(url)
        await client.flushdb()
    else:
        client = RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
        await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    store = RedisStore.from_url(url)
    await store.connect()
    try:
        yield store, client
    finally:
        await store.close()
        await client.aclose()


async def held_the_old_way(client: Any, ln: Line, rid: str, amount: int, expires_at: float
                           ) -> None:
    """A reservation as versions before the tenant-wide set wrote it."""
    await client.hset(ln.key + ":p", rid, f"{amount}:{HOUR.bucket(T0)}:{expires_at!r}")
    await client.hincrby(ln.key + ":p", "_sum", amount)
    await client.zadd(ln.key + ":x", {rid: expires_at})


async def test_the_tenants_set_is_empty_once_its_requests_settle(opened: Any) -> None:
    store, client = opened
    a, b = line(10), line(20, key="{t}:b:y:tokens")
    for i in range(5):
        assert (await store.reserve("t", f"r{i}", [a, b], T0 + i, 600)).ok
    assert await client.zcard("{t}:x") == 5
    assert 600 < await client.ttl("{t}:x") <= 660
    for i in range(5):
        assert await store.settle("t", f"r{i}", [line(1), line(2, key=b.key)], None, T0 + 9)
    assert await client.zcard("{t}:x") == 0
    assert await store.peek([a, b], T0 + 9) == [5, 10]


async def test_a_reservation_an_earlier_version_held_still_counts_then_expires(opened: Any
                                                                                ) -> None:
    store, client = opened
    ln, other = line(0), line(0, key="{t}:b:y:tokens")
    await held_the_old_way(client, ln, "old", 40, T0 + 30)
    assert (await store.reserve("t", "r1", [line(60)], T0 + 10, 600)).used == (40,)
    assert await client.exists(ln.key + ":x") == 0, "adopted into the tenant's set"
    assert not (await store.reserve("t", "r2", [line(1)], T0 + 20, 600)).ok
    # expired: ended by a request that meets another line of the tenant
    assert (await store.reserve("t", "r3", [other], T0 + 31, 600)).ok
    assert await client.hget(ln.key + ":p", "old") is None
    assert await store.peek([ln], T0 + 31) == [60]
    assert (await store.reserve("t", "r4", [line(40)], T0 + 31, 600)).ok


async def test_a_reservation_an_earlier_version_held_settles_once(opened: Any) -> None:
    store, client = opened
    ln = line(0)
    await held_the_old_way(client, ln, "old", 40, T0 + 600)
    assert await store.peek([ln], T0) == [40]
    assert await store.settle("t", "old", [line(15)], None, T0 + 5)
    assert await store.peek([ln], T0 + 5) == [15]
    assert (await store.reserve("t", "r1", [line(85)], T0 + 6, 600)).ok
    # its member, adopted after it settled, ends nothing when it expires
    assert (await store.reserve("t", "r2", [line(0)], T0 + 605, 600)).used == (100,)


async def test_a_hold_an_earlier_version_adds_later_expires_as_the_window_moves(opened: Any
                                                                                 ) -> None:
    """During a rolling upgrade an instance of an earlier version may reserve in a line this
    version has met already, then crash: its hold still expires, within a bucket."""
    store, client = opened
    ln, start = line(0), HOUR.bucket(T0) * HOUR.width
    assert (await store.reserve("t", "r1", [line(10)], start, 600)).ok
    await held_the_old_way(client, ln, "old", 40, start + 30)
    assert (await store.reserve("t", "r2", [ln], start + 59, 600)).used == (50,)  # not yet
    assert (await store.reserve("t", "r3", [ln], start + 60, 600)).used == (10,)
