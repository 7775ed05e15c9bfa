"""Script calls made at the same moment share one pipeline, and each still gets its answer."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.store.coalesce import Coalescer

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_concurrent_calls_share_a_pipeline_and_get_their_own_results(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    script = client.register_script(INCR)
    await script(keys=["warm"], args=[1])
    batch = Coalescer(client)
    sent: list[int] = []
    real_pipeline = client.pipeline

    def counting_pipeline(*args: object, **kwargs: object) -> object:
        sent.append(1)
        return real_pipeline(*args, **kwargs)  # type: ignore[arg-type]

    client.pipeline = counting_pipeline  # type: ignore[method-assign]
    results = await asyncio.gather(*(batch.call(script, [f"k{i % 3}"], [i]) for i in range(30)))
    assert sorted(await client.mget("k0", "k1", "k2")) == sorted(
        [str(sum(i for i in range(30) if i % 3 == r)).encode() for r in range(3)])
    assert all(isinstance(r, int) for r in results)
    assert len(sent) == 1, "30 calls in one turn: one pipeline"
    await client.script_flush()  # as after a Redis restart: the next batch meets NOSCRIPT
    again = await asyncio.gather(*(batch.call(script, ["after"], [1]) for _ in range(5)))
    assert sorted(again) == [1, 2, 3, 4, 5]
    await client.aclose()


async def test_a_failed_batch_fails_every_call() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    script = client.register_script(INCR)
    script.sha = "0" * 40
    batch = Coalescer(client)
    calls = [batch.call(script, ["k"], [1]) for _ in range(4)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, RedisConnectionError) for o in outcomes)
    with pytest.raises(RedisConnectionError):
        await batch.call(script, ["k"], [1])
    await client.aclose()
