"""Cutting a query's range into whole hours or days (rollups) and partial edges (raw entries)."""

from __future__ import annotations

import pytest

from gateway.cost.model import Filter, Usage
from gateway.cost.rollup import DAY_S, HOUR_S, EndUserRow, RollupRow, combine, items, span

H = 470_000  # an hour id
T = H * HOUR_S


def test_span_whole_hours_and_edges() -> None:
    assert span(T, T + 3 * HOUR_S) == span(T, T + 3 * HOUR_S)
    cut = span(T, T + 3 * HOUR_S)
    assert (cut.first, cut.last, cut.edges) == (H, H + 2, ())
    cut = span(T + 10, T + 3 * HOUR_S + 5)
    assert (cut.first, cut.last) == (H + 1, H + 2)
    assert cut.edges == ((T + 10, float(T + HOUR_S)), (float(T + 3 * HOUR_S), T + 3 * HOUR_S + 5))
    inside = span(T + 10, T + 20)
    assert inside.first is None and inside.edges == ((T + 10, T + 20),)
    everything = span(None, None)
    assert everything.edges == () and everything.first is not None


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


def test_span_in_days() -> None:
    day = 20_000
    start = day * DAY_S
    cut = span(start - 10, start + 2 * DAY_S + 5, DAY_S)
    assert (cut.first, cut.last) == (day, day + 1)
    end = start + 2 * DAY_S
    assert cut.edges == ((start - 10, float(start)), (float(end), end + 5))


def test_end_user_rows_and_edge_entries() -> None:
    day = T // DAY_S
    rows = [EndUserRow("t", day + 1, "alice", 10, 5, 100, 2),
            EndUserRow("t", day + 1, "bob", 1, 1, 1, 1),
            EndUserRow("t", day + 1, None, 4, 4, 4, 4)]  # the day's end users past the cap
    entries = [Usage(3, 1, 0, 4, 1e-7, "m", "p", "t", (day + 2) * DAY_S + 30, end_user="alice"),
               Usage(3, 1, 0, 4, 1e-7, "m", "p", "t", (day + 2) * DAY_S + 40),  # nobody's
               Usage(7, 7, 0, 14, 1e-7, "m", "p", "t", (day + 1) * DAY_S + 30, end_user="alice")]
    cut = span((day + 1) * DAY_S, (day + 2) * DAY_S + 60, DAY_S)
    alice = combine(rows, entries, Filter(tenant_id="t", end_user="alice"), cut, EndUserRow.of)
    assert (alice.total_input_tokens, alice.entry_count, alice.total_cost) == (13, 3, 200 / 1e9)
    every = list(items(rows, entries, Filter(tenant_id="t"), cut, EndUserRow.of))
    assert sum(r.requests for r in every) == 8, "entries naming nobody are no end user's"
    with pytest.raises(ValueError, match="not per model"):
        combine(rows, [], Filter(end_user="alice", model="m"), cut, EndUserRow.of)
