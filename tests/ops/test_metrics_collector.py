"""The request metrics are plain counters read at scrape time (issue 21): what /metrics says is
what prometheus-client's own metrics, updated per request, would say: the same names, types,
labels, values and series order (the ``_created`` times aside, which differ by when)."""

from __future__ import annotations

import random
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.ops import metrics as gateway_metrics
from gateway.ops.access import RequestRecord
from gateway.ops.metrics import Metrics


class _Reference:
    """prometheus-client's own metrics, as the gateway kept them before, minus the bound."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ours = Metrics(lambda: 1_000)
        self.requests = Counter("gateway_requests", ours.requests.doc,
                                ["tenant", "model", "route", "status"], registry=r)
        self.tokens = Counter("gateway_tokens", ours.tokens.doc,
                              ["tenant", "model", "direction"], registry=r)
        self.cost = Counter("gateway_cost_usd", ours.cost.doc, ["tenant", "model"], registry=r)
        self.downgrades = Counter("gateway_downgrades", ours.downgrades.doc,
                                  ["tenant", "from_model", "to_model"], registry=r)
        self.decisions = Counter("gateway_budget_decisions", ours.decisions.doc,
                                 ["tenant", "budget", "action", "outcome"], registry=r)
        self.ratio = Gauge("gateway_budget_usage_ratio", ours.ratio.doc,
                           ["tenant", "budget", "limit"], registry=r)
        self.upstream = Histogram("gateway_upstream_latency_seconds", ours.upstream.doc,
                                  ["route"], buckets=gateway_metrics._LATENCY_BUCKETS, registry=r)
        self.holds = Histogram("gateway_hold_seconds", ours.holds.doc, ["outcome"],
                               buckets=gateway_metrics._HOLD_BUCKETS, registry=r)
        self.overhead = Histogram("gateway_overhead_seconds", ours.overhead.doc, ["route"],
                                  buckets=gateway_metrics._OVERHEAD_BUCKETS, registry=r)

    def observe(self, rec: RequestRecord, status: int, elapsed_s: float) -> None:
        tenant, model = rec.tenant, rec.model_label
        self.requests.labels(tenant, model, rec.route, str(status)).inc()
        if rec.downgraded_label:
            self.downgrades.labels(tenant, rec.downgraded_label, model).inc()
        for budget, action, outcome in rec.decisions:
            self.decisions.labels(tenant, budget, action, outcome).inc()
        for budget, limit, ratio in rec.ratios:
            self.ratio.labels(tenant, budget, limit).set(ratio)
        if rec.input_tokens or rec.output_tokens:
            self.tokens.labels(tenant, model, "input").inc(rec.input_tokens)
            self.tokens.labels(tenant, model, "output").inc(rec.output_tokens)
            self.cost.labels(tenant, model).inc(rec.cost_usd)
        if rec.upstream_s:
            self.upstream.labels(rec.route).observe(rec.upstream_s)
            self.overhead.labels(rec.route).observe(max(elapsed_s - rec.upstream_s, 0.0))


def _record(rng: random.Random) -> RequestRecord:
    rec = RequestRecord(route=rng.choice(["/v1/chat/completions", "/v1/embeddings"]),
                        tenant=rng.choice(["acme", "globex", "-"]),
                        model_label=rng.choice(["gpt-4o", "other"]))
    rec.downgraded_label = rng.choice(["", "gpt-4o"])
    rec.decisions = [(f"b{rng.randrange(6)}", "reject", rng.choice(["allow", "deny"]))
                     for _ in range(rng.randrange(3))]
    rec.ratios = [(f"b{rng.randrange(6)}", "max_tokens_per_day", rng.random())
                  for _ in range(rng.randrange(3))]
    rec.input_tokens, rec.output_tokens = rng.randrange(100), rng.randrange(50)
    rec.cost_usd = rng.random() / 1000
    # bucket edges, below the first, past the last, and none at all
    rec.upstream_s = rng.choice([0.0, rng.random() / 10, 0.0005, 0.001, 1e-9, 700.0])
    return rec


def _without_created(exposition: bytes) -> str:
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", exposition.decode())


def test_the_exposition_is_prometheus_clients_own() -> None:
    rng = random.Random(21)
    ours, theirs = Metrics(lambda: 1_000), _Reference()
    assert _without_created(ours.exposition()) == _without_created(
        generate_latest(theirs.registry))  # nothing observed yet: every family, no series
    for _ in range(3_000):
        rec, status = _record(rng), rng.choice([200, 429])
        elapsed = rec.upstream_s + rng.random() / 100
        ours.observe(rec, status, elapsed)
        theirs.observe(rec, status, elapsed)
        if rng.random() < 0.1:
            held = rng.choice([0.0, 0.05, rng.random() * 700])
            ours.held("admitted", held)
            theirs.holds.labels("admitted").observe(held)
    text = _without_created(ours.exposition())
    assert text == _without_created(generate_latest(theirs.registry))
    assert text.count("_created{") > 50
