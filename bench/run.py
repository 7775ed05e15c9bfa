"""The gateway against a plain forwarder and the upstream itself, in one command and one table.

Run from the repository root: ``python -m bench.run [--quick] [--save PATH]``.

A mock upstream that costs almost nothing (nginx, fixed JSON and SSE answers), a plain aiohttp
forwarder as the in-run reference (``bench/forwarder.py``), and the gateway on the embedded
store, then on a Redis store (a redis-server the bench starts). The systems under test (the
forwarder and the gateways: one process each) run on CPU 0; nginx, redis, wrk and the
streaming client on CPU 1 (``taskset``; this process pins itself to CPU 1, so everything it
starts but the systems under test stays there). wrk drives non-streaming chat requests at 16
and at 1 connection; a streaming client measures time to first byte; VmHWM gives each
process's peak RSS. Scaling rows: keys configured, budgets matching one request, request body
size, and 1,000 streams held open against ``bench/slow_upstream.py``. One table is printed,
with the targets of issue 6 next to the figures they concern; the same goes to JSON (a
temporary directory, or ``--save PATH``).

The machine's speed drifts by 10-30 % over seconds (a shared VM), more than some targets'
margins, so the systems a section compares run side by side (idle but the one under load)
and each figure is taken in ``rounds`` slices, round-robin over the targets, pooled from
wrk's latency histograms: a slow spell hits every target alike.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import orjson

from bench import machine
from bench.figures import sections
from bench.measure import Bench, Plan
from bench.report import Results, as_json, table
from bench.services import require
from bench.upstream import nginx
from tests.procs import free_port, stop
from tests.servers import start_redis

SUT_CPU, LOAD_CPU = 0, 1
FULL = Plan(seconds=8, rounds=4, warm_s=2, ttfb_requests=500, streams=1_000,
            long_requests=100_000,
            keys=(10, 1_000, 100_000), budgets=(1, 5, 20), bodies=(1_000, 100_000, 1_000_000))
SECTIONS = ("main", "key", "budget", "body", "stream", "long")
QUICK = dataclasses.replace(FULL, seconds=3, rounds=3, warm_s=1, ttfb_requests=150,
                            long_requests=20_000)


def run(plan: Plan, tmp: Path, cpu: int | None, only: list[str]) -> Results:
    results = Results()
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(nginx(tmp))
        redis_port = free_port()
        redis = start_redis(tmp, redis_port)
        stack.callback(stop, redis)
        bench = Bench(plan, tmp, results, upstream.url, redis_port, cpu)
        for section in only or SECTIONS:
            getattr(bench, f"{section}_rows")()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.seconds} s per wrk run instead of {FULL.seconds}")
    parser.add_argument("--save", type=Path, help="write the JSON here (default: a temp dir)")
    parser.add_argument("--only", action="append", choices=SECTIONS, default=[],
                        help="run only this section (repeatable); default: all")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    for binary, package in (("nginx", "nginx-light"), ("wrk", "wrk"),
                            ("redis-server", "redis-server"), ("taskset", "util-linux")):
        require(binary, f"apt-get install {package}")
    pinned = {SUT_CPU, LOAD_CPU} <= os.sched_getaffinity(0)
    if pinned:
        os.sched_setaffinity(0, {LOAD_CPU})  # this process; what it starts inherits CPU 1
    header = machine.describe(pinned)
    for line in header["lines"]:
        print(line, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        results = run(plan, Path(tmp), SUT_CPU if pinned else None, args.only)
    rows = sections(results, f"{plan.seconds:g} s per figure in {plan.rounds} interleaved "
                             f"rounds")
    print()
    for line in table(rows):
        print(line)
    save = args.save or Path(tempfile.mkdtemp(prefix="bench-results-")) / "latest.json"
    save.parent.mkdir(parents=True, exist_ok=True)
    save.write_bytes(orjson.dumps({
        "machine": header, "plan": plan.as_json(),
        "sections": [{"title": title, "rows": [as_json(r) for r in section]}
                     for title, section in rows],
        "raw": {"loads": {k: v.as_json() for k, v in results.loads.items()},
                "ttfb_ms": results.ttfb, "rss_mb": results.rss},
    }, option=orjson.OPT_INDENT_2))
    print(f"\nJSON: {save}")
    missed = [c for _, section in rows for r in section for c in r.checks if not c.ok]
    print(f"targets: {sum(len(r.checks) for _, s in rows for r in s) - len(missed)} met, "
          f"{len(missed)} missed", file=sys.stderr)


if __name__ == "__main__":
    main()
