"""Counters of idle end users go away (issue 19): Redis keys expire by their TTL; the embedded
store drops a counter once nothing it holds counts, bounds how many it keeps, and refuses a new
one past that bound rather than drop one that still counts."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.cost.windows import DAY, HOUR, MONTH, Window
from gateway.store.base import Line, Store, StoreFull
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def user_line(user: int, amount: int = 10, window: Window = HOUR) -> Line:
    return Line(f"{{t}}:b:each:max_tokens_per_{window.name}:u:{user:024x}", window, 100, amount)


async def serve(store: Store, user: int, now: float, window: Window = HOUR,
                used: int = 10) -> None:
    """One request of ``user``: reserved, then settled at ``used``."""
    assert (await store.reserve("t", f"r{user}-{now}", [user_line(user, window=window)], now,
                                600)).ok
    await store.settle("t", f"r{user}-{now}", [user_line(user, used, window)], None, now + 1)


async def test_a_counter_is_dropped_once_nothing_it_holds_counts() -> None:
    store = MemoryStore()
    await serve(store, 1, T0)
    await serve(store, 2, T0, DAY)
    await serve(store, 3, T0, MONTH)
    await serve(store, 4, T0, used=0)  # released: nothing settled
    assert len(store._lines) == 4
    hour_left = HOUR.leaves_at(HOUR.bucket(T0 + 1))
    await serve(store, 9, hour_left - 1)  # the sweeps run with the reservations
    assert len(store._lines) == 4  # the released one is gone; the others still count
    assert await store.peek([user_line(1)], hour_left - 1) == [10]
    await serve(store, 9, hour_left)
    assert set(store._lines) == {user_line(u, window=w).key
                                 for u, w in ((2, DAY), (3, MONTH), (9, HOUR))}
    month_end = MONTH.leaves_at(MONTH.bucket(T0))
    for now in (DAY.leaves_at(DAY.bucket(T0 + 1)), month_end):
        await serve(store, 9, now)
    assert set(store._lines) == {user_line(9).key}


async def test_a_hold_keeps_its_counter_until_it_expires() -> None:
    store = MemoryStore()
    assert (await store.reserve("t", "held", [user_line(1)], T0, 600)).ok
    await serve(store, 2, T0 + 599)
    assert user_line(1).key in store._lines
    await serve(store, 2, T0 + 600)
    assert user_line(1).key not in store._lines


async def test_past_the_bound_a_new_counter_is_refused_never_a_counting_one_dropped() -> None:
    store = MemoryStore(counters_max=2)
    await serve(store, 1, T0)
    await serve(store, 2, T0 + 10)
    with pytest.raises(StoreFull) as full:
        await store.reserve("t", "r3", [user_line(3)], T0 + 20, 600)
    assert full.value.retry_at == HOUR.leaves_at(HOUR.bucket(T0 + 1))
    assert (await store.reserve("t", "again", [user_line(1)], T0 + 20, 600)).ok  # known: fine
    assert await store.peek([user_line(1), user_line(2)], T0 + 20) == [20, 10]
    assert (await store.reserve("t", "r3", [user_line(3)], full.value.retry_at + 600, 600)).ok


async def test_reading_a_counter_never_makes_one() -> None:
    store = MemoryStore()
    assert await store.peek([user_line(1)], T0) == [0]
    assert (await store.peek_use([user_line(2)], T0))[0].used == 0
    assert store._lines == {}


async def test_a_restart_keeps_each_counter_s_window_so_it_is_still_dropped(
    tmp_path: Path
) -> None:
    url = f"sqlite://{tmp_path / 'state.db'}"
    store = SqliteStore(url)
    await store.connect()
    await serve(store, 1, T0)
    await serve(store, 2, T0, DAY)
    await store.close()
    again = SqliteStore(url)
    await again.connect()
    assert {s.window for s in again._lines.values()} == {HOUR, DAY}
    await serve(again, 9, DAY.leaves_at(DAY.bucket(T0 + 1)))
    assert set(again._lines) == {user_line(9).key}
    await again.close()


async def test_redis_keys_of_a_counter_expire_past_its_window(redis_url: str) -> None:
    async with aioredis.Redis.from_url(redis_url) as client:
        await client.flushdb()
        store = RedisStore.from_url(redis_url)
        await store.connect()
        try:
            await serve(store, 1, T0, DAY)
            assert (await store.reserve("t", "held", [user_line(2)], T0, 600)).ok
            for user, window in ((1, DAY), (2, HOUR)):
                key = user_line(user, window=window).key
                for name in (key, key + ":p", key + ":x"):
                    ttl = await client.ttl(name)
                    # gone (-2), or expiring after the window has passed, never kept (-1)
                    assert ttl == -2 or 0 < ttl <= window.length_s + window.width + 3600, name
                assert await client.exists(key + ":p")
        finally:
            await store.close()
