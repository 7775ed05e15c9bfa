"""Cutting a query's range into whole hours (rollups) and partial edges (raw entries)."""

from __future__ import annotations

from gateway.cost.model import Filter, Usage
from gateway.cost.rollup import HOUR_S, RollupRow, combine, span

H = 470_000  # an hour id
T = H * HOUR_S


def test_span_whole_hours_and_edges() -> None:
    assert span(T, T + 3 * HOUR_S) == span(T, T + 3 * HOUR_S)
    cut = span(T, T + 3 * HOUR_S)
    assert (cut.first_hour, cut.last_hour, cut.edges) == (H, H + 2, ())
    cut = span(T + 10, T + 3 * HOUR_S + 5)
    assert (cut.first_hour, cut.last_hour) == (H + 1, H + 2)
    assert cut.edges == ((T + 10, float(T + HOUR_S)), (float(T + 3 * HOUR_S), T + 3 * HOUR_S + 5))
    inside = span(T + 10, T + 20)
    assert inside.first_hour is None and inside.edges == ((T + 10, T + 20),)
    everything = span(None, None)
    assert everything.edges == () and everything.first_hour is not None


def test_combine_counts_rows_and_edge_entries_once() -> None:
    rows = [RollupRow("t", H + 1, "m", "p", 10, 5, 0, 100, 2),
            RollupRow("t", H + 1, "other", "p", 1, 1, 0, 1, 1)]
    entries = [Usage(3, 1, 0, 4, 1e-7, "m", "p", "t", T + 30),  # in the first edge
               Usage(7, 7, 0, 14, 1e-7, "m", "p", "t", T + HOUR_S + 30)]  # a whole hour: skip
    cut = span(T + 10, T + 2 * HOUR_S)
    summary = combine(rows, entries, Filter(tenant_id="t", model="m"), cut)
    assert (summary.total_input_tokens, summary.total_output_tokens) == (13, 6)
    assert summary.entry_count == 3
    assert summary.total_cost == (100 + 100) / 1e9
