"""One spend query over any store: whole hours from rollups, partial edge hours from entries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from gateway.cost.model import Filter, Summary, Usage
from gateway.cost.rollup import RollupRow, Span, combine, span


class SpendSource(Protocol):
    async def rollups(self, tenant: str | None, first_hour: int, last_hour: int
                      ) -> list[RollupRow]:
        """Hourly rows from ``first_hour`` to ``last_hour`` inclusive; all tenants if None."""
        ...

    async def entries(self, tenant: str | None) -> list[Usage]:
        """The raw usage log that is still kept (the newest ``max_entries``)."""
        ...


async def query(source: SpendSource, filter: Filter) -> Summary:
    return combine(*await gather(source, filter))


async def query_many(source: SpendSource, tenant: str | None, filters: Sequence[Filter]
                     ) -> list[Summary]:
    """Several ranges of one tenant's spend (the filters' own tenant is replaced) from one read
    of its rollups and at most one of its log: a status page's hour, day and month."""
    filters = [replace(f, tenant_id=tenant) for f in filters]
    cuts = [span(f.since, f.until) for f in filters]
    whole = [(c.first_hour, c.last_hour) for c in cuts
             if c.first_hour is not None and c.last_hour is not None]
    rows = (await source.rollups(tenant, min(f for f, _ in whole), max(last for _, last in whole))
            if whole else [])
    entries = await source.entries(tenant) if any(c.edges for c in cuts) else []
    return [combine(_within(rows, cut), entries, f, cut) for f, cut in zip(filters, cuts,
                                                                            strict=True)]


def _within(rows: Sequence[RollupRow], cut: Span) -> list[RollupRow]:
    if cut.first_hour is None or cut.last_hour is None:
        return []
    first, last = cut.first_hour, cut.last_hour
    return [row for row in rows if first <= row.hour <= last]


async def gather(
    source: SpendSource, filter: Filter
) -> tuple[list[RollupRow], list[Usage], Filter, Span]:
    """What a range needs read: the whole hours' rows, and the log only if it has edges."""
    cut = span(filter.since, filter.until)
    rows: list[RollupRow] = []
    if cut.first_hour is not None and cut.last_hour is not None:
        rows = await source.rollups(filter.tenant_id, cut.first_hour, cut.last_hour)
    entries = await source.entries(filter.tenant_id) if cut.edges else []
    return rows, entries, filter, cut
