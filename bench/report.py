"""The figures a run collected, the one table they print as, the targets they are held to,
and the same as JSON."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.load import Load
from bench.stream_client import percentiles

SYSTEMS = ("direct", "forwarder", "gateway memory", "gateway sqlite", "gateway redis")


@dataclass
class Results:
    """Keys: ``section:what:clients`` for loads; a system for ttfb; ``section:what`` for RSS."""

    loads: dict[str, Load] = field(default_factory=dict)
    ttfb: dict[str, list[float]] = field(default_factory=dict)
    rss: dict[str, float] = field(default_factory=dict)  # MB
    sizes: dict[str, list[int]] = field(default_factory=dict)  # the scaling steps measured
    samples: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # (requests, MB)


@dataclass(frozen=True)
class Check:
    what: str
    value: float
    target: float
    higher_is_better: bool
    unit: str = ""
    spec: str = ",.2f"

    @property
    def ok(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def __str__(self) -> str:
        sign = ">=" if self.higher_is_better else "<="
        return (f"{self.what} {self.value:{self.spec}}{self.unit} (target {sign} "
                f"{self.target:{self.spec}}{self.unit}): {'ok' if self.ok else 'MISSED'}")


@dataclass
class Row:
    label: str
    load: Load | None = None
    added: tuple[float, float] | None = None  # p50, p99 over direct, ms
    vs_forwarder: tuple[float, float] | None = None  # req/s ratio, p99 ratio
    ttfb: tuple[float, float] | None = None  # p50, p99 ms
    rss_mb: float | None = None
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Cell = tuple[str, int, Callable[[Row], str]]


def _f(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _of_load(name: str, spec: str) -> Callable[[Row], str]:
    return lambda r: "" if r.load is None else format(getattr(r.load, name), spec)


COLUMNS: tuple[Cell, ...] = (
    ("", 34, lambda r: r.label),
    ("clients", 7, _of_load("clients", "d")),
    ("req/s", 8, _of_load("rps", ",.0f")),
    ("p50 ms", 8, _of_load("p50_ms", ".3f")),
    ("p90 ms", 8, _of_load("p90_ms", ".3f")),
    ("p99 ms", 8, _of_load("p99_ms", ".3f")),
    ("+p50 ms", 8, lambda r: _f(r.added and r.added[0], "+.3f")),
    ("+p99 ms", 8, lambda r: _f(r.added and r.added[1], "+.3f")),
    ("x fwd rps", 10, lambda r: _f(r.vs_forwarder and r.vs_forwarder[0], ".2f")),
    ("x fwd p99", 10, lambda r: _f(r.vs_forwarder and r.vs_forwarder[1], ".2f")),
    ("ttfb p50", 9, lambda r: _f(r.ttfb and r.ttfb[0], ".3f")),
    ("ttfb p99", 9, lambda r: _f(r.ttfb and r.ttfb[1], ".3f")),
    ("RSS MB", 7, lambda r: _f(r.rss_mb, ".1f")),
    ("errors", 7, _of_load("errors", "d")),
)


def table(sections: list[tuple[str, list[Row]]]) -> Iterator[str]:
    widths = [w for _, w, _ in COLUMNS]
    yield "".join(f"{name:<{w}}" if i == 0 else f"{name:>{w}}"
                  for i, (name, w, _) in enumerate(COLUMNS))
    indent = " " * (widths[0] + 2)
    for title, rows in sections:
        yield f"-- {title}"
        for row in rows:
            cells = [get(row) for _, _, get in COLUMNS]
            yield "".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                          for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
            for line in [*row.notes, *(f"target: {c}" for c in row.checks)]:
                yield indent + line


def ttfb_of(results: Results, system: str) -> tuple[float, float] | None:
    values = results.ttfb.get(system)
    return percentiles(values) if values else None


def added(load: Load, base: Load | None) -> tuple[float, float] | None:
    return None if base is None else (load.p50_ms - base.p50_ms, load.p99_ms - base.p99_ms)


def versus(load: Load, forwarder: Load | None) -> tuple[float, float] | None:
    if forwarder is None or not forwarder.rps or not forwarder.p99_ms:
        return None
    return load.rps / forwarder.rps, load.p99_ms / forwarder.p99_ms


def as_json(row: Row) -> dict[str, Any]:
    return {
        "row": row.label,
        "load": row.load.as_json() if row.load else None,
        "added_p50_ms": row.added and row.added[0], "added_p99_ms": row.added and row.added[1],
        "rps_ratio_to_forwarder": row.vs_forwarder and row.vs_forwarder[0],
        "p99_ratio_to_forwarder": row.vs_forwarder and row.vs_forwarder[1],
        "ttfb_p50_ms": row.ttfb and row.ttfb[0], "ttfb_p99_ms": row.ttfb and row.ttfb[1],
        "rss_mb": row.rss_mb, "notes": row.notes,
        "checks": [{"what": c.what, "value": c.value, "target": c.target,
                    "higher_is_better": c.higher_is_better, "ok": c.ok} for c in row.checks],
    }
