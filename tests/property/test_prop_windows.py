"""Property tests: the embedded store's window arithmetic against a small model.

Random sequences of reserve / settle / release / settle-again / time advances run on a
``MemoryStore`` and on an oracle that keeps every settled amount with its bucket and every live
reservation with its expiry, and recomputes each line's use from scratch:

    use(line, now) = sum(settled amounts whose bucket is still inside the window at now)
                   + sum(reservations not yet settled whose expiry is after now)

The store keeps running totals and drops buckets and holds lazily; the oracle does neither, so
any drift between the two (a negative or stale total, a hold counted twice) shows up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.cost.windows import DAY, HOUR, MONTH, Window
from gateway.store.base import Line
from gateway.store.memory import MemoryStore

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
        settled = sum(a for b, a in self.settled[i] if b >= window.oldest(now))
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
            if bucket < window.oldest(now):  # its bucket has left the window: lands in now's
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
