"""Budget status: usage against every limit of every budget, and the binding hour, day and
month figures (Cognipeer's per_hour / per_day / per_month)."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.admin.params import choice
from gateway.cost.model import Budget, Domain, Filter, Limit, Per, nano_to_usd
from gateway.cost.windows import DAY, HOUR, MONTH
from gateway.proxy.budget_index import Slot, slots_of
from gateway.proxy.end_user import EndUser
from gateway.settings.schema import ALL_TENANTS
from gateway.store.base import Store
from gateway.store.spend import SpendSource, query_many


class Scope(StrEnum):
    TENANT = "tenant"  # budgets of the whole tenant (no key scope)
    TOKEN = "token"  # budgets scoped to the caller's key


@dataclass(frozen=True, slots=True)
class StatusFilter:
    domain: Domain | None = None
    model: str | None = None
    scope: Scope | None = None
    key_name: str | None = None  # scope=token: the caller's key (None: any key, the CLI's)
    end_user: EndUser | None = None  # per: end_user budgets as they stand for this end user

    def admits(self, budget: Budget) -> bool:
        return (
            (self.domain is None or budget.domain in (None, self.domain))
            and (self.model is None or budget.model is None
                 or fnmatch.fnmatchcase(self.model, budget.model))
            and (self.scope is None
                 or (self.scope is Scope.TENANT and budget.key is None)
                 or (self.scope is Scope.TOKEN and budget.key is not None
                     and self.key_name in (None, budget.key)))
        )

    def slots(self, budget: Budget) -> tuple[Slot, ...]:
        """The budget's limits, a ``per: end_user`` budget's as they stand for the end user."""
        slots = slots_of(budget)
        if self.end_user is None or budget.per is not Per.END_USER:
            return slots
        return tuple(slot.of_end_user(self.end_user) for slot in slots)

    @classmethod
    def parse(cls, domain: str | None, model: str | None, scope: str | None,
              key_name: str | None, end_user: EndUser | None = None) -> StatusFilter:
        return cls(choice(Domain, domain, "domain"), model or None,
                   choice(Scope, scope, "scope"), key_name, end_user)


@dataclass(frozen=True, slots=True)
class LimitStatus:
    budget: Budget
    slot: Slot
    used: int  # tokens or nano-dollars
    resets_in_s: int | None = None  # until the oldest use still counted leaves; None: no use

    @property
    def ratio(self) -> float:
        return self.used / self.slot.max if self.slot.max else (1.0 if self.used else 0.0)

    @property
    def available(self) -> int:
        """What one more request may reserve against this limit now: a request whose
        reservation (its input and output caps, or their cost at worst) is larger is refused."""
        return max(self.slot.max - self.used, 0)

    def json(self) -> dict[str, Any]:
        cost = self.slot.limit.is_cost
        return {
            "limit": self.slot.limit.value,
            "window": self.slot.window.name,
            "used": nano_to_usd(self.used) if cost else self.used,
            "max": nano_to_usd(self.slot.max) if cost else self.slot.max,
            "available": nano_to_usd(self.available) if cost else self.available,
            "ratio": round(self.ratio, 6),
            "resets_in_s": self.resets_in_s,
        }


async def budget_status(
    store: Store, budgets: Sequence[Budget], status_filter: StatusFilter, now: float
) -> list[LimitStatus]:
    """Every limit of every budget the filter admits, with its use now (one store read) and
    the whole seconds, rounded up, until that use starts to leave the window: when its oldest
    bucket does, by the window's own rule (``Window.leaves_at``; the calendar month: at its
    end). A ``per: end_user`` budget's are the filter's end user's (without one: its template's,
    which nothing uses)."""
    pairs = [(b, slot) for b in budgets if status_filter.admits(b)
             for slot in status_filter.slots(b)]
    uses = await store.peek_use([slot.line(0, 0) for _, slot in pairs], now)
    return [LimitStatus(b, slot, use.used, _seconds_until(slot, use.oldest, now))
            for (b, slot), use in zip(pairs, uses, strict=True)]


def _seconds_until(slot: Slot, oldest: int | None, now: float) -> int | None:
    if oldest is None:
        return None
    return max(math.ceil(slot.window.leaves_at(oldest) - now), 0)


@dataclass(frozen=True, slots=True)
class PeriodSpend:
    """What a tenant (or one of its end users) spent in each window, whatever its budgets (the
    console shows spend without limits too): the rolling hour's tokens, the rolling day's and
    the calendar month's USD."""

    hour_tokens: int
    day_usd: float
    month_usd: float
    end_user: str | None = None  # whose spend it is, when it is one end user's


async def period_spend(source: SpendSource, tenant: str | None, model: str | None, now: float,
                       end_user: str | None = None) -> PeriodSpend:
    """From the spend records (one read; ``tenant`` None: every tenant's), so it matches the
    spend report's figures. They
    carry tenant and model, not key or domain: ``scope`` and ``domain`` choose budgets only.
    An end user's are of every model (their figures are kept per day, not per model)."""
    windows = (HOUR, DAY, MONTH)
    filters = ([Filter(end_user=end_user, since=w.since(now)) for w in windows]
               if end_user is not None else
               [Filter(model=model, since=w.since(now)) for w in windows])
    hour, day, month = await query_many(source, tenant, filters)
    return PeriodSpend(hour.total_input_tokens + hour.total_output_tokens, day.total_cost,
                       month.total_cost, end_user)


def status_json(limits: Sequence[LimitStatus], spent: PeriodSpend) -> dict[str, Any]:
    """Each window's spend beside the binding (highest-ratio) limit, null where no budget sets
    that limit, with what counts against it (``counted``: a budget counts from its creation)."""
    body: dict[str, Any] = {
        "per_hour": _binding(limits, Limit.TOKENS_PER_HOUR, "tokens", spent.hour_tokens),
        "per_day": _binding(limits, Limit.COST_PER_DAY, "usd", spent.day_usd),
        "per_month": _binding(limits, Limit.COST_PER_MONTH, "usd", spent.month_usd),
        "budgets": _by_budget(limits, every_tenant=False),
    }
    if spent.end_user is not None:
        body["end_user"] = spent.end_user
    return body


def every_tenant_json(limits: Sequence[LimitStatus], spent: PeriodSpend) -> dict[str, Any]:
    """Every tenant's (an operator's ``tenant=all``): ``limits``, each limit of every budget
    with its tenant and budget, the highest ratio first (the budgets closest to their limits);
    ``budgets`` as for one tenant, each with its tenant; each window's spend, of the whole
    gateway (no limit binds every tenant, so none is beside it)."""
    ranked = sorted(limits, key=lambda s: (-s.ratio, s.budget.tenant, s.budget.name,
                                           s.slot.limit.value))
    return {
        "tenant": ALL_TENANTS,
        "per_hour": {"used_tokens": spent.hour_tokens},
        "per_day": {"used_usd": spent.day_usd},
        "per_month": {"used_usd": spent.month_usd},
        "limits": [{"tenant": s.budget.tenant, "budget_id": s.budget.ident,
                    "budget": s.budget.name, "action": s.budget.action.value, **s.json()}
                   for s in ranked],
        "budgets": _by_budget(limits, every_tenant=True),
    }


def _by_budget(limits: Sequence[LimitStatus], *, every_tenant: bool) -> list[dict[str, Any]]:
    by_budget: dict[tuple[str, str], dict[str, Any]] = {}
    for status in limits:
        budget = status.budget
        entry = by_budget.get((budget.tenant, budget.ident))
        if entry is None:
            entry = by_budget[budget.tenant, budget.ident] = {
                **({"tenant": budget.tenant} if every_tenant else {}),
                "id": budget.ident, "name": budget.name,
                "source": budget.source, "action": budget.action.value,
                "per": None if budget.per is None else budget.per.value, "limits": [],
            }
        entry["limits"].append(status.json())
    return list(by_budget.values())


def _binding(limits: Sequence[LimitStatus], limit: Limit, unit: str, spent: float
             ) -> dict[str, Any]:
    candidates = [s for s in limits if s.slot.limit is limit]
    figures = max(candidates, key=lambda s: s.ratio).json() if candidates else None
    return {f"used_{unit}": spent,
            f"limit_{unit}": figures["max"] if figures else None,
            f"counted_{unit}": figures["used"] if figures else None}
