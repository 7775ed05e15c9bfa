"""Stage 7: replace the reservation by what was actually used, and record the usage.

Upstream error: the reservation is released and nothing is charged. A stream that broke off:
what the client received is charged (counted), never nothing. Settling is idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.cost.model import Usage, nano_to_usd
from gateway.cost.tokens import encoder_for
from gateway.proxy.auth import Principal
from gateway.proxy.budgets import Admission
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

    async def settle(
        self, principal: Principal, target: Target, admission: Admission, exchange: Exchange
    ) -> Settlement:
        reported = charged(target, admission, exchange)
        now = self._clock.now()
        if reported is None:
            if admission.rid is not None:
                await self._write(Deferred(principal.tenant, admission.rid,
                                           admission.lines(0, 0), None, now))
            return Settlement(None, 0, True)
        cost = target.price.cost_nano(
            reported.input_tokens, reported.output_tokens, reported.cached_tokens
        )
        tokens = reported.input_tokens + reported.output_tokens
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
        )
        lines = admission.lines(tokens, cost)
        await self._write(Deferred(principal.tenant, admission.rid, lines, usage, now))
        return Settlement(usage, cost, reported.exact)

    async def _write(self, item: Deferred) -> None:
        """One store call; when the store is down the settlement waits in the buffer."""
        try:
            await item.apply(self._store)
        except StoreError as exc:
            log.warning("settlement deferred, budget store unavailable: %s", exc)
            self._buffer.add(item)


def charged(target: Target, admission: Admission, exchange: Exchange) -> Reported | None:
    """The usage to charge: the upstream's word when it gave one, else counted."""
    if not exchange.ok:
        return None
    if exchange.reported is not None:
        return exchange.reported
    output = encoder_for(target.model).count(exchange.produced_text)
    return Reported(admission.estimate.input_tokens, output, 0, exact=False)
