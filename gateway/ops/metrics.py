"""Prometheus metrics, on a registry of the app's own (no process-global state).

Request-path figures are observed once per request from its record; figures that live in other
components (the settle buffer, config reloads, alerts, reservations in flight) are read at
scrape time by a collector, so those components carry no metrics code.

Every label value comes from the configuration, never from what a client sends, so the size of
``/metrics`` is bounded by the configuration: the model is the price a request resolved to (a
``pricing`` key or a model id of the price data) or ``other``; the tenant is a configured one or
``-``; the route is the route's pattern; the status is the HTTP status. Budgets carry their
tenant. API budgets are named by tenants, who may create and delete them at will: a tenant keeps
the series of at most ``budget_series()`` budgets (its possible file and API budgets), the ones
seen least recently dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.ops.access import RequestRecord
from gateway.settings.schema import Settings

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_HOLD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
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
    store_failures: Callable[[], Mapping[tuple[str, str], int]]
    over_reservation: Callable[[], int] = lambda: 0
    background: Callable[[], int] = lambda: 0
    held: Callable[[], int] = lambda: 0
    batches_running: Callable[[], int] = lambda: 0
    batches_settled: Callable[[], int] = lambda: 0


class _RuntimeCollector(Collector):
    def __init__(self, gauges: RuntimeGauges) -> None:
        self._g = gauges

    def collect(self) -> Iterator[Metric]:
        g = self._g
        yield GaugeMetricFamily("gateway_reservations_in_flight",
                                "Budget reservations held by requests in flight", g.in_flight())
        yield GaugeMetricFamily("gateway_requests_held",
                                "Requests held by throttled budgets now", g.held())
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
        yield GaugeMetricFamily("gateway_batches_running",
                                "Batches holding a reservation until they end (every instance's, "
                                "as of this instance's last poll)", g.batches_running())
        yield CounterMetricFamily("gateway_batches_settled",
                                  "Batches this instance settled from their output files (or "
                                  "charged their reservation past their deadline)",
                                  g.batches_settled())
        errors = CounterMetricFamily("gateway_store_errors",
                                     "Budget store failures by operation and kind",
                                     labels=["operation", "kind"])
        for (operation, kind), count in sorted(g.store_failures().items()):
            errors.add_metric([operation, kind], count)
        yield errors


def budget_series(settings: Settings) -> int:
    """The most budgets one tenant can have: the file's (all of them, at most) and its API ones."""
    return len(settings.budgets) + settings.limits.api_budgets_per_tenant


_Series = tuple[Any, tuple[str, ...]]  # a metric and one set of its label values


class Metrics:
    def __init__(self, budget_series: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._budget_series = budget_series  # per tenant; read from the live configuration
        self._budgets: dict[str, OrderedDict[str, list[_Series]]] = {}  # tenant -> budget -> series
        r = self.registry
        self.requests = Counter("gateway_requests", "Requests by tenant, model, route, status",
                                ["tenant", "model", "route", "status"], registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens charged, by tenant, model, direction",
                              ["tenant", "model", "direction"], registry=r)
        self.cost = Counter("gateway_cost_usd", "USD charged, by tenant and model",
                            ["tenant", "model"], registry=r)
        self.downgrades = Counter("gateway_downgrades",
                                  "Requests a downgrade budget sent to a fallback model, by "
                                  "tenant, model asked for and model that served them",
                                  ["tenant", "from_model", "to_model"], registry=r)
        self.decisions = Counter("gateway_budget_decisions",
                                 "Budget decisions by tenant, budget, action and outcome",
                                 ["tenant", "budget", "action", "outcome"], registry=r)
        self.ratio = Gauge("gateway_budget_usage_ratio",
                           "Used over limit per tenant, budget and limit, at the latest request",
                           ["tenant", "budget", "limit"], registry=r)
        self.upstream = Histogram("gateway_upstream_latency_seconds",
                                  "Time waiting on the upstream", ["route"],
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.holds = Histogram("gateway_hold_seconds",
                               "Time requests were held by throttled budgets, by outcome "
                               "(admitted, denied, client-gone, cancelled, error)", ["outcome"],
                               buckets=_HOLD_BUCKETS, registry=r)
        self.overhead = Histogram("gateway_overhead_seconds",
                                  "Time spent in the gateway itself, the upstream excluded",
                                  ["route"], buckets=_OVERHEAD_BUCKETS, registry=r)

    def watch(self, gauges: RuntimeGauges) -> None:
        self.registry.register(_RuntimeCollector(gauges))

    def observe(self, rec: RequestRecord, status: int, elapsed_s: float) -> None:
        tenant, model = rec.tenant, rec.model_label
        self._child(self.requests, tenant, model, rec.route, str(status)).inc()
        if rec.downgraded_label:
            self._child(self.downgrades, tenant, rec.downgraded_label, model).inc()
        for budget, action, outcome in rec.decisions:
            self._budget_child(self.decisions, tenant, budget, action, outcome).inc()
        for budget, limit, ratio in rec.ratios:
            self._budget_child(self.ratio, tenant, budget, limit).set(ratio)
        if rec.input_tokens or rec.output_tokens:
            self._child(self.tokens, tenant, model, "input").inc(rec.input_tokens)
            self._child(self.tokens, tenant, model, "output").inc(rec.output_tokens)
            self._child(self.cost, tenant, model).inc(rec.cost_usd)
        if rec.upstream_s:
            self._child(self.upstream, rec.route).observe(rec.upstream_s)
            self._child(self.overhead, rec.route).observe(max(elapsed_s - rec.upstream_s, 0.0))

    def held(self, outcome: str, held_s: float) -> None:
        self._child(self.holds, outcome).observe(held_s)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(...)``, remembered: prometheus-client takes a lock per lookup."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _budget_child(self, metric: Any, tenant: str, budget: str, *labels: str) -> Any:
        """A budget's series, within the tenant's bound: past it, the budget seen least
        recently (most likely one deleted through the admin API) loses its series."""
        seen = self._budgets.setdefault(tenant, OrderedDict())
        series = seen.get(budget)
        if series is None:
            while seen and len(seen) >= self._budget_series():
                self._forget(seen.popitem(last=False)[1])
            series = seen[budget] = []
        else:
            seen.move_to_end(budget)
        values = (tenant, budget, *labels)
        if (id(metric), values) not in self._children:
            series.append((metric, values))
        return self._child(metric, *values)

    def _forget(self, series: list[_Series]) -> None:
        for metric, values in series:
            metric.remove(*values)
            del self._children[(id(metric), values)]

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

