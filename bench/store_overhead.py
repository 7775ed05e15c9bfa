"""What a gateway adds to a request's latency, on the embedded store and on a shared Redis.

Run from the repository root: ``python -m bench.store_overhead [--requests N] [--concurrency C]``.

One run starts real processes on loopback ports: the mock upstream, a redis-server without
persistence and three gateways whose configurations differ only in ``store:`` (``memory://``,
``sqlite://`` on a file in a temporary directory, and ``redis://``). One tenant, one key, one
budget with a token and a cost limit far out of reach, so every request reserves in two lines
and is admitted. The same non-streaming chat requests (``max_tokens`` 16) go to the mock
directly (the baseline), then to each gateway: a warm-up, not measured, then N requests at
concurrency C, each timed. Overhead is a gateway's
percentile minus the baseline's. Where ``taskset`` and two CPUs exist, the gateways run on
CPU 0 and the mock, Redis and this load generator on CPU 1.

Redis round trips per request. Neither of Redis's counters tells a client's commands apart
from those a Lua script runs (checked with redis-cli on Redis 7.0: one EVALSHA of a script
doing five INCR moves ``total_commands_processed`` by 6, and ``INFO commandstats`` shows
evalsha calls=1 and incr calls=5). MONITOR does: a script's commands come from client ``lua``,
every other one with its client's address. So ``INFO commandstats`` is read before and after
the measured Redis run (commands executed per request, scripts' included, and script calls
per request), and a further pass of requests, not timed since MONITOR slows Redis down, runs
under ``redis-cli monitor``: its client-issued commands per request, by name, are the round
trips (the request path sends no pipelines). The two passes' script calls per request are
printed side by side and must agree.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import hashlib
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import redis.asyncio as aioredis

from tests.procs import free_port, running, stop
from tests.servers import start_redis

SECRET = "sk-bench-store-overhead"
BODY = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 16,
                     "messages": [{"role": "user", "content": "Say hello in five words."}]})
WARM_UP = 200
MONITOR_REQUESTS = 200
GATEWAY_CPU, OTHERS_CPU = 0, 1
SCRIPT_CALLS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
MONITOR_LINE = re.compile(r'^\S+ \[\d+ (\S+)\] "([^"]+)"')

CONFIG = """
store: "{store}"
upstreams:
  mock: {{base_url: "{mock}/v1", api_key: "k"}}
tenants:
  bench:
    keys: [{{name: app, sha256: "{sha}"}}]
budgets:
  - {{name: far, tenant: bench, max_tokens_per_hour: 1000000000000, max_cost_per_day: 1000000}}
"""


@dataclass
class Run:
    latencies_ms: list[float]
    errors: int
    seconds: float

    def percentiles(self) -> tuple[float, float, float]:
        if len(self.latencies_ms) < 2:
            return (float("nan"),) * 3
        cuts = statistics.quantiles(self.latencies_ms, n=100, method="inclusive")
        return cuts[49], cuts[89], cuts[98]


async def drive(session: aiohttp.ClientSession, base: str, count: int, concurrency: int) -> Run:
    """``count`` requests, ``concurrency`` at a time; latency of each answered 200."""
    url = f"{base}/v1/chat/completions"
    todo = iter(range(count))
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for _ in todo:  # one shared iterator: the workers take the requests between them
            start = time.perf_counter()
            try:
                async with session.post(url, data=BODY) as resp:
                    await resp.read()
                    ok = resp.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            if ok:
                latencies.append((time.perf_counter() - start) * 1e3)
            else:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(latencies, errors, time.perf_counter() - start)


async def command_calls(client: aioredis.Redis) -> collections.Counter[str]:
    stats = await client.info("commandstats")
    return collections.Counter({k.removeprefix("cmdstat_"): int(v["calls"])
                                for k, v in stats.items()})


async def monitored(session: aiohttp.ClientSession, base: str, port: int, tmp: Path,
                    concurrency: int) -> collections.Counter[str]:
    """Client-issued commands (not those run inside scripts) of MONITOR_REQUESTS requests."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise SystemExit("redis-cli is not installed: apt-get install redis-tools")
    log = tmp / "monitor.txt"
    with log.open("wb") as out:
        proc = subprocess.Popen([cli, "-p", str(port), "monitor"], stdout=out)
    try:
        await _written(log)
        run = await drive(session, base, MONITOR_REQUESTS, concurrency)
        await _written(log)
    finally:
        stop(proc)
    if run.errors:
        raise SystemExit(f"{run.errors} errors in the monitored pass")
    found = (MONITOR_LINE.match(line) for line in log.read_text().splitlines()[1:])
    return collections.Counter(m[2].lower() for m in found if m and m[1] != "lua")


async def _written(log: Path) -> None:
    """Waits, bounded, until redis-cli has said OK and its output has stopped growing."""
    size = -1
    for _ in range(100):
        await asyncio.sleep(0.05)
        if size == log.stat().st_size and log.read_bytes().startswith(b"OK"):
            return
        size = log.stat().st_size
    raise RuntimeError(f"redis-cli monitor did not settle: {log.read_bytes()[:200]!r}")


def row(target: str, run: Run, base: Run | None) -> str:
    p50, p90, p99 = run.percentiles()
    rate = len(run.latencies_ms) / run.seconds
    over = "        -        -"
    if base is not None:
        b50, _, b99 = base.percentiles()
        over = f"{p50 - b50:9.2f}{p99 - b99:9.2f}"
    return f"{target:<16}{rate:9.0f}{p50:9.2f}{p90:9.2f}{p99:9.2f}{over}{run.errors:8d}"


async def bench(args: argparse.Namespace, tmp: Path, pinned: bool) -> None:
    with contextlib.ExitStack() as stack:
        port = free_port()
        mock = stack.enter_context(running(["mock-upstream", "--port", str(port)], port,
                                           "/v1/mock/stats", tmp / "mock.log"))
        redis_port = free_port()
        redis_proc = start_redis(tmp, redis_port)
        stack.callback(stop, redis_proc)
        gateways = {}
        stores = (("memory", "memory://"), ("sqlite", f"sqlite://{tmp / 'state.db'}"),
                  ("redis", f"redis://127.0.0.1:{redis_port}/0"))
        for name, store in stores:
            config = tmp / f"{name}.yaml"
            config.write_text(CONFIG.format(store=store, mock=mock.url,
                                            sha=hashlib.sha256(SECRET.encode()).hexdigest()))
            port = free_port()
            gateways[name] = stack.enter_context(running(
                ["serve", "--config", str(config), "--port", str(port)], port, "/healthz",
                tmp / f"gateway-{name}.log"))
            if pinned:  # -a: every thread it has; later ones inherit
                subprocess.run(["taskset", "-a", "-p", "-c", str(GATEWAY_CPU),
                                str(gateways[name].popen.pid)], check=True, capture_output=True)
        client = aioredis.Redis(port=redis_port)
        await run_all(args, mock.url, {k: g.url for k, g in gateways.items()}, client,
                      redis_port, tmp)


async def run_all(args: argparse.Namespace, mock: str, gateways: dict[str, str],
                  client: aioredis.Redis, redis_port: int, tmp: Path) -> None:
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}
    async with client, aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        runs: dict[str, Run] = {}
        executed: dict[str, collections.Counter[str]] = {}  # redis commands during each run
        for target, url in (("direct", mock), *gateways.items()):
            await drive(session, url, WARM_UP, args.concurrency)
            before = await command_calls(client)
            runs[target] = await drive(session, url, args.requests, args.concurrency)
            executed[target] = await command_calls(client) - before
            executed[target]["info"] -= 1  # our own "before" read
        issued = await monitored(session, gateways["redis"], redis_port, tmp, args.concurrency)
        version = (await client.info("server"))["redis_version"]
    report(runs, executed, issued, version, args.requests)


def report(runs: dict[str, Run], executed: dict[str, collections.Counter[str]],
           issued: collections.Counter[str], version: str, requests: int) -> None:
    print(f"{'target':<16}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
          f"{'+p50 ms':>9}{'+p99 ms':>9}{'errors':>8}")
    print(row("direct (mock)", runs["direct"], None))
    print(row("gateway memory", runs["memory"], runs["direct"]))
    print(row("gateway sqlite", runs["sqlite"], runs["direct"]))
    print(row("gateway redis", runs["redis"], runs["direct"]))
    trips = issued.total() / MONITOR_REQUESTS
    names = ", ".join(f"{n.upper()} {c / MONITOR_REQUESTS:.2f}" for n, c in issued.most_common())
    print(f"redis {version} round trips per proxied request: {trips:.2f} ({names}), "
          f"client-issued commands under MONITOR over {MONITOR_REQUESTS} requests")
    scripts = sum(executed["redis"][n] for n in SCRIPT_CALLS) / requests
    total = executed["redis"].total() / requests
    others = ", ".join(f"{t} {executed[t].total()}" for t in ("direct", "memory", "sqlite"))
    print(f"  INFO commandstats over the measured run: {scripts:.2f} script calls and "
          f"{total:.1f} commands executed per request, scripts' own included "
          f"(commands during the other runs: {others})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="measured, per target")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    cpus = os.sched_getaffinity(0)
    pinned = shutil.which("taskset") is not None and {GATEWAY_CPU, OTHERS_CPU} <= cpus
    if pinned:
        os.sched_setaffinity(0, {OTHERS_CPU})  # this process; children start here too
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print(f"{now}  nproc {len(cpus)}, load average {os.getloadavg()[0]:.2f}, "
          f"Python {platform.python_version()}, {platform.platform()}")
    print("pinning: " + ("gateways on CPU 0; mock, redis, load generator on CPU 1 (taskset)"
                         if pinned else "none (needs taskset and CPUs 0 and 1)"))
    print(f"{args.requests} requests per target at concurrency {args.concurrency}, after "
          f"{WARM_UP} not measured; non-streaming chat, max_tokens 16, 2 budget lines")
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        asyncio.run(bench(args, Path(tmp), pinned))


if __name__ == "__main__":
    main()
