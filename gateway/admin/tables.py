"""Spend reports and budget status as terminal tables: aligned columns, dollars, thousands
separators and percentages. The figures are the API's own (``Totals.json``, ``LimitStatus.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.admin.report import SpendReport, Totals
from gateway.admin.status import LimitStatus, PeriodSpend
from gateway.cost.model import Budget

GAP = "  "


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    numeric: bool = True  # right-aligned

    def cell(self, text: str, width: int) -> str:
        return text.rjust(width) if self.numeric else text.ljust(width)


def render(columns: Sequence[Column], rows: Sequence[Sequence[str]],
           total: Sequence[str] | None = None) -> str:
    """A header, the rows, and a rule then ``total`` if given; every column as wide as its
    widest cell."""
    body = [*rows, *([total] if total is not None else [])]
    widths = [max(len(c.title), *(len(row[i]) for row in body)) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return GAP.join(c.cell(text, w) for c, text, w in zip(columns, cells, widths, strict=True)
                        ).rstrip()

    lines = [line([c.title for c in columns]), *(line(row) for row in rows)]
    if total is not None:
        lines += [GAP.join("-" * w for w in widths), line(total)]
    return "\n".join(lines)


def usd(amount: float) -> str:
    """``$1,234.5678``: four decimals, more for a sum too small to show in four."""
    if amount == 0 or abs(amount) >= 0.00005:
        return f"${amount:,.4f}".replace("$-", "-$")
    return f"${amount:.9f}".rstrip("0").replace("$-", "-$")  # the store keeps nano-dollars


def count(value: int) -> str:
    return f"{value:,}"


def percent(ratio: float) -> str:
    return f"{ratio:.1%}"


_SPEND = (Column("REQUESTS"), Column("INPUT TOKENS"), Column("OUTPUT TOKENS"), Column("COST"))


def _spend_cells(label: str, totals: Totals) -> list[str]:
    figures = totals.json()
    return [label, count(figures["requests"]), count(figures["input_tokens"]),
            count(figures["output_tokens"]), usd(figures["cost"])]


def spend_tables(report: SpendReport) -> str:
    """The timeseries, then the per-model breakdown, each with its total."""
    if not report.total.requests:
        return "No spend recorded in this range."
    total = _spend_cells("TOTAL", report.total)
    periods = render([Column(report.group_by.value.upper(), numeric=False), *_SPEND],
                     [_spend_cells(p, t) for p, t in sorted(report.timeseries.items())], total)
    models = render([Column("MODEL", numeric=False), *_SPEND],
                    [_spend_cells(m, t) for m, t in sorted(report.by_model.items())], total)
    return f"{periods}\n\n{models}"


_STATUS = (
    Column("BUDGET", numeric=False), Column("APPLIES TO", numeric=False),
    Column("ACTION", numeric=False), Column("LIMIT", numeric=False), Column("USED"),
    Column("MAX"), Column("USED %"), Column("STATE", numeric=False),
)


def spent_line(spent: PeriodSpend) -> str:
    """What was spent, whatever the budgets (a budget's USED counts from its creation)."""
    return (f"Spent: {count(spent.hour_tokens)} tokens in the last hour, {usd(spent.day_usd)} in "
            f"the last 24 hours, {usd(spent.month_usd)} this month (UTC)")


def status_table(limits: Sequence[LimitStatus]) -> str:
    """One row per limit of every budget: its use now against its maximum."""
    if not limits:
        return "No budgets."
    return render(_STATUS, [_status_cells(s) for s in limits])


def _status_cells(status: LimitStatus) -> list[str]:
    budget, figures = status.budget, status.json()
    return [budget.name, _applies_to(budget), budget.action.value, status.slot.limit.value,
            _amount(status, figures["used"]), _amount(status, figures["max"]),
            percent(status.ratio), _state(budget, status.ratio)]


def _amount(status: LimitStatus, value: Any) -> str:
    return usd(value) if status.slot.limit.is_cost else count(value)


def _applies_to(budget: Budget) -> str:
    parts = [f"{name}={value}" for name, value in
             (("key", budget.key), ("model", budget.model), ("domain", budget.domain))
             if value is not None]
    return " ".join(parts) or "tenant"


def _state(budget: Budget, ratio: float) -> str:
    if ratio >= 1:
        return "exhausted"
    if budget.alert_threshold is not None and ratio >= budget.alert_threshold:
        return "alert"
    return "ok"
