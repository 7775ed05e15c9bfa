"""Wake-ups for requests held by a throttled budget: "room may have freed for this tenant".

The embedded store says so on every settlement. On Redis, the settle script publishes to the
tenant's channel while some instance has a request of that tenant held (it marks the tenant
in the store as it starts waiting), so every instance's held requests wake at another's
settlement; traffic with no one held publishes nothing. A configuration reload wakes everyone.
A wake-up is a hint: the woken request asks the store again, and a bounded poll covers any
freeing nobody announced (an expired hold, a lost message).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class RoomFreed:
    """The futures of held requests, per tenant; each wake-up resolves all of a tenant's."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self.on_first: Callable[[str], None] | None = None  # a tenant now has a waiter
        self.on_last: Callable[[str], None] | None = None  # and now has none

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())

    def tenants(self) -> list[str]:
        return list(self._waiting)

    def wait(self, tenant: str) -> asyncio.Future[None]:
        """Done at the next wake-up of ``tenant``; give it back with ``forget``."""
        waiter = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(tenant)
        if waiting is None:
            waiting = self._waiting[tenant] = set()
            if self.on_first is not None:
                self.on_first(tenant)
        waiting.add(waiter)
        return waiter

    def forget(self, tenant: str, waiter: asyncio.Future[None]) -> None:
        waiting = self._waiting.get(tenant)
        if waiting is None:
            return
        waiting.discard(waiter)
        if not waiting:
            del self._waiting[tenant]
            if self.on_last is not None:
                self.on_last(tenant)

    def wake(self, tenant: str) -> None:
        for waiter in self._waiting.get(tenant, ()):
            if not waiter.done():
                waiter.set_result(None)

    def wake_all(self) -> None:
        for tenant in list(self._waiting):
            self.wake(tenant)
