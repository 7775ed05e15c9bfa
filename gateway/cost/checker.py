"""A budget check over a tracker: the library's answer for callers without the proxy.

It checks recorded usage; it does not reserve, so concurrent callers can overshoot together.
The proxy does not use it for admission: it reserves atomically in the store instead
(``gateway.proxy.budgets``). Both share ``Budget`` and the windows' lengths.
"""

from __future__ import annotations

from gateway.clock import Clock, SystemClock
from gateway.cost.model import Budget, BudgetAction, BudgetDecision, Filter, Limit, Usage
from gateway.cost.tracker import Tracker
from gateway.cost.windows import window_of


class BudgetChecker:
    def __init__(self, tracker: Tracker, clock: Clock | None = None) -> None:
        self._tracker = tracker
        self._clock = clock or SystemClock()

    async def check(self, budget: Budget, estimated: Usage) -> BudgetDecision:
        """Every limit the budget sets (0: no limit, as the seed has it), in ``Limit``'s order;
        the first one the estimate would pass decides."""
        now = self._clock.now()
        tenant = budget.tenant or estimated.tenant_id or None
        ratios: list[float] = []
        for limit in Limit:
            maximum = getattr(budget, limit.value)
            if not maximum:
                continue
            since = window_of(limit).since(now)
            spent = await self._tracker.query(Filter(tenant_id=tenant, since=since))
            if limit.is_cost:
                used, wanted = spent.total_cost, estimated.cost
            else:
                used = spent.total_input_tokens + spent.total_output_tokens
                wanted = (estimated.total_tokens
                          or estimated.input_tokens + estimated.output_tokens)
            ratio = (used + wanted) / maximum
            if ratio > 1:
                return _over(budget, limit, used, maximum, ratio)
            ratios.append(ratio)
        top = max(ratios, default=0.0)
        threshold = budget.alert_threshold
        if threshold is not None and top >= threshold:
            return BudgetDecision(True, f"usage at {top:.0%} of budget {budget.name!r}", top)
        return BudgetDecision(True, "", top)


_ADVERB = {"hour": "hourly", "day": "daily", "month": "monthly"}


def _over(budget: Budget, limit: Limit, used: float, maximum: float, ratio: float
          ) -> BudgetDecision:
    """Over a limit: reject denies; throttle allows and says to slow down; alert allows and
    says why (the seed's three actions; the proxy holds a throttled request instead);
    downgrade denies the model asked for and names the cheaper ones to ask for instead."""
    what = f"{_ADVERB[limit.window]} {'cost' if limit.is_cost else 'token'} limit"
    reason = (f"{what} ({limit.value}) of budget {budget.name!r} exceeded: {used:g} of "
              f"{maximum:g}")
    if budget.action is BudgetAction.THROTTLE:
        reason += "; slow down"
    if budget.action is BudgetAction.DOWNGRADE:
        reason += f"; downgrade to {' or '.join(budget.fallback_model or ())}"
    denied = budget.action in (BudgetAction.REJECT, BudgetAction.DOWNGRADE)
    return BudgetDecision(not denied, reason, ratio)
