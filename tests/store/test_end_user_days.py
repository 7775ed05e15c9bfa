"""Spend per end user and day (issue 19): bounded by the configuration, never by what clients
send. The embedded store drops a tenant's days past KEPT_DAYS and keeps them across a restart;
Redis keys expire; a state from before end users were reported still loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.cost.model import Usage
from gateway.cost.rollup import DAY_S, KEPT_DAYS, OTHER, EndUserRow, day_of
from gateway.store.end_user_days import EndUserDays
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.snapshot import usage_from_row, usage_row
from gateway.store.sqlite import SqliteStore

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = day_of(T0)


def spent(end_user: str | None, at: float = T0, tenant: str = "t") -> Usage:
    return Usage(3, 2, 0, 5, 0.25, "m", "p", tenant, at, end_user=end_user)


def test_a_tenants_days_past_the_kept_ones_are_dropped_as_new_days_begin() -> None:
    days = EndUserDays(max_per_day=1)
    days.add(spent("a"))
    days.add(spent("b"))  # past the cap of 1
    days.add(spent("a", tenant="u"))
    days.add(spent("a", T0 + (KEPT_DAYS - 1) * DAY_S))  # the first one is still kept
    assert {r.day for r in days.rows("t", 0, 2**40)} == {DAY, DAY + KEPT_DAYS - 1}
    days.add(spent("a", T0 + KEPT_DAYS * DAY_S))
    assert {r.day for r in days.rows("t", 0, 2**40)} == {DAY + KEPT_DAYS - 1, DAY + KEPT_DAYS}
    assert days.rows("u", DAY, DAY) == [EndUserRow("u", DAY, "a", 3, 2, 250_000_000, 1)], \
        "another tenant's days are its own"


def test_the_rows_survive_a_snapshot_and_an_older_state_has_none() -> None:
    store = MemoryStore(end_users_max=1)
    store.keep(spent("a"))
    store.keep(spent("b"))
    state = store.snapshot()
    again = MemoryStore(end_users_max=1)
    again.restore(state)
    assert again.snapshot()["end_users"] == state["end_users"] == [
        ["t", DAY, "a", 3, 2, 250_000_000, 1], ["t", DAY, OTHER, 3, 2, 250_000_000, 1]]
    again.restore({k: v for k, v in state.items() if k != "end_users"})
    assert again.snapshot()["end_users"] == []
    with pytest.raises(ValueError, match=r"end_users\[0\]\[2\]"):
        again.restore({**state, "end_users": [["t", DAY, 7, 1, 1, 1, 1]]})


def test_a_usage_row_carries_its_end_user_and_older_rows_still_load() -> None:
    assert usage_from_row(usage_row(spent("a")), "usage[0]") == spent("a")
    old = [3, 2, 0, 5, 0.25, "m", "p", "t", T0, False]
    assert usage_from_row(old, "usage[0]").end_user is None
    assert usage_from_row([*old, None], "usage[0]") == usage_from_row(old, "usage[0]")
    assert usage_from_row(usage_row(spent(None)), "usage[0]") == spent(None)
    with pytest.raises(ValueError, match=r"usage\[0\]\.end_user"):
        usage_from_row([*old, 5], "usage[0]")


async def test_sqlite_keeps_the_rows_across_a_restart(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'state.db'}"
    store = SqliteStore(url, end_users_max=1)
    await store.connect()
    assert (await store.reserve("t", "r1", [], T0, 60)).ok
    await store.settle("t", "r1", [], spent("a"), T0)
    await store.record(spent("b"))
    store.journal.unlock()  # no close(): as if killed; the journal holds both
    again = SqliteStore(url, end_users_max=1)
    await again.connect()  # from the journal
    rows = await again.end_user_days("t", DAY, DAY)
    await again.close()
    assert sorted(str(r.end_user) for r in rows) == ["None", "a"]
    reopened = SqliteStore(url, end_users_max=1)
    await reopened.connect()  # from the snapshot written at close
    try:
        assert await reopened.end_user_days("t", DAY, DAY) == rows
    finally:
        await reopened.close()


async def test_redis_end_user_days_expire_like_the_rollups(redis_url: str) -> None:
    async with aioredis.Redis.from_url(redis_url) as client:
        await client.flushdb()
        store = RedisStore.from_url(redis_url)
        await store.connect()
        try:
            await store.record(spent("a"))
            ttl = await client.ttl(f"{{t}}:eu:{DAY}")
            assert KEPT_DAYS * DAY_S - 60 < ttl <= KEPT_DAYS * DAY_S
            await store.record(spent("a", T0 + KEPT_DAYS * DAY_S))
            assert await client.zrange("{t}:eu:days", 0, -1) == [str(DAY + KEPT_DAYS).encode()]
        finally:
            await store.close()
