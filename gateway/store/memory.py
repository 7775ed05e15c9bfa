"""The embedded store: one process, one event loop, so each call is atomic by construction.

Every method runs to completion without awaiting, so no other task can interleave between a
check and its reservation.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.cost.model import Filter, Summary, Usage
from gateway.cost.tracker import InMemoryTracker
from gateway.store.base import Line, ReserveResult

_EXPIRED_KEPT = 10_000  # late settles of expired reservations are still charged, this many back
_MARKS_PRUNE_AT = 10_000


@dataclass(frozen=True, slots=True)
class Hold:
    lines: tuple[Line, ...]
    buckets: tuple[int, ...]
    expires_at: float


class Counters:
    """Per-line bucket counters; buckets that left their window are dropped on write."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[int, int]] = {}

    def used(self, line: Line, now: float) -> int:
        buckets = self._buckets.get(line.key)
        if not buckets:
            return 0
        oldest = line.window.oldest(now)
        return sum(v for b, v in buckets.items() if b >= oldest)

    def add(self, line: Line, bucket: int, amount: int, now: float) -> None:
        buckets = self._buckets.setdefault(line.key, {})
        buckets[bucket] = buckets.get(bucket, 0) + amount
        oldest = line.window.oldest(now)
        for b in [b for b in buckets if b < oldest]:
            del buckets[b]

    def fits_at(self, line: Line, used: int, now: float) -> float | None:
        """When enough of this line's buckets leave the window for ``line.amount`` to fit."""
        if line.amount > line.limit:
            return None
        excess = used + line.amount - line.limit
        buckets = self._buckets.get(line.key, {})
        oldest = line.window.oldest(now)
        freed = 0
        for b in sorted(b for b in buckets if b >= oldest):
            freed += buckets[b]
            if freed >= excess:
                return line.window.leaves_at(b)
        return None

    def move(self, line: Line, bucket: int, reserved: int, actual: int, now: float) -> None:
        """Replace a reservation by actual usage: in place while its bucket still counts,
        else charged to the current bucket."""
        if bucket >= line.window.oldest(now):
            self.add(line, bucket, actual - reserved, now)
            return
        stale = self._buckets.get(line.key, {})
        if bucket in stale:
            stale[bucket] -= reserved
        self.add(line, line.window.bucket(now), actual, now)

    def snapshot(self) -> dict[str, dict[int, int]]:
        return {k: dict(v) for k, v in self._buckets.items() if v}

    def restore(self, data: dict[str, dict[int, int]]) -> None:
        self._buckets = {k: dict(v) for k, v in data.items()}


class MemoryStore:
    def __init__(self, tracker: InMemoryTracker | None = None) -> None:
        self.counters = Counters()
        self.tracker = tracker or InMemoryTracker()
        self._holds: dict[str, Hold] = {}
        self._expiry: list[tuple[float, str]] = []
        self._expired: OrderedDict[str, Hold] = OrderedDict()
        self._marks: dict[str, float] = {}

    async def reserve(
        self, tenant: str, rid: str, lines: Sequence[Line], now: float, ttl_s: float
    ) -> ReserveResult:
        self._expire(now)
        used = tuple(self.counters.used(line, now) for line in lines)
        failed = tuple(
            i for i, line in enumerate(lines) if line.enforce and used[i] + line.amount > line.limit
        )
        if failed:
            times = [self.counters.fits_at(lines[i], used[i], now) for i in failed]
            fits_at = None if None in times else max(t for t in times if t is not None)
            return ReserveResult(False, used, failed, fits_at)
        buckets = tuple(line.window.bucket(now) for line in lines)
        for line, bucket in zip(lines, buckets, strict=True):
            self.counters.add(line, bucket, line.amount, now)
        self._holds[rid] = Hold(tuple(lines), buckets, now + ttl_s)
        heapq.heappush(self._expiry, (now + ttl_s, rid))
        return ReserveResult(True, used)

    async def settle(
        self, tenant: str, rid: str, actual: Sequence[int], usage: Usage | None, now: float
    ) -> bool:
        hold = self._holds.pop(rid, None)
        if hold is not None:
            for line, bucket, amount in zip(hold.lines, hold.buckets, actual, strict=True):
                self.counters.move(line, bucket, line.amount, amount, now)
        elif (hold := self._expired.pop(rid, None)) is not None:
            for line, amount in zip(hold.lines, actual, strict=True):
                self.counters.add(line, line.window.bucket(now), amount, now)
        else:
            return False
        if usage is not None:
            await self.tracker.record(usage)
        return True

    async def peek(self, lines: Sequence[Line], now: float) -> list[int]:
        return [self.counters.used(line, now) for line in lines]

    async def mark_once(self, key: str, until: float, now: float) -> bool:
        if self._marks.get(key, 0.0) > now:
            return False
        if len(self._marks) >= _MARKS_PRUNE_AT:
            self._marks = {k: t for k, t in self._marks.items() if t > now}
        self._marks[key] = until
        return True

    async def expire(self, now: float) -> int:
        return self._expire(now)

    def _expire(self, now: float) -> int:
        released = 0
        while self._expiry and self._expiry[0][0] <= now:
            _, rid = heapq.heappop(self._expiry)
            hold = self._holds.pop(rid, None)
            if hold is None:
                continue  # settled in time
            for line, bucket in zip(hold.lines, hold.buckets, strict=True):
                self.counters.move(line, bucket, line.amount, 0, now)
            self._expired[rid] = hold
            if len(self._expired) > _EXPIRED_KEPT:
                self._expired.popitem(last=False)
            released += 1
        return released

    async def record(self, usage: Usage) -> None:
        await self.tracker.record(usage)

    async def query(self, filter: Filter) -> Summary:
        return await self.tracker.query(filter)

    async def in_flight(self) -> int:
        return len(self._holds)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
