"""Settings compiled for the request path: built once per load, swapped whole on reload.

Reservations in flight do not depend on it: each carries its own counters' keys and amounts.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.cost.pricing import PriceTable
from gateway.proxy.auth import Keyring
from gateway.proxy.budget_index import BudgetIndex
from gateway.proxy.resolve import ModelRouter
from gateway.settings.schema import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    keyring: Keyring
    router: ModelRouter
    budgets: BudgetIndex

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        prices = PriceTable(settings.pricing)
        return cls(
            settings=settings,
            keyring=Keyring(settings.tenants),
            router=ModelRouter(settings.tenants, settings.upstreams, prices),
            budgets=BudgetIndex(settings.budgets),
        )

    def models_for(self, tenant: str) -> list[str]:
        """The priced, routable model names this tenant may use (for GET /v1/models)."""
        return [
            name
            for name in self.router.prices.names
            if self.router.allowed(tenant, name) and self.router.routable(name)
        ]
