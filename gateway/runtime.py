"""Settings compiled for the request path: built once per load, swapped whole on reload.

Reservations in flight do not depend on it: each carries its own counters' keys and amounts.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.cost.price_data import shipped_table
from gateway.cost.pricing import is_glob
from gateway.proxy.auth import Keyring
from gateway.proxy.bounds import Defaults
from gateway.proxy.budget_index import BudgetIndex
from gateway.proxy.resolve import ModelRouter
from gateway.settings.schema import Settings


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    keyring: Keyring
    router: ModelRouter
    budgets: BudgetIndex
    defaults: Defaults  # the bounds set for requests that leave them out

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        prices = shipped_table(settings.pricing)
        return cls(
            settings=settings,
            keyring=Keyring(settings.tenants, settings.operators),
            router=ModelRouter(settings.tenants, settings.upstreams, prices),
            budgets=BudgetIndex(settings.budgets),
            defaults=Defaults(settings.default_max_output_tokens,
                              settings.default_max_tool_calls, settings.service_tier),
        )

    def may_use(self, tenant: str, model: str) -> bool:
        """Allowed for the tenant, priced and routed to an upstream: what GET /v1/models shows."""
        return self.router.unusable(tenant, model) is None

    def models_for(self, tenant: str) -> list[str]:
        """The model names the configuration spells out (exact prices, exact allow-list entries,
        exact upstream models) that this tenant may use. Where globs leave the set open, the
        upstreams' own lists add more (``gateway.proxy.models``)."""
        allow = self.settings.tenants[tenant].models or ()
        spelled = [*self.router.prices.names, *allow,
                   *(name for upstream in self.settings.upstreams for name in upstream.models)]
        return [name for name in dict.fromkeys(spelled)
                if not is_glob(name) and self.may_use(tenant, name)]
