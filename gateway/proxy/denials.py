"""The requests a budget refused lately, as this instance saw them (``GET /denials``).

Each tenant keeps its newest ``limits.denials_per_tenant`` (the oldest dropped as a new one
comes), so a tenant refused without end crowds out no other tenant's. In memory only, per
instance: a restart forgets them, and behind a load balancer each instance knows its own. A
denial names the tenant, the budget and its limit, the model asked for and the request id (to
find the request's access-log line); never the end user nor anything of the key.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.errors import BudgetExceeded

MODEL_KEPT_MAX = 200  # characters of the model's name kept (as the access line keeps it)


@dataclass(frozen=True, slots=True)
class Denial:
    at: float  # seconds since the epoch
    tenant: str
    budget_id: str
    budget: str  # its name
    limit: str  # e.g. max_cost_per_day
    action: str  # reject | throttle | downgrade (none of whose fallbacks fit)
    model: str  # as the request named it
    request_id: str
    message: str  # the 429's message


class Denials:
    """A ring per tenant of its newest denials; ``keep()`` is the configured bound, read at
    each denial (a lower value trims that tenant's ring at its next one)."""

    def __init__(self, clock: Clock, keep: Callable[[], int]) -> None:
        self._clock = clock
        self._keep = keep
        self._by_tenant: dict[str, deque[Denial]] = {}

    def note(self, tenant: str, denied: BudgetExceeded, model: str, request_id: str) -> None:
        keep = self._keep()
        ring = self._by_tenant.get(tenant)
        if ring is None or ring.maxlen != keep:
            ring = self._by_tenant[tenant] = deque(ring or (), maxlen=keep)
        ring.append(Denial(self._clock.now(), tenant, denied.budget_id, denied.budget,
                           denied.limit, denied.action, model[:MODEL_KEPT_MAX], request_id,
                           denied.message))

    def recent(self, tenant: str | None, limit: int) -> list[Denial]:
        """The newest ``limit`` of ``tenant`` (None: of every tenant), newest first."""
        if tenant is not None:
            return list(itertools.islice(reversed(self._by_tenant.get(tenant, ())), limit))
        rings = list(self._by_tenant.values())
        return heapq.nlargest(limit, itertools.chain.from_iterable(rings), key=lambda d: d.at)
