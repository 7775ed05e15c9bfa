"""Reading the admin API's (and CLI's) parameters, with errors that name the parameter."""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import TypeVar

from gateway.errors import InvalidRequest

E = TypeVar("E", bound=StrEnum)


def choice(kind: type[E], value: str | None, param: str) -> E | None:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(e.value for e in kind)
        raise InvalidRequest(f"Invalid '{param}': expected one of {allowed}, got {value!r}.",
                             param=param) from None


def bound(value: str | None, param: str, *, end: bool) -> float | None:
    """An ISO date (a whole UTC day: an ``end`` bound includes it) or an ISO date-time (naive
    means UTC)."""
    if not value:
        return None
    try:
        if len(value) == 10:
            day = dt.date.fromisoformat(value)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            if end and day == dt.date.max:
                return None  # through the end of time: no upper bound
            return (start + dt.timedelta(days=1) if end else start).timestamp()
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"Invalid '{param}': expected an ISO date (2026-11-01) or date-time, got {value!r}.",
            param=param,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def known(query: Mapping[str, str], allowed: Collection[str]) -> None:
    """Every parameter is one this call reads: a misspelt one (``groupBy``) would otherwise be
    ignored, and the answer be for a question nobody asked."""
    for name in query:
        if name not in allowed:
            close = difflib.get_close_matches(name.lower(), allowed, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise InvalidRequest(f"Unknown parameter '{name}': this call takes "
                                 f"{', '.join(sorted(allowed))}.{hint}", param=name)


def ordered(since: float | None, until: float | None, first: str = "from", last: str = "to"
            ) -> None:
    """A range that ends before it starts is a mistake, not an empty report. ``first`` and
    ``last`` name the bounds as the caller wrote them (the CLI's ``--from``, ``--to``)."""
    if since is not None and until is not None and since >= until:
        raise InvalidRequest(f"Invalid '{first}': it is not before '{last}'.", param=first)


def count(value: str | None, param: str, default: int, most: int) -> int:
    """A whole number from 1 to ``most`` (``default`` when not given)."""
    if not value:
        return default
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= most):
        raise InvalidRequest(f"Invalid '{param}': expected a whole number from 1 to {most}, "
                             f"got {value!r}.", param=param)
    return int(value)
