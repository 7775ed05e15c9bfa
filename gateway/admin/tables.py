"""Spend reports and budget status as terminal tables: aligned columns, dollars, thousands
separators and percentages. The figures are the API's own (``Totals.json``, ``LimitStatus.json``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.admin.budgets import ALIASES
from gateway.admin.end_users import EndUserSpend
from gateway.admin.report import SpendReport, Totals
from gateway.admin.status import LimitStatus, PeriodSpend
from gateway.cost.model import Budget, Limit
from gateway.store.audit import AuditEntry

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


NANO_PLACES = 9  # the store keeps nano-dollars: no amount has more decimals


def usd(amount: float) -> str:
    """``$1,234.5678``: four decimals, more for a sum too small to show in four."""
    return _dollars(amount, places(amount))


def usd_column(amounts: Sequence[float]) -> list[str]:
    """Amounts that share a column, all with the decimals the one needing most needs (that
    is the smallest, unless a larger one has more digits), so their points line up."""
    shared = max((places(a) for a in amounts), default=4)
    return [_dollars(a, shared) for a in amounts]


def places(amount: float) -> int:
    """The decimals ``usd`` shows: four, or as many as a sum below half a ten-thousandth needs
    to show every digit the store has, up to nine."""
    if amount == 0 or abs(amount) >= 0.00005:
        return 4
    digits = f"{abs(amount):.{NANO_PLACES}f}".rstrip("0").partition(".")[2]
    return max(4, len(digits))


def _dollars(amount: float, decimals: int) -> str:
    return f"${amount:,.{decimals}f}".replace("$-", "-$")


def count(value: int) -> str:
    return f"{value:,}"


def percent(ratio: float) -> str:
    return f"{ratio:.1%}"


_SPEND = (Column("REQUESTS"), Column("INPUT TOKENS"), Column("OUTPUT TOKENS"), Column("COST"))


def _spend_cells(label: str, totals: Totals, cost: str) -> list[str]:
    figures = totals.json()
    return [label, count(figures["requests"]), count(figures["input_tokens"]),
            count(figures["output_tokens"]), cost]


def _spend_rows(rows: Sequence[tuple[str, Totals]]) -> list[list[str]]:
    """A row of cells per (label, totals), their costs with one shared number of decimals."""
    costs = usd_column([totals.json()["cost"] for _, totals in rows])
    return [_spend_cells(label, totals, cost)
            for (label, totals), cost in zip(rows, costs, strict=True)]


def spend_tables(report: SpendReport) -> str:
    """The timeseries, then the per-model breakdown, each with its total. Their costs share
    one number of decimals, so the total both show reads the same in each. One end user's
    report has no per-model breakdown."""
    if not report.total.requests:
        return "No spend recorded in this range."
    periods, models = sorted(report.timeseries.items()), sorted(report.by_model.items())
    cells = _spend_rows([*periods, *models, ("TOTAL", report.total)])
    total = cells.pop()
    by_period = render([Column(report.group_by.value.upper(), numeric=False), *_SPEND],
                       cells[:len(periods)], total)
    if report.end_user is not None:
        return by_period
    by_model = render([Column("MODEL", numeric=False), *_SPEND], cells[len(periods):], total)
    batch = report.batch
    if not batch.requests:
        return f"{by_period}\n\n{by_model}"
    batches = "batch" if batch.requests == 1 else "batches"
    return (f"{by_period}\n\n{by_model}\n\nOf which the Batch API: {count(batch.requests)} "
            f"{batches}, {usd(batch.json()['cost'])}")


_STATUS = (
    Column("BUDGET", numeric=False), Column("APPLIES TO", numeric=False),
    Column("ACTION", numeric=False), Column("LIMIT", numeric=False), Column("USED"),
    Column("MAX"), Column("USED %"), Column("STATE", numeric=False),
)


def end_user_table(spend: EndUserSpend) -> str:
    """The top end users, the end users past a day's cap together as (other), and the total of
    them all; then how many are not listed."""
    if not spend.total.requests:
        return "No end user's spend recorded in this range."
    top = [(end_user, totals) for (_, end_user), totals in spend.top()]
    other = [("(other)", spend.other)] if spend.other.requests else []
    cells = _spend_rows([*top, *other, ("TOTAL", spend.total)])
    total = cells.pop()
    table = render([Column("END USER", numeric=False), *_SPEND], cells, total)
    unlisted = len(spend.by_end_user) - len(top)
    if not unlisted:
        return table
    return f"{table}\n\n{count(unlisted)} more end users in the total (--limit lists more)"


def spent_line(spent: PeriodSpend) -> str:
    """What was spent, whatever the budgets (a budget's USED counts from its creation)."""
    whose = "" if spent.end_user is None else f" by end user {spent.end_user}"
    return (f"Spent{whose}: {count(spent.hour_tokens)} tokens in the last hour, "
            f"{usd(spent.day_usd)} in the last 24 hours, {usd(spent.month_usd)} this month "
            "(UTC)")


StatusRow = tuple[Budget, Mapping[str, Any]]  # a budget, one of its limits as the API answers


def limit_rows(limits: Sequence[LimitStatus]) -> list[StatusRow]:
    """Limits read from the store, as the API answers them (``LimitStatus.json``)."""
    return [(status.budget, status.json()) for status in limits]


def status_table(rows: Sequence[StatusRow]) -> str:
    """One row per limit of every budget: its use now against its maximum. Dollars share their
    column's decimals; token counts are whole."""
    if not rows:
        return "No budgets."
    used, most = (_amounts(rows, name) for name in ("used", "max"))
    return render(_STATUS, [
        [budget.name, _applies_to(budget), budget.action.value, figures["limit"], u, m,
         percent(figures["ratio"]), _state(budget, figures["ratio"])]
        for (budget, figures), u, m in zip(rows, used, most, strict=True)])


def _amounts(rows: Sequence[StatusRow], name: str) -> list[str]:
    """One column of USED or MAX: dollars for cost limits (one shared precision), else counts."""
    cost = [Limit(figures["limit"]).is_cost for _, figures in rows]
    dollars = iter(usd_column([f[name] for (_, f), c in zip(rows, cost, strict=True) if c]))
    return [next(dollars) if c else count(f[name]) for (_, f), c in zip(rows, cost, strict=True)]


def _applies_to(budget: Budget) -> str:
    parts = [f"{name}={value}" for name, value in
             (("key", budget.key), ("model", budget.model), ("domain", budget.domain),
              ("per", budget.per))
             if value is not None]
    return " ".join(parts) or "tenant"


def _state(budget: Budget, ratio: float) -> str:
    if ratio >= 1:
        return "exhausted"
    if budget.alert_threshold is not None and ratio >= budget.alert_threshold:
        return "alert"
    return "ok"


def running_batches_table(batches: Sequence[Mapping[str, Any]]) -> str:
    """``gateway batches running``: what each running batch holds, and until when."""
    if not batches:
        return "No running batches."
    columns = [Column("Tenant", False), Column("Batch", False), Column("Model", False),
               Column("Reserved"), Column("Tokens"), Column("Deadline (UTC)", False)]
    rows = [[b["tenant"], b["batch_id"] or "(being created)", b["model"], cost,
             count(b["reserved_tokens"]), b["deadline"]]
            for b, cost in zip(batches, usd_column([b["reserved_usd"] for b in batches]),
                               strict=True)]
    return render(columns, rows)


def audit_table(entries: Sequence[AuditEntry]) -> str:
    """``gateway audit``: each budget change, newest first, and what it changed."""
    if not entries:
        return "No budget changes recorded."
    columns = [Column("At (UTC)", False), Column("Tenant", False), Column("Budget", False),
               Column("Action", False), Column("Who", False), Column("Change", False)]
    return render(columns, [
        [dt.datetime.fromtimestamp(e.at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S"), e.tenant,
         e.budget_name if e.budget_name == e.budget_id else f"{e.budget_name} ({e.budget_id})",
         e.action.value, f"{e.who} (operator)" if e.operator else e.who, change(e)]
        for e in entries])


_NOT_SHOWN = {"id", "tenant", "source", *ALIASES}  # the same for every change, or said twice
_DEFAULTS = Budget().to_dict()


def change(entry: AuditEntry) -> str:
    """What changed: ``field before -> after`` for each field an update changed; the fields a
    created (or deleted) budget set apart from the defaults."""
    before, after = entry.before or {}, entry.after or {}
    if before and after:
        return ", ".join(f"{name} {_value(before.get(name))} -> {_value(value)}"
                         for name, value in after.items()
                         if name not in _NOT_SHOWN and before.get(name) != value)
    fields = after or before
    return ", ".join(f"{name} {_value(value)}" for name, value in fields.items()
                     if name not in _NOT_SHOWN and name != "name"
                     and value != _DEFAULTS.get(name))


def _value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)
