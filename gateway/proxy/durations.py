"""How long requests usually take upstream, so that room held by reservations in flight is
expected back when they usually end (``fits_at``), not at their expiry an upstream timeout
and a minute away: a throttled request then waits about as long as it must.

Per upstream and priced model (the price a request resolved to, as its metrics label: never
a name the client made up): a smoothed mean of the last answers' durations, never past the
upstream's timeout. Bounded by the configuration's upstreams and prices; past ``MAX_KEYS`` the
table starts again (a figure relearned in a few requests).
"""

from __future__ import annotations

_WEIGHT = 0.2  # of the newest duration in the smoothed figure
MAX_KEYS = 4096


class Durations:
    def __init__(self) -> None:
        self._seconds: dict[tuple[str, str], float] = {}

    def expected_s(self, upstream: str, model: str, timeout_s: float) -> float:
        """The usual duration, or the timeout before any answer was seen."""
        return min(self._seconds.get((upstream, model), timeout_s), timeout_s)

    def observe(self, upstream: str, model: str, seconds: float) -> None:
        key = (upstream, model)
        known = self._seconds.get(key)
        if known is None and len(self._seconds) >= MAX_KEYS:
            self._seconds.clear()
        self._seconds[key] = seconds if known is None else known + _WEIGHT * (seconds - known)
