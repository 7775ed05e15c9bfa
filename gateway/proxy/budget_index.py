"""Budgets compiled for matching: each limit of each budget as a Slot with its counter's key.

Compiled once per configuration load (file budgets) or per version (API budgets), so a request
only filters precomputed slots.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.cost.model import Budget, BudgetAction, Domain, Limit, nano_to_usd
from gateway.cost.windows import Window, window_of
from gateway.proxy.auth import Principal
from gateway.store.base import Line


@dataclass(frozen=True, slots=True)
class Slot:
    """One limit of one budget: where its counter lives and how big it is."""

    budget: Budget
    limit: Limit
    window: Window
    max: int  # tokens or nano-dollars
    key: str
    enforce: bool  # False for alert-only budgets
    is_cost: bool  # the limit's, kept here: read for every line of every request

    def amount(self, tokens: int, cost_nano: int) -> int:
        return cost_nano if self.is_cost else tokens

    def line(self, tokens: int, cost_nano: int) -> Line:
        return Line(self.key, self.window, self.max, self.amount(tokens, cost_nano), self.enforce)

    def describe(self, value: int) -> str:
        if self.is_cost:
            return f"${nano_to_usd(value):.6f}".rstrip("0").rstrip(".")
        return f"{value} tokens"


class BudgetIndex:
    """Budgets by tenant with their counters' keys, compiled once per configuration load."""

    def __init__(self, budgets: Sequence[Budget]) -> None:
        self._by_tenant: dict[str, list[Budget]] = defaultdict(list)
        self._slots: dict[str, tuple[Slot, ...]] = {}
        for budget in budgets:
            self._by_tenant[budget.tenant].append(budget)
            self._slots[_ident(budget)] = slots_of(budget)
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


def slots_of(budget: Budget) -> tuple[Slot, ...]:
    enforce = budget.action is not BudgetAction.ALERT
    return tuple(
        Slot(budget, limit, window_of(limit), value, _key(budget, limit), enforce, limit.is_cost)
        for limit, value in budget.limits()
    )


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
