"""Checked reading of the embedded store's saved state.

A state file that is not what we wrote is refused, naming the field and what was wrong: never
half-loaded, never silently coerced (a string where an amount belongs must not become zero).
"""

from __future__ import annotations

from typing import Any, TypeVar

from gateway.cost.model import Usage, usage_values

T = TypeVar("T")

_USAGE_FIELDS = (
    (int, "input_tokens"), (int, "output_tokens"), (int, "cached_tokens"), (int, "total_tokens"),
    (float, "cost"), (str, "model"), (str, "provider"), (str, "tenant_id"), (float, "timestamp"),
    (bool, "estimated"),
)


def typed(value: object, kind: type[T], where: str) -> T:
    """``value`` if it is a ``kind`` (a bool is no int here), else ValueError naming ``where``."""
    if isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool):
        return value
    raise ValueError(f"{where}: expected {kind.__name__}, got {type(value).__name__}")


def number(value: object, where: str) -> float:
    """JSON writes 3.0 as 3.0 but a hand-edited file may say 3: both are numbers."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{where}: expected a number, got {type(value).__name__}")


def usage_row(usage: Usage) -> tuple[object, ...]:
    """A usage record as a JSON array: its fields in order, the end user last (null for none;
    rows written before issue 19 end before it). A state file holds up to ``max_entries`` of
    them, and the embedded store keeps its log as these very tuples, so that a snapshot writes
    them as they are: building 100,000 rows anew held the event loop ~50 ms."""
    return usage_values(usage)


def rollup_from_row(row: object, where: str) -> tuple[tuple[str, int, str, str], list[int]]:
    """[tenant, hour, model, provider, input, output, cached, cost_nano, requests]"""
    values = typed(row, list, where)
    if len(values) != 9:
        raise ValueError(f"{where}: expected 9 values, got {len(values)}")
    tenant, model, provider = (typed(values[i], str, f"{where}[{i}]") for i in (0, 2, 3))
    hour = typed(values[1], int, f"{where}[1]")
    counts = [typed(v, int, f"{where}[{i}]") for i, v in enumerate(values[4:], start=4)]
    return (tenant, hour, model, provider), counts


def end_user_from_row(row: object, where: str
                      ) -> tuple[tuple[str, int], str | None, list[int]]:
    """[tenant, day, end user (null: the day's end users past the cap), input, output,
    cost_nano, requests]"""
    values = typed(row, list, where)
    if len(values) != 7:
        raise ValueError(f"{where}: expected 7 values, got {len(values)}")
    tenant, day = typed(values[0], str, f"{where}[0]"), typed(values[1], int, f"{where}[1]")
    end_user = None if values[2] is None else typed(values[2], str, f"{where}[2]")
    counts = [typed(v, int, f"{where}[{i}]") for i, v in enumerate(values[3:], start=3)]
    return (tenant, day), end_user, counts


def usage_from_row(row: object, where: str) -> Usage:
    values = list(row) if isinstance(row, tuple) else typed(row, list, where)  # as kept, or read
    if len(values) == len(_USAGE_FIELDS) - 1:  # written before usage was marked estimated
        values = [*values, False]
    end_user = None
    if len(values) == len(_USAGE_FIELDS) + 1:  # since issue 19: its end user, or null
        values, end_user = values[:-1], values[-1]
        if end_user is not None:
            end_user = typed(end_user, str, f"{where}.end_user")
    if len(values) != len(_USAGE_FIELDS):
        raise ValueError(f"{where}: expected {len(_USAGE_FIELDS)} values, got {len(values)}")
    checked: dict[str, Any] = {
        name: number(v, f"{where}.{name}") if kind is float else typed(v, kind, f"{where}.{name}")
        for v, (kind, name) in zip(values, _USAGE_FIELDS, strict=True)
    }
    return Usage(**checked, end_user=end_user)
