"""Stage 4, past a downgrade budget: the same request, for a cheaper model.

A request that a budget with ``action: downgrade`` denies is not refused yet: the first such
budget among those that denied it (in the budgets' order) names its fallback models, tried in
order. Each is the same request with its ``model`` rewritten, routed again (the tenant's
allow-list, a price, an upstream, as the configuration in force has them), estimated again for
that model (its price, its maximum output, its context window) and admitted against every budget
that matches it, all or none, as any request is. The first admitted serves the request; one the
tenant may not use, one that cannot bound the request, and one its budgets deny are passed
over; when none is admitted, the request gets its original denial.

Denied budgets of other actions do not stop a downgrade: a ``reject`` budget of the model asked
for refuses that model, not its fallback, and one the fallback matches too is checked again.
The model asked for holds no reservation meanwhile: a reservation denied reserves nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

from gateway.errors import BudgetExceeded, GatewayError
from gateway.proxy.auth import Principal
from gateway.proxy.resolve import ModelRouter, Target, body_bytes

log = logging.getLogger(__name__)

HEADER = "x-budget-downgraded-from"  # the model the client asked for, on a downgraded answer


def fallbacks(principal: Principal, target: Target, denied: BudgetExceeded,
              router: ModelRouter) -> Iterator[Target]:
    """The request retargeted at each fallback of the budget that denied it, in order; a
    fallback the tenant may not use now (an API budget written before a reload) is skipped."""
    for model in denied.fallbacks:
        if model == target.model:
            continue
        try:
            upstream, price = router.route(principal, model)
        except GatewayError as exc:
            log.warning("budget '%s' of tenant %s: fallback skipped: %s", denied.downgrade,
                        principal.tenant, exc.message)
            continue
        body = {**target.body, "model": model}
        yield dataclasses.replace(target, model=model, body=body, raw=body_bytes(body),
                                  upstream=upstream, price=price)
