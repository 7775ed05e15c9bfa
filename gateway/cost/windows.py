"""Time windows as buckets: bounded memory per limit whatever the request rate.

A rolling window of ``count`` buckets of ``width`` seconds counts the current bucket and the
``count`` before it: a bucket counts until every request in it is older than the window
(``length_s``), so usage never leaves early and the bucketed use is never below the exact
rolling sum; it may stay up to one bucket late. The calendar month is one bucket that ends at
the next month's first second (UTC). The same arithmetic is passed to every store (the Redis
Lua scripts receive these numbers in ARGV), so backends agree to the unit.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

from gateway.cost.model import Limit


@dataclass(frozen=True, slots=True)
class Window:
    name: str  # "hour" | "day" | "month"
    width: int  # seconds per bucket; 0 for the calendar month
    count: int  # buckets in the window

    @property
    def length_s(self) -> int:
        return self.width * self.count

    def bucket(self, now: float) -> int:
        if self.width == 0:
            t = dt.datetime.fromtimestamp(now, dt.UTC)
            return t.year * 12 + t.month - 1
        return int(now // self.width)

    def oldest(self, now: float) -> int:
        """The oldest bucket index still inside the window at ``now``."""
        return self.buckets(now)[1]

    def buckets(self, now: float) -> tuple[int, int]:
        """The current and the oldest bucket index inside the window at ``now``: a rolling
        window keeps ``count`` buckets behind the current one, as the oldest of them may still
        hold requests younger than ``length_s`` (the month: only its own bucket)."""
        bucket = self.bucket(now)
        return bucket, bucket - self.count if self.width else bucket

    def leaves_at(self, bucket: int) -> float:
        """When ``bucket`` stops counting: ``length_s`` after the bucket ends, so only once
        every request in it has left the exact window."""
        if self.width == 0:
            year, month0 = divmod(bucket + 1, 12)
            return float(calendar.timegm((year, month0 + 1, 1, 0, 0, 0)))
        return float((bucket + 1) * self.width + self.length_s)

    def since(self, now: float) -> float:
        """Where the exact window starts at ``now``: ``length_s`` ago, or the month's first
        second (what a spend query over the window reads from)."""
        if self.width == 0:
            return self.leaves_at(self.bucket(now) - 1)
        return now - self.length_s

    def period_id(self, now: float) -> int:
        """Identifies the window a crossing belongs to, for once-per-window alerts."""
        if self.width == 0:
            return self.bucket(now)
        return int(now // self.length_s)

    def period_end(self, now: float) -> float:
        """When the period of ``period_id(now)`` ends."""
        if self.width == 0:
            return self.leaves_at(self.bucket(now))
        return float((self.period_id(now) + 1) * self.length_s)


HOUR = Window("hour", 60, 60)
DAY = Window("day", 900, 96)
MONTH = Window("month", 0, 1)

WINDOWS = {"hour": HOUR, "day": DAY, "month": MONTH}


def window_of(limit: Limit) -> Window:
    return WINDOWS[limit.window]
