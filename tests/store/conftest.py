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
from gateway.store.redis_budgets import RedisBudgetDefinitions
from tests.servers import redis_cluster, redis_server

BACKENDS = ["memory", "fakeredis", "redis", "redis-cluster"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


async def _open(request: pytest.FixtureRequest) -> Store:
    if request.param == "memory":
        return MemoryStore()
    client: aioredis.Redis | RedisCluster
    if request.param == "fakeredis":
        client = fakeredis.FakeAsyncRedis()
    elif request.param == "redis":
        client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
        await client.flushdb()
    else:
        client = RedisCluster.from_url(
            request.getfixturevalue("cluster_url").replace("redis+cluster://", "redis://")
        )
        await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    store = RedisStore(client)
    if not hasattr(store, "definitions"):  # shim until RedisStore.__init__ sets it itself
        store.definitions = RedisBudgetDefinitions(client)
    return store


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    backend = await _open(request)
    yield backend
    await backend.close()
