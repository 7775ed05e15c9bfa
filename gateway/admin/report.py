"""The spend report: totals, a per-model breakdown and a timeseries, read from the hourly
rollups (only the partial hours at a range's edges read raw usage). One end user's report is
read from the daily rows of end users instead: by day or month, without the split by model."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gateway.cost.model import Filter, is_batch, nano_to_usd, usd_to_nano
from gateway.cost.rollup import RollupRow, Row
from gateway.errors import InvalidRequest
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

    def add(self, row: Row) -> None:
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
    end_user: str | None = None  # one end user's report: no split by model
    batch: Totals = field(default_factory=Totals)  # batch work's share of the totals
    period_batch: dict[str, Totals] = field(default_factory=dict)
    by_tenant: dict[str, Totals] | None = None  # every tenant's report: the split by tenant

    def add_all(self, rows: Iterable[Row]) -> None:
        period = _PERIOD[self.group_by]
        for row in rows:
            self.total.add(row)
            if self.by_tenant is not None:
                self.by_tenant.setdefault(row.tenant, Totals()).add(row)
            stamp = period(dt.datetime.fromtimestamp(row.start, dt.UTC))
            self.timeseries.setdefault(stamp, Totals()).add(row)
            if isinstance(row, RollupRow):
                self.by_model.setdefault(row.model, Totals()).add(row)
                models = self.period_models.setdefault(stamp, {})
                models.setdefault(row.model, Totals()).add(row)
                if is_batch(row.provider):
                    self.batch.add(row)
                    self.period_batch.setdefault(stamp, Totals()).add(row)

    def json(self) -> dict[str, Any]:
        """The Cognipeer console's report shape, and each period's split by model
        (``by_model`` inside a timeseries item, sorted by model; the period's figures are its
        sums); ``batch``, the batch work inside the totals (``batch_cost`` per period). One end
        user's report says whose it is, and has no ``by_model`` nor ``batch``. Every tenant's
        has ``by_tenant``, the tenant that spent most first, whose sums are its totals."""
        split = self.end_user is None
        body: dict[str, Any] = {
            "total_cost": nano_to_usd(self.total.cost_nano),
            "currency": "USD",
            "total_input_tokens": self.total.input_tokens,
            "total_output_tokens": self.total.output_tokens,
            "requests": self.total.requests,
            "group_by": self.group_by.value,
            **({"by_model": _per_model(self.by_model), "batch": self.batch.json()} if split
               else {"end_user": self.end_user}),
        }
        if self.by_tenant is not None:
            body["by_tenant"] = [
                {"tenant": tenant, **totals.json()} for tenant, totals in
                sorted(self.by_tenant.items(), key=lambda item: (-item[1].cost_nano, item[0]))]
        body["timeseries"] = [
            {"period": period, **totals.json(),
             **({"by_model": _per_model(self.period_models[period]),
                 "batch_cost": nano_to_usd(self._batch_of(period).cost_nano)} if split else {})}
            for period, totals in sorted(self.timeseries.items())]
        return body

    def _batch_of(self, period: str) -> Totals:
        return self.period_batch.get(period) or Totals()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> SpendReport:
        """The API's answer (``json()``) read back: a report read over HTTP, for the same
        tables as one read from the store."""
        report = cls(GroupBy(body["group_by"]), end_user=body.get("end_user"))
        report.total = Totals(usd_to_nano(body["total_cost"]), body["total_input_tokens"],
                              body["total_output_tokens"], body["requests"])
        report.by_model = _by(body.get("by_model", []), "model_key")
        if "batch" in body:
            report.batch = _totals(body["batch"])
        if "by_tenant" in body:
            report.by_tenant = _by(body["by_tenant"], "tenant")
        for item in body["timeseries"]:
            period = item["period"]
            report.timeseries[period] = _totals(item)
            report.period_models[period] = _by(item.get("by_model", []), "model_key")
            if item.get("batch_cost"):
                report.period_batch[period] = Totals(usd_to_nano(item["batch_cost"]))
        return report


def _totals(figures: Mapping[str, Any]) -> Totals:
    return Totals(usd_to_nano(figures["cost"]), figures["input_tokens"],
                  figures["output_tokens"], figures["requests"])


def _by(items: Iterable[Mapping[str, Any]], label: str) -> dict[str, Totals]:
    return {item[label]: _totals(item) for item in items}


def _per_model(totals: dict[str, Totals]) -> list[dict[str, Any]]:
    return [{"model_key": model, **t.json()} for model, t in sorted(totals.items())]


async def spend_report(
    source: spend.SpendSource,
    tenant: str | None,
    group_by: GroupBy = GroupBy.DAY,
    since: float | None = None,
    until: float | None = None,
    model: str | None = None,
    end_user: str | None = None,
) -> SpendReport:
    """``tenant`` None: every tenant's, split by tenant too. ``end_user``: that end user's
    spend, by day or month (an hourly one is a 400 naming ``group_by``, one of a model a 400
    naming ``model``: their figures are kept per day)."""
    if end_user is not None:
        daily_only(group_by, model)
    gathered = await spend.gather(source, Filter(tenant_id=tenant, model=model, since=since,
                                                 until=until, end_user=end_user))
    report = SpendReport(group_by, end_user=end_user, by_tenant={} if tenant is None else None)
    report.add_all(gathered.items())
    return report


def daily_only(group_by: GroupBy, model: str | None, params: tuple[str, str, str] = (
        "group_by", "model", "end_user")) -> None:
    """What an end user's report cannot be asked for: ``params`` name the grouping, the model
    and the end user as the caller spells them."""
    if group_by is GroupBy.HOUR:
        raise InvalidRequest(f"Invalid '{params[0]}': an end user's spend is kept per day; "
                             "group by day or month.", param=params[0])
    if model is not None:
        raise InvalidRequest(f"Invalid '{params[1]}' with '{params[2]}': an end user's spend "
                             "is kept per day, not per model.", param=params[1])
