"""Which models a tenant may use: its allow-list, the upstreams' globs and the prices, compiled
once per configuration load.

The proxy routes requests by it (``gateway.proxy.resolve.ModelRouter``); the loader and the
admin API check a downgrade budget's fallback models by it, so a fallback a request could never
be sent to is refused where the budget is written, for the same reasons a request would be.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

from gateway.cost.pricing import PriceTable
from gateway.settings.schema import TenantSettings, UpstreamSettings


class ModelAccess:
    def __init__(
        self,
        tenants: Mapping[str, TenantSettings],
        upstreams: tuple[UpstreamSettings, ...],
        prices: PriceTable,
    ) -> None:
        self._tenants = tenants
        self._upstreams = upstreams
        self.prices = prices

    def allowed(self, tenant: str, model: str) -> bool:
        patterns = self._tenants[tenant].models
        return patterns is None or any(fnmatch.fnmatchcase(model, p) for p in patterns)

    def routable(self, model: str) -> bool:
        return self.upstream_for(model) is not None

    def upstream_for(self, model: str) -> UpstreamSettings | None:
        """The upstream a request for ``model`` goes to: the first whose globs match."""
        return next(
            (u for u in self._upstreams if any(fnmatch.fnmatchcase(model, p) for p in u.models)),
            None,
        )

    def unusable(self, tenant: str, model: str) -> str | None:
        """Why ``tenant`` cannot send a request for ``model`` (in the order a request is
        refused), said of the model, or None when it can. An unknown tenant is the caller's to
        report."""
        if tenant not in self._tenants:
            return None
        if not self.allowed(tenant, model):
            return f"is not on tenant {tenant!r}'s allow-list (tenants.{tenant}.models)"
        if self.prices.lookup(model) is None:
            return "has no price (add it under 'pricing:')"
        if not self.routable(model):
            return "is served by no upstream (upstreams.*.models)"
        return None
