"""The spend report: totals, a per-model breakdown and a timeseries, read from the hourly
rollups (only the partial hours at a range's edges read raw usage)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway.cost.model import Filter, nano_to_usd
from gateway.cost.rollup import HOUR_S, RollupRow, items
from gateway.store import spend


class GroupBy(StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


_PERIOD: dict[GroupBy, Callable[[dt.datetime], str]] = {
    GroupBy.HOUR: lambda t: t.strftime("%Y-%m-%dT%H:00:00Z"),
    GroupBy.DAY: lambda t: t.strftime("%Y-%m-%d"),
    GroupBy.MONTH: lambda t: t.strftime("%Y-%m"),
}


@dataclass(slots=True)
class Totals:
    cost_nano: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 0

    def add(self, row: RollupRow) -> None:
        self.cost_nano += row.cost_nano
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.requests += row.requests

    def json(self) -> dict[str, Any]:
        return {"cost": nano_to_usd(self.cost_nano), "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "requests": self.requests}


@dataclass(slots=True)
class SpendReport:
    group_by: GroupBy
    total: Totals = field(default_factory=Totals)
    by_model: dict[str, Totals] = field(default_factory=dict)
    timeseries: dict[str, Totals] = field(default_factory=dict)
    period_models: dict[str, dict[str, Totals]] = field(default_factory=dict)

    def add_all(self, rows: Iterable[RollupRow]) -> None:
        period = _PERIOD[self.group_by]
        for row in rows:
            self.total.add(row)
            self.by_model.setdefault(row.model, Totals()).add(row)
            stamp = dt.datetime.fromtimestamp(row.hour * HOUR_S, dt.UTC)
            self.timeseries.setdefault(period(stamp), Totals()).add(row)
            models = self.period_models.setdefault(period(stamp), {})
            models.setdefault(row.model, Totals()).add(row)

    def json(self) -> dict[str, Any]:
        """The Cognipeer console's report shape, and each period's split by model
        (``by_model`` inside a timeseries item, sorted by model; the period's figures are its
        sums)."""
        return {
            "total_cost": nano_to_usd(self.total.cost_nano),
            "currency": "USD",
            "total_input_tokens": self.total.input_tokens,
            "total_output_tokens": self.total.output_tokens,
            "requests": self.total.requests,
            "group_by": self.group_by.value,
            "by_model": _per_model(self.by_model),
            "timeseries": [{"period": period, **totals.json(),
                            "by_model": _per_model(self.period_models[period])}
                           for period, totals in sorted(self.timeseries.items())],
        }


def _per_model(totals: dict[str, Totals]) -> list[dict[str, Any]]:
    return [{"model_key": model, **t.json()} for model, t in sorted(totals.items())]


async def spend_report(
    source: spend.SpendSource,
    tenant: str | None,
    group_by: GroupBy = GroupBy.DAY,
    since: float | None = None,
    until: float | None = None,
    model: str | None = None,
) -> SpendReport:
    gathered = await spend.gather(source, Filter(tenant_id=tenant, model=model, since=since,
                                                 until=until))
    report = SpendReport(group_by)
    report.add_all(items(*gathered))
    return report
