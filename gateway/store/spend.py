"""One spend query over any store: whole hours from rollups, partial edge hours from entries;
an end user's, or every end user's, from their daily rows the same way."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gateway.cost import rollup
from gateway.cost.model import Filter, Summary, Usage
from gateway.cost.rollup import DAY_S, HOUR_S, EndUserRow, RollupRow, Row, Span, span


class SpendSource(Protocol):
    async def rollups(self, tenant: str | None, first_hour: int, last_hour: int
                      ) -> list[RollupRow]:
        """Hourly rows from ``first_hour`` to ``last_hour`` inclusive; all tenants if None."""
        ...

    async def end_user_days(self, tenant: str | None, first_day: int, last_day: int
                            ) -> list[EndUserRow]:
        """Daily rows per end user from ``first_day`` to ``last_day`` inclusive; all tenants
        if None."""
        ...

    async def entries(self, tenant: str | None) -> list[Usage]:
        """The raw usage log that is still kept (the newest ``max_entries``)."""
        ...


@dataclass(frozen=True, slots=True)
class Gathered:
    """What a range's figures are made of: whole units' rows, and the log for its edges."""

    rows: Sequence[Row]
    entries: Sequence[Usage]
    filter: Filter
    cut: Span
    of: Callable[[Usage], Row | None]  # an edge entry as a row

    def items(self) -> Iterator[Row]:
        return rollup.items(self.rows, self.entries, self.filter, self.cut, self.of)

    def summary(self) -> Summary:
        return rollup.combine(self.rows, self.entries, self.filter, self.cut, self.of)


async def query(source: SpendSource, filter: Filter) -> Summary:
    return (await gather(source, filter)).summary()


async def query_many(source: SpendSource, tenant: str | None, filters: Sequence[Filter]
                     ) -> list[Summary]:
    """Several ranges of one tenant's spend (the filters' own tenant is replaced) from one read
    of its rollups and at most one of its log: a status page's hour, day and month. Filters
    naming an end user read the daily rows of end users (all of them or none do)."""
    filters = [replace(f, tenant_id=tenant) for f in filters]
    daily = any(f.end_user is not None for f in filters)
    unit_s = DAY_S if daily else HOUR_S
    cuts = [span(f.since, f.until, unit_s) for f in filters]
    whole = [(c.first, c.last) for c in cuts if c.first is not None and c.last is not None]
    rows = (await _read(source, tenant, min(f for f, _ in whole), max(last for _, last in whole),
                        daily) if whole else [])
    entries = await source.entries(tenant) if any(c.edges for c in cuts) else []
    of = EndUserRow.of if daily else RollupRow.of
    return [Gathered(_within(rows, cut, unit_s), entries, f, cut, of).summary()
            for f, cut in zip(filters, cuts, strict=True)]


def _within(rows: Sequence[Row], cut: Span, unit_s: int) -> list[Row]:
    if cut.first is None or cut.last is None:
        return []
    first, last = cut.first * unit_s, cut.last * unit_s
    return [row for row in rows if first <= row.start <= last]


async def gather(source: SpendSource, filter: Filter, *, end_users: bool = False) -> Gathered:
    """What a range needs read: the whole units' rows, and the log only if it has edges. By
    end user (``end_users``, or a filter naming one): days of the end users' rows."""
    daily = end_users or filter.end_user is not None
    cut = span(filter.since, filter.until, DAY_S if daily else HOUR_S)
    rows: Sequence[Row] = []
    if cut.first is not None and cut.last is not None:
        rows = await _read(source, filter.tenant_id, cut.first, cut.last, daily)
    entries = await source.entries(filter.tenant_id) if cut.edges else []
    return Gathered(rows, entries, filter, cut, EndUserRow.of if daily else RollupRow.of)


async def _read(source: SpendSource, tenant: str | None, first: int, last: int, daily: bool
                ) -> Sequence[Row]:
    if daily:
        return await source.end_user_days(tenant, first, last)
    return await source.rollups(tenant, first, last)
