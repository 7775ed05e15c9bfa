"""Every store backend behind one fixture: the conformance tests run unchanged on each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.servers import redis_cluster, redis_server

BACKENDS = ["memory", "sqlite", "fakeredis", "redis", "redis-cluster"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


async def _open(request: pytest.FixtureRequest) -> Store:
    """The real backends are opened by URL, as the gateway opens them, on an emptied server."""
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        path = request.getfixturevalue("tmp_path") / "state.db"
        return SqliteStore(f"sqlite://{path}")
    if request.param == "fakeredis":
        return RedisStore(fakeredis.FakeAsyncRedis())
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        async with aioredis.Redis.from_url(url) as client:
            await client.flushdb()
        return RedisStore.from_url(url)
    url = request.getfixturevalue("cluster_url")
    cluster = RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
    await cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
    await cluster.aclose()
    return RedisStore.from_url(url)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    backend = await _open(request)
    await backend.connect()
    yield backend
    await backend.close()
