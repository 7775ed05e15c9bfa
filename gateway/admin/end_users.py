"""Spend by end user: a tenant's end users with spend in a range, the largest first.

Read from the daily rows of end users (whole days) and the usage log (the partial days at a
range's edges). The end users a day had past ``limits.end_users_reported_max`` share its
``other`` row, so ``data`` and ``other`` together add up to the totals (``data`` in full, that
is: it lists the top ``limit``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from gateway.admin.report import Totals
from gateway.cost.model import Filter, nano_to_usd
from gateway.cost.rollup import EndUserRow
from gateway.store import spend

LIMIT_DEFAULT = 10
LIMIT_MAX = 1_000  # end users in one answer


@dataclass(slots=True)
class EndUserSpend:
    limit: int
    every_tenant: bool = False  # an operator's tenant=all: each end user with its tenant
    total: Totals = field(default_factory=Totals)
    by_end_user: dict[tuple[str, str], Totals] = field(default_factory=dict)  # (tenant, id)
    other: Totals = field(default_factory=Totals)  # past the cap of their day, together

    def add(self, row: EndUserRow) -> None:
        self.total.add(row)
        if row.end_user is None:  # OTHER
            self.other.add(row)
        else:
            self.by_end_user.setdefault((row.tenant, row.end_user), Totals()).add(row)

    def top(self) -> list[tuple[tuple[str, str], Totals]]:
        """The ``limit`` end users who cost most, ties by tenant and id."""
        return heapq.nsmallest(self.limit, self.by_end_user.items(),
                               key=lambda item: (-item[1].cost_nano, item[0]))

    def json(self) -> dict[str, Any]:
        return {
            "object": "list",
            "total_cost": nano_to_usd(self.total.cost_nano),
            "currency": "USD",
            "total_input_tokens": self.total.input_tokens,
            "total_output_tokens": self.total.output_tokens,
            "requests": self.total.requests,
            "end_users": len(self.by_end_user),
            "data": [{**({"tenant": tenant} if self.every_tenant else {}), "end_user": name,
                      **totals.json()} for (tenant, name), totals in self.top()],
            "other": self.other.json(),
        }


async def end_user_spend(source: spend.SpendSource, tenant: str | None,
                         since: float | None = None, until: float | None = None,
                         limit: int = LIMIT_DEFAULT) -> EndUserSpend:
    """``tenant`` None: every tenant's end users together, each with its tenant (an end user's
    id is its tenant's own: the same id in two tenants is two end users)."""
    gathered = await spend.gather(source, Filter(tenant_id=tenant, since=since, until=until),
                                  end_users=True)
    result = EndUserSpend(limit, every_tenant=tenant is None)
    for row in gathered.items():
        if isinstance(row, EndUserRow):  # (what an end-user gathering is made of)
            result.add(row)
    return result
