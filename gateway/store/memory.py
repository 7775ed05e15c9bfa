"""The embedded store: one process, one event loop, so each call is atomic by construction.

Every method runs to completion without awaiting, so no other task can interleave between a
check and its reservation. The model is the one the Redis scripts implement: per line, settled
usage in time buckets plus reservations pending until settled or expired. ``snapshot`` and
``restore`` copy the whole state out and back in, for ``memory://?persist=`` (see persist.py).
Counters that hold nothing are dropped and their number is bounded (see idle.py).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gateway.cost.model import Filter, Summary, Usage, usd_to_nano
from gateway.cost.rollup import EndUserRow, RollupRow, hour_of
from gateway.cost.tracker import InMemoryTracker
from gateway.cost.windows import WINDOWS, Window
from gateway.store import spend
from gateway.store.audit import MemoryAudit
from gateway.store.base import BudgetDefinitions, Line, LineUse, ReserveResult, fits_at
from gateway.store.batches import MemoryBatches
from gateway.store.end_user_days import END_USERS_REPORTED_MAX, EndUserDays
from gateway.store.freed import RoomFreed
from gateway.store.idle import Idle
from gateway.store.memory_budgets import MemoryBudgetDefinitions
from gateway.store.objects import MemoryObjects, ObjectOwners
from gateway.store.snapshot import number, rollup_from_row, typed, usage_from_row

_SETTLED_KEPT = 100_000  # settle ids remembered for idempotency, newest first
_MARKS_PRUNE_AT = 10_000


class Pending(NamedTuple):
    """One reservation held in one line (a named tuple: one is made per line per request)."""

    amount: int
    bucket: int
    expires_at: float
    expected_at: float = math.inf  # when it is expected to settle (inf: at its expiry)

    def frees_at(self) -> float:
        return min(self.expected_at, self.expires_at)


@dataclass(slots=True)
class LineState:
    """One line's counters, with running totals so a check costs the same whatever the
    traffic: buckets and holds are only walked when one of them actually leaves."""

    buckets: dict[int, int] = field(default_factory=dict)  # settled usage per bucket
    pending: dict[str, Pending] = field(default_factory=dict)  # reservation id -> hold
    settled_total: int = 0
    pending_total: int = 0
    oldest: int = -(2**62)  # buckets before this one have been dropped
    next_expiry: float = math.inf  # the earliest expiry among the holds
    window: Window | None = None  # its line's (None: restored from an older snapshot)

    def purge(self, oldest: int, now: float) -> None:
        """Drops the buckets before ``oldest`` (its window's at ``now``) and expired holds."""
        if oldest > self.oldest:
            for b in [b for b in self.buckets if b < oldest]:
                self.settled_total -= self.buckets.pop(b)
            self.oldest = oldest
        if now >= self.next_expiry:
            for rid in [r for r, p in self.pending.items() if p.expires_at <= now]:
                self.pending_total -= self.pending.pop(rid).amount
            self.next_expiry = min((p.expires_at for p in self.pending.values()),
                                   default=math.inf)

    def used(self) -> int:
        return self.settled_total + self.pending_total

    def empties_at(self) -> float:
        """When nothing it holds counts any more (inf: not known before its line is met)."""
        if self.window is None:
            return math.inf
        window = self.window
        ends = [window.leaves_at(b) for b, amount in self.buckets.items() if amount]
        ends += [p.expires_at for p in self.pending.values()]
        return max(ends, default=-math.inf)

    def use(self) -> LineUse:
        """After ``purge``: what counts, and its oldest bucket (a hold counts from its own
        bucket, or from the window's start when that has left)."""
        buckets = [b for b, amount in self.buckets.items() if amount]
        buckets += [max(p.bucket, self.oldest) for p in self.pending.values() if p.amount]
        return LineUse(self.used(), min(buckets, default=None))

    def hold(self, rid: str, held: Pending) -> None:
        self.pending[rid] = held
        self.pending_total += held.amount
        if held.expires_at < self.next_expiry:
            self.next_expiry = held.expires_at

    def release(self, rid: str) -> Pending | None:
        held = self.pending.pop(rid, None)
        if held is not None:
            self.pending_total -= held.amount
            if not self.pending:  # a fresh dict: an emptied one keeps its table (120 bytes,
                self.pending = {}  # per end user's counter, for a million of them)
        return held

    def charge(self, bucket: int, amount: int) -> None:
        self.buckets[bucket] = self.buckets.get(bucket, 0) + amount
        self.settled_total += amount

    def snapshot(self) -> dict[str, object]:
        return {
            "buckets": [[b, amount] for b, amount in self.buckets.items()],
            "pending": {rid: [p.amount, p.bucket, p.expires_at, p.frees_at()]
                        for rid, p in self.pending.items()},
            "window": None if self.window is None else self.window.name,
        }

    @classmethod
    def restore(cls, state: object, where: str) -> LineState:
        fields = typed(state, dict, where)
        restored = cls(window=WINDOWS.get(str(fields.get("window"))))  # since issue 19
        for i, pair in enumerate(typed(fields.get("buckets"), list, f"{where}.buckets")):
            at = f"{where}.buckets[{i}]"
            bucket, amount = _pair(pair, at)
            restored.buckets[typed(bucket, int, at)] = typed(amount, int, at)
            restored.settled_total += typed(amount, int, at)
        for rid, held in typed(fields.get("pending"), dict, f"{where}.pending").items():
            at = f"{where}.pending.{rid}"
            values = typed(held, list, at)
            if len(values) not in (3, 4):  # expected_at since issue 15
                raise ValueError(f"{at}: expected [amount, bucket, expires_at, expected_at]")
            restored.hold(rid, Pending(
                typed(values[0], int, at), typed(values[1], int, at), number(values[2], at),
                *(number(v, at) for v in values[3:])))
        return restored


def _pair(value: object, where: str) -> tuple[object, object]:
    values = typed(value, list, where)
    if len(values) != 2:
        raise ValueError(f"{where}: expected a pair, got {len(values)} values")
    return values[0], values[1]


class _Instant:
    """One call's time, with each window's current and oldest bucket at it worked out once:
    a request's lines share two or three windows."""

    __slots__ = ("_buckets", "now")

    def __init__(self, now: float) -> None:
        self.now = now
        self._buckets: dict[int, tuple[int, int]] = {}  # by id: the windows outlive the call

    def buckets(self, window: Window) -> tuple[int, int]:
        found = self._buckets.get(id(window))
        if found is None:
            found = self._buckets[id(window)] = window.buckets(self.now)
        return found


COUNTERS_MAX = 2_000_000  # LimitSettings.budget_counters_max's default


class MemoryStore:
    def __init__(self, tracker: InMemoryTracker | None = None,
                 counters_max: int = COUNTERS_MAX,
                 end_users_max: int = END_USERS_REPORTED_MAX) -> None:
        self.tracker = tracker if tracker is not None else InMemoryTracker()  # empty is falsy
        self._lines: dict[str, LineState] = {}
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._marks: dict[str, float] = {}
        self._budgets = MemoryBudgetDefinitions()
        self._objects = MemoryObjects()
        self.objects: ObjectOwners = self._objects  # the same object, as the protocol
        self.batches: MemoryBatches = MemoryBatches()
        self.audit: MemoryAudit = MemoryAudit()
        self.definitions: BudgetDefinitions = self._budgets  # the same object, as the protocol
        self._rollups: dict[tuple[str, int, str, str], list[int]] = {}
        self.failures: Counter[tuple[str, str]] = Counter()  # nothing fails here; for metrics
        self.freed = RoomFreed()  # woken at every settlement
        self._idle = Idle(counters_max)  # drops counters that hold nothing; bounds their number
        self._end_users = EndUserDays(end_users_max)  # per tenant, day and end user

    def _state(self, line: Line, at: _Instant) -> LineState:
        state = self._lines.get(line.key)
        if state is None:
            state = self._lines[line.key] = LineState()
        if state.window is None:  # new (or restored without its window): watched from now on
            state.window = line.window
            self._idle.watch(line.key, at.now)
        state.purge(at.buckets(line.window)[1], at.now)
        return state

    def _current(self, line: Line, at: _Instant) -> LineState:
        """A line's state to read: a counter that does not exist reads as empty, and a read
        never makes one (a status page must not fill the store)."""
        state = self._lines.get(line.key)
        if state is None:
            return LineState()
        state.purge(at.buckets(line.window)[1], at.now)
        return state

    async def reserve(
        self, tenant: str, rid: str, lines: Sequence[Line], now: float, ttl_s: float,
        version: int | None = None, expected_s: float | None = None,
    ) -> ReserveResult:
        if version is not None and version != self._budgets.current_version(tenant):
            return ReserveResult(False, (), stale=True)
        self._idle.sweep(self._lines, now)
        new = sum(line.key not in self._lines for line in lines)
        if new:
            self._idle.make_room(self._lines, new, now)  # else StoreFull
        at = _Instant(now)
        states = [self._state(line, at) for line in lines]
        used = tuple(s.used() for s in states)
        failed = tuple(
            i for i, line in enumerate(lines) if line.enforce and used[i] + line.amount > line.limit
        )
        if failed:
            lines_failed = [(lines[i], used[i], states[i].buckets,
                             [(p.frees_at(), p.amount) for p in states[i].pending.values()])
                            for i in failed]
            return ReserveResult(False, used, failed, fits_at(lines_failed, now),
                                 fits_at(lines_failed, now, ending_now=True))
        expected_at = now + min(ttl_s, ttl_s if expected_s is None else expected_s)
        for line, state in zip(lines, states, strict=True):
            state.hold(rid, Pending(line.amount, at.buckets(line.window)[0], now + ttl_s,
                                    expected_at))
        return ReserveResult(True, used)

    async def settle(
        self, tenant: str, rid: str, lines: Sequence[Line], usage: Usage | None, now: float
    ) -> bool:
        if rid in self._settled:
            return False
        self._settled[rid] = None
        if len(self._settled) > _SETTLED_KEPT:
            self._settled.popitem(last=False)
        at = _Instant(now)
        for line in lines:
            state = self._state(line, at)
            state.release(rid)
            # counted from when it settles (billed), never from its earlier reservation bucket
            state.charge(at.buckets(line.window)[0], line.amount)
        if lines:
            self.freed.wake(tenant)
        if usage is not None:
            self.keep(usage)
        return True

    async def peek(self, lines: Sequence[Line], now: float) -> list[int]:
        at = _Instant(now)
        return [self._current(line, at).used() for line in lines]

    async def peek_use(self, lines: Sequence[Line], now: float) -> list[LineUse]:
        at = _Instant(now)
        return [self._current(line, at).use() for line in lines]

    async def mark_once(self, key: str, until: float, now: float) -> bool:
        if self._marks.get(key, 0.0) > now:
            return False
        if len(self._marks) >= _MARKS_PRUNE_AT:
            self._marks = {k: t for k, t in self._marks.items() if t > now}
        self._marks[key] = until
        return True

    async def in_flight(self, now: float) -> int:
        return len({rid for state in self._lines.values() for rid, p in state.pending.items()
                    if p.expires_at > now})

    async def record(self, usage: Usage) -> None:
        self.keep(usage)

    def keep(self, usage: Usage) -> None:
        """Records ``usage`` (its entry, its hour's rollup and its end user's day) at once:
        nothing suspends."""
        self.tracker.add(usage)
        self._end_users.add(usage)
        key = (usage.tenant_id, hour_of(usage.timestamp), usage.model, usage.provider)
        row = self._rollups.setdefault(key, [0, 0, 0, 0, 0])
        row[0] += usage.input_tokens
        row[1] += usage.output_tokens
        row[2] += usage.cached_tokens
        row[3] += usd_to_nano(usage.cost)
        row[4] += 1

    async def query(self, filter: Filter) -> Summary:
        return await spend.query(self, filter)

    async def rollups(
        self, tenant: str | None, first_hour: int, last_hour: int
    ) -> list[RollupRow]:
        return [RollupRow(t, hour, model, provider, *row)
                for (t, hour, model, provider), row in self._rollups.items()
                if (tenant is None or t == tenant) and first_hour <= hour <= last_hour]

    async def end_user_days(self, tenant: str | None, first_day: int, last_day: int
                            ) -> list[EndUserRow]:
        return self._end_users.rows(tenant, first_day, last_day)

    async def entries(self, tenant: str | None) -> list[Usage]:
        return self.tracker.entries(tenant)

    async def connect(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def snapshot(self) -> dict[str, object]:
        """Everything that must survive a restart, JSON-safe and detached from live state."""
        return {
            "lines": {key: state.snapshot() for key, state in self._lines.items()},
            "settled": list(self._settled),
            "marks": dict(self._marks),
            "usage": self.tracker.values(),  # usage_row's tuples, as the log keeps them
            "rollups": [[*key, *row] for key, row in self._rollups.items()],
            "end_users": self._end_users.snapshot(),
            "budgets": self._budgets.snapshot(),
            "batches": self.batches.snapshot(),
            "objects": self._objects.snapshot(),
            "audit": self.audit.snapshot(),
        }

    def restore(self, state: Mapping[str, object]) -> None:
        """Replaces all state by ``state`` (from ``snapshot``), or raises ValueError naming
        what is malformed and changes nothing."""
        lines = {key: LineState.restore(value, f"lines.{key}")
                 for key, value in typed(state.get("lines"), dict, "lines").items()}
        settled = OrderedDict((typed(rid, str, f"settled[{i}]"), None) for i, rid
                              in enumerate(typed(state.get("settled"), list, "settled")))
        marks = {key: number(until, f"marks.{key}")
                 for key, until in typed(state.get("marks"), dict, "marks").items()}
        usage = [usage_from_row(row, f"usage[{i}]")
                 for i, row in enumerate(typed(state.get("usage"), list, "usage"))]
        rollups = dict(rollup_from_row(row, f"rollups[{i}]")
                       for i, row in enumerate(typed(state.get("rollups"), list, "rollups")))
        end_users = self._end_users.restored(state.get("end_users"))  # since issue 19
        batches = MemoryBatches()
        batches.restore(state.get("batches", []))  # since issue 19
        objects = MemoryObjects()
        objects.restore(state.get("objects", []))
        audit = MemoryAudit()
        audit.restore(state.get("audit"))  # since issue 20
        self._budgets.restore(state.get("budgets"))  # last check; it too changes all or nothing
        self.batches.records = batches.records  # in place: a journaled subclass stays one
        self._objects.restore(objects.snapshot())
        self.audit.restore(audit.snapshot())  # in place: a journaled subclass stays one
        self._lines, self._settled, self._marks = lines, settled, marks
        self._idle.reset(key for key, line in lines.items() if line.window is not None)
        self._rollups, self._end_users = rollups, end_users
        self.tracker.restore(usage)

    async def close(self) -> None:
        return None
