"""The embedded store's bound on its counters (one per line: a limit of a budget, and of one end
user for a ``per: end_user`` budget).

A counter that holds nothing (every settled bucket has left its window, every hold has expired)
is dropped, as Redis drops a line's keys when their TTL ends: nothing it could answer changes.
Each counter has one entry in a heap, due when it may next be empty; each call examines a few
due entries, so the cost is spread over the requests. Past ``max_count`` counters, a new one is
refused (``StoreFull``) rather than any counter still counting dropped: forgetting usage inside
its window would let a budget overshoot.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, MutableMapping
from typing import Protocol, TypeVar

from gateway.store.base import StoreFull

SWEEP_STEPS = 16  # due entries examined per reservation


class Counter(Protocol):
    def empties_at(self) -> float:
        """When nothing it holds counts any more (-inf: already; inf: not known)."""
        ...


C = TypeVar("C", bound=Counter)


class Idle:
    def __init__(self, max_count: int) -> None:
        self.max_count = max_count
        self._due: list[tuple[float, str]] = []

    def watch(self, key: str, at: float) -> None:
        """``key`` is examined at ``at`` (called once per counter)."""
        heapq.heappush(self._due, (at, key))

    def reset(self, keys: Iterable[str]) -> None:
        """After a restore: every counter examined at the next sweeps."""
        self._due = [(-math.inf, key) for key in keys]

    def sweep(self, counters: MutableMapping[str, C], now: float,
              steps: int | None = SWEEP_STEPS) -> None:
        """Drops the empty counters among the due ones (all of them when ``steps`` is None);
        a counter still holding something is examined again when it may be empty."""
        due = self._due
        while due and due[0][0] <= now and steps != 0:
            _, key = heapq.heappop(due)
            counter = counters.get(key)
            if counter is not None:
                empty = counter.empties_at()
                if empty <= now:
                    del counters[key]
                else:
                    heapq.heappush(due, (empty, key))
            if steps is not None:
                steps -= 1

    def make_room(self, counters: MutableMapping[str, C], new: int, now: float) -> None:
        """Room for ``new`` counters, dropping every empty one if needed, else StoreFull."""
        if len(counters) + new <= self.max_count:
            return
        self.sweep(counters, now, None)
        if len(counters) + new > self.max_count:
            retry_at = self._due[0][0] if self._due else None
            raise StoreFull(self.max_count, None if retry_at == math.inf else retry_at)
