"""Settlements the store could not take, kept in memory and written back when it returns.

A charged request's usage is never dropped because the store blinked: it waits here (bounded:
past ``max_items`` the oldest is dropped, counted and logged) and a background task writes it
back in order once the store answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.cost.model import Usage
from gateway.store.base import Line, Store, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Deferred:
    tenant: str
    rid: str | None  # None: usage that reserved nothing, recorded as is
    lines: Sequence[Line]
    usage: Usage | None
    now: float

    async def apply(self, store: Store) -> None:
        if self.rid is not None:
            await store.settle(self.tenant, self.rid, self.lines, self.usage, self.now)
        elif self.usage is not None:
            await store.record(self.usage)


class SettleBuffer:
    def __init__(self, store: Store, clock: Clock, max_items: int = 100_000) -> None:
        self._store = store
        self._clock = clock
        self._items: deque[Deferred] = deque()
        self._max_items = max_items
        self.overflowed = 0
        self.written_back = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Deferred) -> None:
        if len(self._items) >= self._max_items:
            lost = self._items.popleft()
            self.overflowed += 1
            log.error("usage buffer full (%d): dropped the oldest settlement (tenant=%s)",
                      self._max_items, lost.tenant)
        self._items.append(item)
        if len(self._items) == 1:
            log.warning("budget store unavailable: buffering usage until it returns")

    async def flush(self) -> int:
        """Writes back in order until the store fails again; returns how many were written."""
        written = 0
        while self._items:
            item = self._items[0]
            try:
                await item.apply(self._store)
            except StoreError:
                break
            self._items.popleft()
            written += 1
        if written:
            self.written_back += written
            log.info("budget store back: wrote %d buffered settlements, %d left",
                     written, len(self._items))
        return written

    async def run(self, interval_s: float = 1.0) -> None:
        """Flushes while anything waits; runs until cancelled (then flushes once more)."""
        try:
            while True:
                await self._clock.sleep(interval_s)
                if self._items:
                    await self.flush()
        finally:
            if self._items:
                await asyncio.shield(self.flush())
