"""Worst mode around each request: its ledger entry, its worst-case plan, and its bill.

A request is billed when the mock accepts it (no injected error status), before any delay:
the real API bills what it generated whether or not the client is still there to read it. A
background response is billed when it ends (or is cancelled), by ``gateway.mock.stored``.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from gateway.mock import fields, stored
from gateway.mock.faults import Fault
from gateway.mock.shapes import JSON, Plan, Usage, completion_usage, responses_usage
from gateway.mock.stats import BATCH_TIER, Ledger, LedgerEntry
from gateway.mock.stored import ResponseStore, Stored
from gateway.mock.worst import WorstPlanner
from gateway.proxy.endpoints import Endpoint


class Billing:
    """The worst-mode collaborators of the request path: planner, kept responses, ledger."""

    def __init__(self, planner: WorstPlanner, store: ResponseStore, ledger: Ledger) -> None:
        self._planner = planner
        self._store = store
        self._ledger = ledger

    def open(self, endpoint: Endpoint, body: JSON, batch_id: str | None = None) -> LedgerEntry:
        """A ledger entry for what the request carried, before anything can refuse it;
        ``batch_id``: it is a line of that batch, billed at the batch tier."""
        return self._ledger.open(
            LedgerEntry(
                id=None,
                path=endpoint.value,
                model=body.get("model"),
                caps={name: body[name] for name in endpoint.output_fields if name in body},
                n=body.get("n"),
                best_of=body.get("best_of"),
                max_tool_calls=body.get("max_tool_calls"),
                service_tier=body.get("service_tier"),
                background=body.get("background"),
                stream=body.get("stream") is True,
                tier=None if batch_id is None else BATCH_TIER,
                batch_id=batch_id,
            )
        )

    def plan(self, endpoint: Endpoint, body: JSON, polite: Plan) -> Plan:
        """The worst-case plan; refuses what worst mode cannot answer before anything bills."""
        if endpoint is Endpoint.RESPONSES and stored.background_wanted(body):
            stored.background_seconds(body)
        return self._planner.plan(endpoint, body, polite)

    def admit(
        self, endpoint: Endpoint, body: JSON, plan: Plan, fault: Fault | None, entry: LedgerEntry
    ) -> Stored | None:
        """Bill the request (a background one: start it), keep a Responses answer; return
        what was kept. An injected error status bills nothing."""
        entry.id = plan.id
        if fault is not None and fault.status is not None:
            entry.state = "failed"
            return None
        entry.delivered = False  # until the whole answer is out (the client may leave first)
        kept = self._keep(endpoint, body, plan, entry)
        if kept is not None and kept.background:
            entry.state = "running"
        else:
            self._ledger.bill(entry, _wire_usage(endpoint, plan.billed), asdict(plan.billed))
        return kept

    def bill_embeddings(self, entry: LedgerEntry, fault: Fault | None, input_tokens: int) -> None:
        if fault is not None and fault.status is not None:
            entry.state = "failed"
            return
        entry.delivered = False
        wire = {"prompt_tokens": input_tokens, "total_tokens": input_tokens}
        self._ledger.bill(entry, wire, asdict(Usage(input_tokens=input_tokens, output_tokens=0)))

    def _keep(
        self, endpoint: Endpoint, body: JSON, plan: Plan, entry: LedgerEntry
    ) -> Stored | None:
        if endpoint is not Endpoint.RESPONSES or body.get("store") is False:
            return None
        kept = Stored(plan, stored.input_items(body, plan.id), entry)
        if body.get("background") is True:
            kept.background = True
            kept.duration = stored.background_seconds(body)
            self._store.start(kept)
        self._store.keep(kept)
        return kept


def late(body: JSON, fault: Fault | None) -> Fault | None:
    """``metadata.mock_delay_s``: the ``timeout`` fault, by another name (both modes)."""
    delay = fields.metadata_seconds(body, "mock_delay_s", 0.0)
    if not delay:
        return fault
    fault = fault or Fault()
    return replace(fault, delay_s=max(fault.delay_s, delay))


def delivered(entry: LedgerEntry | None, whole: bool) -> None:
    if entry is not None:
        entry.delivered = whole


def _wire_usage(endpoint: Endpoint, usage: Usage) -> JSON:
    return responses_usage(usage) if endpoint is Endpoint.RESPONSES else completion_usage(usage)
