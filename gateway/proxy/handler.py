"""Sequencing only: each stage takes the previous stage's output, one way through.

Principal -> Target -> Estimate -> Admission -> Exchange -> Settlement.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway import log as gateway_log
from gateway.cost.model import BudgetAction
from gateway.errors import BudgetExceeded, InvalidRequest, StoreUnavailable, TooManyHeld
from gateway.http_server import read_body
from gateway.ops import access
from gateway.proxy import downgrade
from gateway.proxy import estimate as estimate_stage
from gateway.proxy.auth import Principal
from gateway.proxy.budget_index import Slot
from gateway.proxy.budgets import Admission, Admitter, Ask, Hold
from gateway.proxy.denials import Denials
from gateway.proxy.durations import Durations
from gateway.proxy.end_user import EndUser, end_user_of
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import Estimate
from gateway.proxy.forward import Exchange, Forwarder
from gateway.proxy.gate import Gate, client_gone
from gateway.proxy.record import Recorder, Settlement
from gateway.proxy.resolve import Target, resolve
from gateway.proxy.responses import (
    FOLLOW_MARGIN_S,
    BackgroundResponses,
    ResponseOwners,
    context_tokens,
)
from gateway.runtime import Runtime
from gateway.settings.schema import StoreErrorPolicy
from gateway.store.base import StoreError

log = logging.getLogger(__name__)

_EXPIRY_MARGIN_S = 60.0


class Pipeline:
    def __init__(
        self,
        config: Callable[[], Runtime],
        admitter: Admitter,
        forwarder: Forwarder,
        recorder: Recorder,
        owners: ResponseOwners,
        background: BackgroundResponses,
        gate: Gate,
        denials: Denials,
    ) -> None:
        self._config = config
        self._admitter = admitter
        self.admitter = admitter  # batches reserve through it too
        self._forwarder = forwarder
        self._recorder = recorder
        self._owners = owners
        self._background = background
        self.gate = gate  # requests in flight and held, per tenant and in all
        self.denials = denials  # the requests budgets refused lately, per tenant
        self.in_flight = 0  # requests holding a reservation, for /metrics
        self._durations = Durations()  # when a reservation in flight is expected back

    async def handle(self, endpoint: Endpoint, request: web.Request) -> web.StreamResponse:
        rec = access.record() or access.RequestRecord(route=endpoint.value)
        runtime = self._config()  # one snapshot per request: a reload never splits one
        principal = runtime.keyring.authenticate(request.headers.get("Authorization"))
        rec.tenant, rec.key_name = principal.tenant, principal.key_name
        with self.gate.enter(principal.tenant, runtime.settings.limits):
            return await self._serve(endpoint, request, runtime, principal, rec)

    async def _serve(self, endpoint: Endpoint, request: web.Request, runtime: Runtime,
                     principal: Principal, rec: access.RequestRecord) -> web.StreamResponse:
        """The stages of a request counted in flight (its body is read only once it is
        counted, so no tenant can pile up bodies past its bound), to the end of its response."""
        raw = await read_body(request, runtime.settings.max_body_bytes)
        target = resolve(principal, endpoint, raw, runtime.router)
        rec.model, rec.stream, rec.model_label = target.model, target.stream, _label(target)
        end_user = end_user_of(target.body, request.headers, runtime.settings)
        background = endpoint is Endpoint.RESPONSES and target.body.get("background") is True
        if background:
            self._background.check_room()
        prior = await self._owners.prior_context(principal, target.body,
                                                 runtime.settings.on_store_error)
        asking = _Asking(principal, runtime, rec, prior, background, end_user)
        gone = functools.partial(client_gone, request)
        with self.gate.hold(principal.tenant, runtime.settings.limits, gone) as hold:
            target, admission = await self._reserve(asking, target, hold)
        upstream = target.upstream.name
        exchange = Exchange()
        settle = functools.partial(self._settle, principal, target, admission, exchange, rec)
        if not background:  # (a background response is followed, and settled, at its end)
            exchange.finish = _once(settle)
        held = admission.rid is not None
        self.in_flight += held
        started = time.monotonic()
        try:
            response = await self._forwarder.forward(
                request, target, admission, budget_headers(admission), exchange
            )
            if _stored(target, exchange):  # the tenant's before the client can name it
                await self._owners.remember(principal, target, exchange.response_id or "", None)
            return response
        finally:
            self.in_flight -= held
            self._durations.observe(upstream, rec.model_label, time.monotonic() - started)
            if background and _still_running(exchange):
                self._background.adopt(principal, target, admission, exchange.response_id or "")
            else:
                try:
                    await (exchange.finish or settle)()
                finally:  # exchange -> finish -> settle -> exchange: a cycle only the garbage
                    exchange.finish = None  # collector would free, the whole request with it

    async def _settle(self, principal: Principal, target: Target, admission: Admission,
                      exchange: Exchange, rec: access.RequestRecord) -> None:
        settle = functools.partial(self._recorder.settle, principal, target, admission,
                                   exchange)
        try:
            settlement = await settle()  # in the handler's task: no task of its own
        except asyncio.CancelledError:  # a shutdown cut it off mid-write: settled again in a
            # task the cancellation cannot reach (settling is idempotent), then it goes on
            await asyncio.shield(asyncio.ensure_future(settle()))
            raise
        _note_settlement(rec, exchange, settlement)
        if _stored(target, exchange) and settlement.usage is not None:
            await asyncio.shield(self._owners.remember(
                principal, target, exchange.response_id or "", context_tokens(settlement)))

    async def _ask(self, asking: _Asking, target: Target) -> Ask:
        """What ``target`` asks of its budgets: its estimate, reserved after any hold (a
        background response's also while it is followed)."""
        estimate = await estimate_stage.estimate(
            target.endpoint, target.body, target.price, asking.runtime.defaults,
            prior=asking.prior, offload=functools.partial(self.gate.offload, asking.tenant),
            cheap_first=True,
        )
        timeout_s, background = target.upstream.timeout_s, asking.background
        return Ask(
            asking.principal, target.model, target.endpoint.domain, estimate, target.price,
            ttl_s=timeout_s + _EXPIRY_MARGIN_S + background * (timeout_s + FOLLOW_MARGIN_S),
            expected_s=None if background else self._durations.expected_s(
                target.upstream.name, _label(target), timeout_s),
            end_user=asking.end_user,
        )

    async def _reserve(self, asking: _Asking, target: Target, hold: Hold
                       ) -> tuple[Target, Admission]:
        """The request's reservation; past a downgrade budget, a fallback's instead."""
        rec = asking.rec
        try:
            return target, await self._admit(await self._ask(asking, target), asking, hold)
        except BudgetExceeded as denied:
            served = await self._downgrade(asking, target, denied, hold)
            if served is not None:
                return served
            rec.decision, rec.reason = "deny", denied.message
            rec.decisions.append((denied.budget, denied.action, "deny"))
            self.denials.note(asking.tenant, denied, target.model, gateway_log.request_id.get())
            raise

    async def _downgrade(self, asking: _Asking, target: Target, denied: BudgetExceeded,
                         hold: Hold) -> tuple[Target, Admission] | None:
        """The first fallback of the denying downgrade budget that is admitted, if any."""
        rec = asking.rec
        for fallback in downgrade.fallbacks(asking.principal, target, denied,
                                            asking.runtime.router):
            try:
                admission = await self._admit(await self._ask(asking, fallback), asking, hold)
            except InvalidRequest as exc:  # the fallback cannot bound this request
                log.info("fallback %s passed over: %s", fallback.model, exc.message)
                continue
            except BudgetExceeded as also:
                rec.decisions.append((also.budget, also.action, "deny"))
                continue
            rec.decision, rec.reason = "downgrade", denied.message
            rec.decisions.append((denied.downgrade, BudgetAction.DOWNGRADE.value, "downgrade"))
            rec.model, rec.model_label = fallback.model, _label(fallback)
            rec.downgraded_from, rec.downgraded_label = target.model, _label(target)
            return fallback, dataclasses.replace(admission, downgraded_from=target.model)
        return None

    async def _admit(self, ask: Ask, asking: _Asking, hold: Hold) -> Admission:
        """The decision goes into the request's record: its access-log line is the one line
        per budget decision (a denial is noted by the caller: a downgrade may follow)."""
        rec, runtime = asking.rec, asking.runtime
        try:
            admission = await self._admitter.admit(ask, self._config, hold)
        except TooManyHeld as refused:  # a hold past limits.held_per_tenant or held_total
            rec.decision, rec.reason = "deny", refused.message
            raise
        except StoreError as exc:
            slots = self._admitter.known_slots(ask, runtime.budgets)
            admission = unmetered(runtime.settings.on_store_error, slots, ask.estimate, exc,
                                  ask.end_user.id)
            rec.decision = "unmetered"
            return admission
        rec.decision, rec.usage_ratio = _decision(admission), admission.usage_ratio
        rec.reserved_tokens = admission.estimate.total
        rec.decisions.extend(_outcomes(admission))
        rec.ratios.extend((s.budget.name, s.limit.value, r)
                          for s, r in zip(admission.slots, admission.ratios, strict=True))
        return admission


@dataclass(frozen=True, slots=True)
class _Asking:
    """What every reservation a request asks for shares, its fallbacks' included."""

    principal: Principal
    runtime: Runtime
    rec: access.RequestRecord
    prior: int | None  # the context an earlier response carries in
    background: bool
    end_user: EndUser

    @property
    def tenant(self) -> str:
        return self.principal.tenant


def _label(target: Target) -> str:
    """The model's metrics label: the price it resolved to, bounded by the configuration."""
    return target.price.name or "other"


def _once(settle: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """``settle`` run at most once: before a stream's last event, or when the handler ends."""
    done = False

    async def run() -> None:
        nonlocal done
        if not done:
            done = True
            await settle()

    return run


def _stored(target: Target, exchange: Exchange) -> bool:
    """A Responses answer the upstream keeps (``store`` defaults to true)."""
    stored = target.body.get("store") is not False
    return exchange.ok and exchange.response_id is not None and stored


def _still_running(exchange: Exchange) -> bool:
    """A background response that answered without its final usage: settled when it ends."""
    return exchange.ok and exchange.response_id is not None and exchange.reported is None


def _note_settlement(rec: access.RequestRecord, exchange: Exchange, settlement: Settlement
                     ) -> None:
    rec.upstream_s = exchange.upstream_s
    if settlement.usage is not None:
        rec.input_tokens = settlement.usage.input_tokens
        rec.output_tokens = settlement.usage.output_tokens
        rec.cost_usd = settlement.usage.cost
        rec.usage_exact = settlement.exact


def _outcomes(admission: Admission) -> list[tuple[str, str, str]]:
    """One (budget, action, outcome) per budget that took part in an admitted request."""
    alerted = {a.budget for a in admission.alerts}
    seen: dict[str, tuple[str, str, str]] = {}
    for slot in admission.slots:
        budget = slot.budget
        if budget.name in seen:  # its other limits
            continue
        outcome = "alert" if budget.name in alerted else "allow"
        if admission.clamped_output is not None and budget.clamp_max_tokens:
            outcome = "clamp"
        seen[budget.name] = (budget.name, budget.action.value, outcome)
    return list(seen.values())


def unmetered(
    policy: StoreErrorPolicy, slots: tuple[Slot, ...], estimate: Estimate, exc: StoreError,
    end_user: str | None = None,
) -> Admission:
    """``on_store_error``: reject fails closed; allow lets the request through unreserved,
    still charged to its budgets once the store is back (the settlement waits in the buffer)."""
    if policy is StoreErrorPolicy.REJECT:
        log.error("budget store unavailable, request refused (on_store_error: reject): %s", exc)
        raise StoreUnavailable(
            "The gateway cannot check budgets right now (its budget store is unreachable); "
            "retry shortly."
        ) from None
    log.warning("budget store unavailable, request allowed unreserved "
                "(on_store_error: allow): %s", exc)
    return Admission(uuid.uuid4().hex, slots, estimate, end_user=end_user)


def _decision(admission: Admission) -> str:
    if admission.downgraded_from is not None:
        return "downgrade"
    if admission.rid is None:
        return "no-budget"
    if admission.clamped_output is not None:
        return "clamp"
    return "alert" if admission.alerts else "allow"


def budget_headers(admission: Admission) -> dict[str, str]:
    headers = {
        "x-request-id": gateway_log.request_id.get(),
        "x-budget-usage-ratio": f"{admission.usage_ratio:.4f}",
    }
    if admission.alerts:
        headers["x-budget-alert"] = ", ".join(a.header() for a in admission.alerts)
    if admission.clamped_output is not None:
        headers["x-budget-clamped-max-tokens"] = str(admission.clamped_output)
    if admission.downgraded_from is not None:
        headers[downgrade.HEADER] = admission.downgraded_from
    return headers
