"""Stage 4: reserve the request's estimate in every matching budget, all or none, then
reject, hold (throttle), clamp or let it through with an alert.

Reserving, not checking, is what keeps concurrent requests from overshooting together.
"""

from __future__ import annotations

import itertools
import logging
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.clock import Clock
from gateway.cost.model import BudgetAction, Domain
from gateway.cost.pricing import Price
from gateway.cost.windows import HOUR, Window
from gateway.errors import BudgetExceeded, CountersFull, Unauthenticated
from gateway.ops.alerts import Alert, AlertSink
from gateway.proxy.auth import Keyring, Principal
from gateway.proxy.budget_index import BudgetIndex, Slot
from gateway.proxy.end_user import UNNAMED, EndUser
from gateway.proxy.estimate import Estimate
from gateway.proxy.headroom import Headroom
from gateway.proxy.tenant_budgets import ApiBudgets
from gateway.settings.schema import Settings
from gateway.store.base import Line, ReserveResult, Store, StoreError, StoreFull

log = logging.getLogger(__name__)

_POLL_S = 1.0  # a held request re-checks at least this often: releases can free room early
_CLAMP_TRIES = 3
_STALE_TRIES = 3
_RETRY_QUEUED_S = 1  # the requests ahead are being admitted as room frees
_RETRY_WITHIN_S = HOUR.length_s + HOUR.width  # what a full hourly window may take to free


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request asks of its budgets."""

    principal: Principal
    model: str
    domain: Domain
    estimate: Estimate
    price: Price
    ttl_s: float  # how long a reservation may be held
    expected_s: float | None = None  # how long it is expected to be held (None: ttl_s)
    end_user: EndUser = UNNAMED  # whom the request is for, if it names someone
    cost_nano: int | None = None  # its cost bound, when not its estimate's (a batch's sum)
    waits: bool = True  # False: never held nor clamped, a budget's refusal is final (batches)

    @property
    def scope(self) -> tuple[Principal, str, Domain, EndUser]:
        """What picks the budgets (``BudgetIndex.slots``'s arguments)."""
        return self.principal, self.model, self.domain, self.end_user


@dataclass(frozen=True, slots=True)
class Admission:
    """A reservation held for one request, and what the client is told about its budgets."""

    rid: str | None
    slots: tuple[Slot, ...]
    estimate: Estimate
    usage_ratio: float = 0.0
    alerts: tuple[Alert, ...] = ()
    clamped_output: int | None = None  # per-choice max tokens after clamping
    ratios: tuple[float, ...] = ()  # per slot: used over limit, this reservation included
    downgraded_from: str | None = None  # the model asked for, when a fallback was admitted
    end_user: str | None = None  # the end user its usage is recorded for (None: none named)

    def lines(self, tokens: int, cost_nano: int) -> list[Line]:
        """This request's lines carrying ``tokens`` and ``cost_nano``: what to settle."""
        return [slot.line(tokens, cost_nano) for slot in self.slots]


class Hold(Protocol):
    """How a throttled request waits (``gateway.proxy.gate``): bounded in time and in number,
    woken when room may have freed, in arrival order, and ended when its client leaves."""

    @property
    def max_wait_s(self) -> float:
        """The longest any budget may hold a request, whatever its own ``max_wait_s``."""
        ...

    def behind(self, budgets: Sequence[str]) -> bool:
        """An earlier held request waits on one of ``budgets``: this one waits its turn."""
        ...

    async def wait(self, seconds: float, fits_in_s: float, budgets: Sequence[str]) -> None:
        """Waits ``seconds`` at most; the first call starts the hold (and may refuse it)."""
        ...


class Current(Protocol):
    """The configuration in force, read again at each attempt: a held request meets every
    reload (new limits, removed budgets, a revoked key) at its next attempt."""

    @property
    def keyring(self) -> Keyring: ...

    @property
    def budgets(self) -> BudgetIndex: ...

    @property
    def settings(self) -> Settings: ...


class Admitter:
    def __init__(
        self, store: Store, clock: Clock, alerts: AlertSink, api: ApiBudgets
    ) -> None:
        self._store = store
        self._clock = clock
        self._alerts = alerts
        self._api = api
        self._id_prefix = secrets.token_hex(8)  # unique per process: ids never collide
        self._ids = itertools.count()
        self._headroom = Headroom()  # when a request may reserve its cheap bound

    def _next_id(self) -> str:
        """A reservation id: unique across instances, cheaper than a uuid4 per request."""
        return f"{self._id_prefix}{next(self._ids):x}"

    def known_slots(self, ask: Ask, file_budgets: BudgetIndex) -> tuple[Slot, ...]:
        """The matching slots known without asking the store (for when it cannot answer)."""
        view = self._api.cached(ask.principal.tenant)
        api = view.index.slots(*ask.scope) if view else ()
        return file_budgets.slots(*ask.scope) + api

    async def admit(self, ask: Ask, current: Callable[[], Current], hold: Hold) -> Admission:
        """The file's and the API's matching budgets, reserved together, all or none.

        Each attempt reads the configuration and the API budgets anew (a stale view of the
        latter is reloaded and tried again), so a held request is judged by the budgets in
        force when it is admitted. A throttled request waits through ``hold``: in turn behind
        earlier held requests on the same budgets, until room is expected within its wait."""
        principal, first = ask.principal, current()
        rid = self._next_id()
        estimate, clamped, attempt, stale = ask.estimate, None, 0, 0
        deadline: float | None = None
        while True:
            slots, version = await self._slots(ask, current(), first)
            now = self._clock.now()
            throttling = [s for s in slots if s.budget.action is BudgetAction.THROTTLE]
            names = [s.budget.name for s in throttling if ask.waits]
            if names and hold.behind(names):  # earlier held requests on these budgets first
                deadline = deadline or _deadline(hold, throttling, now)
                if now >= deadline:
                    raise _queued_too_long(throttling[0])
                await hold.wait(min(deadline - now, _POLL_S), deadline - now, names)
                continue
            estimate, lines = await self._sized(ask, slots, estimate)
            result = await self._reserve(ask, rid if slots else "-", lines, now, version)
            if result.stale:
                stale += 1
                self._reload_api_budgets(principal.tenant, stale)
                continue
            if not slots:
                return Admission(None, slots, estimate, end_user=ask.end_user.id)
            self._headroom.note(lines, result, first.settings.limits.budget_counters_max)
            if estimate.counted is not None and not result.ok:
                estimate = await estimate.counted()  # the cheap bound did not fit: the count
                continue
            if result.ok:
                return await self._admitted(rid, slots, lines, result, estimate, clamped, now,
                                            ask.end_user.id)
            failing = [slots[i] for i in result.failed]
            fit = _clamp_fit(slots, lines, result, estimate, ask.price, attempt if ask.waits
                             else _CLAMP_TRIES)
            attempt += 1
            if fit is not None and all(s.budget.clamp_max_tokens for s in failing):
                clamped = fit
                estimate = estimate.with_output(fit)
                continue
            deadline = deadline or _deadline(hold, failing, now)
            wait = _throttle_wait(failing, result, now, deadline) if ask.waits else None
            if wait is None or result.fits_at is None:
                raise _denied(slots, lines, result, now)
            await hold.wait(wait, result.fits_at - now, [s.budget.name for s in failing])

    async def _sized(self, ask: Ask, slots: tuple[Slot, ...], estimate: Estimate
                     ) -> tuple[Estimate, list[Line]]:
        """The lines to reserve: an estimate's cheap bound where every line had room to spare
        at its last answer; else (near a limit, or a line not seen yet) its exact count."""
        lines = _lines(ask, slots, estimate)
        if estimate.counted is not None and not self._headroom.roomy(lines):
            estimate = await estimate.counted()
            lines = _lines(ask, slots, estimate)
        return estimate, lines

    async def _reserve(self, ask: Ask, rid: str, lines: list[Line], now: float, version: int
                       ) -> ReserveResult:
        try:
            return await self._store.reserve(ask.principal.tenant, rid, lines, now, ask.ttl_s,
                                             version, ask.expected_s)
        except StoreFull as full:
            log.error("budget store full, request refused: %s", full)
            wait = 60 if full.retry_at is None else max(math.ceil(full.retry_at - now), 1)
            raise CountersFull(
                "The gateway tracks as many budget counters as it may (limits."
                "budget_counters_max) and none is idle yet; retry later.",
                headers={"Retry-After": str(wait)}) from None

    async def _slots(self, ask: Ask, runtime: Current, first: Current
                     ) -> tuple[tuple[Slot, ...], int]:
        """The budgets matching the request now, and the version of the API ones; refused if
        a reload since the request arrived revoked its key."""
        principal = ask.principal
        if runtime is not first and not runtime.keyring.holds(principal):
            raise Unauthenticated("The API key was revoked while its request was held by a "
                                  "throttled budget.")
        view = await self._api.view(principal.tenant)
        slots = runtime.budgets.slots(*ask.scope) + view.index.slots(*ask.scope)
        return slots, view.version

    def _reload_api_budgets(self, tenant: str, stale: int) -> None:
        if stale >= _STALE_TRIES:
            raise StoreError("the tenant's API budgets kept changing while admitting a request")
        self._api.invalidate(tenant)

    async def _admitted(
        self,
        rid: str,
        slots: tuple[Slot, ...],
        lines: list[Line],
        result: ReserveResult,
        estimate: Estimate,
        clamped: int | None,
        now: float,
        end_user: str | None,
    ) -> Admission:
        ratios = [(u + ln.amount) / ln.limit if ln.limit else math.inf
                  for u, ln in zip(result.used, lines, strict=True)]
        alerts: list[Alert] = []
        for slot, line, used, ratio in zip(slots, lines, result.used, ratios, strict=True):
            threshold = slot.budget.alert_threshold
            if ratio < 1.0 and (threshold is None or ratio < threshold):
                continue  # below every level: what nearly every line of every request is
            levels = [t for t in (threshold, 1.0) if t is not None]
            alert = Alert(slot.budget.name, slot.budget.tenant, slot.limit.value,
                          slot.window.name, used + line.amount, line.limit, ratio, now)
            alerts.append(alert)
            for level in levels:
                crossed = line.limit and used / line.limit < level <= ratio
                if crossed and await self._first_crossing(line, slot.window, level, now):
                    self._alerts.emit(alert)
        finite = [r for r in ratios if r != math.inf]
        return Admission(rid, slots, estimate, max(finite, default=0.0), tuple(alerts), clamped,
                         tuple(ratios), end_user=end_user)


    async def _first_crossing(self, line: Line, window: Window, level: float, now: float) -> bool:
        """Deduplicated across instances through the store; if the store cannot say, the
        alert is sent (a duplicate is better than a lost alert)."""
        key = f"{line.key}:alert:{level}:{window.period_id(now)}"
        try:
            return await self._store.mark_once(key, window.period_end(now), now)
        except StoreError as exc:
            log.warning("alert dedupe unavailable, sending anyway: %s", exc)
            return True


def _lines(ask: Ask, slots: tuple[Slot, ...], estimate: Estimate) -> list[Line]:
    cost = reserved_cost(ask.price, estimate) if ask.cost_nano is None else ask.cost_nano
    tokens = estimate.total
    return [slot.line(tokens, cost) for slot in slots]


def reserved_cost(price: Price, estimate: Estimate) -> int:
    """The most the request may cost: its bounds at the dearest tier it may be served at."""
    return price.bound_nano(estimate.input_tokens, estimate.output_tokens, estimate.calls,
                            estimate.bounds.tiers)


def _clamp_fit(
    slots: tuple[Slot, ...],
    lines: list[Line],
    result: ReserveResult,
    estimate: Estimate,
    price: Price,
    attempt: int,
) -> int | None:
    """The per-choice output cap that would make every enforced line fit, if the endpoint
    accepts it. Not for hidden input: a lower cap lets the upstream take more input."""
    if attempt >= _CLAMP_TRIES or estimate.hidden:
        return None
    if not any(slots[i].budget.clamp_max_tokens for i in result.failed):
        return None
    bounds, inp = estimate.bounds, estimate.input_tokens
    worst = price.worst(inp, bounds.tiers)
    room = estimate.output_tokens
    for slot, line, used in zip(slots, lines, result.used, strict=True):
        if not line.enforce:
            continue
        headroom = line.limit - used
        if slot.is_cost:
            room = min(room, worst.max_output_within(headroom, inp, bounds.calls))
        else:
            room = min(room, headroom - inp)
    per_choice = (room - bounds.predicted) // max(bounds.choices, 1)
    return per_choice if per_choice >= bounds.minimum else None


def _throttle_wait(
    failing: list[Slot], result: ReserveResult, now: float, deadline: float
) -> float | None:
    """How long to wait before asking again, or None: refuse now. Held while room could come
    within the wait, were every reservation in flight to end now (their ends are estimates);
    woken by settlements, else at the expected time (or a poll, once that has passed)."""
    if result.fits_at is None or result.earliest is None:
        return None
    if result.earliest > deadline or now >= deadline:
        return None
    if not all(s.budget.action is BudgetAction.THROTTLE for s in failing):
        return None
    until = result.fits_at - now
    wait = _POLL_S if until <= 0 else min(until, _POLL_S)
    return max(min(wait, deadline - now), 0.001)


def _deadline(hold: Hold, slots: Sequence[Slot], now: float) -> float:
    """The shortest wait the budgets allow, capped by the gateway's own."""
    return now + min(hold.max_wait_s, *(s.budget.max_wait_s for s in slots))


def _queued_too_long(slot: Slot) -> BudgetExceeded:
    """A request that waited its turn behind earlier held requests for its whole wait."""
    denied = BudgetExceeded(
        f"Budget '{slot.budget.name}' is throttling: earlier requests held by it were still "
        f"waiting for room when this request's wait ran out.",
        headers={"Retry-After": str(_RETRY_QUEUED_S)})
    return _naming(denied, slot)


def _naming(denied: BudgetExceeded, slot: Slot) -> BudgetExceeded:
    """``denied``, naming the budget and limit that refused (for logs, metrics, /denials)."""
    denied.budget, denied.budget_id = slot.budget.name, slot.budget.ident
    denied.limit, denied.action = slot.limit.value, slot.budget.action.value
    return denied


def _denied(
    slots: tuple[Slot, ...], lines: list[Line], result: ReserveResult, now: float
) -> BudgetExceeded:
    never = [j for j in result.failed if lines[j].amount > lines[j].limit]
    i = (never or result.failed)[0]  # the limit that refused: one it can never fit, if any
    slot, line, used = slots[i], lines[i], result.used[i]
    message = (
        f"Budget '{slot.budget.name}' exceeded: {slot.limit.value} "
        f"({_window_text(slot.window)}) has used {slot.describe(used)} of "
        f"{slot.describe(line.limit)}, and this request needs up to "
        f"{slot.describe(line.amount)}."
    )
    headers: dict[str, str] = {}
    if result.fits_at is not None:
        wait = max(math.ceil(result.fits_at - now), 1)
        if all(slots[j].window.width for j in result.failed):  # rolling windows only
            headers["Retry-After"] = str(wait)
        if wait > _RETRY_WITHIN_S:
            headers["x-should-retry"] = "false"
    else:
        message += " It can never fit this limit; lower max_tokens or raise the limit."
        headers["x-should-retry"] = "false"
    denied = _naming(BudgetExceeded(message, headers=headers), slot)
    downgrades = [slots[j].budget for j in result.failed
                  if slots[j].budget.action is BudgetAction.DOWNGRADE]
    if downgrades:  # the first denying downgrade budget (in the budgets' order) decides
        denied.downgrade, denied.fallbacks = downgrades[0].name, downgrades[0].fallback_model or ()
    return denied


def _window_text(window: Window) -> str:
    return "this calendar month, UTC" if window.width == 0 else f"rolling {window.name}"
