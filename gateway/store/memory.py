"""The embedded store: one process, one event loop, so each call is atomic by construction.

Every method runs to completion without awaiting, so no other task can interleave between a
check and its reservation. The model is the one the Redis scripts implement: per line, settled
usage in time buckets plus reservations pending until settled or expired.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.cost.model import Filter, Summary, Usage
from gateway.cost.tracker import InMemoryTracker
from gateway.store.base import Line, ReserveResult, fits_at

_SETTLED_KEPT = 100_000  # settle ids remembered for idempotency, newest first
_MARKS_PRUNE_AT = 10_000


@dataclass(frozen=True, slots=True)
class Pending:
    amount: int
    bucket: int
    expires_at: float


@dataclass(slots=True)
class LineState:
    buckets: dict[int, int] = field(default_factory=dict)  # settled usage per bucket
    pending: dict[str, Pending] = field(default_factory=dict)  # reservation id -> hold

    def purge(self, line: Line, now: float) -> None:
        oldest = line.window.oldest(now)
        for b in [b for b in self.buckets if b < oldest]:
            del self.buckets[b]
        for rid in [r for r, p in self.pending.items() if p.expires_at <= now]:
            del self.pending[rid]

    def used(self) -> int:
        return sum(self.buckets.values()) + sum(p.amount for p in self.pending.values())

    def charge(self, line: Line, bucket: int, amount: int, now: float) -> None:
        """Usage lands in its reservation's bucket while that still counts, else in now's."""
        if bucket < line.window.oldest(now):
            bucket = line.window.bucket(now)
        self.buckets[bucket] = self.buckets.get(bucket, 0) + amount


class MemoryStore:
    def __init__(self, tracker: InMemoryTracker | None = None) -> None:
        self.tracker = tracker or InMemoryTracker()
        self._lines: dict[str, LineState] = {}
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._marks: dict[str, float] = {}

    def _state(self, line: Line, now: float) -> LineState:
        state = self._lines.get(line.key)
        if state is None:
            state = self._lines[line.key] = LineState()
        state.purge(line, now)
        return state

    async def reserve(
        self, tenant: str, rid: str, lines: Sequence[Line], now: float, ttl_s: float
    ) -> ReserveResult:
        states = [self._state(line, now) for line in lines]
        used = tuple(s.used() for s in states)
        failed = tuple(
            i for i, line in enumerate(lines) if line.enforce and used[i] + line.amount > line.limit
        )
        if failed:
            when = fits_at([(lines[i], used[i], states[i].buckets) for i in failed], now)
            return ReserveResult(False, used, failed, when)
        for line, state in zip(lines, states, strict=True):
            state.pending[rid] = Pending(line.amount, line.window.bucket(now), now + ttl_s)
        return ReserveResult(True, used)

    async def settle(
        self, tenant: str, rid: str, lines: Sequence[Line], usage: Usage | None, now: float
    ) -> bool:
        if rid in self._settled:
            return False
        self._settled[rid] = None
        if len(self._settled) > _SETTLED_KEPT:
            self._settled.popitem(last=False)
        for line in lines:
            state = self._state(line, now)
            held = state.pending.pop(rid, None)
            bucket = held.bucket if held is not None else line.window.bucket(now)
            state.charge(line, bucket, line.amount, now)
        if usage is not None:
            await self.tracker.record(usage)
        return True

    async def peek(self, lines: Sequence[Line], now: float) -> list[int]:
        return [self._state(line, now).used() for line in lines]

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
        await self.tracker.record(usage)

    async def query(self, filter: Filter) -> Summary:
        return await self.tracker.query(filter)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
