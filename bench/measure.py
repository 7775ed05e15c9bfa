"""What a run measures, section by section. A section starts the systems it compares (each
pinned to the system-under-test CPU; only the one being loaded is busy), warms each up, then
loads them in turn, round after round, and reads their peak RSS (VmHWM) before stopping them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis

from bench.bodies import chat_body, write_body
from bench.configs import SECRET, GatewayConfig
from bench.load import Load, wrk
from bench.report import Results
from bench.services import Service, free_port, python_module, service
from bench.stream_client import OpenStreams, time_to_first_byte
from bench.upstream import JSON_MODEL, JSON_PATH, STREAM_MODEL, STREAM_PATH

CHAT = "/chat/completions"
CHAT_PATH = JSON_PATH + CHAT  # the JSON answer, on nginx and through every system
BODY_SIZE = 1_000
GATEWAY_READY_S = 600.0  # 100,000 keys take a while to load
OPEN_TIMEOUT_S = 120.0
SETTLE_S = 1.0
LONG_SLICE_S = 2  # wrk runs of the long run; RSS is read between them
LONG_MAX_S = 600.0


@dataclass(frozen=True)
class Job:
    key: str
    url: str  # the origin of the system under test
    body: Path
    clients: int


@dataclass(frozen=True)
class Plan:
    seconds: float  # per figure: the sum of its rounds
    rounds: int  # each figure is taken in this many slices, interleaved with the others
    warm_s: float  # a 16-client wrk run before a system's first measured one
    ttfb_requests: int
    streams: int
    long_requests: int
    keys: tuple[int, ...]
    budgets: tuple[int, ...]
    bodies: tuple[int, ...]

    def __post_init__(self) -> None:
        per_round = self.seconds / self.rounds
        if per_round != int(per_round) or per_round < 1 or self.warm_s != int(self.warm_s):
            raise ValueError("wrk takes whole seconds: seconds / rounds and warm_s must be "
                             f"whole numbers, not {per_round:g} and {self.warm_s:g}")

    @property
    def round_s(self) -> int:
        return int(self.seconds / self.rounds)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Bench:
    def __init__(self, plan: Plan, tmp: Path, results: Results, upstream: str, redis_port: int,
                 cpu: int | None) -> None:
        self.plan = plan
        self.tmp = tmp
        self.results = results
        self.upstream = upstream  # the nginx origin
        self.redis_port = redis_port
        self.cpu = cpu  # of the system under test
        self.body = write_body(tmp, "chat", chat_body(JSON_MODEL, BODY_SIZE))
        self.stream_body = chat_body(STREAM_MODEL, BODY_SIZE, stream=True)
        self.headers = {"Authorization": f"Bearer {SECRET}"}

    # -- the systems under test ------------------------------------------------------------

    @contextlib.contextmanager
    def forwarder(self, name: str, origin: str) -> Iterator[Service]:
        port = free_port()
        command = python_module("bench.forwarder", "--port", str(port), "--upstream", origin)
        with service(command, port, self.tmp / f"{name}.log", cpu=self.cpu) as proc:
            yield proc

    def config(self, store: str, **changes: Any) -> GatewayConfig:
        url = {"memory": "memory://", "sqlite": f"sqlite://{self.tmp / f'{store}-state.db'}"
               }.get(store, f"redis://127.0.0.1:{self.redis_port}/0")
        base = GatewayConfig(url, self.upstream + JSON_PATH, self.upstream + STREAM_PATH)
        return dataclasses.replace(base, **changes)

    @contextlib.contextmanager
    def gateway(self, name: str, config: GatewayConfig) -> Iterator[Service]:
        path = config.write(self.tmp / f"{name}.yaml")
        port = free_port()
        command = python_module("gateway.cli", "serve", "--config", str(path),
                                "--port", str(port), "--grace-s", "5")
        with service(command, port, self.tmp / f"{name}.log", cpu=self.cpu,
                     ready_s=GATEWAY_READY_S) as proc:
            yield proc

    def flush_redis(self) -> None:
        """Each section's gateways start on an empty Redis."""
        with contextlib.closing(redis.Redis(port=self.redis_port)) as client:
            client.flushall()

    # -- measurements ----------------------------------------------------------------------

    def warm(self, urls: Iterable[str]) -> None:
        for url in urls:
            wrk(url + CHAT_PATH, self.body, SECRET, 16, self.plan.warm_s)

    def run(self, jobs: list[Job]) -> None:
        """Every job for ``seconds / rounds``, round-robin, ``rounds`` times; each job's runs
        pooled into one figure (so a slow spell of the machine hits every target alike)."""
        runs: dict[str, list[Load]] = collections.defaultdict(list)
        for _ in range(self.plan.rounds):
            for job in jobs:
                runs[job.key].append(wrk(job.url + CHAT_PATH, job.body, SECRET, job.clients,
                                         self.plan.round_s))
        for job in jobs:
            load = self.results.loads[job.key] = Load.pooled(runs[job.key])
            print(f"  {job.key:<32}{load.rps:9,.0f} req/s  p50 {load.p50_ms:7.3f}  "
                  f"p99 {load.p99_ms:7.3f} ms  errors {load.errors}", file=sys.stderr, flush=True)

    def ttfb(self, urls: dict[str, str]) -> None:
        """Time to first byte through each system, in the same round-robin."""
        per_round = max(1, self.plan.ttfb_requests // self.plan.rounds)
        for _ in range(self.plan.rounds):
            for system, url in urls.items():
                self.results.ttfb.setdefault(system, []).extend(asyncio.run(
                    time_to_first_byte(url, self.headers, self.stream_body, per_round)))

    # -- sections --------------------------------------------------------------------------

    def main_rows(self) -> None:
        self.flush_redis()
        with contextlib.ExitStack() as stack:
            procs = {"forwarder": stack.enter_context(self.forwarder("forwarder", self.upstream))}
            for store in ("memory", "sqlite", "redis"):
                procs[f"gateway {store}"] = stack.enter_context(
                    self.gateway(f"gateway-{store}", self.config(store)))
            urls = {"direct": self.upstream, **{k: p.url for k, p in procs.items()}}
            self.warm(urls.values())
            self.run([Job(f"main:{system}:{clients}", url, self.body, clients)
                      for clients in (16, 1) for system, url in urls.items()])
            self.ttfb({system: url + (JSON_PATH if system.startswith("gateway") else STREAM_PATH)
                       + CHAT for system, url in urls.items()})
            for system, proc in procs.items():
                self.results.rss[f"main:{system}"] = proc.peak_rss_mb()

    def key_rows(self) -> None:
        self.results.sizes["keys"] = list(self.plan.keys)
        self.flush_redis()
        with contextlib.ExitStack() as stack:
            procs = {n: stack.enter_context(self.gateway(f"keys-{n}",
                                                         self.config("redis", keys=n)))
                     for n in self.plan.keys}
            self.warm(p.url for p in procs.values())
            self.run([Job(f"keys:{n}:{clients}", proc.url, self.body, clients)
                      for clients in (16, 1) for n, proc in procs.items()])
            for n, proc in procs.items():
                self.results.rss[f"keys:{n}"] = proc.peak_rss_mb()

    def budget_rows(self) -> None:
        self.results.sizes["budgets"] = list(self.plan.budgets)
        self.flush_redis()
        with contextlib.ExitStack() as stack:
            urls = {f"budgets:{store}:{m}": stack.enter_context(self.gateway(
                        f"budgets-{store}-{m}", self.config(store, budgets=m))).url
                    for store in ("redis", "memory") for m in self.plan.budgets}
            self.warm(urls.values())
            self.run([Job(key, url, self.body, 1) for key, url in urls.items()])

    def body_rows(self) -> None:
        self.results.sizes["bodies"] = list(self.plan.bodies)
        self.flush_redis()
        files = {size: write_body(self.tmp, f"chat-{size}", chat_body(JSON_MODEL, size))
                 for size in self.plan.bodies}
        with contextlib.ExitStack() as stack:
            urls = {"direct": self.upstream,
                    "forwarder": stack.enter_context(
                        self.forwarder("body-forwarder", self.upstream)).url,
                    "gateway redis": stack.enter_context(
                        self.gateway("body-gateway", self.config("redis"))).url}
            self.warm(urls.values())
            self.run([Job(f"body:{system}:{size}", url, path, 1)
                      for size, path in files.items() for system, url in urls.items()])

    def stream_rows(self) -> None:
        self.results.sizes["streams"] = [self.plan.streams]
        self.flush_redis()
        port = free_port()
        slow_command = python_module("bench.slow_upstream", "--port", str(port))
        with service(slow_command, port, self.tmp / "slow-upstream.log") as slow:
            with self.forwarder("streams-forwarder", slow.url) as fwd:
                self._hold("forwarder", fwd, fwd.url + JSON_PATH + CHAT, slow.url)
            config = self.config("redis", stream_base=slow.url + JSON_PATH)
            with self.gateway("streams-gateway", config) as gw:
                self._hold("gateway redis", gw, gw.url + JSON_PATH + CHAT, slow.url)

    def long_rows(self) -> None:
        """RSS along a run of ``long_requests`` requests (16 clients, redis store), sampled
        after each tenth, so that growth (a leak) shows apart from the first warm-up."""
        self.flush_redis()
        target, served, samples = self.plan.long_requests, 0, []
        with self.gateway("long-gateway", self.config("redis")) as gw:
            self.warm([gw.url])
            deadline = time.monotonic() + LONG_MAX_S
            while served < target and time.monotonic() < deadline:
                load = wrk(gw.url + CHAT_PATH, self.body, SECRET, 16, LONG_SLICE_S)
                served += load.requests
                if served >= len(samples) * target / 10:
                    samples.append((served, gw.rss_mb()))
        self.results.sizes["long"] = [served]
        self.results.samples["long"] = samples
        print(f"  long run: {served:,} requests; RSS " +
              ", ".join(f"{mb:.1f}" for _, mb in samples) + " MB", file=sys.stderr, flush=True)

    def _hold(self, system: str, proc: Service, url: str, slow: str) -> None:
        rss = asyncio.run(hold_streams(url, self.headers, self.stream_body, self.plan.streams,
                                       proc, slow))
        for name, value in rss.items():
            self.results.rss[f"streams:{system}:{name}"] = value
        print(f"  streams:{system:<24}" + ", ".join(f"{k} {v:.1f} MB" for k, v in rss.items()),
              file=sys.stderr, flush=True)


async def hold_streams(url: str, headers: dict[str, str], body: bytes, count: int,
                       proc: Service, slow: str) -> dict[str, float]:
    """RSS of ``proc`` idle (after warm-up streams), with ``count`` streams open through it
    (the slow upstream holding them after their first event), and after they all ended."""
    await time_to_first_byte(url, headers, body, 0)  # its warm-up streams only
    rss = {"idle": proc.rss_mb()}
    async with aiohttp.ClientSession() as control:
        await _post(control, slow + "/hold")
        streams = OpenStreams(url, headers, body, count)
        try:
            await streams.opened(OPEN_TIMEOUT_S)
            async with control.get(slow + "/open") as resp:
                held = (await resp.json())["open"]
            if held != count:
                raise RuntimeError(f"{held} streams held upstream, expected {count}")
            rss["open"] = proc.rss_mb()
        finally:
            await _post(control, slow + "/release")
        try:
            await streams.finished(OPEN_TIMEOUT_S)
        finally:
            await streams.close()
    await asyncio.sleep(SETTLE_S)
    rss["after"] = proc.rss_mb()
    rss["peak"] = proc.peak_rss_mb()
    return rss


async def _post(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url) as resp:
        resp.raise_for_status()
