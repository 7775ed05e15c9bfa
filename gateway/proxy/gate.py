"""How many requests a tenant (and everyone together) may have in the gateway at once.

Two counts, each bounded per tenant and in all by ``limits:``: requests in flight, from their
admission (before their bodies are read) to the end of their responses, streams included; and
requests held by a throttled budget while they wait for room. Past a bound: a 429 at once.

A held request is dropped as soon as its client leaves. aiohttp does not cancel a handler
whose client closed (``gateway serve`` runs without handler cancellation), so one task polls
the connections of the requests held, however many there are, and wakes those whose client
has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from gateway.clock import Clock
from gateway.errors import (
    BudgetExceeded,
    ClientClosedRequest,
    TooManyConcurrent,
    TooManyHeld,
)
from gateway.settings.schema import LimitSettings
from gateway.store.freed import RoomFreed

log = logging.getLogger(__name__)

_WATCH_S = 0.1  # how often the connections of held requests are checked
_RETRY_CONCURRENT_S = "1"  # a request in flight may end at any moment

Gone = Callable[[], bool]


def client_gone(request: web.BaseRequest) -> bool:
    """The request's connection is closed or closing: nobody is left to answer."""
    transport = request.transport
    return transport is None or transport.is_closing()


class Counter:
    """Requests counted per tenant and in all. A tenant's entry is deleted when it reaches zero,
    so there are never more entries than tenants with a request counted."""

    def __init__(self) -> None:
        self._tenants: dict[str, int] = {}
        self.total = 0

    def __len__(self) -> int:
        """Tenants with at least one request counted."""
        return len(self._tenants)

    def of(self, tenant: str) -> int:
        return self._tenants.get(tenant, 0)

    def add(self, tenant: str) -> None:
        self._tenants[tenant] = self._tenants.get(tenant, 0) + 1
        self.total += 1

    def remove(self, tenant: str) -> None:
        left = self._tenants[tenant] - 1
        if left:
            self._tenants[tenant] = left
        else:
            del self._tenants[tenant]
        self.total -= 1


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD = 64 * 1024


def large_allocations_returned() -> None:
    """glibc keeps freed heap memory for reuse, so after a burst of large bodies is dropped RSS
    stays at its peak (300 x 500 KB dropped kept ~310 MB). A fixed mmap threshold puts every
    block of 64 KiB or more (bodies, the chunks they are read in, their parsed text) in its
    own mapping, given back to the OS the moment it is freed, with no periodic
    ``malloc_trim`` (which stalls other threads' allocations for tens of milliseconds).
    Where there is no glibc, nothing changes."""
    try:
        mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    except (OSError, TypeError):  # no C library to open by name (Windows)
        return
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


class Departures:
    """Wakes held requests whose clients have gone: one task polls every watched connection
    while any is watched, and ends when none is."""

    def __init__(self, interval_s: float = _WATCH_S) -> None:
        self._interval_s = interval_s
        self._watched: dict[asyncio.Future[None], Gone] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, gone: Gone) -> asyncio.Future[None]:
        """A future done when ``gone()`` turns true (checked every ``interval_s``)."""
        left = asyncio.get_running_loop().create_future()
        self._watched[left] = gone
        if self._task is None or self._task.done():  # not in the context of this request
            self._task = asyncio.create_task(self._run(), context=contextvars.Context())
        return left

    def forget(self, left: asyncio.Future[None]) -> None:
        self._watched.pop(left, None)

    async def _run(self) -> None:
        while self._watched:
            await asyncio.sleep(self._interval_s)
            for left, gone in list(self._watched.items()):
                if gone():
                    del self._watched[left]
                    left.set_result(None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Gate:
    """The app's counts of requests in flight and held; one per app, shared by its requests."""

    def __init__(self, clock: Clock, freed: RoomFreed | None = None,
                 departures: Departures | None = None) -> None:
        self.clock = clock
        self.freed = RoomFreed() if freed is None else freed
        self.concurrent = Counter()
        self.held = Counter()
        self._queues: dict[str, list[Hold]] = {}  # held requests per tenant, in arrival order
        self.on_hold_ended: Callable[[str, float], None] | None = None  # outcome, seconds
        large_allocations_returned()
        self.departures = departures or Departures()
        self._counting: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.contextmanager
    def enter(self, tenant: str, limits: LimitSettings) -> Iterator[None]:
        """Counts one request in flight for as long as the block runs."""
        refused = _refusal(self.concurrent, tenant, "requests in flight",
                           ("concurrent_per_tenant", limits.concurrent_per_tenant),
                           ("concurrent_total", limits.concurrent_total))
        if refused is not None:
            raise TooManyConcurrent(refused, headers={"Retry-After": _RETRY_CONCURRENT_S})
        self.concurrent.add(tenant)
        try:
            yield
        finally:
            self.concurrent.remove(tenant)

    def hold(self, tenant: str, limits: LimitSettings, gone: Gone) -> Hold:
        return Hold(self, tenant, limits, gone)

    def queue(self, tenant: str) -> Sequence[Hold]:
        """The tenant's held requests, oldest first (bounded by ``limits.held_per_tenant``)."""
        return self._queues.get(tenant, ())

    def enqueue(self, tenant: str, hold: Hold) -> None:
        self._queues.setdefault(tenant, []).append(hold)

    def dequeue(self, tenant: str, hold: Hold) -> None:
        """Takes ``hold`` out of its queue; those behind it get their turn at once."""
        queue = self._queues.get(tenant, [])
        if hold in queue:
            queue.remove(hold)
        if queue:
            self.freed.wake(tenant)
        else:
            self._queues.pop(tenant, None)

    def held_ended(self, outcome: str, held_s: float) -> None:
        if self.on_hold_ended is not None:
            self.on_hold_ended(outcome, held_s)

    async def offload(self, tenant: str, func: Callable[..., int], *args: Any) -> int:
        """Counts a large body on a worker thread, one at a time per tenant: a tenant that
        sends costly text (long runs the BPE is slow on) uses one core's worth, never the
        whole pool, and other tenants' requests keep their latency."""
        lock, users = self._counting.get(tenant, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._counting[tenant] = (lock, users + 1)
        try:
            async with lock:
                return await asyncio.to_thread(func, *args)
        finally:
            lock, users = self._counting[tenant]
            if users == 1:
                del self._counting[tenant]  # bounded by the tenants counting right now
            else:
                self._counting[tenant] = (lock, users - 1)

    async def close(self) -> None:
        await self.departures.close()


class Hold:
    """One request's wait for a throttled budget (``Admitter`` calls ``wait``): counted from its
    first wait to the end of the ``with`` block, and ended when its client leaves.

    Woken by the store's ``RoomFreed`` (a settlement on any instance, a reload), else by its
    poll timer. Held requests of a tenant queue in arrival order on this instance: one waits
    its turn (``behind``) while an earlier one waits on any of the same budgets, and leaving
    the queue wakes the next, so that a large request is never passed by smaller ones."""

    def __init__(self, gate: Gate, tenant: str, limits: LimitSettings, gone: Gone) -> None:
        self._gate = gate
        self._tenant = tenant
        self._limits = limits
        self._gone = gone
        self._left: asyncio.Future[None] | None = None  # set while the request is held
        self._woken: asyncio.Future[None] | None = None  # the next wake-up, while held
        self._since = 0.0
        self.budgets: frozenset[str] = frozenset()  # what it waits on, while queued

    @property
    def max_wait_s(self) -> float:
        """The longest any budget may hold a request (``limits.max_wait_s``)."""
        return self._limits.max_wait_s

    def behind(self, budgets: Sequence[str]) -> bool:
        """An earlier held request of the tenant waits on one of ``budgets``."""
        wanted = set(budgets)
        for other in self._gate.queue(self._tenant):
            if other is self:
                return False
            if other.budgets & wanted:
                return True
        return False

    async def wait(self, seconds: float, fits_in_s: float, budgets: Sequence[str]) -> None:
        """Waits up to ``seconds`` by the clock, less if room may have freed; a 499 if the
        client leaves."""
        left = self._left or self._start(fits_in_s, budgets)
        woken = self._woken or self._gate.freed.wait(self._tenant)
        sleeping = asyncio.ensure_future(self._gate.clock.sleep(seconds))
        try:
            await asyncio.wait((sleeping, left, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
        if woken.done():  # the next wake-up is listened for before the store is asked again
            self._gate.freed.forget(self._tenant, woken)
            woken = self._gate.freed.wait(self._tenant)
        self._woken = woken
        if left.done():
            raise _client_left()

    def _start(self, fits_in_s: float, budgets: Sequence[str]) -> asyncio.Future[None]:
        if self._gone():
            raise _client_left()
        held, limits, tenant = self._gate.held, self._limits, self._tenant
        refused = _refusal(held, tenant, "requests held by throttled budgets",
                           ("held_per_tenant", limits.held_per_tenant),
                           ("held_total", limits.held_total))
        if refused is not None:  # retried once its budget has room, it need not be held
            raise TooManyHeld(refused, headers={"Retry-After": str(max(math.ceil(fits_in_s), 1))})
        held.add(tenant)
        self.budgets = frozenset(budgets)
        self._gate.enqueue(tenant, self)
        self._since = time.perf_counter()
        self._left = self._gate.departures.watch(self._gone)
        log.info("budget hold started tenant=%s budgets=%s fits_in_s=%.0f held=%d/%d",
                 tenant, ",".join(sorted(self.budgets)), fits_in_s, held.of(tenant),
                 held.total)
        return self._left

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._left is None:
            return
        gate, tenant = self._gate, self._tenant
        gate.departures.forget(self._left)
        self._left = None
        if self._woken is not None:
            gate.freed.forget(tenant, self._woken)
            self._woken = None
        gate.held.remove(tenant)
        gate.dequeue(tenant, self)
        held_s = time.perf_counter() - self._since
        outcome = _outcome(exc)
        gate.held_ended(outcome, held_s)
        log.info("budget hold ended tenant=%s outcome=%s held_s=%.2f", tenant, outcome, held_s)


def _refusal(counter: Counter, tenant: str, what: str, per_tenant: tuple[str, int],
             total: tuple[str, int]) -> str | None:
    """Why one more request would pass a bound (naming its setting), or None."""
    setting, bound = per_tenant
    if counter.of(tenant) >= bound:
        return (f"Tenant '{tenant}' already has {bound} {what}, the most this gateway allows "
                f"one tenant (limits.{setting}); retry later.")
    setting, bound = total
    if counter.total >= bound:
        return (f"The gateway already has {bound} {what} in all (limits.{setting}), so this "
                f"request from tenant '{tenant}' is refused; retry later.")
    return None


def _client_left() -> ClientClosedRequest:
    return ClientClosedRequest(
        "The client closed the connection while its request was held by a throttled budget."
    )


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "admitted"
    if isinstance(exc, BudgetExceeded):
        return "denied"
    if isinstance(exc, ClientClosedRequest):
        return "client-gone"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"
