"""Stage 7: replace the reservation by what was actually used, and record the usage.

Upstream error: the reservation is released and nothing is charged. An answer lost (a timeout, a
connection cut after the request was sent, an upstream stream that broke off): the upstream
bills the work, so the reservation is charged, as an estimate. A client that left mid-stream:
what it received is charged (counted), never nothing. Settling is idempotent.

Nothing is ever charged to a budget above what was reserved for it: an upstream that bills more
than the bound is charged at the bound, logged as an error and counted, so a test or an alert
can tell a bound that did not hold. (A request far from its limits reserves its input's cheap
bound, its bytes: there the bound checked is that one, and the estimate charged, when the
upstream gives no usage, is its exact count.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.cost.model import Usage, nano_to_usd
from gateway.cost.tokens import encoder_for
from gateway.proxy.auth import Principal
from gateway.proxy.budgets import Admission, reserved_cost
from gateway.proxy.estimate import Estimate
from gateway.proxy.forward import Exchange
from gateway.proxy.resolve import Target
from gateway.proxy.usage import Reported
from gateway.store.base import Store, StoreError
from gateway.store.buffer import Deferred, SettleBuffer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settlement:
    usage: Usage | None  # None: nothing charged
    cost_nano: int
    exact: bool


class Recorder:
    def __init__(self, store: Store, clock: Clock, buffer: SettleBuffer) -> None:
        self._store = store
        self._clock = clock
        self._buffer = buffer
        self.over_reservation = 0  # settlements the upstream billed above their bound

    async def settle(
        self, principal: Principal, target: Target, admission: Admission, exchange: Exchange
    ) -> Settlement:
        estimate = admission.estimate
        if _from_estimate(exchange) and estimate.counted is not None:
            estimate = await estimate.counted()  # reserved at its cheap bound: the count
        reported = charged(target, estimate, exchange)
        now = self._clock.now()
        if reported is None:
            if admission.rid is not None:
                await self._write(Deferred(principal.tenant, admission.rid,
                                           admission.lines(0, 0), None, now))
            return Settlement(None, 0, True)
        reserved = admission.estimate
        bound_tokens, bound_cost = reserved.total, reserved_cost(target.price, reserved)
        if reported is RESERVATION:
            tokens, cost = estimate.total, reserved_cost(target.price, estimate)
            reported = Reported(estimate.input_tokens, estimate.output_tokens, exact=False,
                                web_searches=estimate.calls)
        else:
            tier = reported.tier or estimate.bounds.tiers[0]
            cost = target.price.charge_nano(reported, tier)
            tokens = reported.input_tokens + reported.output_tokens
        if tokens > bound_tokens or cost > bound_cost:
            self.over_reservation += 1
            log.error("upstream billed above the reservation, charged at its bound: model=%s "
                      "tokens=%d/%d cost_nano=%d/%d", target.model, tokens, bound_tokens,
                      cost, bound_cost)
        usage = Usage(
            input_tokens=reported.input_tokens,
            output_tokens=reported.output_tokens,
            cached_tokens=reported.cached_tokens,
            total_tokens=tokens,
            cost=nano_to_usd(cost),
            model=target.model,
            provider=target.upstream.name,
            tenant_id=principal.tenant,
            timestamp=now,
            estimated=not reported.exact,
            end_user=admission.end_user,
        )
        lines = admission.lines(min(tokens, bound_tokens), min(cost, bound_cost))
        await self._write(Deferred(principal.tenant, admission.rid, lines, usage, now))
        return Settlement(usage, cost, reported.exact)

    async def _write(self, item: Deferred) -> None:
        """One store call; when the store is down the settlement waits in the buffer."""
        try:
            await item.apply(self._store)
        except StoreError as exc:
            log.warning("settlement deferred, budget store unavailable: %s", exc)
            self._buffer.add(item)


RESERVATION = Reported(0, 0, exact=False)
"""Charge the request's bound: the upstream did the work but its answer was lost. That is the
whole reservation, or less where the request reserved its input's cheap bound: its count then."""


def _from_estimate(exchange: Exchange) -> bool:
    """``charged`` takes the estimate's figures: the answer was lost, or came without usage."""
    return exchange.reported is None and (exchange.lost or exchange.ok)


def charged(target: Target, estimate: Estimate, exchange: Exchange) -> Reported | None:
    """The usage to charge: the upstream's word when it gave one; the reservation when the
    answer was lost (a timeout: the upstream bills it); else counted from what was sent."""
    if exchange.reported is not None and (exchange.ok or exchange.lost):
        return exchange.reported
    if exchange.lost:
        return RESERVATION
    if not exchange.ok:
        return None
    output = encoder_for(target.model).count(exchange.produced_text)
    return Reported(estimate.input_tokens, output, 0, exact=False)
