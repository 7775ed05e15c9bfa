"""Hourly spend totals: what reports and long-range queries read instead of raw usage.

Every recorded usage adds to one row per (tenant, hour, model, provider). A query over whole
hours reads only these rows, so months of spend cost a few thousand rows whatever the traffic;
only the partial hours at the edges of a range look at individual entries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.cost.model import Filter, Summary, Usage, nano_to_usd, usd_to_nano

HOUR_S = 3600
_FAR_PAST, _FAR_FUTURE = -(2**40), 2**40  # hour ids beyond any real usage


@dataclass(frozen=True, slots=True)
class RollupRow:
    tenant: str
    hour: int  # hours since the epoch (UTC)
    model: str
    provider: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_nano: int = 0
    requests: int = 0

    @property
    def start(self) -> float:
        return float(self.hour * HOUR_S)


def hour_of(timestamp: float) -> int:
    return int(timestamp // HOUR_S)


@dataclass(frozen=True, slots=True)
class Span:
    """A query's range cut into whole hours (from rollups) and partial edges (from entries)."""

    first_hour: int | None  # None: no whole hour inside
    last_hour: int | None  # inclusive
    edges: tuple[tuple[float, float], ...]


def span(since: float | None, until: float | None) -> Span:
    first = _FAR_PAST if since is None else math.ceil(since / HOUR_S)
    last = _FAR_FUTURE if until is None else math.floor(until / HOUR_S) - 1
    if first > last:  # no whole hour inside: the whole range is one edge
        return Span(None, None, ((_or(since, -math.inf), _or(until, math.inf)),))
    edges = []
    if since is not None and first * HOUR_S > since:
        edges.append((since, float(first * HOUR_S)))
    if until is not None and (last + 1) * HOUR_S < until:
        edges.append((float((last + 1) * HOUR_S), until))
    return Span(first, last, tuple(edges))


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def matches(row: RollupRow, filter: Filter) -> bool:
    return (
        (filter.tenant_id is None or row.tenant == filter.tenant_id)
        and (filter.model is None or row.model == filter.model)
        and (filter.provider is None or row.provider == filter.provider)
    )


def items(rows: Iterable[RollupRow], edge_entries: Iterable[Usage], filter: Filter,
          cut: Span) -> Iterator[RollupRow]:
    """Whole-hour rows and the entries of the partial edges that match, each once, as rows
    (an entry as a one-request row stamped with its hour)."""
    for row in rows:
        if matches(row, filter):
            yield row
    for u in edge_entries:
        if filter.matches(u) and any(lo <= u.timestamp < hi for lo, hi in cut.edges):
            yield RollupRow(u.tenant_id, hour_of(u.timestamp), u.model, u.provider,
                            u.input_tokens, u.output_tokens, u.cached_tokens,
                            usd_to_nano(u.cost), 1)


def combine(rows: Iterable[RollupRow], edge_entries: Iterable[Usage], filter: Filter,
            cut: Span) -> Summary:
    """One Summary from whole-hour rows and the entries of the partial edges."""
    inp = out = cost = count = 0
    for row in items(rows, edge_entries, filter, cut):
        inp += row.input_tokens
        out += row.output_tokens
        cost += row.cost_nano
        count += row.requests
    return Summary(inp, out, nano_to_usd(cost), count)
