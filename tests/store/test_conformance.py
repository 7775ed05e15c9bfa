"""Store behaviour every backend must show, to the unit."""

from __future__ import annotations

import asyncio

from gateway.cost.model import Filter, Usage
from gateway.cost.windows import DAY, HOUR, MONTH
from gateway.store.base import Line, Store

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def line(amount: int, limit: int = 100, window=HOUR, key="{t}:b:x:tokens", enforce=True) -> Line:
    return Line(key, window, limit, amount, enforce)


async def test_reserve_within_limit_then_refuse(store: Store) -> None:
    first = await store.reserve("t", "r1", [line(60)], T0, 600)
    assert first.ok and first.used == (0,)
    second = await store.reserve("t", "r2", [line(50)], T0, 600)
    assert not second.ok and second.used == (60,) and second.failed == (0,)
    assert second.fits_at == HOUR.leaves_at(HOUR.bucket(T0))
    third = await store.reserve("t", "r3", [line(40)], T0, 600)
    assert third.ok


async def test_all_or_nothing_across_lines(store: Store) -> None:
    a = line(10, key="{t}:b:a:tokens")
    b = line(10, limit=5, key="{t}:b:b:tokens")
    result = await store.reserve("t", "r1", [a, b], T0, 600)
    assert not result.ok and result.failed == (1,)
    assert await store.peek([a, b], T0) == [0, 0]


async def test_alert_only_lines_count_but_never_refuse(store: Store) -> None:
    soft = line(150, enforce=False)
    assert (await store.reserve("t", "r1", [soft], T0, 600)).ok
    assert await store.peek([soft], T0) == [150]


async def test_amount_larger_than_limit_never_fits(store: Store) -> None:
    result = await store.reserve("t", "r1", [line(101)], T0, 600)
    assert not result.ok and result.fits_at is None


async def test_settle_replaces_reservation_with_actual(store: Store) -> None:
    ln = line(80)
    await store.reserve("t", "r1", [ln], T0, 600)
    usage = Usage(input_tokens=20, output_tokens=10, total_tokens=30, cost=0.5, tenant_id="t",
                  model="m", timestamp=T0 + 1)
    assert await store.settle("t", "r1", [line(30)], usage, T0 + 1)
    assert await store.peek([ln], T0 + 1) == [30]
    assert not await store.settle("t", "r1", [line(30)], usage, T0 + 2), "settling twice: no-op"
    assert await store.peek([ln], T0 + 2) == [30]
    summary = await store.query(Filter(tenant_id="t"))
    assert (summary.entry_count, summary.total_input_tokens, summary.total_cost) == (1, 20, 0.5)


async def test_release_frees_everything(store: Store) -> None:
    ln = line(80)
    await store.reserve("t", "r1", [ln], T0, 600)
    assert await store.in_flight(T0) == 1
    await store.settle("t", "r1", [line(0)], None, T0)
    assert await store.peek([ln], T0) == [0]
    assert await store.in_flight(T0) == 0
    assert (await store.query(Filter())).entry_count == 0


async def test_rolling_window_forgets_old_buckets(store: Store) -> None:
    ln = line(70)
    await store.reserve("t", "r1", [ln], T0, 600)
    await store.settle("t", "r1", [ln], None, T0)
    assert await store.peek([ln], T0 + 3000) == [70]
    assert await store.peek([ln], T0 + HOUR.length_s + HOUR.width) == [0]
    later = await store.reserve("t", "r2", [line(70)], T0 + HOUR.length_s + HOUR.width, 600)
    assert later.ok


async def test_day_and_month_windows(store: Store) -> None:
    day = line(50, window=DAY, key="{t}:b:x:day")
    month = line(50, window=MONTH, key="{t}:b:x:month")
    await store.reserve("t", "r1", [day, month], T0, 600)
    await store.settle("t", "r1", [day, month], None, T0)
    assert await store.peek([day, month], T0 + 23 * 3600) == [50, 50]
    assert await store.peek([day, month], T0 + 25 * 3600) == [0, 50]
    next_month = MONTH.leaves_at(MONTH.bucket(T0))
    refused = await store.reserve("t", "r2", [line(60, window=MONTH, key=month.key)], T0, 600)
    assert refused.fits_at == next_month
    assert await store.peek([month], next_month) == [0]


async def test_expired_reservation_is_released_and_late_settle_still_charges(store: Store) -> None:
    ln = line(80)
    await store.reserve("t", "r1", [ln], T0, ttl_s=30)
    assert await store.peek([ln], T0 + 29) == [80]
    assert await store.peek([ln], T0 + 31) == [0]
    assert await store.in_flight(T0 + 31) == 0
    assert await store.settle("t", "r1", [line(25)], None, T0 + 40)
    assert await store.peek([ln], T0 + 40) == [25]


async def test_reservations_in_flight_push_fits_at_to_the_whole_window(store: Store) -> None:
    await store.reserve("t", "r1", [line(60)], T0, 600)
    result = await store.reserve("t", "r2", [line(60)], T0 + 120, 600)
    assert not result.ok
    assert result.fits_at == HOUR.leaves_at(HOUR.bucket(T0 + 120))


async def test_settled_usage_stays_in_its_reservation_bucket(store: Store) -> None:
    ln = line(50)
    await store.reserve("t", "r1", [ln], T0, 600)
    await store.settle("t", "r1", [line(40)], None, T0 + 300)
    # charged in T0's bucket, so it leaves the window an hour after T0, not after T0 + 300
    leaves = HOUR.leaves_at(HOUR.bucket(T0))
    assert await store.peek([ln], leaves - 1) == [40]
    assert await store.peek([ln], leaves) == [0]


async def test_mark_once_until_expiry(store: Store) -> None:
    assert await store.mark_once("{t}:alert:x", T0 + 60, T0)
    assert not await store.mark_once("{t}:alert:x", T0 + 60, T0 + 30)
    assert await store.mark_once("{t}:alert:x", T0 + 120, T0 + 61)


async def test_concurrent_reservations_never_overshoot(store: Store) -> None:
    async def one(i: int) -> bool:
        return (await store.reserve("t", f"r{i}", [line(7, limit=70)], T0, 600)).ok

    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert sum(results) == 10
    assert await store.peek([line(0, limit=70)], T0) == [70]
