"""Stage 4: reserve the request's estimate in every matching budget, all or none, then
reject, hold (throttle), clamp or let it through with an alert.

Reserving, not checking, is what keeps concurrent requests from overshooting together.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.cost.model import Budget, BudgetAction, Domain, Limit, nano_to_usd
from gateway.cost.pricing import Price, max_output_within
from gateway.cost.windows import Window, window_of
from gateway.errors import BudgetExceeded
from gateway.ops.alerts import Alert, AlertSink
from gateway.proxy.auth import Principal
from gateway.proxy.estimate import Estimate
from gateway.store.base import Line, ReserveResult, Store, StoreError

log = logging.getLogger(__name__)

_POLL_S = 1.0  # a held request re-checks at least this often: releases can free room early
_CLAMP_TRIES = 3
_HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class Slot:
    """One limit of one budget: where its counter lives and how big it is."""

    budget: Budget
    limit: Limit
    window: Window
    max: int  # tokens or nano-dollars
    key: str
    enforce: bool  # False for alert-only budgets

    def amount(self, tokens: int, cost_nano: int) -> int:
        return cost_nano if self.limit.is_cost else tokens

    def line(self, tokens: int, cost_nano: int) -> Line:
        return Line(self.key, self.window, self.max, self.amount(tokens, cost_nano), self.enforce)

    def describe(self, value: int) -> str:
        if self.limit.is_cost:
            return f"${nano_to_usd(value):.6f}".rstrip("0").rstrip(".")
        return f"{value} tokens"


class BudgetIndex:
    """Budgets by tenant with their counters' keys, compiled once per configuration load."""

    def __init__(self, budgets: Sequence[Budget]) -> None:
        self._by_tenant: dict[str, list[Budget]] = defaultdict(list)
        self._slots: dict[str, tuple[Slot, ...]] = {}
        for budget in budgets:
            self._by_tenant[budget.tenant].append(budget)
            enforce = budget.action is not BudgetAction.ALERT
            self._slots[_ident(budget)] = tuple(
                Slot(budget, limit, window_of(limit), value, _key(budget, limit), enforce)
                for limit, value in budget.limits()
            )
        self._cache: dict[tuple[str, str, str, Domain], tuple[Slot, ...]] = {}

    def slots(self, principal: Principal, model: str, domain: Domain) -> tuple[Slot, ...]:
        cache_key = (principal.tenant, principal.key_name, model, domain)
        found = self._cache.get(cache_key)
        if found is None:
            found = tuple(
                slot
                for budget in self._by_tenant.get(principal.tenant, ())
                if _matches(budget, principal.key_name, model, domain)
                for slot in self._slots[_ident(budget)]
            )
            if len(self._cache) < 100_000:
                self._cache[cache_key] = found
        return found


def _ident(budget: Budget) -> str:
    return budget.id or budget.name


def _key(budget: Budget, limit: Limit) -> str:
    return f"{{{budget.tenant}}}:b:{_ident(budget)}:{limit.value}"


def _matches(budget: Budget, key_name: str, model: str, domain: Domain) -> bool:
    return (
        (budget.key is None or budget.key == key_name)
        and (budget.model is None or fnmatch.fnmatchcase(model, budget.model))
        and (budget.domain is None or budget.domain is domain)
    )


@dataclass(frozen=True, slots=True)
class Admission:
    """A reservation held for one request, and what the client is told about its budgets."""

    rid: str | None
    slots: tuple[Slot, ...]
    estimate: Estimate
    usage_ratio: float = 0.0
    alerts: tuple[Alert, ...] = ()
    clamped_output: int | None = None  # per-choice max tokens after clamping

    def lines(self, tokens: int, cost_nano: int) -> list[Line]:
        """This request's lines carrying ``tokens`` and ``cost_nano``: what to settle."""
        return [slot.line(tokens, cost_nano) for slot in self.slots]


class Admitter:
    def __init__(self, store: Store, clock: Clock, alerts: AlertSink) -> None:
        self._store = store
        self._clock = clock
        self._alerts = alerts

    async def admit(
        self,
        principal: Principal,
        slots: tuple[Slot, ...],
        estimate: Estimate,
        price: Price,
        n: int,
        ttl_s: float,
    ) -> Admission:
        if not slots:
            return Admission(None, slots, estimate)
        rid = uuid.uuid4().hex
        deadline: float | None = None
        clamped: int | None = None
        attempt = 0
        while True:
            now = self._clock.now()
            cost = price.cost_nano(estimate.input_tokens, estimate.output_tokens)
            lines = [slot.line(estimate.total, cost) for slot in slots]
            result = await self._store.reserve(principal.tenant, rid, lines, now, ttl_s)
            if result.ok:
                return await self._admitted(rid, slots, lines, result, estimate, clamped, now)
            failing = [slots[i] for i in result.failed]
            fit = _clamp_fit(slots, lines, result, estimate, price, n, attempt)
            attempt += 1
            if fit is not None and all(s.budget.clamp_max_tokens for s in failing):
                clamped = fit
                estimate = estimate.with_output(fit * n)
                continue
            if deadline is None:
                deadline = now + min(s.budget.max_wait_s for s in failing)
            wait = _throttle_wait(failing, result.fits_at, now, deadline)
            if wait is None:
                raise _denied(slots, lines, result, now)
            log.info("budget hold tenant=%s budgets=%s wait_s=%.2f", principal.tenant,
                     ",".join(sorted({s.budget.name for s in failing})), wait)
            await self._clock.sleep(wait)

    async def _admitted(
        self,
        rid: str,
        slots: tuple[Slot, ...],
        lines: list[Line],
        result: ReserveResult,
        estimate: Estimate,
        clamped: int | None,
        now: float,
    ) -> Admission:
        ratios = [(u + ln.amount) / ln.limit if ln.limit else math.inf
                  for u, ln in zip(result.used, lines, strict=True)]
        alerts: list[Alert] = []
        for slot, line, used, ratio in zip(slots, lines, result.used, ratios, strict=True):
            threshold = slot.budget.alert_threshold
            levels = [t for t in (threshold, 1.0) if t is not None]
            if not any(ratio >= t for t in levels):
                continue
            alert = Alert(slot.budget.name, slot.budget.tenant, slot.limit.value,
                          slot.window.name, used + line.amount, line.limit, ratio, now)
            alerts.append(alert)
            for level in levels:
                crossed = line.limit and used / line.limit < level <= ratio
                if crossed and await self._first_crossing(line, slot.window, level, now):
                    self._alerts.emit(alert)
        finite = [r for r in ratios if r != math.inf]
        return Admission(rid, slots, estimate, max(finite, default=0.0), tuple(alerts), clamped)


    async def _first_crossing(self, line: Line, window: Window, level: float, now: float) -> bool:
        """Deduplicated across instances through the store; if the store cannot say, the
        alert is sent (a duplicate is better than a lost alert)."""
        key = f"{line.key}:alert:{level}:{window.period_id(now)}"
        try:
            return await self._store.mark_once(key, window.period_end(now), now)
        except StoreError as exc:
            log.warning("alert dedupe unavailable, sending anyway: %s", exc)
            return True


def _clamp_fit(
    slots: tuple[Slot, ...],
    lines: list[Line],
    result: ReserveResult,
    estimate: Estimate,
    price: Price,
    n: int,
    attempt: int,
) -> int | None:
    """The per-choice max tokens that would make every enforced line fit, if at least 1."""
    if attempt >= _CLAMP_TRIES or not any(slots[i].budget.clamp_max_tokens for i in result.failed):
        return None
    room = estimate.output_tokens
    for slot, line, used in zip(slots, lines, result.used, strict=True):
        if not line.enforce:
            continue
        headroom = line.limit - used
        if slot.limit.is_cost:
            room = min(room, max_output_within(price, headroom, estimate.input_tokens))
        else:
            room = min(room, headroom - estimate.input_tokens)
    per_choice = room // max(n, 1)
    return per_choice if per_choice >= 1 else None


def _throttle_wait(
    failing: list[Slot], fits_at: float | None, now: float, deadline: float
) -> float | None:
    if fits_at is None or fits_at > deadline:
        return None
    if not all(s.budget.action is BudgetAction.THROTTLE for s in failing):
        return None
    return max(min(fits_at - now, deadline - now, _POLL_S), 0.001)


def _denied(
    slots: tuple[Slot, ...], lines: list[Line], result: ReserveResult, now: float
) -> BudgetExceeded:
    i = result.failed[0]
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
        if wait > _HOUR_S:
            headers["x-should-retry"] = "false"
    else:
        message += " It can never fit this limit; lower max_tokens or raise the limit."
        headers["x-should-retry"] = "false"
    return BudgetExceeded(message, headers=headers)


def _window_text(window: Window) -> str:
    return "this calendar month, UTC" if window.width == 0 else f"rolling {window.name}"
