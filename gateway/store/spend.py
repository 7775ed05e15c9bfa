"""One spend query over any store: whole hours from rollups, partial edge hours from entries."""

from __future__ import annotations

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
