"""Usage trackers: record what each call used, answer aggregate queries."""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from gateway.clock import Clock, SystemClock
from gateway.cost.model import Filter, Summary, Usage, nano_to_usd, usage_values, usd_to_nano


class Tracker(Protocol):
    """Safe for concurrent use by the tasks of one event loop."""

    async def record(self, usage: Usage) -> None: ...

    async def query(self, filter: Filter) -> Summary: ...


def summarize(entries: list[Usage]) -> Summary:
    """One rule for adding usage up; money summed as integers, so totals are exact."""
    return Summary(
        total_input_tokens=sum(u.input_tokens for u in entries),
        total_output_tokens=sum(u.output_tokens for u in entries),
        total_cost=nano_to_usd(sum(usd_to_nano(u.cost) for u in entries)),
        entry_count=len(entries),
    )


class InMemoryTracker:
    """Keeps the newest ``max_entries`` records (0: no limit), evicting the oldest first. Safe
    for concurrent use: threads may record and query at once. A record without a timestamp is
    stamped with ``clock``'s now: recording usage is recording it now.

    Records are kept as tuples of their fields (``usage_values``), which the garbage collector
    stops tracking: a full log no longer lengthens every full collection."""

    def __init__(self, max_entries: int = 100_000, clock: Clock | None = None) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be 0 (no limit) or positive")
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._entries: deque[tuple[Any, ...]] = deque(maxlen=max_entries or None)

    async def record(self, usage: Usage) -> None:
        self.add(usage)

    def add(self, usage: Usage) -> None:
        if not usage.timestamp:
            usage = dataclasses.replace(usage, timestamp=self._clock.now())
        with self._lock:
            self._entries.append(usage_values(usage))

    async def query(self, filter: Filter) -> Summary:
        return summarize([u for u in self.entries() if filter.matches(u)])

    def entries(self, tenant_id: str | None = None) -> list[Usage]:
        """Oldest first: what a saved copy of the tracker holds; only ``tenant_id``'s if set."""
        return [Usage(*values) for values in self.values()
                if tenant_id is None or values[_TENANT] == tenant_id]

    def values(self) -> list[tuple[Any, ...]]:
        """The records as ``usage_values`` gives them, oldest first."""
        with self._lock:
            return list(self._entries)

    def restore(self, entries: Iterable[Usage]) -> None:
        """Replaces the records by ``entries`` (oldest first), keeping the newest if too many."""
        with self._lock:
            self._entries = deque(map(usage_values, entries), maxlen=self._entries.maxlen)

    def __len__(self) -> int:
        return len(self._entries)


_TENANT = [f.name for f in dataclasses.fields(Usage)].index("tenant_id")
