"""Every store backend behind one fixture: the conformance tests run unchanged on each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest
import redis.asyncio as aioredis

from gateway.store.base import Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.servers import redis_server

BACKENDS = ["memory", "fakeredis", "redis"]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "fakeredis":
        backend = RedisStore(fakeredis.FakeAsyncRedis())
    else:
        client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
        await client.flushdb()
        backend = RedisStore(client)
    yield backend
    await backend.close()
