"""The table's rows from a run's results, each with the targets it is held to (issue 6)."""

from __future__ import annotations

from bench.load import Load
from bench.report import SYSTEMS, Check, Results, Row, added, ttfb_of, versus

MIN_RPS = 3_500.0
MIN_RPS_RATIO, MAX_P99_RATIO = 0.7, 1.5
MAX_ADDED_P50_MS, MAX_ADDED_P99_MS = 0.5, 1.5
MAX_TTFB_OVER_FORWARDER_MS = 1.5
MAX_STREAMS_RSS_MB = 150.0
MAX_KEYS_GROWTH_PCT = 10.0
MAX_US_PER_BUDGET = 20.0
MAX_LONG_RUN_GROWTH_PCT = 5.0  # "flat": RSS at the end over RSS after the first tenth

Section = tuple[str, list[Row]]


def sections(r: Results, timing: str) -> list[Section]:
    """``timing``: how long each figure was loaded, for the first section's title."""
    return [
        (f"16 clients (wrk -t1 -c16; {timing}): non-streaming chat, 1 KB body, 1 matching "
         "budget; ttfb: sequential streams; RSS: peak (VmHWM)", _main(r, 16)),
        ("1 client (wrk -t1 -c1); +p50/+p99: over direct at 1 client", _main(r, 1)),
        ("keys configured (gateway, redis store; 10 keys and 1 budget per filler tenant)",
         _keys(r)),
        ("budgets matching one request (gateway, 1 client; 2 limits each; memory store for "
         "comparison)", _budgets(r)),
        ("request body size (1 client; +p50: over direct with the same body)", _bodies(r)),
        ("concurrent open streams (redis store; RSS: all streams open)", _streams(r)),
        ("long run (gateway, redis store, 16 clients; RSS sampled about every tenth)",
         _long(r)),
    ]


def _main(r: Results, clients: int) -> list[Row]:
    direct = r.loads.get(f"main:direct:{clients}")
    forwarder = r.loads.get(f"main:forwarder:{clients}")
    rows = []
    for system in SYSTEMS:
        load = r.loads.get(f"main:{system}:{clients}")
        if load is None:
            continue
        row = Row(system, load)
        if system != "direct":
            row.added = added(load, direct)
        if system.startswith("gateway"):
            row.vs_forwarder = versus(load, forwarder)
        if clients == 16:
            row.ttfb = ttfb_of(r, system)
            row.rss_mb = r.rss.get(f"main:{system}")
        if system == "gateway redis":
            row.checks = (_busy_checks(row, ttfb_of(r, "forwarder")) if clients == 16
                          else _idle_checks(row))
        rows.append(row)
    return rows


def _busy_checks(row: Row, forwarder_ttfb: tuple[float, float] | None) -> list[Check]:
    assert row.load is not None
    checks = [Check("req/s", row.load.rps, MIN_RPS, True, spec=",.0f")]
    if row.vs_forwarder:
        checks += [Check("req/s / forwarder's", row.vs_forwarder[0], MIN_RPS_RATIO, True),
                   Check("p99 / forwarder's", row.vs_forwarder[1], MAX_P99_RATIO, False)]
    if row.ttfb and forwarder_ttfb:
        checks.append(Check("ttfb p50 - forwarder's", row.ttfb[0] - forwarder_ttfb[0],
                            MAX_TTFB_OVER_FORWARDER_MS, False, " ms"))
    return checks


def _idle_checks(row: Row) -> list[Check]:
    if row.added is None:
        return []
    return [Check("added p50", row.added[0], MAX_ADDED_P50_MS, False, " ms"),
            Check("added p99", row.added[1], MAX_ADDED_P99_MS, False, " ms")]


def _keys(r: Results) -> list[Row]:
    rows: list[Row] = []
    sizes = r.sizes.get("keys", [])
    first = r.loads.get(f"keys:{sizes[0]}:1") if sizes else None
    for n in sizes:
        for clients in (16, 1):
            load = r.loads.get(f"keys:{n}:{clients}")
            if load is None:
                continue
            row = Row(f"{n:,} keys", load, added(load, r.loads.get(f"main:direct:{clients}")))
            if clients == 16:
                row.rss_mb = r.rss.get(f"keys:{n}")
            elif first is not None and n != sizes[0]:
                _growth(row, first, r.loads.get("main:direct:1"), sizes[0], n == sizes[-1])
            rows.append(row)
    return rows


def _growth(row: Row, first: Load, direct: Load | None, keys: int, final: bool) -> None:
    """Added p50 compared with the first step's (the target: of the last step)."""
    base = added(first, direct)
    if row.added is None or base is None or base[0] <= 0:
        return
    check = Check(f"added p50 vs {keys:,} keys", (row.added[0] / base[0] - 1) * 100,
                  MAX_KEYS_GROWTH_PCT, False, " %", "+.1f")
    _check_or_note(row, check, final)


def _check_or_note(row: Row, check: Check, final: bool) -> None:
    if final:
        row.checks.append(check)
    else:
        row.notes.append(f"{check.what} {check.value:{check.spec}}{check.unit}")


def _budgets(r: Results) -> list[Row]:
    rows: list[Row] = []
    sizes = r.sizes.get("budgets", [])
    for store in ("redis", "memory"):
        base = r.loads.get(f"budgets:{store}:{sizes[0]}") if sizes else None
        for m in sizes:
            load = r.loads.get(f"budgets:{store}:{m}")
            if load is None:
                continue
            plural = "budget" if m == 1 else "budgets"
            row = Row(f"{m} matching {plural}, {store}", load,
                      added(load, r.loads.get("main:direct:1")))
            if base is not None and m != sizes[0]:
                per_us = (load.p50_ms - base.p50_ms) * 1e3 / (m - sizes[0])
                check = Check("p50 per extra budget", per_us, MAX_US_PER_BUDGET, False, " us",
                              ",.1f")
                _check_or_note(row, check, store == "redis" and m == sizes[-1])
            rows.append(row)
    return rows


def _bodies(r: Results) -> list[Row]:
    rows: list[Row] = []
    for size in r.sizes.get("bodies", []):
        direct = r.loads.get(f"body:direct:{size}")
        forwarder = r.loads.get(f"body:forwarder:{size}")
        for system in ("direct", "forwarder", "gateway redis"):
            load = r.loads.get(f"body:{system}:{size}")
            if load is None:
                continue
            row = Row(f"{_size(size)} body, {system}", load)
            if system != "direct":
                row.added = added(load, direct)
            if system == "gateway redis":
                row.vs_forwarder = versus(load, forwarder)
            rows.append(row)
    return rows


def _streams(r: Results) -> list[Row]:
    rows = []
    count = r.sizes.get("streams", [0])[0]
    for system in ("forwarder", "gateway redis"):
        prefix = f"streams:{system}"
        if f"{prefix}:open" not in r.rss:
            continue
        row = Row(f"{count:,} open streams, {system}", rss_mb=r.rss[f"{prefix}:open"])
        idle, after, peak = (r.rss[f"{prefix}:{k}"] for k in ("idle", "after", "peak"))
        row.notes.append(f"RSS idle {idle:.1f} MB, all {count:,} open {row.rss_mb:.1f} MB, "
                         f"after they ended {after:.1f} MB, peak {peak:.1f} MB")
        if system.startswith("gateway"):
            row.checks.append(Check(f"RSS with {count:,} open streams",
                                    r.rss[f"{prefix}:open"], MAX_STREAMS_RSS_MB, False, " MB"))
        rows.append(row)
    return rows


def _long(r: Results) -> list[Row]:
    samples = r.samples.get("long", [])
    if len(samples) < 2:
        return []
    served = r.sizes["long"][0]
    first, last = samples[0][1], samples[-1][1]
    row = Row(f"{served:,} requests, gateway redis", rss_mb=last)
    row.notes.append("RSS " + ", ".join(f"{mb:.1f}" for _, mb in samples) + " MB")
    row.checks.append(Check(f"RSS growth after the first {samples[0][0]:,} requests",
                            (last / first - 1) * 100, MAX_LONG_RUN_GROWTH_PCT, False, " %"))
    return [row]


def _size(size: int) -> str:
    return f"{size // 1_000_000} MB" if size >= 1_000_000 else f"{size // 1_000} KB"
