"""Sequencing only: each stage takes the previous stage's output, one way through.

Principal -> Target -> Estimate -> Admission -> Exchange -> Settlement.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from aiohttp import web

from gateway import log as gateway_log
from gateway.errors import BudgetExceeded, PayloadTooLarge, StoreUnavailable
from gateway.proxy import estimate as estimate_stage
from gateway.proxy.budget_index import Slot
from gateway.proxy.budgets import Admission, Admitter, Ask
from gateway.proxy.endpoints import Endpoint
from gateway.proxy.estimate import Estimate
from gateway.proxy.forward import Exchange, Forwarder
from gateway.proxy.record import Recorder
from gateway.proxy.resolve import resolve
from gateway.runtime import Runtime
from gateway.settings.schema import StoreErrorPolicy
from gateway.store.base import StoreError

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 16
_EXPIRY_MARGIN_S = 60.0


class Pipeline:
    def __init__(
        self,
        config: Callable[[], Runtime],
        admitter: Admitter,
        forwarder: Forwarder,
        recorder: Recorder,
    ) -> None:
        self._config = config
        self._admitter = admitter
        self._forwarder = forwarder
        self._recorder = recorder

    async def handle(self, endpoint: Endpoint, request: web.Request) -> web.StreamResponse:
        runtime = self._config()  # one snapshot per request: a reload never splits one
        principal = runtime.keyring.authenticate(request.headers.get("Authorization"))
        raw = await read_body(request, runtime.settings.max_body_bytes)
        target = resolve(principal, endpoint, raw, runtime.router)
        estimate = await estimate_stage.estimate(
            endpoint, target.body, runtime.settings.default_max_output_tokens
        )
        ask = Ask(
            principal, target.model, endpoint.domain, estimate, target.price,
            n=estimate_stage.choices(endpoint, target.body),
            ttl_s=target.upstream.timeout_s + _EXPIRY_MARGIN_S,  # reserved after any hold
        )
        try:
            admission = await self._admitter.admit(ask, runtime.budgets)
        except BudgetExceeded as denied:
            log.info("budget decision tenant=%s key=%s model=%s decision=deny reason=%s",
                     principal.tenant, principal.key_name, target.model, denied.message)
            raise
        except StoreError as exc:
            slots = self._admitter.known_slots(ask, runtime.budgets)
            admission = unmetered(runtime.settings.on_store_error, slots, estimate, exc)
        log.info("budget decision tenant=%s key=%s model=%s decision=%s ratio=%.4f reserved=%d",
                 principal.tenant, principal.key_name, target.model, _decision(admission),
                 admission.usage_ratio, admission.estimate.total)
        exchange = Exchange()
        try:
            return await self._forwarder.forward(
                request, target, admission, budget_headers(admission), exchange
            )
        finally:
            settling = asyncio.ensure_future(
                self._recorder.settle(principal, target, admission, exchange)
            )
            await asyncio.shield(settling)  # a cancelled handler still settles


def unmetered(
    policy: StoreErrorPolicy, slots: tuple[Slot, ...], estimate: Estimate, exc: StoreError
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
    return Admission(uuid.uuid4().hex, slots, estimate)


def _decision(admission: Admission) -> str:
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
    return headers


async def read_body(request: web.Request, limit: int) -> bytes:
    """Reads at most ``limit`` bytes: a larger body is refused before it is held in memory."""
    too_large = PayloadTooLarge(
        f"The request body is larger than this gateway's limit of {limit} bytes."
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
