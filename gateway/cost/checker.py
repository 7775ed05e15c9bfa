"""A budget check over a tracker: the library's answer for callers without the proxy.

It checks recorded usage; it does not reserve, so concurrent callers can overshoot together.
The proxy does not use it for admission: it reserves atomically in the store instead
(``gateway.proxy.budgets``). Both share ``Budget`` and the windows' lengths.
"""

from __future__ import annotations

from gateway.clock import Clock, SystemClock
from gateway.cost.model import Budget, BudgetAction, BudgetDecision, Filter, Usage
from gateway.cost.tracker import Tracker
from gateway.cost.windows import DAY, HOUR


class BudgetChecker:
    def __init__(self, tracker: Tracker, clock: Clock | None = None) -> None:
        self._tracker = tracker
        self._clock = clock or SystemClock()

    async def check(self, budget: Budget, estimated: Usage) -> BudgetDecision:
        """The hourly token window first, then the daily cost window; the first one past its
        limit decides."""
        now = self._clock.now()
        tenant = budget.tenant or estimated.tenant_id or None
        ratios: list[float] = []
        if budget.max_tokens_per_hour:
            hour = await self._tracker.query(Filter(tenant_id=tenant, since=now - HOUR.length_s))
            used = hour.total_input_tokens + hour.total_output_tokens
            wanted = estimated.total_tokens or estimated.input_tokens + estimated.output_tokens
            ratio = (used + wanted) / budget.max_tokens_per_hour
            if ratio > 1:
                return _over(budget, "hourly token", used, budget.max_tokens_per_hour, ratio)
            ratios.append(ratio)
        if budget.max_cost_per_day:
            day = await self._tracker.query(Filter(tenant_id=tenant, since=now - DAY.length_s))
            ratio = (day.total_cost + estimated.cost) / budget.max_cost_per_day
            if ratio > 1:
                return _over(budget, "daily cost", day.total_cost, budget.max_cost_per_day, ratio)
            ratios.append(ratio)
        top = max(ratios, default=0.0)
        threshold = budget.alert_threshold
        if threshold is not None and top >= threshold:
            return BudgetDecision(True, f"usage at {top:.0%} of budget {budget.name!r}", top)
        return BudgetDecision(True, "", top)


def _over(budget: Budget, what: str, used: float, limit: float, ratio: float) -> BudgetDecision:
    """Over a limit: reject denies; throttle allows and says to slow down; alert allows and
    says why (the seed's three actions; the proxy holds a throttled request instead)."""
    reason = f"{what} limit of budget {budget.name!r} exceeded: {used:g} of {limit:g}"
    if budget.action is BudgetAction.THROTTLE:
        reason += "; slow down"
    return BudgetDecision(budget.action is not BudgetAction.REJECT, reason, ratio)
