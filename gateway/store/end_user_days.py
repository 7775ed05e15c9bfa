"""The embedded store's spend per end user and day: what end-user reports read.

Bounded by the configuration, never by what clients send: at most ``max_per_day`` end users per
tenant and day keep a row of their own (``limits.end_users_reported_max``); the day's later ones
add to its ``OTHER`` row, so the rows still add up to the day's spend. A tenant's days older than
``KEPT_DAYS`` are dropped as its newer days begin, as the Redis store's keys expire.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.cost.model import Usage, usd_to_nano
from gateway.cost.rollup import KEPT_DAYS, OTHER, EndUserRow, day_of
from gateway.store.snapshot import end_user_from_row, typed

END_USERS_REPORTED_MAX = 1_000  # LimitSettings.end_users_reported_max's default

Day = tuple[str, int]  # (tenant, day)


class EndUserDays:
    def __init__(self, max_per_day: int = END_USERS_REPORTED_MAX) -> None:
        self._max = max_per_day
        # (tenant, day) -> end user (OTHER: past the cap) -> [input, output, cost_nano, requests]
        self._days: dict[Day, dict[str | None, list[int]]] = {}

    def add(self, usage: Usage) -> None:
        if usage.end_user is None:
            return
        key = (usage.tenant_id, day_of(usage.timestamp))
        table = self._days.get(key)
        if table is None:
            table = self._days[key] = {}
            self._drop_before(usage.tenant_id, key[1] - KEPT_DAYS + 1)
        name: str | None = usage.end_user
        if name not in table and len(table) - (OTHER in table) >= self._max:
            name = OTHER
        row = table.get(name)
        if row is None:
            row = table[name] = [0, 0, 0, 0]
        row[0] += usage.input_tokens
        row[1] += usage.output_tokens
        row[2] += usd_to_nano(usage.cost)
        row[3] += 1

    def _drop_before(self, tenant: str, first_kept: int) -> None:
        """Once per tenant and day: a scan of the days kept (a few hundred per tenant)."""
        for key in [k for k in self._days if k[0] == tenant and k[1] < first_kept]:
            del self._days[key]

    def rows(self, tenant: str | None, first_day: int, last_day: int) -> list[EndUserRow]:
        return [EndUserRow(t, day, end_user, *figures)
                for (t, day), table in self._days.items()
                if (tenant is None or t == tenant) and first_day <= day <= last_day
                for end_user, figures in table.items()]

    def snapshot(self) -> list[list[object]]:
        return [[t, day, end_user, *figures] for (t, day), table in self._days.items()
                for end_user, figures in table.items()]

    def restored(self, rows: object) -> EndUserDays:
        """A copy with ``rows`` (from ``snapshot``; None: a state from before end users were
        reported) in place of these, or ValueError naming what is malformed."""
        copy = EndUserDays(self._max)
        found: Iterable[object] = [] if rows is None else typed(rows, list, "end_users")
        for i, row in enumerate(found):
            key, end_user, figures = end_user_from_row(row, f"end_users[{i}]")
            copy._days.setdefault(key, {})[end_user] = figures
        return copy
