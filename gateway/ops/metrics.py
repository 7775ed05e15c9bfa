"""Prometheus metrics, on a registry of the app's own (no process-global state).

Request-path figures are counted once per request from its record, in plain dicts that a
collector reads at scrape time (prometheus-client's own metrics take a lock per update); figures
that live in other components (the settle buffer, config reloads, alerts, reservations in
flight) are read at scrape time by another, so those components carry no metrics code.

Every label value comes from the configuration, never from what a client sends, so the size of
``/metrics`` is bounded by the configuration: the model is the price a request resolved to (a
``pricing`` key or a model id of the price data) or ``other``; the tenant is a configured one or
``-``; the route is the route's pattern; the status is the HTTP status. Budgets carry their
tenant. API budgets are named by tenants, who may create and delete them at will: a tenant keeps
the series of at most ``budget_series()`` budgets (its possible file and API budgets), the ones
seen least recently dropped first.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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


Labels = tuple[str, ...]


class _Counter:
    """A labelled counter as plain numbers: each series its value and when it began."""

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.series: dict[Labels, list[float]] = {}  # labels -> [value, created]

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0, time.time()]
        series[0] += amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, (value, created) in self.series.items():
            family.add_metric(labels, value, created=created)
        return family


class _Gauge:
    """A labelled gauge as plain numbers."""

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.series: dict[Labels, float] = {}

    def set(self, labels: Labels, value: float) -> None:
        self.series[labels] = value

    def family(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, value in self.series.items():
            family.add_metric(labels, value)
        return family


@dataclass(slots=True)
class _Buckets:
    counts: list[int]  # per bucket, not cumulated
    total: float = 0.0
    created: float = field(default_factory=time.time)


class _Histogram:
    """A labelled histogram as plain numbers, written as prometheus-client's own would be."""

    def __init__(self, name: str, doc: str, labels: Sequence[str],
                 bounds: Sequence[float]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.bounds = (*bounds, math.inf)
        self._le = [_le(b) for b in self.bounds]
        self.series: dict[Labels, _Buckets] = {}

    def observe(self, labels: Labels, amount: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = _Buckets([0] * len(self.bounds))
        series.counts[bisect.bisect_left(self.bounds, amount)] += 1  # the first bound >= it
        series.total += amount

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for labels, series in self.series.items():
            cumulated = itertools.accumulate(map(float, series.counts))
            family.add_metric(labels, list(zip(self._le, cumulated, strict=True)), series.total)
            family.add_sample(f"{self.name}_created", dict(zip(self.labels, labels, strict=True)),
                              series.created)
        return family


def _le(bound: float) -> str:
    """A bucket's ``le`` label as prometheus-client writes one below a million."""
    return "+Inf" if bound == math.inf else repr(float(bound))


_Metric = _Counter | _Gauge | _Histogram


class Metrics:
    """The request-path figures, counted in plain dicts as requests end (a prometheus-client
    child takes a lock per update) and read by the registry at scrape time."""

    def __init__(self, budget_series: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self._budget_series = budget_series  # per tenant; read from the live configuration
        # tenant -> budget -> its series (metric, labels), least recently seen first
        self._budgets: dict[str, OrderedDict[str, set[tuple[_Metric, Labels]]]] = {}
        self.requests = _Counter("gateway_requests", "Requests by tenant, model, route, status",
                                 ["tenant", "model", "route", "status"])
        self.tokens = _Counter("gateway_tokens", "Tokens charged, by tenant, model, direction",
                               ["tenant", "model", "direction"])
        self.cost = _Counter("gateway_cost_usd", "USD charged, by tenant and model",
                             ["tenant", "model"])
        self.downgrades = _Counter("gateway_downgrades",
                                   "Requests a downgrade budget sent to a fallback model, by "
                                   "tenant, model asked for and model that served them",
                                   ["tenant", "from_model", "to_model"])
        self.decisions = _Counter("gateway_budget_decisions",
                                  "Budget decisions by tenant, budget, action and outcome",
                                  ["tenant", "budget", "action", "outcome"])
        self.ratio = _Gauge("gateway_budget_usage_ratio",
                            "Used over limit per tenant, budget and limit, at the latest request",
                            ["tenant", "budget", "limit"])
        self.upstream = _Histogram("gateway_upstream_latency_seconds",
                                   "Time waiting on the upstream", ["route"], _LATENCY_BUCKETS)
        self.holds = _Histogram("gateway_hold_seconds",
                                "Time requests were held by throttled budgets, by outcome "
                                "(admitted, denied, client-gone, cancelled, error)", ["outcome"],
                                _HOLD_BUCKETS)
        self.overhead = _Histogram("gateway_overhead_seconds",
                                   "Time spent in the gateway itself, the upstream excluded",
                                   ["route"], _OVERHEAD_BUCKETS)
        self.registry.register(_RequestCollector(
            (self.requests, self.tokens, self.cost, self.downgrades, self.decisions, self.ratio,
             self.upstream, self.holds, self.overhead)))

    def watch(self, gauges: RuntimeGauges) -> None:
        self.registry.register(_RuntimeCollector(gauges))

    def observe(self, rec: RequestRecord, status: int, elapsed_s: float) -> None:
        tenant, model = rec.tenant, rec.model_label
        self.requests.inc((tenant, model, rec.route, str(status)))
        if rec.downgraded_label:
            self.downgrades.inc((tenant, rec.downgraded_label, model))
        for budget, action, outcome in rec.decisions:
            self.decisions.inc(self._budget_labels(self.decisions, tenant, budget, action,
                                                   outcome))
        for budget, limit, ratio in rec.ratios:
            self.ratio.set(self._budget_labels(self.ratio, tenant, budget, limit), ratio)
        if rec.input_tokens or rec.output_tokens:
            self.tokens.inc((tenant, model, "input"), rec.input_tokens)
            self.tokens.inc((tenant, model, "output"), rec.output_tokens)
            self.cost.inc((tenant, model), rec.cost_usd)
        if rec.upstream_s:
            self.upstream.observe((rec.route,), rec.upstream_s)
            self.overhead.observe((rec.route,), max(elapsed_s - rec.upstream_s, 0.0))

    def held(self, outcome: str, held_s: float) -> None:
        self.holds.observe((outcome,), held_s)

    def _budget_labels(self, metric: _Metric, tenant: str, budget: str, *labels: str
                       ) -> Labels:
        """A budget's series, within the tenant's bound: past it, the budget seen least
        recently (most likely one deleted through the admin API) loses its series."""
        seen = self._budgets.get(tenant)
        if seen is None:
            seen = self._budgets[tenant] = OrderedDict()
        series = seen.get(budget)
        if series is None:
            while seen and len(seen) >= self._budget_series():
                for forgotten, values in seen.popitem(last=False)[1]:
                    del forgotten.series[values]
            series = seen[budget] = set()
        else:
            seen.move_to_end(budget)
        values = (tenant, budget, *labels)
        series.add((metric, values))
        return values

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _RequestCollector(Collector):
    def __init__(self, metrics: Sequence[_Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            yield metric.family()
