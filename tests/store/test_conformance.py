"""Store behaviour every backend must show, to the unit."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.cost.model import Budget, BudgetAction, Domain, Filter, Summary, Usage
from gateway.cost.rollup import DAY_S, OTHER, EndUserRow, day_of
from gateway.cost.windows import DAY, HOUR, MONTH
from gateway.store.audit import AuditAction, AuditEntry, AuditSource, Once
from gateway.store.base import Line, LineUse, Store

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def line(amount: int, limit: int = 100, window=HOUR, key="{t}:b:x:tokens", enforce=True) -> Line:
    return Line(key, window, limit, amount, enforce)


async def test_reserve_within_limit_then_refuse(store: Store) -> None:
    first = await store.reserve("t", "r1", [line(60)], T0, 600)
    assert first.ok and first.used == (0,)
    second = await store.reserve("t", "r2", [line(50)], T0, 600)
    assert not second.ok and second.used == (60,) and second.failed == (0,)
    assert second.fits_at == T0 + 600  # r1 is expected to settle by its expiry
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


async def test_peek_use_tells_the_oldest_bucket_that_still_counts(store: Store) -> None:
    ln, empty = line(30), line(1, key="{t}:b:y:tokens")
    assert await store.peek_use([ln, empty], T0) == [LineUse(0, None), LineUse(0, None)]
    await store.reserve("t", "r1", [ln], T0, 600)
    assert await store.peek_use([ln], T0) == [LineUse(30, HOUR.bucket(T0))], "a hold counts"
    await store.settle("t", "r1", [ln], None, T0)
    later = T0 + 10 * HOUR.width
    await store.reserve("t", "r2", [line(20)], later, 600)  # held in a newer bucket
    assert await store.peek_use([ln], later) == [LineUse(50, HOUR.bucket(T0))]
    await store.settle("t", "r2", [line(20)], None, later)
    gone = HOUR.leaves_at(HOUR.bucket(T0))  # the first bucket has left: the second is oldest
    assert await store.peek_use([ln], gone) == [LineUse(20, HOUR.bucket(later))]
    await store.reserve("t", "r3", [line(5)], gone, ttl_s=30)
    assert await store.peek_use([ln], gone + 31) == [LineUse(20, HOUR.bucket(later))], (
        "an expired hold no longer counts")
    month = line(10, window=MONTH, key="{t}:b:x:month")
    await store.reserve("t", "r4", [month], T0, 600)
    await store.settle("t", "r4", [month], None, T0)
    assert await store.peek_use([month], T0 + 86_400) == [LineUse(10, MONTH.bucket(T0))]


async def test_expired_reservation_is_released_and_late_settle_still_charges(store: Store) -> None:
    ln = line(80)
    await store.reserve("t", "r1", [ln], T0, ttl_s=30)
    assert await store.peek([ln], T0 + 29) == [80]
    assert await store.peek([ln], T0 + 31) == [0]
    assert await store.in_flight(T0 + 31) == 0
    assert await store.settle("t", "r1", [line(25)], None, T0 + 40)
    assert await store.peek([ln], T0 + 40) == [25]


async def test_an_expired_reservation_ends_in_every_line_it_held(store: Store) -> None:
    """However its lines are named (a budget's id may hold ':', digits or braces), and though
    the request after it meets only one of them."""
    a = line(70, key="{t}:b:12:3:{x}:tokens")
    b = line(60, key="{t}:b:3:12:tokens")
    assert (await store.reserve("t", "r1", [a, b], T0, ttl_s=30)).ok
    assert (await store.reserve("t", "r2", [b], T0 + 10, ttl_s=600)).used == (60,)
    after = await store.reserve("t", "r3", [a], T0 + 31, ttl_s=600)
    assert after.ok and after.used == (0,)
    assert await store.peek([a, b], T0 + 31) == [70, 0]
    assert (await store.reserve("t", "r4", [line(100, key=b.key)], T0 + 31, 600)).ok
    assert await store.settle("t", "r1", [line(5, key=a.key), line(6, key=b.key)], None, T0 + 40)
    assert await store.peek([a, b], T0 + 40) == [75, 106]  # r3 + r1's late usage; r4 + r1's


async def test_reservations_in_flight_free_at_their_expected_end(store: Store) -> None:
    """Room held in flight counts as freeing when each reservation is expected to settle (never
    past its expiry), settled usage as its bucket leaves the window: in time order, until
    enough has freed."""
    await store.reserve("t", "r1", [line(30)], T0, 600, expected_s=5)
    await store.reserve("t", "r2", [line(30)], T0 + 1, 600, expected_s=2)
    await store.reserve("t", "r3", [line(30)], T0 + 2, 600, expected_s=900)
    result = await store.reserve("t", "r4", [line(40)], T0 + 2, 600)
    assert not result.ok and result.fits_at == T0 + 3  # r2's 30 frees at T0 + 3: 60 + 40 fit
    result = await store.reserve("t", "r5", [line(70)], T0 + 2, 600)
    assert result.fits_at == T0 + 5  # r2 then r1
    result = await store.reserve("t", "r6", [line(100)], T0 + 2, 600)
    assert result.fits_at == T0 + 2 + 600  # r3 at its expiry, not 900 s
    assert await store.settle("t", "r2", [line(30)], None, T0 + 3)
    result = await store.reserve("t", "r7", [line(40)], T0 + 4, 600)
    assert result.fits_at == T0 + 5  # r1 first; r2's usage now settled stays for the hour
    result = await store.reserve("t", "r8", [line(100)], T0 + 4, 600)
    assert result.fits_at == HOUR.leaves_at(HOUR.bucket(T0 + 3))  # r2's bucket must leave


async def test_settled_usage_counts_from_when_it_settles(store: Store) -> None:
    """The upstream bills when the call ends: a long (or background) call's usage counts from
    its settlement's bucket, never leaving the window before an hour after it was billed."""
    ln = line(50)
    await store.reserve("t", "r1", [ln], T0, 600)
    await store.settle("t", "r1", [line(40)], None, T0 + 300)
    leaves = HOUR.leaves_at(HOUR.bucket(T0 + 300))
    assert leaves >= T0 + 300 + HOUR.length_s
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


async def test_query_over_hours_and_partial_edges(store: Store) -> None:
    hour = 3600
    base = (T0 // hour) * hour
    times = [base + 10, base + hour + 5, base + 2 * hour + 100, base + 5 * hour + 3599]
    for i, ts in enumerate(times):
        usage = Usage(input_tokens=10 * (i + 1), output_tokens=1, total_tokens=10 * (i + 1) + 1,
                      cost=0.001, model="m" if i % 2 else "n", provider="p", tenant_id="t",
                      timestamp=ts)
        await store.settle("t", f"q{i}", [], usage, ts)
    everything = await store.query(Filter(tenant_id="t"))
    assert (everything.entry_count, everything.total_input_tokens) == (4, 100)
    assert everything.total_cost == 0.004
    middle = await store.query(Filter(tenant_id="t", since=base + 6, until=base + 2 * hour + 101))
    assert (middle.entry_count, middle.total_input_tokens) == (3, 60)
    whole = await store.query(Filter(tenant_id="t", since=base + hour, until=base + 3 * hour))
    assert (whole.entry_count, whole.total_input_tokens) == (2, 50)
    by_model = await store.query(Filter(tenant_id="t", model="m"))
    assert (by_model.entry_count, by_model.total_input_tokens) == (2, 60)
    assert (await store.query(Filter(tenant_id="other"))).entry_count == 0


# Budgets created through the admin API, kept in the store


def budget(bid: str, tenant: str = "t", **fields: object) -> Budget:
    return Budget(name=f"api-{bid}", tenant=tenant, id=bid, source="api", **fields)  # type: ignore[arg-type]


async def test_budget_definitions_put_list_delete(store: Store) -> None:
    assert await store.definitions.list("t") == (0, [])
    a = budget("b1", max_cost_per_day=5.0, action=BudgetAction.THROTTLE, domain=Domain.LLM)
    b = budget("b2", max_tokens_per_hour=1000, key="ci", model="gpt-4o*")
    await store.definitions.put(a)
    version = await store.definitions.put(b)
    assert await store.definitions.list("t") == (version, [a, b])
    assert await store.definitions.delete("t", "b1")
    assert await store.definitions.list("t") == (version + 1, [b])


async def test_budget_definitions_version_moves_on_change_only(store: Store) -> None:
    assert await store.definitions.version("t") == 0
    v1 = await store.definitions.put(budget("b1", max_cost_per_day=1.0))
    assert v1 > 0 and await store.definitions.version("t") == v1
    v2 = await store.definitions.put(budget("b1", max_cost_per_day=2.0))
    assert v2 > v1
    assert await store.definitions.put(budget("b1", max_cost_per_day=2.0)) == v2, "same budget"
    assert not await store.definitions.delete("t", "missing")
    assert not await store.definitions.delete("t", "_v"), "the store's own fields are no ids"
    assert await store.definitions.version("t") == v2
    assert await store.definitions.delete("t", "b1")
    assert not await store.definitions.delete("t", "b1")
    v3 = await store.definitions.version("t")
    assert v3 > v2 and await store.definitions.list("t") == (v3, [])


async def test_budget_definitions_replace_keeps_creation_order(store: Store) -> None:
    for bid in ("b1", "b2", "b3"):
        await store.definitions.put(budget(bid, max_cost_per_day=1.0))
    changed = budget("b1", max_cost_per_day=9.0, alert_threshold=0.5)
    await store.definitions.put(changed)
    _, budgets = await store.definitions.list("t")
    assert [b.id for b in budgets] == ["b1", "b2", "b3"] and budgets[0] == changed
    await store.definitions.delete("t", "b2")
    await store.definitions.put(budget("b2", max_cost_per_day=1.0))
    assert [b.id for b in (await store.definitions.list("t"))[1]] == ["b1", "b3", "b2"]


async def test_budget_definitions_tenants_are_isolated(store: Store) -> None:
    mine = budget("b1", tenant="acme", max_cost_per_day=1.0)
    theirs = budget("b1", tenant="other", max_cost_per_day=2.0)
    await store.definitions.put(mine)
    await store.definitions.put(theirs)
    assert (await store.definitions.list("acme"))[1] == [mine]
    assert not await store.definitions.delete("nobody", "b1")
    assert await store.definitions.delete("other", "b1")
    assert (await store.definitions.list("acme"))[1] == [mine]
    assert await store.definitions.version("acme") == 1


async def test_budget_definitions_need_an_id(store: Store) -> None:
    with pytest.raises(ValueError, match="needs an id"):
        await store.definitions.put(Budget(name="x", tenant="t", max_cost_per_day=1.0))
    with pytest.raises(ValueError, match="needs an id"):
        await store.definitions.put(budget("_v", max_cost_per_day=1.0))


def test_budget_dict_round_trip() -> None:
    full = Budget(name="n", tenant="t", key="k", model="gpt-*", domain=Domain.EMBEDDING,
                  max_tokens_per_hour=1, max_tokens_per_day=2, max_cost_per_hour=0.5,
                  max_cost_per_day=1.25, max_cost_per_month=100.0, alert_threshold=0.8,
                  action=BudgetAction.ALERT, max_wait_s=3.0, clamp_max_tokens=True,
                  source="api", id="b1")
    data = full.to_dict()
    assert data["domain"] == "embedding" and data["action"] == "alert"
    assert type(data["action"]) is str, "plain JSON values, not enum members"
    assert Budget.from_dict(orjson.loads(orjson.dumps(data))) == full
    empty = Budget().to_dict()
    assert empty["domain"] is None and empty["max_cost_per_day"] is None
    assert Budget.from_dict(empty) == Budget()


def test_budget_from_dict_refuses_unknown_keys_and_values() -> None:
    with pytest.raises(ValueError, match="max_cost_per_dya"):
        Budget.from_dict({"name": "n", "max_cost_per_dya": 1.0})
    with pytest.raises(ValueError, match=r"'action'.*'block'"):
        Budget.from_dict({"action": "block"})


async def test_reserve_refuses_a_stale_view_of_api_budgets(store: Store) -> None:
    assert (await store.reserve("t", "r1", [line(10)], T0, 600, version=0)).ok
    budget = Budget(name="b", tenant="t", id="bud_1", max_tokens_per_hour=5, source="api")
    version = await store.definitions.put(budget)
    stale = await store.reserve("t", "r2", [line(10)], T0, 600, version=0)
    assert stale.stale and not stale.ok
    assert await store.peek([line(0)], T0) == [10], "a stale attempt reserves nothing"
    fresh = await store.reserve("t", "r3", [line(10)], T0, 600, version=version)
    assert fresh.ok and not fresh.stale
    assert (await store.reserve("t", "r4", [], T0, 600, version=version)).ok
    assert (await store.reserve("other", "r5", [], T0, 600, version=0)).ok


async def test_an_estimated_usage_stays_marked(store: Store) -> None:
    """A charge the gateway made from its own bound (a lost answer) is marked in the record."""
    await store.reserve("t", "r-est", [line(50)], T0, 600)
    usage = Usage(10, 40, 0, 50, 0.5, "m", "p", "t", T0 + 1, estimated=True)
    await store.settle("t", "r-est", [line(50)], usage, T0 + 1)
    await store.record(Usage(1, 1, 0, 2, 0.1, "m", "p", "t", T0 + 2))
    marks = sorted((u.total_tokens, u.estimated) for u in await store.entries("t"))
    assert marks == [(2, False), (50, True)]


async def test_objects_are_found_by_their_owner_only(store: Store) -> None:
    from gateway.store.objects import Owned

    await store.objects.put("alpha", "response", "resp_1", Owned("up", 120), T0)
    assert await store.objects.get("alpha", "response", "resp_1", T0) == Owned("up", 120)
    assert await store.objects.get("beta", "response", "resp_1", T0) is None
    await store.objects.put("alpha", "response", "resp_2", Owned("up"), T0)
    assert await store.objects.get("alpha", "response", "resp_2", T0) == Owned("up", None)
    await store.objects.delete("alpha", "response", "resp_1")
    assert await store.objects.get("alpha", "response", "resp_1", T0) is None


async def test_a_settlement_wakes_the_tenants_held_requests(store: Store) -> None:
    """What a throttled request waits on: a settlement of its tenant, from any instance (on
    Redis, published while the tenant is marked held, and heard by every store object)."""
    first = [("t", store.freed.wait("t")), ("u", store.freed.wait("u"))]  # marks the tenants
    if store.freed.on_first is not None:  # Redis marks each tenant, then wakes its waiters
        await asyncio.wait_for(asyncio.gather(*(w for _, w in first)), 10)  # once: not later
    await asyncio.sleep(0.3)  # the listener subscribed meanwhile
    woken = store.freed.wait("t")
    other = store.freed.wait("u")
    await store.reserve("t", "r1", [line(10)], T0, 600)
    await store.settle("t", "r1", [line(5)], None, T0 + 1)
    await asyncio.wait_for(woken, 5)
    assert not other.done()
    for tenant, waiter in [*first, ("t", woken), ("u", other)]:
        store.freed.forget(tenant, waiter)
    assert len(store.freed) == 0


def _batch(rid: str, tenant: str = "t", batch_id: str | None = None):
    from gateway.store.batches import BatchRecord, HeldLine

    return BatchRecord(rid, tenant, "up", "gpt-4o-mini", "/chat/completions",
                       (HeldLine("{t}:b:x:tokens", "day", 1000, True, False),
                        HeldLine("{t}:b:x:cost", "month", 10**9, True, True)),
                       40, 60, 5_000, T0, T0 + 90_000, batch_id)


async def test_batch_records_are_shared_until_closed(store: Store) -> None:
    """A running batch's record is read back whole, claimed by one caller at a time, and
    gone once closed."""
    first, second = _batch("r1"), _batch("r2", "u")
    await store.batches.open(first)
    await store.batches.open(second)
    started = _batch("r1", batch_id="batch_1")
    await store.batches.open(started)  # the upstream's id, once it answers
    assert sorted(await store.batches.pending(), key=lambda r: r.rid) == [started, second]
    assert started.held(100, 7) == [Line("{t}:b:x:tokens", DAY, 1000, 100, True),
                                    Line("{t}:b:x:cost", MONTH, 10**9, 7, True)]
    assert await store.batches.claim("r1", T0 + 60, T0)
    assert not await store.batches.claim("r1", T0 + 60, T0 + 1)
    assert await store.batches.claim("r2", T0 + 60, T0 + 1)
    await store.batches.close("r1")
    assert await store.batches.pending() == [second]


async def test_objects_keep_their_detail(store: Store) -> None:
    from gateway.store.objects import Owned

    await store.objects.put("t", "file", "file-1", Owned("up", None, '{"lines": 3}'), T0)
    assert await store.objects.get("t", "file", "file-1", T0) == Owned("up", None,
                                                                       '{"lines": 3}')


# Spend per end user: kept per tenant and day, in the settlement's own step


def spent_by(end_user: str | None, cost: float = 0.5, at: float = T0 + 1, tenant: str = "t",
             tokens: tuple[int, int] = (20, 10)) -> Usage:
    return Usage(*tokens, 0, sum(tokens), cost, "m", "p", tenant, at, end_user=end_user)


async def test_an_end_users_spend_is_kept_with_the_settlement_once(store: Store) -> None:
    await store.reserve("t", "r1", [line(80)], T0, 600)
    alice = spent_by("alice")
    assert await store.settle("t", "r1", [line(30)], alice, T0 + 1)
    assert not await store.settle("t", "r1", [line(30)], alice, T0 + 2), "settled once only"
    await store.record(spent_by("bob", 0.1, T0 + 3, tokens=(1, 1)))
    await store.record(spent_by(None, 0.1, T0 + 3))  # names no end user
    await store.record(spent_by("alice", 0.7, T0 + 3, tenant="u"))
    day = day_of(T0)
    rows = sorted(await store.end_user_days("t", day, day), key=lambda r: str(r.end_user))
    assert rows == [EndUserRow("t", day, "alice", 20, 10, 500_000_000, 1),
                    EndUserRow("t", day, "bob", 1, 1, 100_000_000, 1)]
    assert await store.end_user_days("t", day + 1, day + 30) == []
    assert {(r.tenant, r.end_user) for r in await store.end_user_days(None, day, day)} == {
        ("t", "alice"), ("t", "bob"), ("u", "alice")}
    assert [u.end_user for u in await store.entries("t")] == ["alice", "bob", None]
    whole_days = await store.query(Filter(tenant_id="t", end_user="alice"))
    edges_only = await store.query(Filter(tenant_id="t", end_user="alice", since=T0,
                                          until=T0 + 2))
    assert whole_days == edges_only == Summary(20, 10, 0.5, 1)


async def test_end_users_past_a_days_cap_share_one_row(capped_store: Store) -> None:
    """limits.end_users_reported_max per tenant and day (2 here): the day's later end users
    add to its OTHER row, so the rows still add up; each day and tenant has its own cap."""
    store = capped_store
    for i, name in enumerate(["a", "b", "c", "a", "d", "c"]):
        await store.record(spent_by(name, 0.001 * (i + 1), T0 + i))
    await store.record(spent_by("c", 0.5, T0 + DAY_S))
    await store.record(spent_by("x", 0.5, T0 + 10, tenant="u"))
    day = day_of(T0)
    first = {r.end_user: (r.requests, r.cost_nano) for r in
             await store.end_user_days("t", day, day)}
    assert first == {"a": (2, 5_000_000), "b": (1, 2_000_000), OTHER: (3, 14_000_000)}
    second = await store.end_user_days("t", day + 1, day + 1)
    assert [(r.end_user, r.requests) for r in second] == [("c", 1)]
    assert [r.end_user for r in await store.end_user_days("u", day, day)] == ["x"]
    assert (await store.query(Filter(tenant_id="t"))).total_cost == 0.521


async def test_a_tenants_objects_are_bounded_and_crowd_out_only_its_own(store: Store) -> None:
    """Past ``keep`` objects of one tenant its own oldest are forgotten; another tenant's stay
    however many the first creates."""
    from gateway.store.objects import Owned

    await store.objects.put("quiet", "response", "resp_q", Owned("up"), T0, keep=3)
    for i in range(10):
        await store.objects.put("noisy", "file", f"file-{i}", Owned("up"), T0 + i, keep=3)
    kept = [i for i in range(10)
            if await store.objects.get("noisy", "file", f"file-{i}", T0 + 10) is not None]
    assert kept == [7, 8, 9]
    assert await store.objects.get("quiet", "response", "resp_q", T0 + 10) == Owned("up")
    await store.objects.delete("noisy", "file", "file-9")
    await store.objects.put("noisy", "file", "file-10", Owned("up"), T0 + 11, keep=3)
    kept = [i for i in range(11)
            if await store.objects.get("noisy", "file", f"file-{i}", T0 + 12) is not None]
    assert kept == [7, 8, 10]  # a deleted object no longer counts


# The audit log: each tenant's newest budget changes


def change(at: float, tenant: str = "t", budget: str = "bud_1", limit: float | None = 2.0,
           action: str = "update") -> AuditEntry:
    before = {"id": budget, "name": "cap", "max_cost_per_day": 1.0, "fallback_model": None}
    after = {**before, "max_cost_per_day": limit, "fallback_model": ["gpt-4o-mini"]}
    return AuditEntry(at, tenant, budget, "cap", AuditAction(action), "acme-admin", False,
                      AuditSource.API, None if action == "create" else before,
                      None if action == "delete" else after)


async def test_audit_entries_come_newest_first_each_tenant_its_own_newest_kept(
    store: Store,
) -> None:
    entries = [change(T0 + i, budget=f"bud_{i % 2}") for i in range(5)]
    for entry in entries:
        assert await store.audit.append(entry, keep=3)
    other = change(T0 + 2.5, tenant="u", action="delete")
    assert await store.audit.append(other, keep=3)
    assert await store.audit.recent("t", 10) == entries[:1:-1], "the newest 3 of 5"
    assert await store.audit.recent("t", 2) == entries[:2:-1]
    assert await store.audit.recent("t", 10, "bud_1") == [entries[3]]
    assert await store.audit.recent("u", 10) == [other]
    assert await store.audit.recent("nobody", 10) == []
    assert await store.audit.recent(None, 3) == [entries[4], entries[3], other]
    assert await store.audit.recent(None, 10, "bud_0") == [entries[4], entries[2]]
    created = change(T0 + 9, action="create")
    await store.audit.append(created, keep=1)  # a lower bound (a reload) trims at once
    assert await store.audit.recent(None, 10) == [created, other]


async def test_an_audit_entry_offered_once_is_kept_once_until_its_mark_expires(
    store: Store,
) -> None:
    """Instances reloading the same file each offer its change: the first keeps it."""
    once = Once("bud_1:abc", T0 + 300)
    assert await store.audit.append(change(T0), 10, once)
    assert not await store.audit.append(change(T0 + 1), 10, once), "another instance's copy"
    assert await store.audit.append(change(T0 + 1, tenant="u"), 10, once), "per tenant"
    assert await store.audit.append(change(T0 + 2), 10, Once("bud_1:def", T0 + 300))
    assert await store.audit.append(change(T0 + 301), 10, once), "the mark has expired"
    assert [e.at for e in await store.audit.recent("t", 10)] == [T0 + 301, T0 + 2, T0]
