"""What only Redis budget definitions meet: a value they cannot read, a server not there."""

from __future__ import annotations

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.cost.model import Budget
from gateway.store.base import StoreError
from gateway.store.redis_budgets import RedisBudgetDefinitions
from tests.procs import free_port


async def test_an_unreadable_stored_budget_is_a_store_error() -> None:
    client = fakeredis.FakeAsyncRedis()
    definitions = RedisBudgetDefinitions(client)
    await definitions.put(Budget(name="n", tenant="t", max_cost_per_day=1.0, id="b1"))
    await client.hset("{t}:budgets", "b1", b'{"name": "n", "max_cost_per_dya": 1}')
    with pytest.raises(StoreError, match=r"'b1' of tenant 't'.*max_cost_per_dya"):
        await definitions.list("t")


async def test_an_unreachable_server_is_a_store_error() -> None:
    client = aioredis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    definitions = RedisBudgetDefinitions(client)
    with pytest.raises(StoreError):
        await definitions.version("t")
    with pytest.raises(StoreError):
        await definitions.put(Budget(name="n", tenant="t", max_cost_per_day=1.0, id="b1"))
    await client.aclose()


def test_the_store_urls_bound_is_read_and_left_out_of_the_url() -> None:
    from gateway.store.redis import Bound

    url, bound = Bound.from_url("redis://127.0.0.1:6379/0?max_connections=8&wait_s=0.5&db=1")
    assert (url, bound) == ("redis://127.0.0.1:6379/0?db=1", Bound(8, 0.5))
    assert Bound.from_url("redis+cluster://h:7000") == ("redis+cluster://h:7000", Bound())
