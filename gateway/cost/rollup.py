"""Spend totals: what reports and long-range queries read instead of raw usage.

Every recorded usage adds to one row per (tenant, hour, model, provider), and, when it names an
end user, to one row per (tenant, day, end user). A query over whole hours (whole days, for end
users) reads only these rows, so months of spend cost a few thousand rows whatever the traffic;
only the partial hours (days) at the edges of a range look at individual entries.

End users are as many as clients name, so their rows are capped per tenant and day by the
configuration (``limits.end_users_reported_max``): the end users past the cap share one row,
``OTHER``, and the day's rows still add up to its spend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.cost.model import Filter, Summary, Usage, nano_to_usd, usd_to_nano

HOUR_S = 3600
DAY_S = 86_400
KEPT_DAYS = 400  # how long rollups are kept (the Redis keys' expiry; the embedded store prunes)
OTHER = None  # the end user of the row that sums a day's end users past the cap
_FAR_PAST, _FAR_FUTURE = -(2**40), 2**40  # unit ids beyond any real usage


class Row(Protocol):
    """What every rollup row adds up."""

    @property
    def tenant(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cost_nano(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def start(self) -> float: ...

    def matches(self, filter: Filter) -> bool: ...


R = TypeVar("R", bound=Row)


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

    def matches(self, filter: Filter) -> bool:
        return (
            (filter.tenant_id is None or self.tenant == filter.tenant_id)
            and (filter.model is None or self.model == filter.model)
            and (filter.provider is None or self.provider == filter.provider)
        )

    @classmethod
    def of(cls, u: Usage) -> RollupRow:
        """One entry as a one-request row stamped with its hour."""
        return cls(u.tenant_id, hour_of(u.timestamp), u.model, u.provider, u.input_tokens,
                   u.output_tokens, u.cached_tokens, usd_to_nano(u.cost), 1)


@dataclass(frozen=True, slots=True)
class EndUserRow:
    """One end user's spend in one day, of every model (``end_user`` OTHER: the day's end
    users past the cap, together)."""

    tenant: str
    day: int  # days since the epoch (UTC)
    end_user: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0
    requests: int = 0

    @property
    def start(self) -> float:
        return float(self.day * DAY_S)

    def matches(self, filter: Filter) -> bool:
        if filter.model is not None or filter.provider is not None:
            raise ValueError("end users' spend is kept per day, not per model or provider")
        return ((filter.tenant_id is None or self.tenant == filter.tenant_id)
                and (filter.end_user is None or self.end_user == filter.end_user))

    @classmethod
    def of(cls, u: Usage) -> EndUserRow | None:
        """One entry as a one-request row stamped with its day; None: it names no end user."""
        if u.end_user is None:
            return None
        return cls(u.tenant_id, day_of(u.timestamp), u.end_user, u.input_tokens,
                   u.output_tokens, usd_to_nano(u.cost), 1)


def hour_of(timestamp: float) -> int:
    return int(timestamp // HOUR_S)


def day_of(timestamp: float) -> int:
    return int(timestamp // DAY_S)


@dataclass(frozen=True, slots=True)
class Span:
    """A query's range cut into whole units, hours or days (from rollups), and partial edges
    (from entries)."""

    first: int | None  # None: no whole unit inside
    last: int | None  # inclusive
    edges: tuple[tuple[float, float], ...]


def span(since: float | None, until: float | None, unit_s: int = HOUR_S) -> Span:
    first = _FAR_PAST if since is None else math.ceil(since / unit_s)
    last = _FAR_FUTURE if until is None else math.floor(until / unit_s) - 1
    if first > last:  # no whole unit inside: the whole range is one edge
        return Span(None, None, ((_or(since, -math.inf), _or(until, math.inf)),))
    edges = []
    if since is not None and first * unit_s > since:
        edges.append((since, float(first * unit_s)))
    if until is not None and (last + 1) * unit_s < until:
        edges.append((float((last + 1) * unit_s), until))
    return Span(first, last, tuple(edges))


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def items(rows: Iterable[R], edge_entries: Iterable[Usage], filter: Filter, cut: Span,
          of: Callable[[Usage], R | None]) -> Iterator[R]:
    """Whole-unit rows and the entries of the partial edges that match, each once, as rows
    (an entry made a row by ``of``, which may pass it over)."""
    for row in rows:
        if row.matches(filter):
            yield row
    for u in edge_entries:
        if filter.matches(u) and any(lo <= u.timestamp < hi for lo, hi in cut.edges):
            made = of(u)
            if made is not None:
                yield made


def combine(rows: Iterable[Row], edge_entries: Iterable[Usage], filter: Filter, cut: Span,
            of: Callable[[Usage], Row | None] = RollupRow.of) -> Summary:
    """One Summary from whole-unit rows and the entries of the partial edges."""
    inp = out = cost = count = 0
    for row in items(rows, edge_entries, filter, cut, of):
        inp += row.input_tokens
        out += row.output_tokens
        cost += row.cost_nano
        count += row.requests
    return Summary(inp, out, nano_to_usd(cost), count)
