"""What each budget line had left at its last answer in this process, so that a request far
from every limit it meets may reserve its input's cheap bound (its UTF-8 bytes) instead of its
exact token count, which costs about a tenth of a request's time to make.

Far means the cheap bound is at most a thousandth of what the line had left: requests reserving
more than they will be charged then make no difference to who is admitted, however many are in
flight. Near a limit, on a line not seen yet, or when the cheap bound is refused, the request is
counted exactly and reserves that, so admission near a limit is as exact as it ever was.
A stale figure (other instances spent since) costs at most one refused attempt.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.store.base import Line, ReserveResult

ROOM_FACTOR = 1_000


class Headroom:
    """Each line's use after its last answer, for as many lines as the store keeps counters
    (``limits.budget_counters_max``; the least recently answered forgotten first)."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}  # line key -> used, as of this process's last answer

    def __len__(self) -> int:
        return len(self._used)

    def roomy(self, lines: Sequence[Line]) -> bool:
        """Every line had at least ``ROOM_FACTOR`` times its amount left at its last answer."""
        for line in lines:
            used = self._used.get(line.key)
            if used is None or line.limit - used < ROOM_FACTOR * line.amount:
                return False
        return True

    def note(self, lines: Sequence[Line], result: ReserveResult, most: int) -> None:
        used_map = self._used
        for line, used in zip(lines, result.used, strict=True):
            used_map.pop(line.key, None)  # last seen last
            used_map[line.key] = used + line.amount if result.ok else used
        while len(used_map) > most:
            del used_map[next(iter(used_map))]
