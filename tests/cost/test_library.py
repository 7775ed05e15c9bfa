"""The gateway.cost library on its own, as a caller without the proxy uses it."""

from __future__ import annotations

import gc

import pytest

from gateway import cost
from gateway.clock import FakeClock
from gateway.cost import Budget, BudgetAction, BudgetChecker, Filter, InMemoryTracker, Usage
from gateway.cost.pricing import Price, PriceTable

T0 = 1_700_000_000.0


def usage(**kw: object) -> Usage:
    base: dict[str, object] = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                               "cost": 0.001, "model": "gpt-4o", "provider": "openai",
                               "tenant_id": "t1", "timestamp": T0}
    return Usage(**{**base, **kw})  # type: ignore[arg-type]


async def test_tracker_filters_and_sums_exactly() -> None:
    tracker = InMemoryTracker()
    for i in range(10):
        await tracker.record(usage(cost=0.1, timestamp=T0 + i))
    await tracker.record(usage(tenant_id="t2", model="gpt-4o-mini"))
    summary = await tracker.query(Filter(tenant_id="t1", since=T0 + 2, until=T0 + 5))
    assert summary.entry_count == 3 and summary.total_input_tokens == 30
    assert summary.total_cost == 0.3  # money summed as integers: no 0.30000000000000004
    assert (await tracker.query(Filter(model="gpt-4o-mini"))).entry_count == 1
    assert (await tracker.query(Filter())).entry_count == 11


async def test_tracker_gives_back_what_it_kept_and_the_collector_never_walks_it() -> None:
    """A full log is 100,000 records: kept as tuples of plain values, which the garbage
    collector stops tracking, so they do not lengthen its full collections."""
    tracker = InMemoryTracker()
    kept = [usage(timestamp=T0 + i, end_user="u1" if i % 2 else None, estimated=i == 3)
            for i in range(6)] + [usage(tenant_id="t2")]
    for one in kept:
        tracker.add(one)
    gc.collect()
    assert not any(gc.is_tracked(values) for values in tracker.values())
    assert tracker.entries() == kept and tracker.entries("t2") == kept[-1:]
    restored = InMemoryTracker()
    restored.restore(kept)
    assert restored.entries() == kept


async def test_tracker_evicts_oldest_first() -> None:
    """Seed: "Entries are evicted in FIFO order when the capacity limit is reached." The
    InMemoryTracker keeps nothing else: what it evicts is gone from every answer."""
    tracker = InMemoryTracker(max_entries=3)
    for i in range(5):
        await tracker.record(usage(timestamp=T0 + i))
    assert (await tracker.query(Filter(since=T0 + 2))).entry_count == 3
    assert (await tracker.query(Filter(until=T0 + 2))).entry_count == 0
    assert (await tracker.query(Filter(tenant_id="t1"))).entry_count == 3
    with pytest.raises(ValueError):
        InMemoryTracker(max_entries=-1)


async def test_max_entries_zero_means_unlimited() -> None:
    """Seed: "MaxEntries int // 0 means unlimited for in-memory"."""
    tracker = InMemoryTracker(max_entries=0)
    for _ in range(100_001):
        tracker.add(usage(timestamp=T0))
    assert len(tracker) == 100_001  # past the default cap: nothing evicted


def test_the_tracker_is_safe_for_concurrent_use() -> None:
    """Seed: "Tracker records usage entries and answers aggregate queries. Implementations must
    be safe for concurrent use."""
    import asyncio
    import threading

    tracker = InMemoryTracker(max_entries=1_000)
    errors: list[BaseException] = []

    def record() -> None:
        for i in range(20_000):
            tracker.add(usage(timestamp=T0 + i))

    def query() -> None:
        try:
            for _ in range(200):
                asyncio.run(tracker.query(Filter()))
        except BaseException as exc:  # "deque mutated during iteration", before
            errors.append(exc)

    threads = [threading.Thread(target=record), threading.Thread(target=query)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(tracker) == 1_000


async def test_registry_knows_memory_and_new_backends() -> None:
    """Seed: "The "inmemory" name is registered automatically"."""
    assert {"memory", "inmemory"} <= set(cost.names())
    assert isinstance(cost.new("inmemory"), InMemoryTracker)
    tracker = cost.new("memory", {"max_entries": 2})
    await tracker.record(usage())
    registry = cost.Registry()
    registry.register("mine", lambda config: InMemoryTracker())
    assert registry.names() == ["mine"]
    with pytest.raises(ValueError):
        registry.register("mine", lambda config: InMemoryTracker())
    with pytest.raises(KeyError, match="unknown tracker backend"):
        registry.new("nope")


async def test_checker_hour_tokens_then_day_cost() -> None:
    clock = FakeClock(T0)
    tracker = InMemoryTracker()
    checker = BudgetChecker(tracker, clock)
    budget = Budget(tenant="t1", max_tokens_per_hour=100, max_cost_per_day=1.0,
                    alert_threshold=0.5)
    ok = await checker.check(budget, usage(total_tokens=10))
    assert ok.allowed and ok.reason == "" and ok.usage_ratio == pytest.approx(0.1)
    await tracker.record(usage(input_tokens=50, output_tokens=10, timestamp=T0))
    alert = await checker.check(budget, usage(total_tokens=10))
    assert alert.allowed and "70%" in alert.reason
    over = await checker.check(budget, usage(total_tokens=50))
    assert not over.allowed and "hourly token" in over.reason
    clock.advance(3601)
    await tracker.record(usage(cost=0.95, timestamp=clock.now()))
    day = await checker.check(budget, usage(total_tokens=1, cost=0.1))
    assert not day.allowed and "daily cost" in day.reason
    soft = Budget(tenant="t1", max_cost_per_day=1.0, action=BudgetAction.ALERT)
    assert (await checker.check(soft, usage(cost=0.1))).allowed


def test_pricing_exact_then_most_specific_glob() -> None:
    per_million = Price.per_million
    table = PriceTable({"gpt-4o": per_million(2.5, 1.25, 10), "gpt-4o-*": per_million(1, None, 1),
                        "gpt-4o-mini*": per_million(0.15, 0.075, 0.6), "*": per_million(100)})
    assert table.lookup("gpt-4o") == Price.per_million(2.5, 1.25, 10)
    assert table.lookup("gpt-4o-mini-2024-07-18") == Price.per_million(0.15, 0.075, 0.6)
    assert table.lookup("gpt-4o-2024-08-06") == Price.per_million(1, None, 1)
    assert table.lookup("other") == Price.per_million(100)


def test_cost_counts_cached_tokens_once_and_rounds_up_to_a_nano_dollar() -> None:
    price = Price.per_million(input=0.15, cached_input=0.075, output=0.60)
    # 800 uncached x 0.15 + 200 cached x 0.075 + 500 x 0.60 (per 1M) = 435,000 nano-dollars
    assert price.cost_nano(1000, 500, cached_tokens=200) == 435_000
    assert Price.per_million(input=0.02).cost_nano(10, 0) == 200  # an embedding: 0.2 micro-dollars
    assert Price.per_million(input=0.0001).cost_nano(1, 0) == 1  # a fraction of a nano rounds up


async def test_registry_redis_backend_records_and_queries(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tests.servers import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        tracker = cost.new("redis", {"url": url, "max_entries": 3})
        await _assert_the_cap_is_the_logs_only(tracker)
        await tracker.close()  # type: ignore[attr-defined]


async def test_the_embedded_stores_cap_is_the_logs_only_too() -> None:
    from gateway.store.memory import MemoryStore

    await _assert_the_cap_is_the_logs_only(MemoryStore(InMemoryTracker(max_entries=3)))


async def _assert_the_cap_is_the_logs_only(tracker: cost.Tracker) -> None:
    """Seed: "Config.MaxEntries int // 0 means unlimited for in-memory; ignored by some
    backends". The gateway's stores (and the "redis" tracker) apply it to the raw log only:
    their hourly totals are never evicted (months of reports read them), so a query over
    whole hours, or over no range, counts every usage, and a range's partial hours count what
    the log still holds. The README's library section says so."""
    hour = 3600 * (int(T0) // 3600 + 1)
    for i in range(5):
        await tracker.record(usage(timestamp=hour + i))
    assert (await tracker.query(Filter(tenant_id="t1"))).entry_count == 5
    assert (await tracker.query(Filter(since=hour, until=hour + 3600))).entry_count == 5
    raw = await tracker.entries("t1")  # type: ignore[attr-defined]
    assert [u.timestamp for u in raw] == [hour + 2, hour + 3, hour + 4]  # oldest out first
    assert (await tracker.query(Filter(since=hour + 1))).entry_count == 3  # the log's 3
    assert (await tracker.query(Filter(since=hour + 3))).entry_count == 2


async def test_throttle_allows_and_says_to_slow_down() -> None:
    """Seed: "BudgetActionThrottle: Allow but signal the caller to slow down." (reject: "Deny the
    request entirely (Allowed: false)")."""
    tracker = InMemoryTracker()
    checker = BudgetChecker(tracker, FakeClock(T0))
    await tracker.record(usage(timestamp=T0 - 10, cost=2.0))
    over = {action: await checker.check(
        Budget(tenant="t1", max_cost_per_day=1.0, action=action), usage(cost=0.1))
        for action in BudgetAction}
    assert not over[BudgetAction.REJECT].allowed
    assert over[BudgetAction.THROTTLE].allowed and "slow down" in over[BudgetAction.THROTTLE].reason
    assert over[BudgetAction.ALERT].allowed and over[BudgetAction.ALERT].reason


async def test_a_filters_zero_values_match_any_record() -> None:
    """Seed: "Filter constrains a Query call. Zero-value fields are ignored and match any
    record."""
    tracker = InMemoryTracker()
    await tracker.record(usage())
    for zero in (Filter(tenant_id=""), Filter(model="", provider=""), Filter(since=0.0),
                 Filter(until=0.0), Filter(tenant_id="", since=0, until=0)):
        assert (await tracker.query(zero)).entry_count == 1, zero


async def test_usage_recorded_without_a_timestamp_is_recorded_now() -> None:
    """Seed: "Tracker records usage entries" (recording usage is recording it now: one left at
    the epoch would never count in any window)."""
    tracker = InMemoryTracker(clock=FakeClock(T0))
    await tracker.record(usage(timestamp=0.0))
    assert (await tracker.query(Filter(since=T0 - 1))).entry_count == 1
    assert tracker.entries()[0].timestamp == T0


async def test_the_checker_checks_every_limit_its_budget_carries() -> None:
    """Seed: "InMemoryBudgetChecker queries the Tracker for rolling-window totals before
    deciding whether to allow the estimated usage" (every limit the Budget type has)."""
    tracker = InMemoryTracker()
    checker = BudgetChecker(tracker, FakeClock(T0))
    await tracker.record(usage(timestamp=T0 - 60, cost=100.0, input_tokens=5, output_tokens=5,
                               total_tokens=10))
    for limit in ("max_cost_per_month", "max_cost_per_hour", "max_tokens_per_day"):
        decision = await checker.check(Budget(tenant="t1", **{limit: 1 if "cost" in limit
                                                              else 10}), usage(cost=1.0))
        assert not decision.allowed and limit in decision.reason, (limit, decision)
        assert decision.usage_ratio > 1
