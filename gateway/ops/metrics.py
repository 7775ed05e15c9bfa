"""Prometheus metrics, on a registry of the app's own (no process-global state).

Request-path figures are observed once per request from its record; figures that live in other
components (the settle buffer, config reloads, alerts, reservations in flight) are read at
scrape time by a collector, so those components carry no metrics code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.ops.access import RequestRecord

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                     1.0)


@dataclass(frozen=True, slots=True)
class RuntimeGauges:
    """Where the scrape-time figures come from."""

    in_flight: Callable[[], int]
    buffered: Callable[[], int]
    buffer_overflowed: Callable[[], int]
    buffer_written_back: Callable[[], int]
    reloads: Callable[[], int]
    reload_failures: Callable[[], int]
    alerts_sent: Callable[[], int]
    alerts_failed: Callable[[], int]
    store_failures: Callable[[], Mapping[str, int]]
    over_reservation: Callable[[], int] = lambda: 0
    background: Callable[[], int] = lambda: 0


class _RuntimeCollector(Collector):
    def __init__(self, gauges: RuntimeGauges) -> None:
        self._g = gauges

    def collect(self) -> Iterator[Metric]:
        g = self._g
        yield GaugeMetricFamily("gateway_reservations_in_flight",
                                "Budget reservations held by requests in flight", g.in_flight())
        yield GaugeMetricFamily("gateway_buffered_settlements",
                                "Settlements waiting for the budget store to return", g.buffered())
        yield CounterMetricFamily("gateway_buffer_overflow",
                                  "Buffered settlements dropped because the buffer was full",
                                  g.buffer_overflowed())
        yield CounterMetricFamily("gateway_buffer_written_back",
                                  "Buffered settlements written back to the store",
                                  g.buffer_written_back())
        yield CounterMetricFamily("gateway_config_reloads", "Configuration reloads applied",
                                  g.reloads())
        yield CounterMetricFamily("gateway_config_reload_failures",
                                  "Configuration reloads refused (the last good one stayed)",
                                  g.reload_failures())
        yield CounterMetricFamily("gateway_alerts_sent", "Alert webhooks delivered",
                                  g.alerts_sent())
        yield CounterMetricFamily("gateway_alerts_failed", "Alert webhooks given up on",
                                  g.alerts_failed())
        yield CounterMetricFamily(
            "gateway_settlements_over_reservation",
            "Settlements the upstream billed above their reservation (charged at the bound; "
            "any is a bound that did not hold)", g.over_reservation())
        yield GaugeMetricFamily("gateway_background_responses",
                                "Background responses followed until they end", g.background())
        errors = CounterMetricFamily("gateway_store_errors", "Budget store failures by operation",
                                     labels=["operation"])
        for operation, count in sorted(g.store_failures().items()):
            errors.add_metric([operation], count)
        yield errors


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter("gateway_requests", "Requests by tenant, model, route, status",
                                ["tenant", "model", "route", "status"], registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens charged, by tenant, model, direction",
                              ["tenant", "model", "direction"], registry=r)
        self.cost = Counter("gateway_cost_usd", "USD charged, by tenant and model",
                            ["tenant", "model"], registry=r)
        self.decisions = Counter("gateway_budget_decisions",
                                 "Budget decisions by budget, action and outcome",
                                 ["budget", "action", "outcome"], registry=r)
        self.ratio = Gauge("gateway_budget_usage_ratio",
                           "Used over limit per budget and limit, at the latest request",
                           ["budget", "limit"], registry=r)
        self.upstream = Histogram("gateway_upstream_latency_seconds",
                                  "Time waiting on the upstream", ["route"],
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("gateway_overhead_seconds",
                                  "Time spent in the gateway itself, the upstream excluded",
                                  ["route"], buckets=_OVERHEAD_BUCKETS, registry=r)

    def watch(self, gauges: RuntimeGauges) -> None:
        self.registry.register(_RuntimeCollector(gauges))

    def observe(self, rec: RequestRecord, status: int, elapsed_s: float) -> None:
        self._child(self.requests, rec.tenant, rec.model, rec.route, str(status)).inc()
        for labels in rec.decisions:
            self._child(self.decisions, *labels).inc()
        for budget, limit, ratio in rec.ratios:
            self._child(self.ratio, budget, limit).set(ratio)
        if rec.input_tokens or rec.output_tokens:
            self._child(self.tokens, rec.tenant, rec.model, "input").inc(rec.input_tokens)
            self._child(self.tokens, rec.tenant, rec.model, "output").inc(rec.output_tokens)
            self._child(self.cost, rec.tenant, rec.model).inc(rec.cost_usd)
        if rec.upstream_s:
            self._child(self.upstream, rec.route).observe(rec.upstream_s)
            self._child(self.overhead, rec.route).observe(max(elapsed_s - rec.upstream_s, 0.0))

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(...)``, remembered: prometheus-client takes a lock per lookup."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

