"""Property tests: the stores' window arithmetic against two small models.

Random sequences of reserve / settle / release / settle-again / time advances run on a
``MemoryStore`` and on an oracle that keeps every settled amount with its bucket and every live
reservation with its expiry, and recomputes each line's use from scratch:

    use(line, now) = sum(settled amounts whose bucket still counts at now)
                   + sum(reservations not yet settled whose expiry is after now)

where a rolling bucket counts until its end is a window's length ago (stated here apart from
``Window``). The store keeps running totals and drops buckets and holds lazily; the oracle does
neither, so any drift between the two (a negative or stale total, a hold counted twice) shows.

The second model keeps exact timestamps, no buckets: on the memory store and on the Redis
scripts (fakeredis), a line's use is never below the true rolling sum over the window's exact
length, nor its ``fits_at`` earlier than the true sum allows; and neither is more than one
bucket late.
"""

from __future__ import annotations

import asyncio
import calendar
from dataclasses import dataclass, field

import fakeredis
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.cost.windows import DAY, HOUR, MONTH, Window
from gateway.store.base import Line, Store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore

BOUNDED = settings(max_examples=150, deadline=None, derandomize=True)

TENANT = "acme"
START = 1_767_225_000.0  # 2025-12-31 23:50 UTC: a month, a day and an hour turn over soon
LINES = (  # key, window, limit, enforce
    ("{acme}:b:h:tok", HOUR, 120, True),
    ("{acme}:b:d:cost", DAY, 300, True),
    ("{acme}:b:m:cost", MONTH, 500, True),
    ("{acme}:b:alert:h", HOUR, 10, False),  # alert-only: counted, never refuses
)
STEPS = st.sampled_from([0, 0.5, 1, 59, 60, 61, 300, 899, 900, 3599, 3600, 3601, 86_400,
                         90_000, 31 * 86_400])
AMOUNT = st.integers(min_value=0, max_value=60)
AMOUNTS = st.tuples(*(AMOUNT for _ in LINES))
TTL = st.sampled_from([1.0, 30.0, 600.0, 7_200.0])

# One step: ("advance", seconds) | ("reserve", amounts, ttl) | ("settle", which, amounts)
# | ("release", which) | ("again", which). ``which`` picks among reservations made so far.
OPS = st.lists(
    st.tuples(st.just("advance"), STEPS)
    | st.tuples(st.just("reserve"), AMOUNTS, TTL)
    | st.tuples(st.just("settle"), st.integers(0, 50), AMOUNTS)
    | st.tuples(st.just("release"), st.integers(0, 50))
    | st.tuples(st.just("again"), st.integers(0, 50)),
    max_size=40,
)


def counts(window: Window, bucket: int, now: float) -> bool:
    """The rule, apart from ``Window``: a rolling bucket counts until all of it is older than
    the window; the month only while it lasts."""
    if window.width == 0:
        return bucket == window.bucket(now)
    return (bucket + 1) * window.width + window.length_s > now


@dataclass
class Hold:
    amount: int
    bucket: int
    expires_at: float


@dataclass
class Model:
    """Per line: settled (bucket, amount) pairs forever, and live holds by reservation id."""

    settled: list[list[tuple[int, int]]] = field(default_factory=lambda: [[] for _ in LINES])
    holds: list[dict[str, Hold]] = field(default_factory=lambda: [{} for _ in LINES])
    done: set[str] = field(default_factory=set)

    def use(self, i: int, now: float) -> int:
        window: Window = LINES[i][1]
        settled = sum(a for b, a in self.settled[i] if counts(window, b, now))
        return settled + sum(h.amount for h in self.holds[i].values() if h.expires_at > now)

    def reserve(self, rid: str, amounts: tuple[int, ...], ttl: float, now: float) -> bool:
        for i, (_, _, limit, enforce) in enumerate(LINES):
            if enforce and self.use(i, now) + amounts[i] > limit:
                return False
        for i, (_, window, _, _) in enumerate(LINES):
            self.holds[i][rid] = Hold(amounts[i], window.bucket(now), now + ttl)
        return True

    def settle(self, rid: str, amounts: tuple[int, ...], now: float) -> bool:
        if rid in self.done:
            return False
        self.done.add(rid)
        for i, (_, window, _, _) in enumerate(LINES):
            hold = self.holds[i].pop(rid, None)
            live = hold is not None and hold.expires_at > now
            bucket = hold.bucket if live and hold is not None else window.bucket(now)
            if not counts(window, bucket, now):  # its bucket has left: lands in now's
                bucket = window.bucket(now)
            self.settled[i].append((bucket, amounts[i]))
        return True

    def in_flight(self, now: float) -> int:
        return len({rid for holds in self.holds for rid, h in holds.items() if h.expires_at > now})


def _lines(amounts: tuple[int, ...]) -> list[Line]:
    return [Line(key, window, limit, amount, enforce)
            for (key, window, limit, enforce), amount in zip(LINES, amounts, strict=True)]


ZERO = tuple(0 for _ in LINES)


async def _check(store: MemoryStore, model: Model, now: float) -> None:
    used = await store.peek(_lines(ZERO), now)
    assert used == [model.use(i, now) for i in range(len(LINES))]
    assert all(u >= 0 for u in used)
    assert await store.in_flight(now) == model.in_flight(now)
    # the running totals agree with what they total (peek above purged what left)
    for key, *_ in LINES:
        state = store._lines.get(key)
        if state is not None:
            assert state.settled_total == sum(state.buckets.values()) >= 0
            assert state.pending_total == sum(p.amount for p in state.pending.values()) >= 0


async def _run(ops: list[tuple[object, ...]]) -> None:
    store, model, now = MemoryStore(), Model(), START
    made: list[str] = []
    for op in ops:
        match op:
            case ("advance", float() | int() as seconds):
                now += seconds
            case ("reserve", tuple() as amounts, float() as ttl):
                rid = f"r{len(made)}"
                result = await store.reserve(TENANT, rid, _lines(amounts), now, ttl)
                assert result.ok == model.reserve(rid, amounts, ttl, now), (rid, result)
                if result.ok:
                    made.append(rid)
            case ("settle", int() as which, tuple() as amounts) if made:
                rid = made[which % len(made)]
                done = await store.settle(TENANT, rid, _lines(amounts), None, now)
                assert done == model.settle(rid, amounts, now)
            case ("release" | "again" as kind, int() as which) if made:
                rid = made[which % len(made)]
                if kind == "again" and rid not in model.done:
                    continue
                done = await store.settle(TENANT, rid, _lines(ZERO), None, now)
                assert done == model.settle(rid, ZERO, now)
        await _check(store, model, now)
    for rid in made:  # settle whatever is left: nothing may stay pending
        await store.settle(TENANT, rid, _lines(ZERO), None, now)
        model.settle(rid, ZERO, now)
    await _check(store, model, now)
    assert await store.in_flight(now) == 0


@BOUNDED
@given(OPS)
@example([("reserve", (5, 5, 5, 5), 7_200.0), ("advance", 3_601), ("settle", 0, (7, 7, 7, 7))])
@example([("reserve", (5, 5, 5, 5), 30.0), ("advance", 60), ("settle", 0, (7, 7, 7, 7)),
          ("again", 0)])
@example([("reserve", (5, 5, 5, 5), 30.0), ("advance", 3_000), ("settle", 0, (7, 7, 7, 7)),
          ("advance", 700)])
def test_store_agrees_with_the_model_in_any_order(ops: list[tuple[object, ...]]) -> None:
    asyncio.run(_run(ops))


@BOUNDED
@given(OPS, st.floats(min_value=0, max_value=3 * 86_400))
def test_unsettled_reservations_expire_and_leave_nothing_pending(
    ops: list[tuple[object, ...]], later: float
) -> None:
    async def run() -> None:
        store, model, now = MemoryStore(), Model(), START
        for i, op in enumerate(ops):
            match op:
                case ("advance", float() | int() as seconds):
                    now += seconds
                case ("reserve", tuple() as amounts, float() as ttl):
                    result = await store.reserve(TENANT, f"r{i}", _lines(amounts), now, ttl)
                    assert result.ok == model.reserve(f"r{i}", amounts, ttl, now)
            await _check(store, model, now)
        end = now + max(later, 7_200.0)  # past the longest TTL: every hold has expired
        await _check(store, model, end)
        assert await store.in_flight(end) == 0

    asyncio.run(run())


# The exact model: every settled amount with its exact time, no buckets.

EXACT = (  # key, window, limit
    ("{acme}:b:h:exact", HOUR, 1_000),
    ("{acme}:b:d:exact", DAY, 4_000),
)
MIDNIGHT = float(calendar.timegm((2026, 3, 2, 0, 0, 0)))  # a Monday, UTC
ADVANCE = (
    st.floats(min_value=0, max_value=1_000, allow_nan=False)
    | st.floats(min_value=0, max_value=100_000, allow_nan=False)
    | st.sampled_from([0.001, 59.999, 60, 899.999, 900, 3599.999, 3600, 3660, 86_399.999,
                       86_400, 87_300])  # onto and just short of the edges that matter
)
EXACT_AMOUNTS = st.tuples(st.integers(0, 700), st.integers(0, 2_000))
# ("advance", seconds) | ("spend", amounts): reserved and settled at once, unrefusable |
# ("probe", amounts): an enforced reservation, released at once if it fits
EXACT_OPS = st.lists(
    st.tuples(st.just("advance"), ADVANCE)
    | st.tuples(st.just("spend"), EXACT_AMOUNTS)
    | st.tuples(st.just("probe"), EXACT_AMOUNTS),
    max_size=30,
)


@dataclass
class Exact:
    """Per line, (time, amount) of everything settled; use and fits_at from first principles."""

    spent: list[list[tuple[float, int]]] = field(default_factory=lambda: [[] for _ in EXACT])

    def use(self, i: int, now: float, slack: float = 0) -> int:
        """The sum over ``(now - length - slack, now]``: the true rolling sum when no slack."""
        length = EXACT[i][1].length_s + slack
        return sum(a for t, a in self.spent[i] if now - length < t <= now)

    def fits_at(self, i: int, amount: int, now: float) -> float:
        """The earliest time, with no new traffic, at which ``amount`` fits the true sum."""
        limit, length = EXACT[i][2], EXACT[i][1].length_s
        leaving = sorted(t + length for t, _ in self.spent[i] if t + length > now)
        return next(when for when in [now, *leaving] if self.use(i, when) + amount <= limit)


def _exact_lines(amounts: tuple[int, ...], enforce: bool) -> list[Line]:
    return [Line(key, window, limit, amount, enforce)
            for (key, window, limit), amount in zip(EXACT, amounts, strict=True)]


def _open(backend: str) -> Store:
    if backend == "memory":
        return MemoryStore()
    return RedisStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))


async def _check_use(store: Store, exact: Exact, now: float) -> list[int]:
    used = await store.peek(_exact_lines((0, 0), False), now)
    for i, (_, window, _) in enumerate(EXACT):
        assert exact.use(i, now) <= used[i] <= exact.use(i, now, window.width), (i, now)
    return used


async def _probe(store: Store, exact: Exact, rid: str, amounts: tuple[int, ...], now: float
                 ) -> tuple[bool, float | None]:
    result = await store.reserve(TENANT, rid, _exact_lines(amounts, True), now, 600)
    if result.ok:
        await store.settle(TENANT, rid, _exact_lines((0, 0), True), None, now)
    for i, amount in enumerate(amounts):  # never admits what the true sum refuses
        assert result.ok or exact.use(i, now) + amount <= EXACT[i][2] or i in result.failed
        assert not result.ok or exact.use(i, now) + amount <= EXACT[i][2]
    if result.ok:
        return True, None
    if any(amounts[i] > EXACT[i][2] for i in result.failed):
        assert result.fits_at is None
        return False, None
    assert result.fits_at is not None
    earliest = max(exact.fits_at(i, amounts[i], now) for i in result.failed)
    latest = max(exact.fits_at(i, amounts[i], now) + EXACT[i][1].width for i in result.failed)
    assert earliest <= result.fits_at <= latest, (result, earliest, latest)
    return False, result.fits_at


async def _run_exact(start: float, ops: list[tuple[object, ...]]) -> None:
    stores = [_open(backend) for backend in ("memory", "fakeredis")]
    exact, now = Exact(), start
    try:
        for n, op in enumerate(ops):
            match op:
                case ("advance", float() | int() as seconds):
                    now += seconds
                case ("spend", tuple() as amounts):
                    for store in stores:
                        lines = _exact_lines(amounts, False)
                        assert (await store.reserve(TENANT, f"s{n}", lines, now, 600)).ok
                        assert await store.settle(TENANT, f"s{n}", lines, None, now)
                    for i, amount in enumerate(amounts):
                        exact.spent[i].append((now, amount))
                case ("probe", tuple() as amounts):
                    answers = [await _probe(s, exact, f"p{n}", amounts, now) for s in stores]
                    assert answers[0] == answers[1], "the backends agree to the unit"
            uses = [await _check_use(store, exact, now) for store in stores]
            assert uses[0] == uses[1], "the backends agree to the unit"
    finally:
        for store in stores:
            await store.close()


@settings(max_examples=120, deadline=None, derandomize=True)
@given(st.floats(min_value=0, max_value=DAY.width, allow_nan=False), EXACT_OPS)
@example(14 * 60 + 59, [("spend", (0, 4_000)), ("advance", 86_400 - 899), ("probe", (0, 1))])
@example(59, [("spend", (1_000, 0)), ("advance", 3_541), ("probe", (1, 0))])
def test_use_and_fits_at_are_never_below_the_exact_rolling_sum(
    offset: float, ops: list[tuple[object, ...]]
) -> None:
    asyncio.run(_run_exact(MIDNIGHT + offset, ops))


@pytest.mark.parametrize("backend", ["memory", "fakeredis"])
async def test_a_day_spent_in_full_at_00_14_59_is_still_full_at_24_00_00(backend: str) -> None:
    store = _open(backend)
    spent, next_day = MIDNIGHT + 14 * 60 + 59, MIDNIGHT + 86_400
    day = Line("{acme}:b:d:cost", DAY, 5_000_000_000, 5_000_000_000)  # $5 a day, in nano-$
    assert (await store.reserve(TENANT, "r1", [day], spent, 600)).ok
    assert await store.settle(TENANT, "r1", [day], None, spent)
    one = Line(day.key, DAY, day.limit, 1)
    refused = await store.reserve(TENANT, "r2", [one], next_day, 600)
    assert not refused.ok and refused.used == (day.limit,)
    assert refused.fits_at == next_day + DAY.width  # 24:15:00, not before 24:14:59
    assert not (await store.reserve(TENANT, "r3", [one], spent + DAY.length_s - 0.5, 600)).ok
    assert (await store.reserve(TENANT, "r4", [one], next_day + DAY.width, 600)).ok
    await store.close()
