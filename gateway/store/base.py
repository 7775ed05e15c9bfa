"""The store interface: every backend answers these calls identically, to the unit.

Time always comes in as an argument (from the injected clock), never from the backend.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from gateway.cost.model import Budget, Filter, Summary, Usage
from gateway.cost.windows import Window
from gateway.store.freed import RoomFreed
from gateway.store.objects import ObjectOwners
from gateway.store.spend import SpendSource

if TYPE_CHECKING:  # batches.py builds on Line, audit.py on StoreError
    from gateway.store.audit import AuditLog
    from gateway.store.batches import BatchLedger


class Line(NamedTuple):
    """One limit of one budget, as a request meets it: a counter, its window, how much.

    A named tuple, not a frozen dataclass: a request builds two per budget to reserve and two
    to settle, and a tuple is made in a third of the time."""

    key: str  # per budget and limit, hash-tagged by tenant: "{acme}:b:daily:max_cost_per_day"
    window: Window
    limit: int  # tokens or nano-dollars
    amount: int  # what this request reserves (or, on settle, actually used)
    enforce: bool = True  # False for alert-only budgets: counted, never refused


@dataclass(frozen=True, slots=True)
class ReserveResult:
    ok: bool
    used: tuple[int, ...]  # per line, before this request (reservations in flight included)
    failed: tuple[int, ...] = ()  # indexes of enforced lines that did not fit
    fits_at: float | None = None  # when every failed line is expected to fit; None: never
    earliest: float | None = None  # when it would, were every reservation in flight to end
    # now: a request that cannot fit even then before its wait ends need not be held
    stale: bool = False  # the tenant's API budgets changed since the caller's version: nothing
    # was reserved; reload them and try again


Failed = tuple[Line, int, Mapping[int, int], Sequence[tuple[float, int]]]


def fits_at(failed: Sequence[Failed], now: float, ending_now: bool = False) -> float | None:
    """When every failed line is expected to fit, as room frees from either source.

    ``failed``: (line, used, settled amount per bucket, (expected end, amount) per reservation
    in flight). None: never (the request alone is over a limit). A settled bucket frees at
    ``Window.leaves_at``, never before its requests have left the exact window; a reservation
    frees at its expected end (its upstream's usual duration, the timeout at worst), the whole
    amount: an estimate, since it settles to its actual usage, which stays in the window. A
    held request that still does not fit then is told the next time. ``ending_now``: every
    reservation in flight frees now (the earliest it may).
    """
    latest = now
    for line, used, buckets, held in failed:
        if line.amount > line.limit:
            return None
        excess = used + line.amount - line.limit
        frees = sorted([*((line.window.leaves_at(b), a) for b, a in buckets.items()),
                        *((now if ending_now else max(end, now), a) for end, a in held)])
        freed, when = 0, line.window.leaves_at(line.window.bucket(now))
        for at, amount in frees:
            freed += amount
            if freed >= excess:
                when = at
                break
        latest = max(latest, when)
    return latest


@dataclass(frozen=True, slots=True)
class LineUse:
    """A line's current use, and the oldest bucket that use sits in (settled or held; None when
    nothing counts): capacity frees up when that bucket leaves the window."""

    used: int
    oldest: int | None


class StoreError(Exception):
    """The store could not be reached or answered nonsense; the proxy applies on_store_error."""


class StoreFull(Exception):
    """The embedded store keeps as many budget counters as it may (``limits.
    budget_counters_max``): a request needing a new one is refused until idle ones expire.
    Not a StoreError: ``on_store_error: allow`` must not let such a request through."""

    def __init__(self, max_count: int, retry_at: float | None) -> None:
        super().__init__(f"the store keeps {max_count} budget counters, its maximum")
        self.max_count = max_count
        self.retry_at = retry_at  # when a counter is next expected to empty (None: unknown)


class BudgetDefinitions(Protocol):
    """Budgets created through the admin API, kept in the store (not in the YAML).

    Each tenant's set carries a version that every change raises, so an instance can tell
    cheaply that its cached copy is stale.
    """

    async def put(self, budget: Budget) -> int:
        """Create or replace ``budget`` (by its ``id``); returns the tenant's new version."""
        ...

    async def delete(self, tenant: str, budget_id: str) -> bool:
        """False when there was no such budget."""
        ...

    async def list(self, tenant: str) -> tuple[int, list[Budget]]:
        """The tenant's version and budgets, in creation order."""
        ...

    async def version(self, tenant: str) -> int: ...


class Store(SpendSource, Protocol):
    definitions: BudgetDefinitions
    objects: ObjectOwners  # who created which response, file or batch, and what it needs
    failures: Counter[tuple[str, str]]  # StoreErrors raised so far, by operation and kind
    freed: RoomFreed  # wakes held requests when room may have freed

    @property
    def batches(self) -> BatchLedger:
        """Batches whose reservation is held until they end."""
        ...

    @property
    def audit(self) -> AuditLog:
        """Each tenant's recent budget changes: who made them, what they were."""
        ...

    async def reserve(
        self, tenant: str, rid: str, lines: Sequence[Line], now: float, ttl_s: float,
        version: int | None = None, expected_s: float | None = None,
    ) -> ReserveResult:
        """All lines or none: add every amount if each enforced line stays within its limit.

        ``ttl_s``: the hold expires then at the latest; ``expected_s`` (at most ``ttl_s``, the
        default): when it is expected to settle, for ``fits_at`` of the requests it keeps out.

        ``version``: the caller's version of the tenant's API budgets; if the store's differs,
        nothing is reserved and the result says ``stale``. Checked in the same atomic step, so
        a budget created on one instance binds the next request on every instance.

        Raises ``StoreFull`` (the embedded store) when a line needs a new counter past the
        store's maximum."""
        ...

    async def settle(
        self, tenant: str, rid: str, lines: Sequence[Line], usage: Usage | None, now: float
    ) -> bool:
        """Replace reservation ``rid`` by the actual amounts in ``lines`` (zero to release)
        and record ``usage``. Idempotent: a second call for one ``rid`` does nothing and
        returns False. A reservation that had already expired is charged at ``now``."""
        ...

    async def peek(self, lines: Sequence[Line], now: float) -> list[int]:
        """Current use of each line's window, reservations included."""
        ...

    async def peek_use(self, lines: Sequence[Line], now: float) -> list[LineUse]:
        """``peek``, and where each line's use sits in its window."""
        ...

    async def mark_once(self, key: str, until: float, now: float) -> bool:
        """True for the first caller of ``key`` until ``until``; dedupes alerts."""
        ...

    async def record(self, usage: Usage) -> None:
        """Record usage that reserved nothing (no budget matched)."""
        ...

    async def query(self, filter: Filter) -> Summary: ...

    async def in_flight(self, now: float) -> int:
        """Reservations this store object made that are neither settled nor expired."""
        ...

    async def connect(self) -> None:
        """Before serving: reach the backend once (a failure here is not fatal)."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
