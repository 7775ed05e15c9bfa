"""Every store backend behind one fixture: the conformance tests run unchanged on each."""

from __future__ import annotations

import contextlib
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


async def _open(request: pytest.FixtureRequest, **options: int) -> Store:
    """The real backends are opened by URL, as the gateway opens them, on an emptied server.
    ``options``: the bounds every backend takes (``end_users_max``)."""
    if request.param == "memory":
        return MemoryStore(**options)
    if request.param == "sqlite":
        path = request.getfixturevalue("tmp_path") / "state.db"
        return SqliteStore(f"sqlite://{path}", **options)
    if request.param == "fakeredis":
        return RedisStore(fakeredis.FakeAsyncRedis(), **options)
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        async with aioredis.Redis.from_url(url) as client:
            await client.flushdb()
        return RedisStore.from_url(url, **options)
    url = request.getfixturevalue("cluster_url")
    cluster = RedisCluster.from_url(url.replace("redis+cluster://", "redis://"))
    await cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
    await cluster.aclose()
    return RedisStore.from_url(url, **options)


@contextlib.asynccontextmanager
async def _connected(request: pytest.FixtureRequest, **options: int) -> AsyncIterator[Store]:
    backend = await _open(request, **options)
    await backend.connect()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    async with _connected(request) as backend:
        yield backend


END_USERS_MAX = 2  # ``capped_store``'s end users with a spend row of their own per day


@pytest.fixture(params=BACKENDS)
async def capped_store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """``store`` keeping a spend row of their own for END_USERS_MAX end users a day."""
    async with _connected(request, end_users_max=END_USERS_MAX) as backend:
        yield backend
