"""The budgets created through the admin API, as the request path sees them.

Each instance caches a tenant's API budgets with their version; every reservation carries that
version and the store refuses a stale one in the same atomic step, so a budget created on any
instance binds the very next request everywhere, for no extra round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.proxy.budget_index import BudgetIndex
from gateway.store.base import BudgetDefinitions


@dataclass(frozen=True, slots=True)
class ApiView:
    version: int
    index: BudgetIndex


class ApiBudgets:
    def __init__(self, definitions: BudgetDefinitions) -> None:
        self._definitions = definitions
        self._views: dict[str, ApiView] = {}

    async def view(self, tenant: str) -> ApiView:
        view = self._views.get(tenant)
        if view is None:
            version, budgets = await self._definitions.list(tenant)
            view = self._views[tenant] = ApiView(version, BudgetIndex(budgets))
        return view

    def cached(self, tenant: str) -> ApiView | None:
        return self._views.get(tenant)

    def invalidate(self, tenant: str) -> None:
        self._views.pop(tenant, None)
